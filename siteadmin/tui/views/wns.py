"""The site's WNs, how they are reached, and whether they are (c checks them over SSH).

Pressing ``c`` again while a check runs cancels the earlier check; only the newest fills the rows.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from siteadmin.inventory import WN
from siteadmin.remote.fanout import HostResult, Progress
from siteadmin.tui.views.base import Job, View, cells

REACH_COLUMN = "reach"


class WnsView(View[list[WN]]):
    title = "Worker nodes"
    hint = "WNs of the site from [wns] in site.toml. c: check every WN over SSH (host key verified)"
    BINDINGS = [Binding("c", "check", "Check over SSH")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
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
        return self.services.wns()

    def show(self, data: list[WN]) -> None:
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
        self.set_status(f"checking {len(hosts)} WNs over SSH…", "busy")
        job = self.start_job("check")

        def progress(step: Progress[str]) -> None:
            self.app.call_from_thread(self._checked, job, step)

        self.call("wn-check", lambda: self.services.reach(hosts, job.cancel, progress), lambda results: self._all_checked(job, results))

    def _checked(self, job: Job, step: Progress[str]) -> None:
        if not self.current("check", job):
            return  # a newer check owns the rows
        result = step.result
        self._results[result.host] = result
        text = "ok" if result.ok else f"{result.outcome}: {result.error or ''}".removesuffix(": ")
        self.query_one(DataTable).update_cell(result.host, REACH_COLUMN, cells(text)[0], update_width=True)
        if step.done < step.total:
            self.set_status(f"checking {step.total} WNs over SSH… {step.done} done")

    def _all_checked(self, job: Job, results: list[HostResult[str]]) -> None:
        if not self.current("check", job):
            return
        failed = [r for r in results if not r.ok]
        if failed:
            self.set_status(f"{len(results) - len(failed)} of {len(results)} WNs reached; {len(failed)} failed", "error")
        else:
            self.set_status(f"all {len(results)} WNs reached over SSH", "ok")
