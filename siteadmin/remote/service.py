"""The one service for work on many WNs over SSH: every WN operation (reach, facts, rollout,
preflight probes, swarm status) runs its per-WN work through ``WNService``.

The service owns the session pool for as long as the caller keeps it open: one operation, or
the console's polls across many runs. ``run(hosts, work)`` calls ``work(session)`` for each WN
on a bounded thread pool, with the WN's own ``Session`` (``run``, ``put_file``, ``read_file``,
``open_tunnel`` to its aria2c RPC), and returns exactly one ``HostResult`` per WN:

- a connection failure or an exception in ``work`` is that WN's result, never raised, with the
  exception kept (``HostKeyChanged`` and ``CommandFailed`` stay distinguishable);
- a cancel event stops the run: WNs not started get ``cancelled``, and the pool is closed at
  once, which aborts connections still in their handshake and commands still running;
- progress (done/total and each WN's result as it lands) goes to a callback;
- optional ``Batches`` (``[rollout] batch_size`` and ``max_fail_percent``): when a batch fails
  more than the threshold, the next batch never starts and its WNs get ``not started``.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from siteadmin.inventory import WN, Inventory
from siteadmin.remote.errors import SshError
from siteadmin.remote.fanout import CANCELLED, Batches, HostResult, Progress, fan_out
from siteadmin.remote.knownhosts import AcceptedKey
from siteadmin.remote.pool import SessionPool
from siteadmin.remote.session import Session
from siteadmin.site import Site

T = TypeVar("T")

HostWork = Callable[[Session], T]
"""The work for one WN: given the WN's session (``session.host`` is its name), returns a value."""


class WNService:
    """Work on many WNs of one site, with one session pool kept until ``close()``.

    Args:
        site: the site config (``[ssh]``, ``[wns]``).
        inventory: the site's Inventory, when the caller already has one.
        parallelism: WNs worked on at once; ``ssh.parallelism`` when None.
        keep_sessions: False (the default): every WN gets a new session for its work, closed
            right after, so hundreds of WNs never hold hundreds of connections. True: each WN's
            session stays open for the next ``run`` until ``close()`` (status polls, or a
            rollout's plan then apply).
        global_known_hosts: system-wide known_hosts files read after ``ssh.known_hosts``;
            the pool's default (/etc/ssh/ssh_known_hosts) when None.
        accept_new: accept the key of a WN no known_hosts file knows and append it to
            ``ssh.known_hosts``, as OpenSSH's ``accept-new``; a changed key is refused all the same.
        on_accept: told of each key accepted (WN, known_hosts name, key type, fingerprint, file).

    One ``run`` at a time per service. A cancelled run closes the pool (that is what aborts
    handshakes in flight); the next ``run`` opens a fresh one.

    Raises (constructor):
        ConfigError: unreadable key file or ssh config.
    """

    def __init__(
        self,
        site: Site,
        inventory: Inventory | None = None,
        *,
        parallelism: int | None = None,
        keep_sessions: bool = False,
        global_known_hosts: Sequence[Path] | None = None,
        accept_new: bool = False,
        on_accept: AcceptedKey | None = None,
    ) -> None:
        self.site = site
        self.inventory = inventory if inventory is not None else Inventory(site)
        self.parallelism = parallelism if parallelism is not None else site.ssh.parallelism
        self.keep_sessions = keep_sessions
        self._pool_options: dict[str, Any] = {} if global_known_hosts is None else {"global_known_hosts": tuple(global_known_hosts)}
        if accept_new:
            self._pool_options.update(accept_new=True, on_accept=on_accept)
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self._pool: SessionPool | None = self._new_pool()  # now, so a bad key file is refused before any work

    def __enter__(self) -> WNService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _new_pool(self) -> SessionPool:
        return SessionPool(self.site, self.inventory, **self._pool_options)

    def run(
        self,
        hosts: Sequence[str | WN],
        work: HostWork[T],
        *,
        parallelism: int | None = None,
        batches: Batches | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[Progress[T]], None] | None = None,
    ) -> list[HostResult[T]]:
        """Connect to each WN and call ``work(session)``; one result per WN.

        Args:
            hosts: WN names, e.g. ``Inventory(site).select(pattern)``; or ``WN`` objects with
                their own address and port, for a host the inventory does not hold (the outside
                host of ``siteadmin check``), reached with the site's ``[ssh]`` all the same. Such
                a host gets a session of its own for its work, closed after it, even with
                ``keep_sessions``; its result is named by ``WN.name``.
            work: what to do on one WN with its session; its return value becomes
                ``HostResult.value``. It runs in a worker thread.
            parallelism: WNs at once for this run; the service's when None.
            batches: work batch after batch (``Batches.from_site(site)`` for ``[rollout]``);
                one batch of everything when None.
            cancel: set it (from any thread) to stop: WNs not started get ``cancelled``, the
                pool is closed so connections and commands in flight end now, and their WNs get
                ``cancelled`` too. The run returns within about ``CANCEL_GRACE`` seconds.
            progress: called in the calling thread with each WN's result as it lands, with
                done/total and the batch.

        Returns:
            One HostResult per host, in the order of ``hosts`` (``HostResult.host``: the name). Per-WN failures (connection,
            host key, authentication, ``work`` raising) are inside the results with their
            exception, never raised.

        Raises:
            RuntimeError: the service is closed, or another ``run`` is in progress.
            KeyboardInterrupt: after cancelling as above.
        """
        cancel = cancel if cancel is not None else threading.Event()
        keep = self.keep_sessions
        with self._lock:
            if self._closed:
                raise RuntimeError("WNService.run on a closed service")
            if self._running:
                raise RuntimeError("WNService.run while another run of the same service is in progress")
            self._running = True
        try:
            with self._lock:
                pool = self._pool if self._pool is not None else self._new_pool()
                self._pool = pool

            given = {h.name: h for h in hosts if isinstance(h, WN)}

            def on_host(host: str) -> T:
                wn = given.get(host)
                kept = keep and wn is None  # a host the inventory does not hold has no place among the kept sessions
                session = pool.session(host) if kept else pool.connect(wn if wn is not None else host)
                try:
                    value = work(session)
                    if cancel.is_set() and not session.is_active():
                        # the cancel closed the connection under the work: its value cannot be trusted
                        raise SshError(host, "the connection was closed by the cancel", outcome=CANCELLED)
                    return value
                finally:
                    if not kept:
                        session.close()

            return fan_out(
                [h.name if isinstance(h, WN) else h for h in hosts],
                on_host,
                parallelism if parallelism is not None else self.parallelism,
                batches=batches,
                cancel=cancel,
                progress=progress,
                on_cancel=lambda: self._drop(pool),
            )
        finally:
            with self._lock:
                self._running = False

    def _drop(self, pool: SessionPool) -> None:
        """Close ``pool`` (aborting handshakes and commands in flight); the next run opens a new one."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.close()

    def close(self) -> None:
        """Close every session and the pool (idempotent); a run in progress sees its WNs fail."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
