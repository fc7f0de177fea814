"""``siteadmin switch CE... --to METHOD`` and ``siteadmin switch --verify CE``: a CE to torrent mode and back, gated end to end.

The work is ``siteadmin.switch``'s: this module shows the plan, asks on a terminal (``--yes``
skips the question; without a terminal it refuses), holds the site's run lock, prints each
step's result as it happens (progress lines on a terminal only) and maps the outcomes to the
exit code, the worst over the CEs. ``ce enable|disable|set`` stay as the low-level commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteadmin import switch
from siteadmin.directory import Directory, check_ce_name
from siteadmin.errors import ExitCode, SiteadminError, UsageError, printable
from siteadmin.errors import printable_lines as printable_text
from siteadmin.hostlist import fold
from siteadmin.inventory import Inventory
from siteadmin.rollout import describe, report_of

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    cmd = sub.add_parser(
        "switch",
        help="switch CEs to torrent installs and back, gated: preflight, profile rollout, LDAP, WN status; undone on failure",
        description=(
            "Going to Torrent: the preflight of the CE's WNs must pass, their profile is rolled out, installMethod is set "
            "by compare-and-set, then the WNs' aria2c is polled until it is reachable and configured. Going back: LDAP "
            "first, then with --restore-profile the profile the WNs had before. A failure undoes what the switch did."
        ),
        parents=[parent],
    )
    cmd.add_argument("ces", metavar="CE", nargs="+", help="CE names as in LDAP; each is switched on its own")
    cmd.add_argument("--to", metavar="METHOD", help="installMethod to switch to, exact spelling (e.g. Torrent, CVMFS)")
    cmd.add_argument("--verify", action="store_true", help="only confirm the CE reached the method (after an --ldif-request was applied)")
    cmd.add_argument("--dry-run", action="store_true", help="print the whole plan (checks, per-WN diff, LDIF); change nothing")
    cmd.add_argument("--yes", "-y", action="store_true", help="do not ask before switching (needed without a terminal)")
    cmd.add_argument("--strict", action="store_true", help="a preflight warning stops the switch too")
    cmd.add_argument("--ldif-request", metavar="FILE", type=Path,
                     help="no write access to LDAP: run the preflight and the rollout, write the LDIF change request to FILE, stop")
    cmd.add_argument("--restore-profile", action="store_true",
                     help="going back: also put back the profile the WNs had before the last switch to torrent")
    cmd.add_argument("--timeout", metavar="SECONDS", type=float, default=switch.DEFAULT_TIMEOUT,
                     help=f"seconds to wait for the WNs' aria2c after the switch (default {switch.DEFAULT_TIMEOUT:g})")
    cmd.set_defaults(handler=cmd_switch)


# ---------------------------------------------------------------- text


def plan_text(plan: switch.SwitchPlan, dry_run: bool) -> str:
    """The plan as the admin reads it before saying yes."""
    before = "|".join(plan.before) or "(none)"
    lines = [f"switch CE {plan.ce} ({plan.site}): installMethod {before} -> {plan.to}" + (" (dry run: nothing is changed)" if dry_run else "")]
    lines.append(f"WNs: {fold(list(plan.hosts))} ({len(plan.hosts)}), from {plan.hosts_from}")
    lines.append("steps:")
    lines += [f"  {n}. {s.name}: {s.title}" for n, s in enumerate(plan.steps, 1)]
    if plan.checks:
        lines.append(f"preflight checks: {', '.join(plan.checks)}" + (" (warnings stop it: --strict)" if plan.strict else ""))
    # WNs whose diffs differ only by their own name fold into one (200 WNs, one diff to read)
    groups: dict[str, list[tuple[str, str]]] = {}
    failures: dict[str, list[str]] = {}
    for run in plan.rollout:
        for result in run.results:
            report = report_of(result)
            if result.ok and report is not None:
                if report.diff:
                    groups.setdefault(report.diff.replace(result.host, "\0"), []).append((result.host, report.diff))
            else:
                failures.setdefault(describe(result), []).append(result.host)
    if plan.rollout:
        if groups:
            lines.append("per-WN diff:")
            for members in groups.values():
                hosts = [host for host, _diff in members]
                shown = f" (as for {hosts[0]}, each with its own name)" if len(hosts) > 1 else ""
                lines.append(f"=== {fold(hosts)}{shown}")
                lines.append(members[0][1].rstrip("\n"))
        else:
            lines.append("per-WN diff: none (every WN already has its profile)")
        lines += [f"will fail: {fold(hosts)}: {why}" for why, hosts in failures.items()]
    if plan.ldif:
        lines.append("LDIF:" if plan.request_file is None else f"LDIF (the request written to {plan.request_file}):")
        lines.append(plan.ldif.rstrip("\n"))
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)


def _step_text(ce: str, result: switch.StepResult) -> str:
    lines = [f"{ce}: {result.step}: {result.outcome}: {result.summary}"]
    lines += [f"    {line}" for line in result.details]
    return "\n".join(lines)


def _undo_text(ce: str, result: switch.UndoResult) -> str:
    lines = [f"{ce}: undo {result.step}: {result.outcome}: {result.summary}"]
    lines += [f"    {line}" for line in result.details]
    return "\n".join(lines)


def result_text(result: switch.SwitchResult) -> str:
    """The closing line of one CE's switch."""
    ce, to = result.plan.ce, result.plan.to
    if result.outcome == switch.SWITCHED:
        return f"{ce}: switched to {to}"
    if result.outcome == switch.REQUESTED:
        return f"{ce}: prepared for {to}; the LDIF change request is in {result.plan.request_file}, LDAP unchanged"
    if result.outcome == "unchanged":
        return f"{ce}: already {to}; nothing to do"
    failed = next((s for s in result.steps if s.outcome not in (switch.OK, switch.NOT_RUN)), None)
    why = f" at {failed.step}: {failed.summary}" if failed is not None else ""
    undone = [u.step for u in result.undone if u.outcome == switch.UNDONE]
    left = [u.step for u in result.undone if u.outcome != switch.UNDONE]
    tail = f"; undone: {', '.join(undone)}" if undone else "; nothing to undo" if not left else ""
    if left:
        tail += f"; NOT undone: {', '.join(left)} (see above)"
    return f"{ce}: NOT switched to {to} ({result.outcome}){why}{tail}"


