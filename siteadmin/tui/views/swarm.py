"""The site's swarm, live: every WN's aria2c (the ``siteadmin status`` service), sortable and
filterable, a WN's torrents and peers, and the per-package view.

Polls re-arm themselves after each answer (``[status] interval``), so they never overlap, and
run while the view is shown. A poll's changed cells are set in place and drawn in one frame
(``SwarmTable.set_cells``), so a table of 1,000 WNs stays responsive; sorting or filtering
redraws it once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable, Input

from siteadmin.swarm import SwarmReport, WNState
from siteadmin.tui.screens import DetailScreen
from siteadmin.tui.views.base import Job, View, cell

COLUMNS = ("WN", "aria2c", "active", "seeding", "down", "up", "flags")
SORTS = ("WN", "flags", "down", "up", "active")


class SwarmTable(DataTable[Any]):
    """The swarm's table: a poll's changed cells are set in one go and only they are drawn anew.

    ``DataTable.update_cell`` refreshes the widget once per cell and bumps the table's update
    count, which every render cache is keyed by: each poll then redrew every visible cell
    (about 250 at 120x40), a stall of the event loop far over 50 ms on a loaded machine.
    ``set_cells`` stores every value, drops only the changed cells' and rows' cached renders,
    then refreshes once, so a frame redraws what changed and reuses the rest.
    """

    def set_cells(self, changes: list[tuple[str, str, Any]]) -> None:
        data = getattr(self, "_data", None)
        caches = ("_cell_render_cache", "_row_render_cache", "_row_renderable_cache", "_line_cache")
        if not isinstance(data, dict) or not all(hasattr(self, name) for name in (*caches, "_update_count", "_row_locations")):
            for row, column, value in changes:  # another Textual: the public, slower way
                self.update_cell(row, column, value, update_width=False)
            return
        from textual.widgets._data_table import ColumnKey, RowKey

        rows: set[Any] = set()
        changed: set[tuple[Any, Any]] = set()
        for row, column, value in changes:
            row_key, column_key = RowKey(row), ColumnKey(column)
            cells = data.get(row_key)
            if cells is not None and column_key in cells:
                cells[column_key] = value
                rows.add(row_key)
                changed.add((row_key, column_key))
        if not rows:
            return
        # cell renders are keyed (row, column, ...), row renders (row, ...), a row's formatted
        # cells (update count, row index); lines by position, rebuilt from the cached rows
        cell_cache = self._cell_render_cache
        for key in [k for k in cell_cache.keys() if (k[0], k[1]) in changed]:
            cell_cache.discard(key)
        row_cache = self._row_render_cache
        for row_cache_key in [k for k in row_cache.keys() if k[0] in rows]:
            row_cache.discard(row_cache_key)
        for row_key in rows:
            index = self._row_locations.get(row_key)
            if index is not None:
                self._row_renderable_cache.discard((self._update_count, index))
        self._line_cache.clear()
        self.refresh()


def rate(value: int) -> str:
    if value < 1024:
        return f"{value} B/s"
    if value < 1024 * 1024:
        return f"{value / 1024:.0f} KiB/s"
    return f"{value / 1024 / 1024:.1f} MiB/s"


def wn_row(wn: WNState, flags: str) -> tuple[str, ...]:
    """The cells of one WN's row, as text."""
    if not wn.reachable:
        return (wn.host, f"{wn.reason}", "-", "-", "-", "-", flags or (wn.detail[:40] if wn.detail else ""))
    return (wn.host, wn.version or "?", str(wn.active), str(wn.seeding), rate(wn.download_speed), rate(wn.upload_speed), flags)


def wn_detail(report: SwarmReport, host: str) -> str:
    """A WN's torrents and their peers, as text."""
    wn = next((w for w in report.wns if w.host == host), None)
    if wn is None:
        return f"{host}: not in the last poll"
    if not wn.reachable:
        return f"{host}: aria2c not read: {wn.reason}\n{wn.detail}"
    lines = [f"{host}: aria2c {wn.version}; {wn.active} active, {wn.waiting} waiting, {wn.seeding} seeding, {wn.stopped} stopped;"
             f" down {rate(wn.download_speed)}, up {rate(wn.upload_speed)}"]
    for problem in report.problems_of(host):
        lines.append(f"  {problem.severity}: {problem.code}: {problem.message}")
    for t in wn.torrents:
        lines.append("")
        lines.append(f"{t.package} [{t.via}] {t.status} {t.progress * 100:.0f}% of {t.total} B, up {t.uploaded} B, "
                     f"{t.connections} connections{', seeding' if t.seeding else ''}{', ' + t.error if t.error else ''}")
        for p in t.peers or ():
            who = p.wn or p.ip
            lines.append(f"    {p.source:<8} {who}:{p.port}  down {rate(p.download_speed)}  up {rate(p.upload_speed)}{'  seeder' if p.seeder else ''}")
    if not wn.torrents:
        lines.append("(no downloads)")
    return "\n".join(lines)


