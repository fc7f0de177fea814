"""The site's CEs and their install method, with enable/disable of torrent mode."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from siteadmin.directory import CE, Change, Directory
from siteadmin.errors import printable
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.views.base import View, cells

ALIEN_CACHE_NOTE = "AliEn caches CE settings for up to 600 s before jobs see the change."


class CesView(View):
    title = "Computing elements"
    hint = "installMethod of each CE in LDAP. e: enable torrent  d: disable (restore the earlier method)  r: reload"
    BINDINGS = [
        Binding("e", "enable", "Enable torrent"),
        Binding("d", "disable", "Disable torrent"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ces: dict[str, CE] = {}

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("CE", "installMethod", "torrent", "host")
        yield table

    def fetch(self) -> list[CE]:
        with Directory(self.site) as directory:
            return directory.list_ces()

    def show(self, data: Any) -> None:
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        self._ces = {ce.name: ce for ce in data}
        for ce in data:
            table.add_row(*cells(ce.name, ce.install_method or "(none)", "yes" if ce.torrent else "no", ce.host or "-"), key=ce.name)
        if selected in self._ces:
            table.move_cursor(row=table.get_row_index(selected))
        on = sum(ce.torrent for ce in data)
        self.set_status(f"{len(data)} CEs, {on} on torrent — {self.site.ldap.url}", "ok")

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
        return str(row_key.value) if row_key.value is not None else None

    def action_enable(self) -> None:
        self._toggle("enable")

    def action_disable(self) -> None:
        self._toggle("disable")

    def _toggle(self, action: str) -> None:
        name = self.selected()
        if name is None:
            self.app.notify("no CE selected", severity="warning")
            return
        expected = self._ces[name].install_methods
        self.set_status(f"{action} {name}…")
        self.change(action, name, expected)

    @work(thread=True, exclusive=True, exit_on_error=False, group="ce-change")
    def change(self, action: str, name: str, expected: tuple[str, ...]) -> None:
        # expected = what this screen showed: if someone changed it since, the compare-and-set refuses
        with Directory(self.site) as directory:
            method = directory.enable if action == "enable" else directory.disable
            result = method(name, expected=expected)
        self.app.call_from_thread(self._changed, result)

    def _changed(self, change: Change) -> None:
        before = "|".join(change.before) or "(none)"
        if change.outcome == "unchanged":
            self.app.notify(printable(f"{change.ce}: unchanged ({change.note or before})"), markup=False)
        else:
            self.app.notify(printable(f"{change.ce}: {before} -> {change.after} ({change.outcome}). {ALIEN_CACHE_NOTE}"), timeout=10, markup=False)
        self.post_message(SiteChanged("ce"))
        self.reload()
