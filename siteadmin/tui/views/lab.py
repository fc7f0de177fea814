"""The lab site's health, when the console runs on a lab (``siteadmin lab console``)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin.lab import Lab, LabStatus
from siteadmin.tui.views.base import View, cells


class LabView(View[LabStatus]):
    title = "Lab"
    hint = "Every lab component checked for real (LDAPS bind, SSH, RPC through a tunnel, announce, scrape, HTTP). r re-checks."

    def __init__(self, lab: Lab, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lab = lab

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("component", "target", "state", "detail")
        yield table

    def fetch(self) -> LabStatus:
        return self.lab.status()

    def show(self, data: LabStatus) -> None:
        status = data
        table = self.query_one(DataTable)
        table.clear()
        for check in status.checks:
            table.add_row(*cells(check.component, check.target, "ok" if check.ok else "FAILED", check.detail))
        if status.healthy:
            self.set_status(f"healthy: {len(status.checks)} checks passed — {self.lab.dir}", "ok")
        else:
            self.set_status(f"UNHEALTHY: {len(status.failed())} of {len(status.checks)} checks failed", "error")


def lab_of(site_source: Any) -> Lab | None:
    """The lab a site config belongs to (its site.toml sits in a lab directory), else None."""
    if site_source is None:
        return None
    lab = Lab(site_source.parent)
    return lab if lab.state_path.is_file() and lab.site_path.resolve() == site_source.resolve() else None
