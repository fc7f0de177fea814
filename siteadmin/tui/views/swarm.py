"""The site's swarm, live: every WN's aria2c (the ``siteadmin status`` service), sortable and
filterable, a WN's torrents and peers, and the per-package view.

Polls re-arm themselves after each answer (``[status] interval``), so they never overlap, and
run while the view is shown. Rows are updated in place, cell by cell where a value changed, so
a table of 1,000 WNs stays responsive; sorting or filtering redraws it once.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input

from siteadmin.swarm import SwarmReport, WNState
from siteadmin.tui.screens import DetailScreen
from siteadmin.tui.views.base import Job, View, cell

COLUMNS = ("WN", "aria2c", "active", "seeding", "down", "up", "flags")
SORTS = ("WN", "flags", "down", "up", "active")
SLICE = 25
"""Rows updated per turn of the event loop (a key press waits for one slice at most)."""


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
        self.hosts: list[str] = []
        self.sort_by = "WN"
        self.filter_text = ""
        self.packages = False
        self.paused = False
        self._shown: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []
        self._pending: list[tuple[str, tuple[str, ...]]] = []
        self.draining = False
        self.polls = 0

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="filter: part of a WN name or a flag (Enter applies, Escape clears)", id="swarm-filter", classes="filter")
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="swarm-table")
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table

    def focus_target(self) -> Any:
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
        self.call("swarm", lambda: self.services.swarm(self.hosts, job.cancel), lambda report: self._polled(job, report))

    def _polled(self, job: Job, report: SwarmReport) -> None:
        if not self.current("poll", job):
            return
        self.polls += 1
        self.show_report(report)
        if getattr(self.app, "current", "swarm") == "swarm" and not self.paused:
            self.set_timer(self.site.status.interval, self.poll)
        else:
            self.loaded = False  # polled again when shown again

    def failed(self, message: str) -> None:
        if self.hosts and not self.paused and getattr(self.app, "current", "") == "swarm":
            self.set_timer(self.site.status.interval * 3, self.poll)

    # ------------------------------------------------ drawing

    def flags(self, report: SwarmReport) -> dict[str, str]:
        out: dict[str, list[str]] = {}
        for problem in report.problems:
            out.setdefault(problem.host, []).append(problem.code)
        return {host: ",".join(sorted(set(codes))) for host, codes in out.items()}

    def show_report(self, report: SwarmReport) -> None:
        """Draw a poll: cells that changed are updated in place; a new set or order of rows redraws."""
        self.report = report
        if self.packages:
            self._draw_packages(report)
        else:
            flags = self.flags(report)
            rows = {w.host: wn_row(w, flags.get(w.host, "")) for w in report.wns}
            wanted = [h for h in self._sorted(rows) if self._matches(rows[h])]
            table = self.query_one("#swarm-table", DataTable)
            if wanted != self._order or self._shown.keys() != set(wanted):
                self._pending = []
                self._redraw(table, rows, wanted)
            else:
                # the newest poll wins: changes still queued from an older one are dropped
                self._pending = [(host, rows[host]) for host in wanted if self._shown[host] != rows[host]]
                if not self.draining:
                    self.draining = True
                    self._drain()
        up = len(report.reachable)
        flagged = len({p.host for p in report.problems})
        shown = f", {len(self._order)} shown" if self.filter_text else ""
        self.set_status(f"{up} of {len(report.wns)} WNs answer{shown}; {flagged} flagged; from site WNs: {report.share.label}; "
                        f"sorted by {self.sort_by}{' (paused)' if self.paused else ''}", "ok" if up == len(report.wns) else "error")

    def _drain(self) -> None:
        """Apply queued row changes a slice at a time, yielding to the event loop between slices,
        so a key press never waits for a whole 1,000-row update."""
        table = self.query_one("#swarm-table", DataTable)
        batch, self._pending = self._pending[:SLICE], self._pending[SLICE:]
        for host, new in batch:
            old = self._shown.get(host)
            if old is None:
                continue
            for name, before, after in zip(COLUMNS, old, new, strict=True):
                if before != after:
                    table.update_cell(host, name, self._cell(name, after), update_width=False)
            self._shown[host] = new
        if self._pending:
            self.set_timer(0.001, self._drain)
        else:
            self.draining = False

    def _cell(self, column: str, text: str) -> Any:
        if column == "flags" and text:
            return cell(text, "red")
        if column == "aria2c" and text in ("refused", "timeout", "wrong-secret", "ssh-failure", "rpc-error", "rpc-unreachable"):
            return cell(text, "red")
        return cell(text)

    def _redraw(self, table: DataTable[Any], rows: dict[str, tuple[str, ...]], wanted: list[str]) -> None:
        table.clear()
        for host in wanted:
            table.add_row(*(self._cell(n, v) for n, v in zip(COLUMNS, rows[host], strict=True)), key=host)
        self._shown = {h: rows[h] for h in wanted}
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
        if self.report is not None:
            self.show_report(self.report)

    def action_filter(self) -> None:
        self.query_one("#swarm-filter", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.filter_text = event.value.strip()
        if self.report is not None:
            self.show_report(self.report)
        self.query_one("#swarm-table", DataTable).focus()

    def on_key(self, event: Any) -> None:
        if getattr(event, "key", "") == "escape" and self.query_one("#swarm-filter", Input).has_focus:
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
        if self.report is not None:
            self.show_report(self.report)

    def action_pause(self) -> None:
        self.paused = not self.paused
        if not self.paused:
            self.poll()
        elif self.report is not None:
            self.show_report(self.report)

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
