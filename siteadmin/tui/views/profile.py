"""The aria2c profile each WN gets: rendered (secrets masked) and linted."""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from siteadmin.aria2conf import PLACEHOLDER_HOST, Finding, Rendered, lint, render
from siteadmin.errors import SiteadminError
from siteadmin.inventory import Inventory
from siteadmin.tui.views.base import View, cells


@dataclasses.dataclass(frozen=True)
class HostProfile:
    host: str
    rendered: Rendered | None
    findings: list[Finding]
    error: str | None = None


class ProfileView(View):
    title = "aria2c profile"
    hint = "The config each WN gets, secrets masked, with the security lint. Move the cursor to pick a WN."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._profiles: dict[str, HostProfile] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="split"):
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, classes="hosts")
            table.add_columns("WN", "hash", "errors", "warnings")
            yield table
            yield Static("", classes="conf", id="profile-text", markup=False)

    def fetch(self) -> list[HostProfile]:
        hosts = Inventory(self.site).select() or [PLACEHOLDER_HOST]
        out = []
        for host in hosts:
            try:
                rendered = render(self.site, host)
                out.append(HostProfile(host, rendered, lint(self.site, rendered.options, host=host)))
            except SiteadminError as exc:
                out.append(HostProfile(host, None, [], exc.one_line()))
        return out

    def show(self, data: Any) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self._profiles = {p.host: p for p in data}
        for p in data:
            errors = sum(f.level == "error" for f in p.findings) + (1 if p.error else 0)
            warnings = sum(f.level == "warning" for f in p.findings)
            table.add_row(*cells(p.host, p.rendered.hash.rsplit(":", 1)[-1][:12] if p.rendered else "-", errors, warnings), key=p.host)
        bad = sum(1 for p in data if p.error or any(f.level == "error" for f in p.findings))
        self.set_status(f"{len(data)} profiles, {bad} with errors", "error" if bad else "ok")
        if data:
            self._show_host(data[0].host)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_host(str(event.row_key.value))

    def _show_host(self, host: str) -> None:
        profile = self._profiles.get(host)
        if profile is None:
            return
        text = profile.error or (profile.rendered.masked_text if profile.rendered else "")
        findings = "\n".join(f"# {finding}" for finding in profile.findings)
        self.query_one("#profile-text", Static).update((findings + "\n\n" if findings else "") + text)