@functools.lru_cache(maxsize=8192)
def styled(column: str, text: str) -> Text:
    """A cell of the table, coloured where it flags a problem. Polls repeat the same few values
    (counts, rounded rates), so cells are shared rather than made anew each time: the table
    only reads them."""
    if column == "flags" and text:
        return cell(text, "red")
    if column == "aria2c" and text in ("refused", "timeout", "wrong-secret", "ssh-failure", "rpc-error", "rpc-unreachable"):
        return cell(text, "red")
    return cell(text)


@dataclasses.dataclass(frozen=True)
class SwarmFrame:
    """A poll read into the table's rows, off the event loop (in the poll's worker).

    Cells are made only for what is drawn (a new row, a changed value): making all 7,000 of a
    1,000-WN poll each time filled the heap, and the collector's full passes then stopped the
    event loop for up to 250 ms.
    """

    report: SwarmReport
    rows: dict[str, tuple[str, ...]]

    def cells(self, host: str) -> tuple[Text, ...]:
        return tuple(styled(n, v) for n, v in zip(COLUMNS, self.rows[host], strict=True))


def flags_of(report: SwarmReport) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for problem in report.problems:
        out.setdefault(problem.host, []).append(problem.code)
    return {host: ",".join(sorted(set(codes))) for host, codes in out.items()}


def frame_of(report: SwarmReport) -> SwarmFrame:
    """The rows of a poll; pure, so the poll's worker builds them and the loop only compares and sets."""
    flags = flags_of(report)
    rows = {w.host: wn_row(w, flags.get(w.host, "")) for w in report.wns}
    return SwarmFrame(report, rows)


