"""Can every WN be reached? Log in to each one and run ``uname -n``; one result per WN.

The CLI (`siteadmin reach`) and the console's WN view both run this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from siteadmin.inventory import Inventory
from siteadmin.remote.fanout import HostResult, run_on_hosts
from siteadmin.remote.session import SessionPool
from siteadmin.site import Site


def reach_wns(
    site: Site,
    hosts: Sequence[str],
    *,
    parallelism: int | None = None,
    timeout: float | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[HostResult[str]], None] | None = None,
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
        progress: called with each host's result as it completes.

    Returns:
        One HostResult per host, in the order of ``hosts``; ``value`` is the WN's own host name.
        Per-host failures are inside the results, never raised.
    """
    cancel = cancel if cancel is not None else threading.Event()
    with SessionPool(site, inventory) as pool:

        def probe(host: str) -> str:
            # one command per WN: connect, run, close (only a jump host session is shared)
            with pool.connect(host) as session:
                return session.run("uname -n", timeout=timeout, check=True).stdout.strip()

        done = threading.Event()
        watcher = threading.Thread(target=_close_when_cancelled, args=(cancel, done, pool), name="reach-cancel", daemon=True)
        watcher.start()
        try:
            return run_on_hosts(hosts, probe, parallelism or site.ssh.parallelism, cancel=cancel, progress=progress)
        finally:
            done.set()
            watcher.join()


def _close_when_cancelled(cancel: threading.Event, done: threading.Event, pool: SessionPool) -> None:
    # closing the pool aborts connections still in their handshake, so a cancel takes effect now
    while not done.wait(0.05):
        if cancel.is_set():
            pool.close()
            return
