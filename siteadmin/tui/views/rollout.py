"""Rollout of the aria2c profile: plan (per-WN diff, live/restart marks), apply in batches with
per-WN progress and abort, roll back — the same ``siteadmin.rollout`` service as ``siteadmin apply``.

``p`` plans (writes nothing). ``a`` applies: a confirmation lists the WNs whose file changes,
how each is reloaded (live over RPC or a restart) and the batches, before any WN is touched.
``x`` aborts a run (WNs not started get ``cancelled``; a WN's file is old or new, never torn).
``b`` rolls every WN back to its newest backup, after a confirmation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Static

from siteadmin.errors import printable_lines
from siteadmin.inventory import fold
from siteadmin.remote.fanout import Progress
from siteadmin.rollout import HostReport, RolloutRun, describe, report_of
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.screens import ConfirmScreen
from siteadmin.tui.views.base import Job, View, cell

PENDING = "…"


def marks(report: HostReport) -> str:
    """``live``, ``restart`` or ``-``, as the plan shows each WN's reload."""
    if report.outcome == "unchanged":
        return "-"
    return "restart" if report.reload == "restart" else ("live" if report.reload == "rpc" else report.reload)


def option_lines(report: HostReport) -> list[str]:
    """One line per changed option with its mark: ``seed-time 10 -> 0  [live]``."""
    lines = []
    for change in report.changes:
        shown = change.masked()
        lines.append(f"{shown.get('option')}: {shown.get('before') or '(unset)'} -> {shown.get('after') or '(removed)'}  [{shown.get('applies', '')}]")
    return lines


