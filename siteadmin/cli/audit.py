"""``siteadmin audit [--ce CE] [--last N]``: the audit log of changes, unreadable lines shown as such.

The log is streamed (``--last N`` keeps only N records in memory). Every value is shown through
``printable``: a CE name or error text holding terminal escapes is written out, never obeyed;
``--json`` keeps the exact values.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from siteadmin import audit
from siteadmin.errors import ExitCode, UsageError, printable

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser("audit", help="show the audit log of changes (who, when, what, before, after, outcome)", parents=[parent])
    cmd.add_argument("--ce", metavar="CE", help="only changes of this CE (case-insensitive); unreadable lines are always shown")
    cmd.add_argument("--last", metavar="N", type=int, help="only the last N lines")
    cmd.set_defaults(handler=cmd_audit)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "|".join(_value(v) for v in value)
    return printable(str(value))


def format_event(rec: audit.AuditRecord) -> str:
    """One line per audit record for the terminal, every value made printable."""
    if rec.event is None:
        return f"line {rec.line}: UNREADABLE ({rec.error}): {rec.raw[:120]!r}"
    e = rec.event
    who = _value(e.get("user", "?"))
    if e.get("sudo_user"):
        who += f" (sudo {_value(e['sudo_user'])})"
    if e.get("bind_dn"):
        who += f" as {_value(e['bind_dn'])}"
    target = _value(e.get("ce") or e.get("host") or e.get("target") or "")
    what = f"{_value(e.get('action', '?'))} {target}".strip()
    change = ""
    if "before" in e or "after" in e:  # a refused attempt never read the entry: its before is unknown
        change = f"{_value(e['before']) if 'before' in e else '?'} -> {_value(e.get('after'))}"
    outcome = _value(e.get("outcome", "?"))
    line = f"{_value(e.get('when', '?'))}  {who}  {what}  {change}  {outcome}"
    if e.get("error"):
        line += f": {_value(e['error'])}"
    return line


def _selected(records: Iterable[audit.AuditRecord], ce: str | None, last: int | None) -> list[audit.AuditRecord]:
    if ce is not None:
        wanted = ce.casefold()
        records = (r for r in records if r.event is None or str(r.event.get("ce", "")).casefold() == wanted)
    if last is not None:
        return list(collections.deque(records, maxlen=last))
    return list(records)


def cmd_audit(ctx: Context, args: argparse.Namespace) -> int:
    if args.last is not None and args.last < 1:
        raise UsageError(f"--last {args.last}: must be 1 or more")
    path = ctx.site.audit.path
    records = _selected(audit.iter_records(path), args.ce, args.last)
    data = [
        {"line": r.line, **r.event} if r.event is not None else {"line": r.line, "unreadable": r.error, "raw": r.raw}
        for r in records
    ]
    ctx.emit(data, lambda _d: "\n".join(format_event(r) for r in records) if records else f"no audit records in {path}")
    unreadable = sum(1 for r in records if r.event is None)
    if unreadable:
        ctx.note(f"audit: {unreadable} unreadable line(s) in {path}, shown as UNREADABLE; the others are intact")
        return ExitCode.FAILED
    return ExitCode.OK