class SwarmView(View[list[str]]):
    title = "Swarm"
    hint = "Every WN's aria2c, live. s: sort  /: filter  Enter: a WN's torrents and peers  k: packages  p: pause"
    BINDINGS = [
        Binding("s", "sort", "Sort"),
        Binding("slash", "filter", "Filter"),
        Binding("k", "packages", "Packages"),
        Binding("p", "pause", "Pause"),
        Binding("enter", "detail", "WN detail", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report: SwarmReport | None = None
        self.frame: SwarmFrame | None = None
        self.hosts: list[str] = []
        self.sort_by = "WN"
        self.filter_text = ""
        self.packages = False
        self.paused = False
        self._shown: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []
        self.polls = 0

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: part of a WN name or a flag (Enter applies, Escape clears)", id="swarm-filter", classes="filter")
        table = SwarmTable(cursor_type="row", zebra_stripes=True, id="swarm-table")
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table

    def focus_target(self) -> Widget:
        return self.query_one("#swarm-table", DataTable)

    def fetch(self) -> list[str]:
        return self.services.hosts()

    def show(self, data: list[str]) -> None:
        self.hosts = data
        self.set_status(f"polling {len(data)} WNs…", "busy")
        self.poll()

    # ------------------------------------------------ polling

    def poll(self) -> None:
        if self.paused or not self.hosts:
            return
        job = self.start_job("poll")
        self.call("swarm", lambda: frame_of(self.services.swarm(self.hosts, job.cancel)), lambda frame: self._polled(job, frame))

    def _polled(self, job: Job, frame: SwarmFrame) -> None:
        if not self.current("poll", job):
            return
        self.polls += 1
        self.show_report(frame)
        if getattr(self.app, "current", "swarm") == "swarm" and not self.paused:
            self.set_timer(self.site.status.interval, self.poll)
        else:
            self.loaded = False  # polled again when shown again

    def failed(self, message: str) -> None:
        if self.hosts and not self.paused and getattr(self.app, "current", "") == "swarm":
            self.set_timer(self.site.status.interval * 3, self.poll)

    # ------------------------------------------------ drawing

    def show_report(self, polled: SwarmReport | SwarmFrame) -> None:
        """Draw a poll: cells that changed are set in place; a new set or order of rows redraws."""
        frame = polled if isinstance(polled, SwarmFrame) else frame_of(polled)
        report = self.report = frame.report
        self.frame = frame
        if self.packages:
            self._draw_packages(report)
        else:
            rows = frame.rows
            wanted = [h for h in self._sorted(rows) if self._matches(rows[h])]
            table = self.query_one("#swarm-table", SwarmTable)
            if wanted != self._order or self._shown.keys() != set(wanted):
                self._redraw(table, frame, wanted)
            else:
                changes: list[tuple[str, str, Any]] = []
                for host in wanted:
                    old, new = self._shown[host], rows[host]
                    if old != new:
                        changes += [(host, name, styled(name, after)) for name, before, after in zip(COLUMNS, old, new, strict=True)
                                    if before != after]
                        self._shown[host] = new
                table.set_cells(changes)
        up = len(report.reachable)
        flagged = len({p.host for p in report.problems})
        shown = f", {len(self._order)} shown" if self.filter_text else ""
        self.set_status(f"{up} of {len(report.wns)} WNs answer{shown}; {flagged} flagged; from site WNs: {report.share.label}; "
                        f"sorted by {self.sort_by}{' (paused)' if self.paused else ''}", "ok" if up == len(report.wns) else "error")

    def _redraw(self, table: DataTable[Any], frame: SwarmFrame, wanted: list[str]) -> None:
        table.clear()
        for host in wanted:
            table.add_row(*frame.cells(host), key=host)
        self._shown = {h: frame.rows[h] for h in wanted}
        self._order = wanted

    def _sorted(self, rows: dict[str, tuple[str, ...]]) -> list[str]:
        if self.sort_by == "WN":
            return sorted(rows)
        if self.sort_by == "flags":
            return sorted(rows, key=lambda h: (rows[h][6] == "", h))
        index = COLUMNS.index(self.sort_by)
        report = self.report
        speeds: dict[str, int] = {}
        if report is not None and self.sort_by in ("down", "up"):
            speeds = {w.host: (w.download_speed if self.sort_by == "down" else w.upload_speed) for w in report.wns}
            return sorted(rows, key=lambda h: (-speeds.get(h, 0), h))
        return sorted(rows, key=lambda h: (-int(rows[h][index]) if rows[h][index].isdigit() else 1, h))

    def _matches(self, row: tuple[str, ...]) -> bool:
        if not self.filter_text:
            return True
        needle = self.filter_text.casefold()
        return any(needle in value.casefold() for value in (row[0], row[1], row[6]))

    def _draw_packages(self, report: SwarmReport) -> None:
        table = self.query_one("#swarm-table", DataTable)
        table.clear(columns=True)
        for name in ("package", "complete", "seeding", "downloading", "stuck", "http", "from site"):
            table.add_column(name, key=name)
        for p in report.packages:
            table.add_row(cell(p.name), cell(len(p.complete)), cell(len(p.seeding)), cell(len(p.downloading)),
                          cell(len(p.stuck), "red" if p.stuck else ""), cell(len(p.http)), cell(p.share.label), key=p.name)
        self._shown, self._order = {}, []

    # ------------------------------------------------ actions

    def action_sort(self) -> None:
        self.sort_by = SORTS[(SORTS.index(self.sort_by) + 1) % len(SORTS)]
        if self.frame is not None:
            self.show_report(self.frame)

    def action_filter(self) -> None:
        self.query_one("#swarm-filter", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        if self.frame is not None:
            self.show_report(self.frame)
        self.query_one("#swarm-table", DataTable).focus()

    def on_key(self, event: events.Key) -> None:
        if event.key == "escape" and self.query_one("#swarm-filter", Input).has_focus:
            event.stop()
            self.query_one("#swarm-filter", Input).value = ""
            self.filter_text = ""
            if self.report is not None:
                self.show_report(self.report)
            self.query_one("#swarm-table", DataTable).focus()

    def action_packages(self) -> None:
        self.packages = not self.packages
        table = self.query_one("#swarm-table", DataTable)
        if not self.packages:
            table.clear(columns=True)
            for name in COLUMNS:
                table.add_column(name, key=name)
            self._shown, self._order = {}, []
        if self.frame is not None:
            self.show_report(self.frame)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.poll()
        elif self.frame is not None:
            self.show_report(self.frame)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_detail()

    def action_detail(self) -> None:
        table = self.query_one("#swarm-table", DataTable)
        if self.report is None or table.row_count == 0:
            return
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        if row_key.value is None:
            return
        key = str(row_key.value)
        if self.packages:
            package = next((p for p in self.report.packages if p.name == key), None)
            if package is not None:
                body = "\n".join(f"{what}: {', '.join(hosts) or '-'}" for what, hosts in (
                    ("complete", package.complete), ("seeding", package.seeding), ("downloading", package.downloading),
                    ("stuck", package.stuck), ("http fallback", package.http))) + f"\nfrom site WNs: {package.share.label}"
                self.app.push_screen(DetailScreen(f"Package {key}", body))
            return
        self.app.push_screen(DetailScreen(f"WN {key}", wn_detail(self.report, key)))
