"""``siteadmin hosts [PATTERN]``: which WNs a pattern selects, folded."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from siteadmin.errors import ExitCode
from siteadmin.inventory import Inventory, fold

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    hosts = sub.add_parser("hosts", help="list the WNs a hostlist pattern selects", parents=[parent])
    hosts.add_argument("pattern", nargs="?", help="hostlist like wn[001-010].example.org, @group, a!b (default: all WNs)")
    hosts.add_argument("--list", action="store_true", help="one host per line instead of folded")
    hosts.set_defaults(handler=cmd_hosts)


def cmd_hosts(ctx: Context, args: argparse.Namespace) -> int:
    inventory = Inventory(ctx.site)
    selected = inventory.select(args.pattern)
    data = {
        "pattern": args.pattern or "all",
        "folded": fold(selected),
        "count": len(selected),
        "hosts": [
            {"name": wn.name, "address": wn.address, "port": wn.port, "groups": list(wn.groups)}
            for wn in map(inventory.wn, selected)
        ],
    }
    if args.list:
        ctx.emit(data, lambda d: "\n".join(h["name"] for h in d["hosts"]))
    else:
        ctx.emit(data, lambda d: f"{d['folded']} ({d['count']} WNs)" if d["count"] else "no WNs selected")
    return ExitCode.OK
