"""Facts read off the WNs over SSH, on the WN service: which network interfaces carry IPv4 (for the LPD lint rule)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from siteadmin.inventory import Inventory
from siteadmin.remote.fanout import HostResult, Progress
from siteadmin.remote.service import WNService
from siteadmin.remote.session import Session
from siteadmin.site import Site

INTERFACES_COMMAND = "ip -o -4 addr show"


def parse_ipv4_interfaces(text: str) -> list[str]:
    """Interfaces with a non-loopback IPv4 address, from ``ip -o -4 addr show``, in order.

    >>> parse_ipv4_interfaces("1: lo    inet 127.0.0.1/8 scope host lo\\\\ ...\\n2: eth0    inet 10.0.0.5/24 scope global eth0\\\\ ...")
    ['eth0']
    """
    names: dict[str, None] = {}  # ordered and unique: an interface may hold several addresses
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet" or " scope host " in f" {line} ":
            continue
        names[fields[1].split("@", 1)[0]] = None  # veth names come as eth0@if12
    return list(names)


def wn_interfaces(
    site: Site,
    hosts: Sequence[str],
    *,
    parallelism: int | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[list[str]]], None] | None = None,
    service: WNService | None = None,
) -> list[HostResult[list[str]]]:
    """Each WN's IPv4 interfaces (loopback left out), read over SSH; one result per WN, never raising.

    Args:
        site: the site config (``[ssh]``, ``[wns]``).
        hosts: WN names.
        parallelism: WNs at once; ``ssh.parallelism`` when None.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop; hosts not yet started get a ``cancelled`` result, connections in
            progress are aborted.
        progress: called with each host's result (and done/total) as it lands.
        service: an open WN service to run on; a service of its own, closed on return, when None.

    Returns:
        One HostResult per host, in the order of ``hosts``; ``value`` lists the interface names.

    Raises:
        ConfigError: unreadable key file or ssh config.
    """

    def probe(session: Session) -> list[str]:
        return parse_ipv4_interfaces(session.run(INTERFACES_COMMAND, check=True).stdout)

    if service is not None:
        return service.run(hosts, probe, parallelism=parallelism, cancel=cancel, progress=progress)
    with WNService(site, inventory) as own:
        return own.run(hosts, probe, parallelism=parallelism, cancel=cancel, progress=progress)
