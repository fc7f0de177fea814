"""The site's WNs, how they are reached, and whether they are (c checks them over SSH)."""

from __future__ import annotations

import threading
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from siteadmin.inventory import WN, Inventory
from siteadmin.remote.fanout import HostResult, Progress
from siteadmin.remote.reach import reach_wns
from siteadmin.tui.views.base import View, cells

REACH_COLUMN = "reach"


class WnsView(View):
    title = "Worker nodes"
    hint = "WNs of the site from [wns] in site.toml. c: check every WN over SSH (host key verified)"
    BINDINGS = [Binding("c", "check", "Check over SSH")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cancel = threading.Event()
        self._results: dict[str, HostResult[str]] = {}

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_column("WN", key="wn")
        table.add_column("address", key="address")
        table.add_column("ssh port", key="port")
        table.add_column("groups", key="groups")
        table.add_column(REACH_COLUMN, key=REACH_COLUMN)
        yield table

    def fetch(self) -> list[WN]:
        inventory = Inventory(self.site)
        return [inventory.wn(host) for host in inventory.select()]

    def show(self, data: Any) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for wn in data:
            table.add_row(*cells(wn.name, wn.address, wn.port, ",".join(wn.groups) or "-", "-"), key=wn.name)
        self.set_status(f"{len(data)} WNs", "ok")

    def action_check(self) -> None:
        table = self.query_one(DataTable)
        hosts = [str(row.value) for row in table.rows if row.value is not None]
        if not hosts:
            self.app.notify("no WNs to check", severity="warning")
            return
        self._results = {}
        for host in hosts:
            table.update_cell(host, REACH_COLUMN, cells("…")[0])
        self.set_status(f"checking {len(hosts)} WNs over SSH…")
        self._cancel = threading.Event()
        self.check(hosts, self._cancel)

    @work(thread=True, exclusive=True, exit_on_error=False, group="wn-check")
    def check(self, hosts: list[str], cancel: threading.Event) -> None:
        def progress(step: Progress[str]) -> None:
            self.app.call_from_thread(self._checked, step)

        results = reach_wns(self.site, hosts, cancel=cancel, progress=progress)
        self.app.call_from_thread(self._all_checked, results)

    def _checked(self, step: Progress[str]) -> None:
        result = step.result
        self._results[result.host] = result
        text = "ok" if result.ok else f"{result.outcome}: {result.error or ''}".removesuffix(": ")
        self.query_one(DataTable).update_cell(result.host, REACH_COLUMN, cells(text)[0], update_width=True)
        if step.done < step.total:
            self.set_status(f"checking {step.total} WNs over SSH… {step.done} done")

    def _all_checked(self, results: list[HostResult[str]]) -> None:
        failed = [r for r in results if not r.ok]
        if failed:
            self.set_status(f"{len(results) - len(failed)} of {len(results)} WNs reached; {len(failed)} failed", "error")
        else:
            self.set_status(f"all {len(results)} WNs reached over SSH", "ok")

    def on_unmount(self) -> None:
        self._cancel.set()  # a check still running stops and aborts its connections
