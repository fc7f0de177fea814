"""Can every WN be reached? Log in to each one and run ``uname -n``; one result per WN.

The CLI (`siteadmin reach`) and the console's WN view both run this, on the WN service.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from siteadmin.inventory import Inventory
from siteadmin.remote.fanout import HostResult, Progress
from siteadmin.remote.service import WNService
from siteadmin.remote.session import Session
from siteadmin.site import Site


def reach_wns(
    site: Site,
    hosts: Sequence[str],
    *,
    parallelism: int | None = None,
    timeout: float | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[str]], None] | None = None,
    service: WNService | None = None,
) -> list[HostResult[str]]:
    """Connect to each WN (host key verified), run ``uname -n``, and close.

    Args:
        site: the site config (``[ssh]``, ``[wns]``).
        hosts: WN names, e.g. ``Inventory(site).select(pattern)``.
        parallelism: WNs at once; ``ssh.parallelism`` when None.
        timeout: seconds the command may take; ``ssh.command_timeout`` when None.
        inventory: the site's Inventory, when the caller already has one.
        cancel: set it to stop: hosts not yet started get a ``cancelled`` result, connections
            in progress are aborted.
        progress: called with each host's result (and done/total) as it lands.
        service: an open WN service to run on (its sessions kept or not, as it was made);
            a service of its own, closed on return, when None.

    Returns:
        One HostResult per host, in the order of ``hosts``; ``value`` is the WN's own host name.
        Per-host failures are inside the results, never raised.

    Raises:
        ConfigError: unreadable key file or ssh config.
    """

    def probe(session: Session) -> str:
        return session.run("uname -n", timeout=timeout, check=True).stdout.strip()

    if service is not None:
        return service.run(hosts, probe, parallelism=parallelism, cancel=cancel, progress=progress)
    with WNService(site, inventory) as own:
        return own.run(hosts, probe, parallelism=parallelism, cancel=cancel, progress=progress)
