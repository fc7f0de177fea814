"""``siteadmin apply [PATTERN]`` and ``siteadmin rollback [PATTERN]``: aria2c profiles to the WNs, and back.

Thin over ``siteadmin.rollout``: host selection and ``--parallel`` as ``reach`` reads them,
``--dry-run`` as ``ce`` uses it. A progress line on stderr when it is a terminal (WNs done/total,
failures so far, rate), none when piped or with ``--quiet``; then the WNs folded by outcome on stdout
(``wn[001-040].lab unchanged``), failures on stderr too (``--quiet``: only those). A run that
writes holds the site-wide run lock. Exit 0 when every WN succeeded, 1 otherwise, 4 when another
run holds the lock.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Any, TextIO

from siteadmin import rollout
from siteadmin.cli import changing
from siteadmin.errors import ExitCode, UsageError
from siteadmin.inventory import Inventory, fold
from siteadmin.remote import fold_failures
from siteadmin.remote.fanout import Batches, Progress
from siteadmin.rollout.service import HostReport, RolloutRun, generation_dict
from siteadmin.site import batch_percent

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("pattern", nargs="?", help="hostlist like wn[001-010].example.org, @group, a!b (default: all WNs)")
    common.add_argument("--parallel", type=int, metavar="N", help="WNs worked on at once (default: ssh.parallelism)")
    common.add_argument("--accept-new", action="store_true", help="accept and record the key of a WN known_hosts has no key for (never a changed one)")

    changing = argparse.ArgumentParser(add_help=False)
    changing.add_argument("--batch", metavar="N|P%", help="WNs per batch, or a share like 20%% (default: rollout.batch_size)")
    changing.add_argument("--max-fail", metavar="P%", help="stop before the next batch when more of a batch fails (default: rollout.max_fail_percent)")
    changing.add_argument("--wait-lock", type=float, metavar="SECONDS", default=0.0, help="wait this long for a WN locked by another run (default: 0)")
    changing.add_argument("--restart-now", action="store_true", help="restart aria2c without waiting for its downloads in flight")

    apply = sub.add_parser(
        "apply", help="roll each WN's aria2c profile out to it: plan, back up, validate, swap, reload", parents=[parent, common, changing]
    )
    apply.add_argument("--dry-run", action="store_true", help="print the plan; write nothing anywhere (no lock, no backup)")
    apply.add_argument("--diff", action="store_true", help="print each changed WN's diff (secrets masked)")
    apply.set_defaults(handler=cmd_apply)

    back = sub.add_parser("rollback", help="put a backup generation of each WN's aria2c config back and reload it", parents=[parent, common, changing])
    back.add_argument("--list", action="store_true", help="list each WN's backup generations; change nothing")
    back.add_argument("--to", metavar="ID", help="the generation to restore, as --list shows it (default: the newest)")
    back.add_argument("--dry-run", action="store_true", help="say what would be restored; write nothing")
    back.add_argument("--diff", action="store_true", help="print each WN's diff (secrets masked)")
    back.set_defaults(handler=cmd_rollback)


# ---------------------------------------------------------------- options


def parse_batch(text: str | None, default: int | str) -> int | str:
    """``--batch``: a whole number of WNs or a percentage like ``20%``.

    Raises:
        UsageError: naming the value and what is allowed.
    """
    if text is None:
        return default
    if text.endswith("%"):
        if batch_percent(text) is None:
            raise UsageError(f"--batch {text}: must be a percentage above 0 and at most 100, like 20%")
        return text
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--batch {text}: must be a number of WNs (1 or more) or a percentage like 20%")
    return int(text)


def parse_percent(text: str | None, default: float, flag: str = "--max-fail") -> float:
    """``--max-fail``: a percentage 0-100, with or without ``%``.

    Raises:
        UsageError: naming the value and what is allowed.
    """
    if text is None:
        return default
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise UsageError(f"{flag} {text}: must be a percentage from 0 to 100, like 20%")
    return value


def _hosts(ctx: Context, args: argparse.Namespace) -> tuple[Inventory, list[str], int | None]:
    inventory = Inventory(ctx.site)
    hosts = inventory.select(args.pattern)
    if args.parallel is not None and args.parallel < 1:
        raise UsageError(f"--parallel {args.parallel}: must be 1 or more")
    return inventory, hosts, args.parallel


def _batches(ctx: Context, args: argparse.Namespace) -> Batches:
    if args.wait_lock is not None and not (math.isfinite(args.wait_lock) and args.wait_lock >= 0):
        raise UsageError(f"--wait-lock {args.wait_lock:g}: must be a number of seconds, 0 or more")
    site = ctx.site
    return Batches(parse_batch(args.batch, site.rollout.batch_size), parse_percent(args.max_fail, site.rollout.max_fail_percent))


class ProgressLine:
    """``12/40 WNs, 1 failed, 8.3 WNs/s`` rewritten in place on a terminal; nothing when not a terminal."""

    def __init__(self, stream: TextIO, on: bool | None = None) -> None:
        self.stream = stream
        self.on = bool(getattr(stream, "isatty", lambda: False)()) if on is None else on
        self.start = time.monotonic()
        self.failed = 0
        self.shown = False

    def __call__(self, step: Progress[HostReport]) -> None:
        if not step.result.ok:
            self.failed += 1
        if not self.on:
            return
        rate = step.done / max(time.monotonic() - self.start, 1e-6)
        batch = f", batch {step.batch}/{step.batches}" if step.batches > 1 else ""
        self.stream.write(f"\r\x1b[K{step.done}/{step.total} WNs, {self.failed} failed, {rate:.1f} WNs/s{batch}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# ---------------------------------------------------------------- output


def run_dict(run: RolloutRun) -> dict[str, Any]:
    """The run as ``--json`` prints it: secrets masked, every WN's own result."""
    hosts = []
    for result in run.results:
        report = rollout.report_of(result)
        hosts.append(
            {
                "host": result.host,
                "ok": result.ok,
                "outcome": report.outcome if result.ok and report is not None else result.outcome,
                "label": rollout.describe(result),
                "category": result.category or None,
                "error": result.error,
                "elapsed": round(result.elapsed, 3),
                "report": report.as_dict() if report is not None else None,
            }
        )
    return {
        "action": run.action,
        "run": run.run_id,
        "dry_run": run.dry_run,
        "count": len(run.results),
        "ok": len(run.results) - len(run.failed),
        "failed": len(run.failed),
        "elapsed": round(run.elapsed, 3),
        "summary": [{"hosts": folded, "outcome": label} for folded, label in run.summary()],
        "hosts": hosts,
    }


