"""The audit log: every change siteadmin made or attempted, newest first."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin import audit
from siteadmin.tui.views.base import View, cells

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
                table.add_row(*cells("?", "?", "unreadable line", record.line, "", "", record.error or ""))
                continue
            when = str(event.get("when", ""))[:19].replace("T", " ")
            fields = ("user", "action", "ce", "before", "after", "outcome")
            table.add_row(*cells(when, *(_cell(event.get(name)) for name in fields)))
        self.set_status(f"{len(records)} records in {self.site.audit.path}", "ok")
