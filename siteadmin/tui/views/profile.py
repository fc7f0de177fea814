"""The aria2c profile each WN gets: rendered (secrets masked), linted and read by aria2c.

The view runs ``check_profiles``, the profile check of ``siteadmin render`` and ``siteadmin lint``,
so the console and the command line give the same verdict for every WN.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from siteadmin.aria2conf import HostCheck, ProfileCheck
from siteadmin.errors import printable_lines
from siteadmin.tui.views.base import View, cells


class ProfileView(View[ProfileCheck]):
    title = "aria2c profile"
    hint = "Each WN's config, secrets masked, linted and read by aria2c. e: edit the profile (form, diff, save)"
    BINDINGS = [Binding("e", "edit", "Edit profile")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._profiles: dict[str, HostCheck] = {}

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="split"):
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, classes="hosts")
            table.add_columns("WN", "verdict", "hash", "errors", "warnings")
            yield table
            yield Static("", classes="conf", id="profile-text", markup=False)

    def fetch(self) -> ProfileCheck:
        return self.services.profiles()

    def action_edit(self) -> None:
        from siteadmin.tui.profile_form import ProfileForm

        host = next(iter(self._profiles), None) or next(iter(self.services.hosts()), None)

        def closed(saved: bool | None) -> None:
            if saved:
                self.reload()

        self.app.push_screen(ProfileForm(self.services, host), closed)

    @property
    def verdicts(self) -> dict[str, str]:
        """WN -> verdict shown (``ok``, ``warning``, ``error``)."""
        return {host: p.verdict.value for host, p in self._profiles.items()}

    def show(self, data: ProfileCheck) -> None:
        checked = data
        table = self.query_one(DataTable)
        table.clear()
        self._profiles = checked.by_host()
        for p in checked.hosts:
            digest = p.hash.rsplit(":", 1)[-1][:12] if p.hash else "-"
            table.add_row(*cells(p.host, p.verdict.value, digest, p.errors, p.warnings), key=p.host)
        bad = len(checked.failed)
        status = f"{len(checked.hosts)} profiles, {bad} with errors"
        self.set_status("; ".join([status, *checked.notes]), "error" if bad else "ok")
        if checked.hosts:
            self._show_host(checked.hosts[0].host)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_host(str(event.row_key.value))

    def _show_host(self, host: str) -> None:
        profile = self._profiles.get(host)
        if profile is None:
            return
        text = profile.error_text or (profile.rendered.masked_text if profile.rendered else "")
        findings = "\n".join(f"# {finding}" for finding in profile.findings)
        self.query_one("#profile-text", Static).update(printable_lines((findings + "\n\n" if findings else "") + text))