def _change_lines(report: HostReport) -> list[str]:
    lines = []
    for change in report.changes:
        shown = change.masked()
        before = "(unset)" if shown["before"] is None else shown["before"]
        after = "(default)" if shown["after"] is None else shown["after"]
        lines.append(f"  {change.name}: {before} -> {after} ({change.applies})")
    return lines


def run_text(run: RolloutRun, diff: bool) -> str:
    """The plan or result in words: each changed WN's options (and diff), then the WNs folded by outcome."""
    lines: list[str] = []
    for report in (rollout.report_of(r) for r in run.results):
        if report is None or report.outcome == rollout.UNCHANGED:
            continue
        verb = "would change" if run.dry_run else "changed"
        lines.append(f"{report.host}: {report.path} {verb if report.outcome == rollout.CHANGED else 'new'} (reload: {report.reload})")
        lines += _change_lines(report)
        if diff and report.diff:
            lines += report.diff.rstrip("\n").split("\n")
    if lines:
        lines.append("")
    lines += [f"{hosts} {label}" for hosts, label in run.summary()]
    return "\n".join(lines)


def _finish(ctx: Context, run: RolloutRun, progress: ProgressLine, diff: bool) -> int:
    progress.clear()
    ctx.emit(run_dict(run), lambda _d: run_text(run, diff))
    for category, line in fold_failures(run.results):
        ctx.note(f"{category}: {line}")
    failed = run.failed
    what = "planned" if run.dry_run else {"apply": "applied", "rollback": "rolled back", "list": "listed"}.get(run.action, run.action)
    if failed:
        ctx.note(f"{len(failed)} of {len(run.results)} WNs failed ({fold([r.host for r in failed])}) in {run.elapsed:.1f} s")
        return ExitCode.FAILED
    ctx.info(f"{len(run.results)} WNs {what} in {run.elapsed:.1f} s" + (" (dry run: nothing written)" if run.dry_run else ""))
    return ExitCode.OK


# ---------------------------------------------------------------- handlers


@changing(lambda args: not args.dry_run)
def cmd_apply(ctx: Context, args: argparse.Namespace) -> int:
    inventory, hosts, parallel = _hosts(ctx, args)
    batches = _batches(ctx, args)
    if not hosts:
        ctx.info("no WNs selected")
        return ExitCode.OK
    progress = ProgressLine(ctx.err, on=ctx.progress)
    try:
        run = rollout.apply(
            ctx.site, hosts, dry_run=args.dry_run, wait_lock=args.wait_lock, restart_now=args.restart_now,
            batches=batches, parallelism=parallel, accept_new=args.accept_new, inventory=inventory, progress=progress,
        )
    finally:
        progress.clear()
    return _finish(ctx, run, progress, args.diff)


def _generations_text(run: RolloutRun) -> str:
    lines = []
    for result in run.results:
        report = result.value
        if report is None:
            continue
        if not report.generations:
            lines.append(f"{report.host}: {report.path}: no backups")
            continue
        lines.append(f"{report.host}: {report.path}")
        for generation in report.generations:
            shown = generation_dict(generation)
            owner = f"{generation.uid}:{generation.gid}" if generation.uid is not None else "?"
            lines.append(f"  {shown['id']}  {shown['size']:>7} B  mode {shown['mode']}  owner {owner}")
    return "\n".join(lines)


@changing(lambda args: not (args.list or args.dry_run))
def cmd_rollback(ctx: Context, args: argparse.Namespace) -> int:
    inventory, hosts, parallel = _hosts(ctx, args)
    if args.list and (args.to or args.dry_run):
        raise UsageError("--list changes nothing: it does not go with --to or --dry-run")
    batches = _batches(ctx, args)
    if not hosts:
        ctx.info("no WNs selected")
        return ExitCode.OK
    progress = ProgressLine(ctx.err, on=ctx.progress)
    try:
        if args.list:
            run = rollout.list_generations(ctx.site, hosts, parallelism=parallel, accept_new=args.accept_new, inventory=inventory, progress=progress)
        else:
            run = rollout.rollback(
                ctx.site, hosts, to=args.to, dry_run=args.dry_run, wait_lock=args.wait_lock, restart_now=args.restart_now,
                batches=batches, parallelism=parallel, accept_new=args.accept_new, inventory=inventory, progress=progress,
            )
    finally:
        progress.clear()
    if args.list:
        progress.clear()
        ctx.emit(run_dict(run), lambda _d: _generations_text(run))
        for category, line in fold_failures(run.results):
            ctx.note(f"{category}: {line}")
        return ExitCode.FAILED if run.failed else ExitCode.OK
    return _finish(ctx, run, progress, args.diff)