# ---------------------------------------------------------------- the command


def _ask(ctx: Context, question: str) -> bool:
    ctx.err.write(f"{question} [y/N] ")
    ctx.err.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _terminal() -> bool:
    return sys.stdin.isatty()


def cmd_switch(ctx: Context, args: argparse.Namespace) -> int:
    for name in args.ces:
        check_ce_name(name)
    if not 0 < args.timeout <= 86400:
        raise UsageError(f"--timeout {args.timeout:g}: must be seconds greater than 0 and at most 86400")
    if args.verify:
        for flag, given in (("--dry-run", args.dry_run), ("--ldif-request", args.ldif_request is not None), ("--restore-profile", args.restore_profile),
                            ("--strict", args.strict)):
            if given:
                raise UsageError(f"switch --verify does not take {flag}", "switch --verify CE [--to METHOD] [--timeout SECONDS]")
        return _verify(ctx, args)
    if args.to is None:
        raise UsageError("switch needs --to METHOD", "e.g. `siteadmin switch CE1 --to Torrent`")
    if args.ldif_request is not None and len(args.ces) > 1:
        raise UsageError("--ldif-request takes one CE at a time", "run the switch once per CE with its own FILE")
    if not args.dry_run and not args.yes and not _terminal():
        raise UsageError("switch asks before it changes anything and there is no terminal to ask on", "pass --yes, or --dry-run to see the plan")
    if args.dry_run:
        return _switch_all(ctx, args)
    with ctx.site_lock():
        return _switch_all(ctx, args)


