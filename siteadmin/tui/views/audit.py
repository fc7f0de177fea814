"""The audit log: every change siteadmin made or attempted, newest first."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin import audit
from siteadmin.tui.views.base import View

SHOWN = 500


def _cell(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "|".join(str(v) for v in value) or "(none)"
    return str(value)


class AuditView(View):
    title = "Audit log"
    hint = "Every change and attempt, newest first."

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("when (UTC)", "who", "action", "CE", "before", "after", "outcome")
        yield table

    def fetch(self) -> list[audit.AuditRecord]:
        return audit.read(self.site.audit.path)

    def show(self, data: Any) -> None:
        table = self.query_one(DataTable)
        table.clear()
        records: list[audit.AuditRecord] = list(data)
        for record in reversed(records[-SHOWN:]):
            event = record.event
            if event is None:
                table.add_row("?", "?", "unreadable line", str(record.line), "", "", record.error or "")
                continue
            table.add_row(
                str(event.get("when", ""))[:19].replace("T", " "),
                _cell(event.get("user")),
                _cell(event.get("action")),
                _cell(event.get("ce")),
                _cell(event.get("before")),
                _cell(event.get("after")),
                _cell(event.get("outcome")),
            )
        self.set_status(f"{len(records)} records in {self.site.audit.path}", "ok")
