"""The site's CEs and their install method; enable/disable torrent mode, always after a confirmation.

``e`` / ``d`` first compute the change with a dry run (nothing written) and show its LDIF on a
confirmation screen; only ``y`` there sends it, as the same compare-and-set as
``siteadmin ce enable``: the value this screen showed is the expected one, so a CE another admin
changed meanwhile is refused. ``s`` is the switch: preflight, rollout, LDAP, verify, in order.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from siteadmin.directory import CE, Change
from siteadmin.errors import printable
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.screens import ConfirmScreen
from siteadmin.tui.views.base import View, cells

ALIEN_CACHE_NOTE = "AliEn caches CE settings for up to 600 s before jobs see the change."


class CesView(View[list[CE]]):
    title = "Computing elements"
    hint = "installMethod of each CE in LDAP. s: switch (preflight, rollout, LDAP, wait; undone on failure). Every change is asked first."
    BINDINGS = [
        Binding("e", "enable", "Enable torrent"),
        Binding("d", "disable", "Disable torrent"),
        Binding("s", "switch", "Switch (gated)"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ces: dict[str, CE] = {}

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("CE", "installMethod", "torrent", "host")
        yield table

    def fetch(self) -> list[CE]:
        return self.services.list_ces()

    @property
    def ces(self) -> list[CE]:
        return list(self._ces.values())

    def show(self, data: list[CE]) -> None:
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
        self._ask("enable")

    def action_disable(self) -> None:
        self._ask("disable")

    def action_switch(self) -> None:
        name = self.selected()
        if name is None:
            self.app.notify("no CE selected", severity="warning")
            return
        switch = getattr(self.app, "open_switch", None)
        if callable(switch):
            switch(self._ces[name])

    def _ask(self, action: str) -> None:
        name = self.selected()
        if name is None:
            self.app.notify("no CE selected", severity="warning")
            return
        expected = self._ces[name].install_methods
        self.set_status(f"{action} {name}: computing the change…", "busy")
        self.call("ce-preview", lambda: self.services.ce_preview(name, action, expected), lambda change: self._confirm(action, change, expected))

    def _confirm(self, action: str, change: Change, expected: tuple[str, ...]) -> None:
        before = "|".join(change.before) or "(none)"
        if change.outcome == "unchanged":
            self.set_status(f"{change.ce}: unchanged ({change.note or before}); nothing to send", "ok")
            return
        self.set_status(f"{action} {change.ce}: waiting for confirmation")
        what = f"{change.ce}: installMethod {before} -> {change.after}  ({change.dn})\n{change.note}".rstrip()
        body = change.ldif + f"\n{ALIEN_CACHE_NOTE}\n"

        def answered(yes: bool | None) -> None:
            if not yes:
                self.set_status(f"{action} {change.ce}: cancelled, nothing written", "ok")
                return
            self.set_status(f"{action} {change.ce}…", "busy")
            self.call("ce-change", lambda: self.services.ce_change(change.ce, action, expected), self._changed)

        self.app.push_screen(ConfirmScreen(f"{action.capitalize()} torrent on {change.ce}?", what, body), answered)

    def _changed(self, change: Change) -> None:
        before = "|".join(change.before) or "(none)"
        if change.outcome == "unchanged":
            self.app.notify(printable(f"{change.ce}: unchanged ({change.note or before})"), markup=False)
        else:
            self.app.notify(printable(f"{change.ce}: {before} -> {change.after} ({change.outcome}). {ALIEN_CACHE_NOTE}"), timeout=10, markup=False)
        self.post_message(SiteChanged("ce"))
        self.reload()
