"""``siteadmin status [PATTERN]``: the site's swarm, live — per WN, per package, and how much came from the site itself.

Thin over ``siteadmin.swarm``: host selection and ``--parallel`` as ``reach`` reads them. One
poll by default, printed as a WN table, a package view and the problems; ``--watch [SECONDS]``
re-polls in place (the next poll starts only after the last one is shown, sessions and tunnels
kept); ``--json`` the whole report; ``--nagios`` one status line with perfdata and the Nagios
exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); ``--prometheus FILE`` writes the textfile
collector file too. Without ``--nagios``, exit 0 when no problem is flagged, 1 otherwise;
``--quiet`` prints the problems alone. Reading takes no lock (it is what you watch during an apply).

``status --accounting on|off [PATTERN]`` installs or removes the byte-accounting rule on WNs: it
says what it will do, asks on a terminal (``--yes`` answers for a script; without a terminal and
without ``--yes`` it refuses), and takes the site-wide run lock (exit 4 while another run holds
it) and each WN's lock; the change is audited.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from siteadmin.errors import ExitCode, SiteadminError, UsageError, printable
from siteadmin.inventory import Inventory, fold
from siteadmin.remote import fold_failures, summarise
from siteadmin.swarm import NagiosState, SwarmMonitor, SwarmReport, describe, nagios, set_accounting, write_prometheus
from siteadmin.swarm.model import wn_as_dict

if TYPE_CHECKING:
    from siteadmin.cli import Context

CLEAR = "\x1b[H\x1b[2J"


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status", help="the site's swarm, live: each WN's aria2c, each package, the share of bytes from site WNs, problems",
        parents=[parent],
    )
    status.add_argument("pattern", nargs="?", help="hostlist like wn[001-010].example.org, @group, a!b (default: all WNs)")
    status.add_argument("--parallel", type=int, metavar="N", help="WNs polled at once (default: ssh.parallelism)")
    status.add_argument(
        "--watch", nargs="?", type=float, const=0.0, default=None, metavar="SECONDS",
        help="poll again every SECONDS (default: status.interval), in place; Ctrl-C ends",
    )
    status.add_argument("--package", metavar="NAME", help="show only this package (its WNs, share and problems)")
    status.add_argument("--nagios", action="store_true", help="print one Nagios status line with perfdata; exit 0/1/2/3")
    status.add_argument("--prometheus", metavar="FILE", help="also write the report for node_exporter's textfile collector (atomically)")
    status.add_argument("--accounting", choices=("on", "off"), help="install or remove the per-source byte counters on the WNs (a change: asks first)")
    status.add_argument("--yes", action="store_true", help="with --accounting: do it without asking")
    status.add_argument("--wait-lock", type=float, metavar="SECONDS", default=0.0, help="with --accounting: wait this long for a locked WN")
    status.set_defaults(handler=cmd_status)


# ---------------------------------------------------------------- text


def _rate(n: int) -> str:
    value = float(n)
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if value < 1000 or unit == "GB/s":
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB/s"  # pragma: no cover


def report_text(report: SwarmReport, package: str | None = None) -> str:
    """The report as the admin reads it: WNs, packages, problems (see docs/status.md)."""
    lines = []
    wns = report.wns
    if package is not None:
        wns = tuple(w for w in wns if not w.reachable or any(t.package == package for t in w.torrents))
    header = f"{'WN':<24} {'aria2c':<8} {'act':>4} {'wait':>4} {'seed':>4} {'stop':>4} {'down':>10} {'up':>10}  {'from site':<16} problems"
    lines.append(header)
    problems_by_host: dict[str, list[str]] = {}
    for problem in report.problems:
        if package is None or problem.package in (None, package):
            problems_by_host.setdefault(problem.host, []).append(problem.code)
    for w in wns:
        flags = ", ".join(problems_by_host.get(w.host, [])) or "-"
        if not w.reachable:
            lines.append(f"{w.host:<24} {'-':<8} {'':>4} {'':>4} {'':>4} {'':>4} {'':>10} {'':>10}  {'':<16} {flags} ({w.reason})")
            continue
        share = _wn_share_label(w)
        lines.append(
            f"{w.host:<24} {w.version or '?':<8} {w.active:>4} {w.waiting:>4} {w.seeding:>4} {w.stopped:>4} "
            f"{_rate(w.download_speed):>10} {_rate(w.upload_speed):>10}  {share:<16} {flags}"
        )
    lines.append("")
    packages = [view for view in report.packages if package is None or view.name == package]
    if package is not None and not packages:
        lines.append(f"package {package}: on no selected WN")
    for view in packages:
        lines.append(f"package {view.name}: from site WNs {view.share.label}")
        for label, hosts in (("complete", view.complete), ("seeding", view.seeding), ("downloading", view.downloading),
                             ("stuck", view.stuck), ("over HTTP", view.http)):
            if hosts:
                lines.append(f"  {label:<12} {len(hosts):>4}  {fold(hosts)}")
    if packages:
        lines.append("")
    shown = [p for p in report.problems if package is None or p.package in (None, package)]
    for p in shown:
        lines.append(f"{p.severity}: {p.host}: {p.code}: {p.message}")
    if shown:
        lines.append("")
    read = len(report.reachable)
    lines.append(
        f"{read}/{len(report.wns)} WNs read in {report.elapsed:.2f} s; from site WNs {report.share.label}; "
        f"{len({p.host for p in report.problems})} WN(s) with problems"
    )
    return "\n".join(lines)


def _wn_share_label(w: Any) -> str:
    if w.counters is None:
        return "-"
    total = w.counters.site + w.counters.central
    if total == 0:
        return "0 B (exact)"
    return f"{w.counters.site * 100 / total:.0f}% (exact)"


def report_json(report: SwarmReport, package: str | None = None) -> dict[str, Any]:
    data = report.as_dict()
    if package is not None:
        data["packages"] = [p for p in data["packages"] if p["name"] == package]
        data["problems"] = [p for p in data["problems"] if p["package"] in (None, package)]
        data["wns"] = [wn_as_dict(w) for w in report.wns if not w.reachable or any(t.package == package for t in w.torrents)]
    return data


# ---------------------------------------------------------------- handler


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    if not args.nagios:
        return _status(ctx, args)
    if args.accounting is not None or args.watch is not None or ctx.json:
        raise UsageError("--nagios prints one line: it takes no --accounting, --watch or --json")
    # Nagios: one line on stdout whatever happens, and Nagios's exit codes (as check --nagios)
    try:
        return _status(ctx, args)
    except (KeyboardInterrupt, UsageError):
        raise
    except SiteadminError as exc:
        ctx.out.write(f"SWARM UNKNOWN - {printable(exc.one_line())}\n")
        return int(NagiosState.UNKNOWN)


def _status(ctx: Context, args: argparse.Namespace) -> int:
    site = ctx.site
    inventory = Inventory(site)
    hosts = inventory.select(args.pattern)
    parallel = args.parallel if args.parallel is not None else site.ssh.parallelism
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: must be 1 or more")
    if args.accounting is not None:
        if args.watch is not None or args.nagios or args.prometheus or args.package:
            raise UsageError("--accounting changes the WNs: it takes no --watch, --nagios, --prometheus or --package")
        return _accounting(ctx, args, hosts, inventory, parallel)
    if args.yes:
        raise UsageError("--yes: only with --accounting on|off")
    interval = None
    if args.watch is not None:
        interval = args.watch or site.status.interval
        if not (math.isfinite(interval) and interval > 0):
            raise UsageError(f"--watch {args.watch:g}: must be a number of seconds greater than 0, like 10")
    prom = Path(args.prometheus).expanduser() if args.prometheus else None
    if prom is not None and not prom.parent.is_dir():
        raise UsageError(f"--prometheus {args.prometheus}: {prom.parent} is not a folder")
    if not hosts:
        if args.nagios:
            ctx.out.write("SWARM UNKNOWN - no WNs selected\n")
            return int(NagiosState.UNKNOWN)
        ctx.info("no WNs selected")
        return ExitCode.OK

    with SwarmMonitor(site, inventory, parallelism=parallel) as monitor:
        if interval is None:
            report = monitor.poll(hosts)
            return _show(ctx, args, site, report, prom)
        return _watch(ctx, args, site, monitor, hosts, interval, prom)


def _show(ctx: Context, args: argparse.Namespace, site: Any, report: SwarmReport, prom: Path | None) -> int:
    if prom is not None:
        write_prometheus(prom, report)
    if args.nagios:
        state, line = nagios(report, site.status)
        ctx.out.write(printable(line) + "\n")
        return int(state)
    relevant = [p for p in report.problems if args.package is None or p.package in (None, args.package)]
    # --quiet: the problems alone (a cron job mails only when there is one)
    ctx.emit(report_json(report, args.package), lambda _: report_text(report, args.package),
             quiet_text=lambda _: "\n".join(f"{p.severity}: {p.host}: {p.code}: {p.message}" for p in relevant))
    return ExitCode.FAILED if relevant else ExitCode.OK


def _watch(ctx: Context, args: argparse.Namespace, site: Any, monitor: SwarmMonitor, hosts: list[str], interval: float, prom: Path | None) -> int:
    tty = bool(getattr(ctx.out, "isatty", lambda: False)())
    while True:
        started = time.monotonic()
        report = monitor.poll(hosts)  # polls never overlap: the next starts after this one is shown
        if tty and not ctx.json:
            ctx.out.write(CLEAR)
        _show(ctx, args, site, report, prom)
        if not ctx.json:
            ctx.out.write(f"\n(every {interval:g} s; Ctrl-C ends)\n")
        ctx.out.flush()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


# ---------------------------------------------------------------- accounting


def _ask(question: str, err: TextIO) -> bool:
    err.write(question)
    err.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _accounting(ctx: Context, args: argparse.Namespace, hosts: list[str], inventory: Inventory, parallel: int) -> int:
    on = args.accounting == "on"
    if args.wait_lock is not None and not (math.isfinite(args.wait_lock) and args.wait_lock >= 0):
        raise UsageError(f"--wait-lock {args.wait_lock:g}: must be a number of seconds, 0 or more")
    if not hosts:
        ctx.note("no WNs selected")
        return ExitCode.OK
    site = ctx.site
    plan = describe(site, hosts, on, inventory)
    ctx.info(f"status --accounting {args.accounting}: {fold(hosts)}: {plan}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("--accounting changes the WNs and there is no terminal to ask on", "add --yes to do it without asking")
        if not _ask(f"siteadmin: turn accounting {args.accounting} on {len(hosts)} WN(s)? [y/N] ", ctx.err):
            ctx.note("nothing changed")
            return ExitCode.FAILED
    with ctx.site_lock():  # a change on the WNs: never beside a rollout or another change
        results = set_accounting(site, hosts, on, inventory=inventory, parallelism=parallel, wait_lock=args.wait_lock)
    failed = [r for r in results if not r.ok]
    data = {
        "accounting": args.accounting,
        "count": len(results),
        "ok": len(results) - len(failed),
        "failed": len(failed),
        "summary": [{"hosts": folded, "outcome": label} for folded, label in summarise(results)],
        "hosts": [{"host": r.host, "ok": r.ok, "outcome": r.outcome if not r.ok else f"accounting {r.value}", "error": r.error} for r in results],
    }
    ctx.emit(data, lambda d: "\n".join(
        f"{row['hosts']}: {'accounting ' + args.accounting if row['outcome'] == 'ok' else row['outcome']}" for row in d["summary"]
    ))
    for category, line in fold_failures(results):
        ctx.note(f"{category}: {line}")
    return ExitCode.FAILED if failed else ExitCode.OK
