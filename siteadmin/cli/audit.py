"""``siteadmin audit [--ce CE] [--last N]``: the audit log of changes, unreadable lines shown as such."""

from __future__ import annotations

import argparse
from typing import Any

from siteadmin import audit
from siteadmin.errors import ExitCode, UsageError

if False:  # typing only
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser("audit", help="show the audit log of changes (who, when, what, before, after, outcome)", parents=[parent])
    cmd.add_argument("--ce", metavar="CE", help="only changes of this CE (case-insensitive); unreadable lines are always shown")
    cmd.add_argument("--last", metavar="N", type=int, help="only the last N lines")
    cmd.set_defaults(handler=show_audit)


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return str(value)


def format_event(rec: audit.AuditRecord) -> str:
    """One line per audit record for the terminal."""
    if rec.event is None:
        return f"line {rec.line}: UNREADABLE ({rec.error}): {rec.raw[:120]!r}"
    e = rec.event
    who = str(e.get("user", "?"))
    if e.get("sudo_user"):
        who += f" (sudo {e['sudo_user']})"
    if e.get("bind_dn"):
        who += f" as {e['bind_dn']}"
    target = e.get("ce") or e.get("host") or e.get("target") or ""
    what = f"{e.get('action', '?')} {target}".strip()
    change = ""
    if "before" in e or "after" in e:  # a refused attempt never read the entry: its before is unknown
        change = f"{_value(e['before']) if 'before' in e else '?'} -> {_value(e.get('after'))}"
    outcome = str(e.get("outcome", "?"))
    line = f"{e.get('when', '?')}  {who}  {what}  {change}  {outcome}"
    if e.get("error"):
        line += f": {e['error']}"
    return line


def show_audit(ctx: Context, args: argparse.Namespace) -> int:
    if args.last is not None and args.last < 1:
        raise UsageError(f"--last {args.last}: must be 1 or more")
    path = ctx.site.audit.path
    records = audit.read(path)
    if args.ce is not None:
        wanted = args.ce.casefold()
        records = [r for r in records if r.event is None or str(r.event.get("ce", "")).casefold() == wanted]
    if args.last is not None:
        records = records[-args.last:]
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
