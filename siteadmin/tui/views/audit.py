"""The audit log: every change siteadmin made or attempted, newest first.

The log is streamed and only the last ``SHOWN`` records are kept; every cell goes through
``cells`` (values written out with ``printable``: a CE name cannot drive the terminal).
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import DataTable

from siteadmin.tui.services import AUDIT_SHOWN as SHOWN
from siteadmin.tui.services import AuditPage
from siteadmin.tui.views.base import View, cells

__all__ = ["SHOWN", "AuditView"]


def _cell(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "|".join(str(v) for v in value) or "(none)"
    return str(value)


class AuditView(View[AuditPage]):
    title = "Audit log"
    hint = "Every change and attempt, newest first."

    def compose_body(self) -> ComposeResult:
        table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns("when (UTC)", "who", "action", "CE", "before", "after", "outcome")
        yield table

    def fetch(self) -> AuditPage:
        return self.services.audit_page()

    def show(self, data: AuditPage) -> None:
        table = self.query_one(DataTable)
        table.clear()
        total, records = data.total, data.records
        for record in reversed(records):
            event = record.event
            if event is None:
                table.add_row(*cells("?", "?", "unreadable line", record.line, "", "", record.error or ""))
                continue
            when = str(event.get("when", ""))[:19].replace("T", " ")
            fields = ("user", "action", "ce", "before", "after", "outcome")
            table.add_row(*cells(when, *(_cell(event.get(name)) for name in fields)))
        self.set_status(f"{total} records in {self.site.audit.path}", "ok")
