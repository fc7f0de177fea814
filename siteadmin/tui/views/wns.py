"""The site's WNs and how they are reached."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin.inventory import WN, Inventory
from siteadmin.tui.views.base import View, cells


class WnsView(View):
    title = "Worker nodes"
    hint = "WNs of the site from [wns] in site.toml."

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("WN", "address", "ssh port", "groups")
        yield table

    def fetch(self) -> list[WN]:
        inventory = Inventory(self.site)
        return [inventory.wn(host) for host in inventory.select()]

    def show(self, data: Any) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for wn in data:
            table.add_row(*cells(wn.name, wn.address, wn.port, ",".join(wn.groups) or "-"), key=wn.name)
        self.set_status(f"{len(data)} WNs", "ok")
