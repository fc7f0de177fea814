"""``siteadmin lab up|status|down``: a real local site for demos, staging and tests."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteadmin.errors import ExitCode

if TYPE_CHECKING:
    from siteadmin.cli import Context

LAB_DIR_ENV = "SITEADMIN_LAB_DIR"
MAX_WNS = 200


def default_dir() -> Path:
    return Path(os.environ.get(LAB_DIR_ENV) or "~/.local/state/siteadmin/lab").expanduser()


def _wn_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= MAX_WNS:
        raise argparse.ArgumentTypeError(f"{value}: must be 1-{MAX_WNS}")
    return value


def _package_mb(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"{value}: must be 1-4096")
    return value


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    lab = sub.add_parser("lab", help="a real local virtual site (slapd, tracker, seeder, WNs with sshd + aria2c)", parents=[parent])
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", parser_class=type(lab))
    lab_sub.required = True
    dir_help = f"lab directory (default: ${LAB_DIR_ENV} or ~/.local/state/siteadmin/lab)"

    up = lab_sub.add_parser("up", help="start the lab (cleaning what an earlier run left)", parents=[parent])
    up.add_argument("--wns", type=_wn_count, default=4, help=f"number of worker nodes, 1-{MAX_WNS} (default 4)")
    up.add_argument("--dir", type=Path, default=None, help=dir_help)
    up.add_argument("--package-mb", type=_package_mb, default=32, help="size of the generated package in MB (default 32, cached)")
    up.add_argument("--mode", choices=["netns", "loopback"], default=None, help="network namespaces (root) or loopback addresses (default: netns as root)")
    up.set_defaults(handler=cmd_lab_up)

    status = lab_sub.add_parser("status", help="check every lab component for real; exit 0 when all are healthy", parents=[parent])
    status.add_argument("--dir", type=Path, default=None, help=dir_help)
    status.set_defaults(handler=cmd_lab_status)

    console = lab_sub.add_parser("console", help="open the console on the lab site, bringing the lab up first when it is not healthy",
                                 parents=[parent])
    console.add_argument("--wns", type=_wn_count, default=4, help=f"WNs when the lab has to be started, 1-{MAX_WNS} (default 4)")
    console.add_argument("--dir", type=Path, default=None, help=dir_help)
    console.set_defaults(handler=cmd_lab_console)

    firewall = lab_sub.add_parser("firewall", help="rehearse firewall changes: nftables rules in the lab's router between the site and CERN",
                                  parents=[parent])
    fw_sub = firewall.add_subparsers(dest="fw_command", metavar="ACTION", parser_class=type(lab))
    fw_sub.required = True
    fw_show = fw_sub.add_parser("show", help="print the router's nftables ruleset", parents=[parent])
    fw_show.add_argument("--dir", type=Path, default=None, help=dir_help)
    fw_show.set_defaults(handler=cmd_lab_firewall_show)
    fw_apply = fw_sub.add_parser("apply", help="load a ruleset file (nft -f syntax) into the router, all or nothing", parents=[parent])
    fw_apply.add_argument("file", type=Path, help="nftables ruleset, e.g. a table inet site { chain forward { ... } }")
    fw_apply.add_argument("--dir", type=Path, default=None, help=dir_help)
    fw_apply.set_defaults(handler=cmd_lab_firewall_apply)
    fw_flush = fw_sub.add_parser("flush", help="remove every rule from the router", parents=[parent])
    fw_flush.add_argument("--dir", type=Path, default=None, help=dir_help)
    fw_flush.set_defaults(handler=cmd_lab_firewall_flush)

    down = lab_sub.add_parser("down", help="stop the lab and remove its namespaces, links, routes and files (keeps the package cache)", parents=[parent])
    down.add_argument("--dir", type=Path, default=None, help=dir_help)
    down.set_defaults(handler=cmd_lab_down)


def cmd_lab_up(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.lab import Lab

    lab = Lab(args.dir or default_dir(), mode=args.mode)
    times = lab.up(args.wns, package_mb=args.package_mb)
    data = {
        "dir": str(lab.dir),
        "mode": lab.mode,
        "wns": lab.wn_names,
        "site": str(lab.site_path),
        "namespaces": lab.namespaces,
        "seconds": {k: round(v, 2) for k, v in times.items()},
    }

    def text(d: dict[str, Any]) -> str:
        from siteadmin.inventory import fold

        return (f"lab up: {fold(d['wns'])} ({len(d['wns'])} WNs) in {d['mode']} mode, {d['seconds']['total']:.1f} s\n"
                f"site config: {d['site']}\n"
                f"try: siteadmin --site {d['site']} hosts")

    ctx.emit(data, text)
    return ExitCode.OK


def cmd_lab_status(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.lab import Lab

    status = Lab(args.dir or default_dir()).status()
    ctx.emit(status.as_dict(), lambda _: status.text())
    return ExitCode.OK if status.healthy else ExitCode.FAILED


def cmd_lab_down(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.lab import Lab

    lab = Lab(args.dir or default_dir())
    seconds = lab.down()
    ctx.emit({"dir": str(lab.dir), "seconds": round(seconds, 2)}, lambda d: f"lab down: {d['dir']} cleaned in {d['seconds']:.1f} s")
    return ExitCode.OK


def cmd_lab_console(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.errors import LabError, UsageError
    from siteadmin.lab import Lab

    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("the console needs a terminal", "use `siteadmin lab up` and `siteadmin lab status` in scripts")
    lab = Lab(args.dir or default_dir())
    try:
        healthy = lab.status().healthy
    except LabError:
        healthy = False
    if not healthy:
        ctx.note(f"bringing the lab up in {lab.dir} ...")
        lab.up(args.wns)
    from siteadmin.tui.app import run_console

    code = run_console(lab.site)
    ctx.note(f"the lab is still running; `siteadmin lab down{' --dir ' + str(args.dir) if args.dir else ''}` stops it")
    return code


def _router(args: argparse.Namespace) -> tuple[Any, str]:
    from siteadmin.errors import UsageError
    from siteadmin.lab import Lab

    lab = Lab(args.dir or default_dir())
    if not lab.state_path.exists():
        raise UsageError(f"no lab in {lab.dir}", "start one with `siteadmin lab up`")
    router = lab.router_ns
    if router is None:
        raise UsageError(f"the lab in {lab.dir} runs on loopback: firewall rehearsal needs network namespaces", "run `siteadmin lab up` as root")
    return lab, router


def cmd_lab_firewall_show(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.errors import LabError
    from siteadmin.lab.netns import nft_error

    lab, router = _router(args)
    proc = lab.exec_in(router, ["nft", "list", "ruleset"])
    if proc.returncode != 0:
        raise LabError(f"{router}: nft list ruleset failed: {nft_error(proc.stderr)}")
    ctx.emit({"namespace": router, "ruleset": proc.stdout}, lambda d: d["ruleset"] or f"# {router}: no rules")
    return ExitCode.OK


def cmd_lab_firewall_apply(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.errors import ConfigError
    from siteadmin.lab.netns import nft_error

    lab, router = _router(args)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{args.file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    # nft -f is one transaction: a file with an error changes nothing
    proc = lab.exec_in(router, ["nft", "-f", "-"], input_text=text)
    if proc.returncode != 0:
        reason = nft_error(proc.stderr).replace("/dev/stdin:", "line ")
        raise ConfigError(f"{args.file}: nft refused the ruleset, nothing changed: {reason}")
    ctx.note(f"ruleset {args.file} loaded into {router}; `siteadmin lab status` shows what it blocks")
    return ExitCode.OK


def cmd_lab_firewall_flush(ctx: Context, args: argparse.Namespace) -> int:
    from siteadmin.errors import LabError
    from siteadmin.lab.netns import nft_error

    lab, router = _router(args)
    proc = lab.exec_in(router, ["nft", "flush", "ruleset"])
    if proc.returncode != 0:
        raise LabError(f"{router}: nft flush ruleset failed: {nft_error(proc.stderr)}")
    ctx.note(f"{router}: every rule removed")
    return ExitCode.OK
