"""``siteadmin reach [PATTERN]``: can the VoBox log in to each WN? Folded answer on stdout and stderr.

Connects to every selected WN exactly as every other operation does (host keys verified, jump
host, keys), runs ``uname -n`` and folds the hosts by outcome. Exit 0 when all answered, 1 when
any did not; the failures are folded by outcome on stderr too, one line per outcome
(``wn[003,017].lab: connection refused by ...``), and ``--json`` keeps every host's own error.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Any

from siteadmin.errors import ExitCode, UsageError
from siteadmin.inventory import Inventory, fold
from siteadmin.remote import fold_failures, summarise
from siteadmin.remote.reach import reach_wns

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    reach = sub.add_parser("reach", help="check that every selected WN can be reached and logged in to over SSH", parents=[parent])
    reach.add_argument("pattern", nargs="?", help="hostlist like wn[001-010].example.org, @group, a!b (default: all WNs)")
    reach.add_argument("--parallel", type=int, metavar="N", help="WNs contacted at once (default: ssh.parallelism)")
    reach.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds the remote command may take (default: ssh.command_timeout)")
    reach.set_defaults(handler=cmd_reach)


def cmd_reach(ctx: Context, args: argparse.Namespace) -> int:
    site = ctx.site
    inventory = Inventory(site)
    hosts = inventory.select(args.pattern)
    if not hosts:
        ctx.info("no WNs selected")
        return ExitCode.OK
    parallel = args.parallel if args.parallel is not None else site.ssh.parallelism
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: must be 1 or more")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout {args.timeout:g}: must be a number of seconds greater than 0, like 30")
    start = time.monotonic()
    # Ctrl-C: the WN service drops hosts not yet started, closes its pool (aborting connections in
    # flight) and re-raises (exit 130)
    results = reach_wns(site, hosts, parallelism=parallel, timeout=args.timeout, inventory=inventory)
    took = time.monotonic() - start
    failed = [r for r in results if not r.ok]
    data = {
        "pattern": args.pattern or "all",
        "count": len(results),
        "ok": len(results) - len(failed),
        "failed": len(failed),
        "elapsed": round(took, 3),
        "summary": [{"hosts": folded, "outcome": label} for folded, label in summarise(results)],
        "hosts": [
            {
                "host": r.host,
                "ok": r.ok,
                "uname": r.value,
                "outcome": r.outcome,
                "category": r.category or None,
                "error": r.error,
                "elapsed": round(r.elapsed, 3),
            }
            for r in results
        ],
    }
    ctx.emit(data, lambda d: "\n".join(f"{row['hosts']}: {row['outcome']}" for row in d["summary"]))
    for category, line in fold_failures(results):
        ctx.note(f"{category}: {line}")
    if failed:
        ctx.note(f"{len(failed)} of {len(results)} WNs not reached ({fold([r.host for r in failed])}) in {took:.1f} s")
        return ExitCode.FAILED
    ctx.info(f"all {len(results)} WNs reached in {took:.1f} s")
    return ExitCode.OK