class RolloutView(View[list[str]]):
    title = "Rollout"
    hint = "p: plan (nothing written)  a: apply in batches  x: abort  b: roll back. Enter on a WN shows its diff."
    BINDINGS = [
        Binding("p", "plan", "Plan"),
        Binding("a", "apply", "Apply"),
        Binding("x", "abort", "Abort"),
        Binding("b", "rollback", "Roll back"),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run: RolloutRun | None = None
        self.reports: dict[str, HostReport] = {}
        self.hosts: list[str] = []
        self.running: str | None = None

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="split"):
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, classes="hosts")
            table.add_column("WN", key="wn")
            table.add_column("plan", key="plan")
            table.add_column("reload", key="reload")
            table.add_column("result", key="result")
            yield table
            yield Static("", classes="conf", id="rollout-diff", markup=False)

    def fetch(self) -> list[str]:
        return self.services.hosts()

    def show(self, data: list[str]) -> None:
        self.hosts = data
        table = self.query_one(DataTable)
        table.clear()
        for host in data:
            table.add_row(cell(host), cell("-"), cell("-"), cell("-"), key=host)
        batches = self.services.batches()
        self.set_status(f"{len(data)} WNs ({fold(data) or 'none'}); batches of {batches.size}, "
                        f"abort above {batches.max_fail_percent:g}% failed. p plans.", "ok")

    # ------------------------------------------------ plan

    def action_plan(self) -> None:
        if not self._idle():
            return
        self._start("plan", "planning", lambda job, progress: self.services.rollout_plan(self.hosts, job.cancel, progress))

    def action_apply(self) -> None:
        if not self._idle():
            return
        if self.run is None or self.run.action != "plan":
            self.app.notify("plan first (p): the confirmation shows what the plan found", severity="warning")
            return
        changed = [r for r in self.run.reports if r.outcome != "unchanged"]
        failed = self.run.failed
        if not changed and not failed:
            self.set_status("the plan found nothing to change; nothing to apply", "ok")
            return
        lines = [f"{r.host}: {r.outcome}, {marks(r)}" for r in changed]
        lines += [f"{r.host}: {describe(r)} (in the plan)" for r in failed]
        restart = [r.host for r in changed if r.reload == "restart"]
        batches = self.services.batches()
        what = (f"Write the profile to {len(self.hosts)} WNs ({fold(self.hosts)}): {len(changed)} change"
                f"{', ' + str(len(restart)) + ' need a restart (' + fold(restart) + ')' if restart else ''}. "
                f"Batches of {batches.size}; the run stops when more than {batches.max_fail_percent:g}% of a batch fails.")
        diffs = "\n".join(r.diff for r in changed if r.diff)

        def answered(yes: bool | None) -> None:
            if yes:
                self._start("apply", "applying", lambda job, progress: self.services.rollout_apply(self.hosts, job.cancel, progress))
            else:
                self.set_status("apply cancelled: nothing written", "ok")

        self.app.push_screen(ConfirmScreen("Apply the profile?", what, "\n".join(lines) + "\n\n" + diffs), answered)

    def action_rollback(self) -> None:
        if not self._idle():
            return
        what = f"Put back the newest backup of the aria2c config on {len(self.hosts)} WNs ({fold(self.hosts)}), and reload it."

        def answered(yes: bool | None) -> None:
            if yes:
                self._start("rollback", "rolling back", lambda job, progress: self.services.rollback(self.hosts, job.cancel, progress))
            else:
                self.set_status("rollback cancelled: nothing written", "ok")

        self.app.push_screen(ConfirmScreen("Roll back?", what, "\n".join(self.hosts)), answered)

    def action_abort(self) -> None:
        if self.running is None:
            self.app.notify("nothing is running", severity="information")
            return
        self.stop_jobs()
        self.set_status(f"{self.running}: aborting — WNs not started are cancelled, those underway finish their step", "error")

    def _idle(self) -> bool:
        if self.running is not None:
            self.app.notify(f"a {self.running} is running: x aborts it", severity="warning")
            return False
        if not self.hosts:
            self.app.notify("no WNs", severity="warning")
            return False
        return True

    def _start(self, action: str, doing: str, call: Callable[[Job, Callable[[Progress[HostReport]], None]], RolloutRun]) -> None:
        job = self.start_job("run")
        self.running = action
        table = self.query_one(DataTable)
        for host in self.hosts:
            table.update_cell(host, "result", cell(PENDING))
            if action == "plan":
                table.update_cell(host, "plan", cell(PENDING))
                table.update_cell(host, "reload", cell(PENDING))
        self.set_status(f"{doing} {len(self.hosts)} WNs…", "busy")

        def progress(step: Progress[HostReport]) -> None:
            self.app.call_from_thread(self._step, job, action, step)

        self.call("rollout", lambda: call(job, progress), lambda run: self._finished(job, action, run))

    def _step(self, job: Job, action: str, step: Progress[HostReport]) -> None:
        if self._jobs.get("run") is not job:
            return
        result = step.result
        report = report_of(result)
        table = self.query_one(DataTable)
        if report is not None:
            self.reports[result.host] = report
        if action == "plan":
            if report is not None:
                table.update_cell(result.host, "plan", cell(report.outcome, "yellow" if report.outcome != "unchanged" else ""), update_width=True)
                table.update_cell(result.host, "reload", cell(marks(report), "red" if report.reload == "restart" else ""), update_width=True)
            table.update_cell(result.host, "result", cell("ok" if result.ok else describe(result), "" if result.ok else "red"), update_width=True)
        else:
            table.update_cell(result.host, "result", cell(describe(result), "green" if result.ok else "red"), update_width=True)
        batch = f", batch {step.batch} of {step.batches}" if step.batches > 1 else ""
        self.set_status(f"{action}: {step.done} of {step.total} WNs{batch}", "busy")
        if table.cursor_row == table.get_row_index(result.host):
            self._show_host(result.host)

    def _finished(self, job: Job, action: str, run: RolloutRun) -> None:
        if self._jobs.get("run") is not job:
            return
        self.running = None
        self.run = run
        for result in run.results:
            report = report_of(result)
            if report is not None:
                self.reports[result.host] = report
            if action != "plan":
                self.query_one(DataTable).update_cell(result.host, "result", cell(describe(result), "green" if result.ok else "red"), update_width=True)
        folded = "; ".join(f"{hosts}: {label}" for hosts, label in run.summary())
        state = "ok" if run.ok else "error"
        then = " a applies it." if action == "plan" and run.ok else ""
        self.set_status(f"{action} {'done' if run.ok else 'FAILED'} in {run.elapsed:.1f} s — {folded}.{then}", state)
        if action != "plan":
            self.post_message(SiteChanged("rollout"))
            self.run = None  # apply again only after a new plan
        table = self.query_one(DataTable)
        if table.row_count:
            row_key, _ = table.coordinate_to_cell_key(table.cursor_coordinate)
            if row_key.value is not None:
                self._show_host(str(row_key.value))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show_host(str(event.row_key.value))

    def _show_host(self, host: str) -> None:
        report = self.reports.get(host)
        text = f"{host}: not planned yet (p)"
        if report is not None:
            head = [f"{host}: {report.label}  ({report.path})", *option_lines(report)]
            if report.backup:
                head.append(f"backup: {report.backup}")
            text = "\n".join(head) + "\n\n" + (report.diff or "(no change)")
        self.query_one("#rollout-diff", Static).update(printable_lines(text))

    def failed(self, message: str) -> None:
        self.running = None