def _switch_all(ctx: Context, args: argparse.Namespace) -> int:
    site = ctx.site
    inventory = Inventory(site)
    status: int = ExitCode.OK
    out: list[dict[str, Any]] = []
    with Directory(site) as directory:
        for name in args.ces:
            try:
                code, data = _switch_one(ctx, args, directory, inventory, name)
            except SiteadminError as exc:
                if len(args.ces) == 1:
                    raise
                ctx.err.write(f"siteadmin: {exc.category}: {printable(exc.one_line())}\n")
                code, data = exc.exit_code, {"ce": name, "outcome": "error", "error": exc.one_line(), "category": exc.category}
            status = max(status, code)
            out.append(data)
    if ctx.json:
        ctx.emit(out)
    return int(status)


def _switch_one(ctx: Context, args: argparse.Namespace, directory: Directory, inventory: Inventory, name: str) -> tuple[int, dict[str, Any]]:
    def on_event(event: switch.SwitchEvent) -> None:
        if ctx.json:
            return
        if event.kind in ("step-progress", "plan-progress", "step-started", "undo-started"):
            if ctx.progress:
                ctx.note(f"{event.ce}: {event.step}: {event.message}")
            return
        if isinstance(event.result, switch.StepResult):
            text = _step_text(event.ce, event.result)
            ctx.emit(None, text, quiet_text=None if event.result.ok else text)
        elif isinstance(event.result, switch.UndoResult):
            text = _undo_text(event.ce, event.result)
            ctx.emit(None, text, quiet_text=text)

    plan = switch.plan(
        ctx.site, name, args.to, strict=args.strict, request_file=args.ldif_request, restore_profile=args.restore_profile,
        timeout=args.timeout, directory=directory, inventory=inventory, progress=on_event,
    )
    if not ctx.json:
        ctx.emit(None, plan_text(plan, args.dry_run))
    elif not args.dry_run and not args.yes:
        ctx.err.write(printable_text(plan_text(plan, args.dry_run)) + "\n")  # the question needs the plan beside it; JSON stays clean
    if args.dry_run:
        return ExitCode.OK, {"plan": plan.as_dict(), "outcome": "dry-run"}
    if not args.yes and not _ask(ctx, f"switch {printable(plan.ce)} to {printable(plan.to)}?"):
        ctx.emit(None, f"{plan.ce}: not switched; nothing changed")
        return ExitCode.FAILED, {"plan": plan.as_dict(), "outcome": "declined"}
    result = switch.run(ctx.site, plan, directory=directory, inventory=inventory, progress=on_event)
    text = result_text(result)
    if not ctx.json:
        ctx.emit(None, text, quiet_text=None if result.ok else text)
    if result.note and result.ok:
        ctx.info(result.note)
    return result.exit_code, {"plan": plan.as_dict(), **result.as_dict()}


def _verify(ctx: Context, args: argparse.Namespace) -> int:
    site = ctx.site
    status: int = ExitCode.OK
    out: list[dict[str, Any]] = []
    for name in args.ces:
        def on_event(event: switch.SwitchEvent) -> None:
            if not ctx.json and event.kind == "step-progress" and ctx.progress:
                ctx.note(f"{event.ce}: {event.step}: {event.message}")

        try:
            result = switch.verify(site, name, args.to, timeout=args.timeout, progress=on_event)
        except SiteadminError as exc:
            if len(args.ces) == 1:
                raise
            ctx.err.write(f"siteadmin: {exc.category}: {printable(exc.one_line())}\n")
            status = max(status, exc.exit_code)
            out.append({"ce": name, "ok": False, "error": exc.one_line(), "category": exc.category})
            continue
        status = max(status, ExitCode(result.exit_code))
        out.append(result.as_dict())
        if not ctx.json:
            now = "|".join(result.now) or "(none)"
            if result.now == (result.to,):
                line = f"{result.ce}: installMethod is {result.to}, as expected ({result.to_from})"
            else:
                line = f"{result.ce}: installMethod is {now}, not {result.to} ({result.to_from}); the change is not applied yet"
            lines = [line]
            if result.wait is not None:
                lines.append(_step_text(result.ce, result.wait))
            text = "\n".join(lines)
            ctx.emit(None, text, quiet_text=None if result.ok else text)
    if ctx.json:
        ctx.emit(out)
    return int(status)
