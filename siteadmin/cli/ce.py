"""``siteadmin ce list|show|enable|disable|set``: the site's CEs and their installMethod in LDAP.

These are the low-level commands: they change LDAP alone (on a terminal they show the change and
ask first, unless ``--yes``) and point at ``siteadmin switch``, which prepares the WNs too.

Names and values come from LDAP, where anyone with write access to an entry may have put control
or bidi characters: the text output shows each value through ``printable``; ``--json`` keeps them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteadmin.cli import changing
from siteadmin.directory import CACHE_NOTE, CE, Change, Directory, check_ce_name
from siteadmin.errors import ExitCode, SiteadminError, UsageError, printable

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    ce = sub.add_parser("ce", help="see and toggle the torrent install mode of the site's CEs (LDAP)", parents=[parent])
    actions = ce.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(ce))

    lst = actions.add_parser("list", help="the site's CEs with installMethod and host", parents=[parent])
    lst.set_defaults(handler=cmd_ce_list)

    show = actions.add_parser("show", help="every attribute of one CE", parents=[parent])
    show.add_argument("ce", metavar="CE", help="CE name as in LDAP")
    show.set_defaults(handler=cmd_ce_show)

    change_opts = argparse.ArgumentParser(add_help=False)
    change_opts.add_argument("--dry-run", action="store_true", help="print the LDIF that would be sent; change nothing")
    change_opts.add_argument("--ldif-request", metavar="FILE", type=Path,
                             help="write an LDIF change request for the central LDAP team instead of changing LDAP")
    change_opts.add_argument("--yes", "-y", action="store_true", help="do not ask on a terminal before changing LDAP")

    enable = actions.add_parser("enable", help="switch CEs to torrent installs (installMethod Torrent)", parents=[parent, change_opts])
    enable.add_argument("ces", metavar="CE", nargs="+", help="CE names")
    enable.set_defaults(handler=cmd_ce_enable)

    disable = actions.add_parser("disable", help="switch CEs back to the method they had before torrent", parents=[parent, change_opts])
    disable.add_argument("ces", metavar="CE", nargs="+", help="CE names")
    disable.set_defaults(handler=cmd_ce_disable)

    set_ = actions.add_parser("set", help="set a CE's installMethod (exact spelling, see ldap.install_methods)", parents=[parent, change_opts])
    set_.add_argument("ce", metavar="CE", help="CE name")
    set_.add_argument("method", metavar="METHOD", help="installMethod value, e.g. Torrent or CVMFS")
    set_.set_defaults(handler=cmd_ce_set)


def _ce_table(ces: list[dict[str, Any]]) -> str:
    if not ces:
        return "no CEs"
    rows = [(printable(c["name"]), printable(c["installMethod"] or "(none)"), "yes" if c["torrent"] else "no", printable(c["host"] or "")) for c in ces]
    widths = [max(len(r[i]) for r in [("CE", "INSTALLMETHOD", "TORRENT", "HOST"), *rows]) for i in range(4)]
    lines = []
    for row in [("CE", "INSTALLMETHOD", "TORRENT", "HOST"), *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def cmd_ce_list(ctx: Context, args: argparse.Namespace) -> int:
    with Directory(ctx.site) as directory:
        ces = directory.list_ces()
    data = [_ce_brief(c) for c in ces]
    ctx.emit(data, _ce_table)
    return ExitCode.OK


def _ce_brief(ce: CE) -> dict[str, Any]:
    full = ce.as_dict()
    del full["attributes"]
    return full


def cmd_ce_show(ctx: Context, args: argparse.Namespace) -> int:
    check_ce_name(args.ce)
    with Directory(ctx.site) as directory:
        ce = directory.show(args.ce)
    data = ce.as_dict()

    def text(d: dict[str, Any]) -> str:
        lines = [f"dn: {printable(d['dn'])}", f"torrent: {'yes' if d['torrent'] else 'no'}"]
        for key, values in d["attributes"].items():
            lines += [f"{printable(key)}: {printable(str(v))}" for v in values]
        return "\n".join(lines)

    ctx.emit(data, text)
    return ExitCode.OK


def _change_text(change: dict[str, Any]) -> str:
    change = {key: printable(value) if isinstance(value, str) and key != "ldif" else value for key, value in change.items()}
    before = change["before"]
    before_text = "(none)" if before is None else ("|".join(printable(b) for b in before) if isinstance(before, list) else before)
    if change["outcome"] == "dry-run":
        return f"# {change['ce']}: {before_text} -> {change['after']} (dry run, nothing sent)\n{change['ldif']}"
    if change["outcome"] == "unchanged":
        return f"{change['ce']}: {before_text} (unchanged{', ' + change['note'] if change['note'] else ''})"
    line = f"{change['ce']}: {before_text} -> {change['after']} ({change['outcome']})"
    return line + (f" - {change['note']}" if change["note"] else "")


SWITCH_HINT = ("`ce enable|disable|set` change LDAP only; `siteadmin switch CE --to METHOD` also runs the preflight, "
               "rolls the WNs' profile out, waits for their aria2c, and undoes it all on a failure")


def _confirmed(ctx: Context, args: argparse.Namespace, names: list[str], do: Any, directory: Directory) -> bool:
    """On a terminal and without --yes, show what would change and ask; elsewhere (scripts) go on as before."""
    if args.yes or args.dry_run or args.ldif_request is not None or ctx.json or not sys.stdin.isatty():
        return True
    previews = [do(directory, name, True) for name in names]
    for change in previews:
        ctx.emit(None, _change_text(change.as_dict()))
    if all(c.outcome == "unchanged" for c in previews):
        return True
    ctx.err.write("change installMethod as shown? [y/N] ")
    ctx.err.flush()
    if sys.stdin.readline().strip().lower() in ("y", "yes"):
        return True
    ctx.emit(None, "nothing changed")
    return False


def _run_changes(ctx: Context, args: argparse.Namespace, names: list[str], do: Any) -> int:
    for name in names:
        check_ce_name(name)
    if args.ldif_request is not None and len(names) > 1:
        raise UsageError("--ldif-request takes one CE at a time", "run the command once per CE with its own FILE")
    if args.ldif_request is not None and args.dry_run:
        raise UsageError("--dry-run and --ldif-request do not go together")
    status = ExitCode.OK
    results: list[dict[str, Any]] = []
    changed = False
    with Directory(ctx.site) as directory:
        if not _confirmed(ctx, args, names, do, directory):
            return ExitCode.FAILED
        for name in names:
            try:
                change: Change = do(directory, name, False)
            except SiteadminError as exc:
                if len(names) == 1:
                    raise
                ctx.err.write(f"siteadmin: {exc.category}: {printable(exc.one_line())}\n")
                status = max(status, exc.exit_code)
                results.append({"ce": name, "outcome": "error", "error": exc.one_line(), "category": exc.category})
                continue
            results.append(change.as_dict())
            changed = changed or change.outcome == "ok"
            if not ctx.json:
                text = _change_text(change.as_dict())
                ctx.emit(None, text, quiet_text=None if change.outcome in ("ok", "unchanged", "dry-run") else text)
    if ctx.json:
        ctx.emit(results)
    if changed:
        ctx.info(CACHE_NOTE)
    if not args.dry_run and ctx.progress:  # a hint for the admin at a terminal; scripts and their logs get none
        ctx.note(SWITCH_HINT)
    return int(status)


def _changes_ldap(args: argparse.Namespace) -> bool:
    return not args.dry_run and args.ldif_request is None


@changing(_changes_ldap)
def cmd_ce_enable(ctx: Context, args: argparse.Namespace) -> int:
    return _run_changes(ctx, args, args.ces, lambda d, n, preview: d.enable(
        n, dry_run=args.dry_run or preview, request_file=None if preview else args.ldif_request))


@changing(_changes_ldap)
def cmd_ce_disable(ctx: Context, args: argparse.Namespace) -> int:
    return _run_changes(ctx, args, args.ces, lambda d, n, preview: d.disable(
        n, dry_run=args.dry_run or preview, request_file=None if preview else args.ldif_request))


@changing(_changes_ldap)
def cmd_ce_set(ctx: Context, args: argparse.Namespace) -> int:
    return _run_changes(ctx, args, [args.ce], lambda d, n, preview: d.set_method(
        n, args.method, dry_run=args.dry_run or preview, request_file=None if preview else args.ldif_request))
