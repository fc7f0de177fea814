"""The byte-accounting rule on a WN: per-source counters of what the WN receives, in a table of its own.

``status --accounting on`` loads ``table inet siteadmin_accounting`` on each WN: three named
counters (``site``: from the site's WNs; ``central``: from the central seeder and HTTP fallback
hosts; ``other``: any other TCP, the WN's own SSH port and loopback left out), counted on input at
a priority before the usual filter chains, with policy accept and no verdict but ``return``, so it
drops nothing and changes no other table. Loading replaces the table in one nft transaction;
``off`` deletes it (nothing happens when it is absent). Each change takes the WN lock
(``siteadmin.remote.wnlock``, beside its aria2c config, the one a rollout takes) and is written to
the audit log.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from collections.abc import Callable, Sequence

from siteadmin import audit
from siteadmin.inventory import Inventory, config_path_for
from siteadmin.remote import HostResult, Progress, Session, WNService
from siteadmin.remote.wnlock import drop_lock, holder_name, take_lock
from siteadmin.site import Site
from siteadmin.swarm.model import Addresses
from siteadmin.swarm.service import ACCOUNTING_TABLE, site_addresses

ON, OFF = "on", "off"


def _elements(addresses: Sequence[str], family: int) -> list[str]:
    out = []
    for a in sorted(set(addresses)):
        try:
            ip = ipaddress.ip_address(a)
        except ValueError:
            continue
        if ip.version == family:
            out.append(str(ip))
    return out


def accounting_ruleset(addresses: Addresses, ssh_port: int) -> str:
    """The nft script that (re)creates the accounting table; no other table is named.

    Args:
        addresses: the site's WNs and central hosts by address.
        ssh_port: the WN's SSH port (its traffic is not counted as ``other``).

    Returns:
        nft input text (``nft -f -``).
    """
    lines = [
        f"table inet {ACCOUNTING_TABLE} {{}}",
        f"delete table inet {ACCOUNTING_TABLE}",
        f"table inet {ACCOUNTING_TABLE} {{",
        "    counter site {}",
        "    counter central {}",
        "    counter other {}",
    ]
    sets: list[tuple[str, str, str, list[str]]] = []
    for name, source in (("site", list(addresses.wns)), ("central", sorted(addresses.central))):
        for family, kind, match in ((4, "ipv4_addr", "ip"), (6, "ipv6_addr", "ip6")):
            elements = _elements(source, family)
            if elements:
                set_name = f"{name}{family}"
                sets.append((set_name, match, name, elements))
                lines += [f"    set {set_name} {{", f"        type {kind}", f"        elements = {{ {', '.join(elements)} }}", "    }"]
    lines += [
        "    chain input {",
        "        type filter hook input priority -200; policy accept;",
        '        iifname "lo" return',
        "        meta l4proto != tcp return",
    ]
    for set_name, match, counter, _ in sets:
        lines.append(f"        {match} saddr @{set_name} counter name {counter} return")
    lines += [
        f"        tcp dport {ssh_port} return",
        "        counter name other",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def removal_ruleset() -> str:
    """The nft script that deletes the accounting table (a no-op when it is absent)."""
    return f"table inet {ACCOUNTING_TABLE} {{}}\ndelete table inet {ACCOUNTING_TABLE}\n"


def describe(site: Site, hosts: Sequence[str], on: bool, inventory: Inventory | None = None) -> str:
    """What ``set_accounting`` will do, for the admin to read before saying yes."""
    inventory = inventory if inventory is not None else Inventory(site)
    if not on:
        return f"on {len(hosts)} WN(s): delete nft table inet {ACCOUNTING_TABLE} (no other table or rule is touched)"
    addresses = site_addresses(site, inventory)
    return (
        f"on {len(hosts)} WN(s): load nft table inet {ACCOUNTING_TABLE} (replacing an earlier one; no other table or rule is touched), "
        f"counting TCP bytes received from {len(set(addresses.wns))} site WN address(es), "
        f"{len(addresses.central)} central address(es) ({', '.join(sorted(addresses.central)) or 'none resolved'}) and others; "
        "it only counts (policy accept, no drop), under each WN's rollout lock, audited"
    )


def set_accounting(
    site: Site,
    hosts: Sequence[str],
    on: bool,
    *,
    inventory: Inventory | None = None,
    parallelism: int | None = None,
    wait_lock: float = 0.0,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[str]], None] | None = None,
) -> list[HostResult[str]]:
    """Install (``on``) or remove the accounting table on each WN, under its rollout lock, audited.

    Args:
        site: the site config.
        hosts: WN names.
        on: install (True) or remove (False).
        inventory: the site's Inventory, when the caller has one.
        parallelism: WNs at once; ``ssh.parallelism`` when None.
        wait_lock: seconds to wait for a WN lock held by another run.
        cancel: set it to stop.
        progress: called with each WN's result as it lands.

    Returns:
        One result per WN: value ``on``/``off``, or the WN's failure (locked, nft refused...).

    Raises:
        ConfigError: the audit log cannot be written (checked before any WN is touched).
    """
    inventory = inventory if inventory is not None else Inventory(site)
    audit.check_writable(site.audit.path)
    addresses = site_addresses(site, inventory) if on else None
    holder = holder_name()
    run_id = uuid.uuid4().hex[:12]
    state = ON if on else OFF

    def work(session: Session) -> str:
        host = session.host
        text = accounting_ruleset(addresses, inventory.wn(host).port) if addresses is not None else removal_ruleset()
        with session.sftp() as sftp:
            lock = take_lock(session, sftp, config_path_for(site, host), holder=holder, wait=wait_lock, stale_after=site.rollout.lock_stale_after)
            try:
                session.run("nft -f -", stdin=text.encode(), check=True)
            finally:
                drop_lock(sftp, lock)
        return state

    audit.record(site.audit.path, {"action": "status accounting", "run": run_id, "state": state, "hosts": list(hosts), "phase": "start"})
    started = time.monotonic()
    with WNService(site, inventory, parallelism=parallelism) as service:
        results = service.run(hosts, work, cancel=cancel, progress=progress)
    audit.record(site.audit.path, {
        "action": "status accounting", "run": run_id, "state": state, "phase": "done",
        "ok": [r.host for r in results if r.ok],
        "failed": {r.host: r.error for r in results if not r.ok},
        "elapsed": round(time.monotonic() - started, 3),
    })
    return results

