"""The firewall preflight (``siteadmin check``): run it, read the colour matrix, drill into a failure,
copy the rule that fixes it.

The matrix has one row per check (local, central, ports, multicast, inbound, exposure) with its
verdict in colour and the hosts it concerns folded (``wn[001-040]``); the findings below it
are the report's lines. Enter on a finding shows why it matters and the rule; ``y`` copies
the rule (terminal clipboard). The view opens on the last saved result; ``c`` runs the check.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import DataTable

from siteadmin.hostlist import parse_hostlist
from siteadmin.preflight import CHECKS, CheckReport, Finding
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.screens import DetailScreen
from siteadmin.tui.views.base import Job, View, cell

ERROR_STYLE, WARNING_STYLE, OK_STYLE, MUTED = "bold white on dark_red", "black on yellow", "black on green", "dim"


def report_from_saved(data: dict[str, Any]) -> CheckReport:
    """A saved result (``check-last.json``) as a report again, for showing."""
    findings = [
        Finding(str(f.get("check", "")), str(f.get("level", "")), str(f.get("text", "")), str(f.get("reason", "")), str(f.get("rule", "")))
        for f in data.get("findings") or [] if isinstance(f, dict)
    ]
    try:
        hosts = list(parse_hostlist(str(data.get("hosts") or ""))) if data.get("hosts") else []
    except ValueError:
        hosts = []
    report = CheckReport(checks=tuple(str(c) for c in data.get("checks") or ()), hosts=[str(h) for h in hosts])
    report.started = float(data.get("started") or 0.0)
    report.elapsed = float(data.get("elapsed") or 0.0)
    report.findings = findings
    report.unchecked = {str(k): str(v) for k, v in (data.get("unchecked") or {}).items()}
    report.pairs = int(data.get("pairs") or 0)
    report.all_pairs = int(data.get("all_pairs") or 0)
    report.ports_probed = int(data.get("ports_probed") or 0)
    report.ports_failed = int(data.get("ports_failed") or 0)
    report.notes = [str(n) for n in data.get("notes") or []]
    report.fatal = data.get("fatal") if isinstance(data.get("fatal"), str) else None
    return report


def matrix_rows(report: CheckReport) -> list[tuple[str, str, str, str]]:
    """(check, verdict, style, what) per check: ``ports``, ``FAIL``, red, ``wn[001-002] -> wn003 tcp 6881-6890 filtered``."""
    rows = []
    for check in CHECKS:
        if check not in report.checks:
            rows.append((check, "not run", MUTED, ""))
            continue
        errors = [f for f in report.findings if f.check == check and f.level == "error"]
        warnings = [f for f in report.findings if f.check == check and f.level == "warning"]
        if errors:
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            rows.append((check, f"FAIL {len(errors)}", ERROR_STYLE, errors[0].text + more))
        elif warnings:
            more = f" (+{len(warnings) - 1} more)" if len(warnings) > 1 else ""
            rows.append((check, f"WARN {len(warnings)}", WARNING_STYLE, warnings[0].text + more))
        else:
            rows.append((check, "pass", OK_STYLE, ""))
    return rows


class PreflightView(View[CheckReport | None]):
    title = "Preflight"
    hint = "c: run the firewall check on every WN. Enter on a finding: why, and the rule. y: copy its rule."
    BINDINGS = [
        Binding("c", "run", "Run check"),
        Binding("y", "copy_rule", "Copy rule"),
        Binding("enter", "drill", "Details", show=False),
    ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report: CheckReport | None = None
        self.findings: list[Finding] = []

    def compose_body(self) -> ComposeResult:
        matrix: DataTable[str] = DataTable(cursor_type="row", id="preflight-matrix", classes="matrix")
        matrix.add_columns("check", "verdict", "what (hosts folded)")
        yield matrix
        findings: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True, id="preflight-findings")
        findings.add_columns("level", "check", "finding")
        yield findings

    def focus_target(self) -> Widget:
        return self.query_one("#preflight-findings", DataTable)

    def fetch(self) -> CheckReport | None:
        data = self.services.last_saved_check()
        return report_from_saved(data) if data is not None else None

    def show(self, data: CheckReport | None) -> None:
        if data is None:
            self._draw(CheckReport(checks=(), hosts=[]))
            self.set_status("no saved result on this VoBox; c runs the check", "ok")
            return
        self._draw(data)
        self._summary(data, "last saved result: ")

    def _summary(self, report: CheckReport, prefix: str = "") -> None:
        if report.fatal:
            self.set_status(f"{prefix}could not run: {report.fatal}", "error")
            return
        verdict = "all checks passed" if report.ok else f"{len(report.errors)} errors, {len(report.unchecked)} WNs not checked"
        self.set_status(f"{prefix}{verdict}; {len(report.warnings)} warnings; {len(report.hosts) or '?'} WNs in {report.elapsed:.1f} s",
                        "ok" if report.ok else "error")

    def _draw(self, report: CheckReport) -> None:
        self.report = report
        matrix = self.query_one("#preflight-matrix", DataTable)
        matrix.clear()
        for check, verdict, style, what in matrix_rows(report):
            matrix.add_row(cell(check), cell(f" {verdict} ", style), cell(what), key=check)
        table = self.query_one("#preflight-findings", DataTable)
        table.clear()
        self.findings = []
        for host, why in sorted(report.unchecked.items()):
            self.findings.append(Finding("ssh", "error", f"{host}: not checked: {why}"))
        self.findings += sorted(report.findings, key=lambda f: (f.level != "error", CHECKS.index(f.check) if f.check in CHECKS else 99))
        for i, finding in enumerate(self.findings):
            style = "red" if finding.level == "error" else "yellow"
            table.add_row(cell(finding.level, style), cell(finding.check), cell(finding.text), key=str(i))

    def action_run(self) -> None:
        hosts = self.services.hosts()
        if not hosts:
            self.app.notify("no WNs to check", severity="warning")
            return
        job = self.start_job("check")
        self.set_status(f"checking {len(hosts)} WNs…", "busy")

        def progress(line: str) -> None:
            self.app.call_from_thread(self._progress, job, line)

        self.call("preflight", lambda: self.services.preflight(hosts, job.cancel, progress), lambda report: self._done(job, report))

    def _progress(self, job: Job, line: str) -> None:
        if self.current("check", job):
            self.set_status(f"checking: {line}", "busy")

    def _done(self, job: Job, report: CheckReport) -> None:
        if not self.current("check", job):
            return
        self._draw(report)
        self._summary(report)
        self.post_message(SiteChanged("check"))

    def selected(self) -> Finding | None:
        table = self.query_one("#preflight-findings", DataTable)
        if not self.findings or table.row_count == 0:
            return None
        index = table.cursor_row
        return self.findings[index] if 0 <= index < len(self.findings) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "preflight-findings":
            self.action_drill()

    def action_drill(self) -> None:
        finding = self.selected()
        if finding is None:
            return
        body = f"{finding.level}: {finding.check}: {finding.text}\n\nwhy: {finding.reason or '-'}\n\nfix: {finding.rule or '(no rule applies)'}\n"
        self.app.push_screen(DetailScreen(f"Preflight: {finding.check}", body))

    def action_copy_rule(self) -> None:
        finding = self.selected()
        if finding is None or not finding.rule:
            self.app.notify("this finding has no rule to copy", severity="warning")
            return
        self.app.copy_to_clipboard(finding.rule)
        self.app.notify(f"copied: {finding.rule}", markup=False)

