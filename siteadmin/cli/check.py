"""``siteadmin check [PATTERN]``: the firewall preflight for torrent mode; ``check --rules``: the rules to give the network team.

Host selection and ``--parallel`` read as ``reach`` reads them. The report goes to stdout (text,
``--json``, or one Nagios status line with ``--nagios``), progress to stderr, and the last
result to siteadmin's state directory. Progress only on a terminal; ``--quiet``: only the
failures. The probes run holding the site-wide run lock (never beside a rollout or another
check). Exit status: 0 all checks passed (warnings allowed), 1 otherwise, 2 usage, 4 busy (the
site lock is held); with ``--nagios`` Nagios's codes instead: 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (a held lock too).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from siteadmin.errors import ExitCode, SiteadminError, UsageError, printable
from siteadmin.inventory import Inventory
from siteadmin.preflight import CHECKS, FORMATS, CheckReport, firewall_rules, run_check, save_last
from siteadmin.preflight.report import NAGIOS_UNKNOWN

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    check = sub.add_parser(
        "check",
        help="firewall pre-flight for torrent mode: central services, WN<->WN ports, LPD multicast, inbound, exposure",
        parents=[parent],
    )
    check.add_argument("pattern", nargs="?", help="hostlist like wn[001-010].example.org, @group, a!b (default: all WNs)")
    check.add_argument("--only", metavar="CHECKS", help=f"comma-separated checks to run: {','.join(CHECKS)} (default: all that can run)")
    check.add_argument("--outside", metavar="[USER@]HOST", help="a host outside the site, reached over SSH, for the inbound check")
    check.add_argument("--parallel", type=int, metavar="N", help="WNs worked on at once (default: ssh.parallelism)")
    check.add_argument("--nagios", action="store_true", help="print one Nagios/Icinga status line and use Nagios exit codes")
    check.add_argument("--rules", action="store_true", help="print the firewall rules the site needs instead of checking")
    check.add_argument("--format", choices=FORMATS, default="nftables", help="rules format for --rules (default: nftables)")
    check.set_defaults(handler=cmd_check)


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    if args.rules:
        if args.pattern or args.only or args.outside or args.nagios:
            raise UsageError("--rules takes only --format (the rules come from the site config, no WN is contacted)")
        ctx.out.write(firewall_rules(ctx.site, args.format))
        return ExitCode.OK
    if not args.nagios:
        return _check(ctx, args)
    # Nagios: one line on stdout whatever happens, and Nagios's exit codes
    try:
        report = _run(ctx, args)
    except KeyboardInterrupt:
        raise
    except SiteadminError as exc:
        ctx.out.write(f"SITEADMIN CHECK UNKNOWN - {printable(exc.one_line())}\n")
        return NAGIOS_UNKNOWN
    ctx.out.write(printable(report.nagios_line()) + "\n")
    return report.nagios_code()


def _run(ctx: Context, args: argparse.Namespace) -> CheckReport:
    site = ctx.site
    only = [c.strip() for c in args.only.split(",") if c.strip()] if args.only else list(CHECKS)
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        raise UsageError(f"--only {','.join(unknown)}: no such check", f"checks: {','.join(CHECKS)}")
    if "inbound" in only and args.only and not args.outside:
        raise UsageError("--only inbound needs --outside [user@]HOST, a host outside the site reached over SSH")
    parallel = args.parallel if args.parallel is not None else site.ssh.parallelism
    if parallel < 1:
        raise UsageError(f"--parallel {parallel}: must be 1 or more")
    inventory = Inventory(site)
    hosts = inventory.select(args.pattern)
    if not hosts:
        raise UsageError("no WNs selected", "list them under [wns] hosts in site.toml, or give a pattern")
    quiet = args.nagios or ctx.json or not ctx.progress  # progress notes only on a terminal: none in cron or a timer
    # the probes listen on the WNs' BitTorrent ports: never beside a rollout restarting aria2c, or another check
    with ctx.site_lock():
        report = run_check(site, hosts, only=only, outside=args.outside, parallelism=parallel, inventory=inventory,
                           progress=None if quiet else ctx.note)
    if not args.outside and not args.only:
        report.notes.append("inbound not checked: give --outside [user@]HOST to check what the world can open")
    try:
        save_last(report)
    except OSError as exc:
        report.notes.append(f"the result could not be saved in the state directory: {exc.strerror or exc}")
    return report


def failures_text(report: CheckReport) -> str:
    """What ``check --quiet`` prints: the WNs not checked and the error findings (with why and fix), nothing else."""
    lines = [f"error: {host}: not checked: {why}" for host, why in sorted(report.unchecked.items())]
    for finding in report.errors:
        lines.append(f"{finding.level}: {finding.check}: {finding.text}")
        lines += [f"    {label}: {text}" for label, text in (("why", finding.reason), ("fix", finding.rule)) if text]
    if report.fatal is not None:
        lines.append(f"error: {report.fatal}")
    return "\n".join(lines)


def _check(ctx: Context, args: argparse.Namespace) -> int:
    report = _run(ctx, args)
    ctx.emit(report.as_dict(), lambda _d: report.text(), quiet_text=lambda _d: failures_text(report))
    if not report.ok and not ctx.json:
        ctx.note(f"check failed: {len(report.errors)} errors, {len(report.unchecked)} WNs not checked")
    return report.exit_code()
