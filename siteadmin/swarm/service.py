"""The swarm status service: polls the selected WNs' aria2c over the WN service and reads the polls into reports.

``SwarmMonitor`` keeps what a live view needs between polls: the WN service's sessions
(``keep_sessions=True``), one tunnel and one kept-alive JSON-RPC connection per WN (reopened when
they break), the rendered profiles (for drift and each WN's secret), the site's addresses (to
classify peers) and the memory of what earlier polls saw (windows for stalled and no-peer
downloads, seed times, estimated bytes by source), optionally kept in ``[status] memory_file``
between runs. One poll costs each WN at most two RPC round trips on one kept channel: one
``system.multicall`` (version, global stat, active / waiting / stopped downloads, and the
global options on a WN's first poll and every ``OPTIONS_EVERY`` polls), then one for the
peers of its BitTorrent downloads still fetching. Where the accounting rule is installed
(``set_accounting``), its per-source byte counters are read with one ``nft`` command.

``set_accounting`` installs or removes that rule on WNs: a table of its own
(``inet siteadmin_accounting``), so no other rule is touched; it is a change on the WN, so it
takes the WN's rollout lock and is audited.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aria2p

from siteadmin import trust
from siteadmin.aria2conf.render import profile_for, site_rpc_secret
from siteadmin.errors import ConfigError, SiteadminError
from siteadmin.inventory import Inventory
from siteadmin.remote import HostResult, Progress, Session, WNService
from siteadmin.site import Site
from siteadmin.swarm import model
from siteadmin.swarm.model import (
    SSH_FAILURE,
    STATUS_KEYS,
    Addresses,
    Limits,
    Memory,
    Seen,
    SourceBytes,
    SwarmReport,
    WNState,
)
from siteadmin.swarm.rpc import RpcFailure, WNRpc

ACCOUNTING_TABLE = "siteadmin_accounting"
"""The nftables table (family inet) of the accounting rule on a WN."""
MEMORY_VERSION = 1
OPTIONS_EVERY = 10
"""Polls between two reads of a WN's live options (for drift); the first poll of a WN reads them."""
COUNTERS_COMMAND = f"nft -j list counters table inet {ACCOUNTING_TABLE}"
"""Reads the accounting counters (nothing else) on a WN."""


# ---------------------------------------------------------------- addresses


def _resolve(name: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _host_of_url(url: str) -> str:
    import urllib.parse

    return urllib.parse.urlparse(url).hostname or ""


def site_addresses(site: Site, inventory: Inventory) -> Addresses:
    """The site's WNs and central hosts by address (names resolved here, once; unresolvable ones left out).

    Args:
        site: the site config (``[central]`` seeder and HTTP fallback hosts).
        inventory: the site's WNs; a WN's ``address`` when the config gives one, else its name resolved.

    Returns:
        Addresses for peer classification.
    """
    wns: dict[str, str] = {}
    for host in inventory.select(None):
        address = inventory.wn(host).address
        try:
            wns[str(ipaddress.ip_address(address))] = host
        except ValueError:
            for ip in _resolve(address):
                wns[ip] = host
    central: set[str] = set()
    for name in {site.central.seeder_host, _host_of_url(site.central.http_fallback)} - {""}:
        try:
            central.add(str(ipaddress.ip_address(name)))
        except ValueError:
            central |= _resolve(name)
    return Addresses(wns=wns, central=frozenset(central))


# ---------------------------------------------------------------- memory file


def load_memory(path: Path | None) -> Memory:
    """What earlier runs saw (empty when there is no file or it is unreadable: the memory is a convenience)."""
    if path is None:
        return {}
    try:
        data = json.loads(path.expanduser().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != MEMORY_VERSION or not isinstance(data.get("hosts"), dict):
        return {}
    memory: Memory = {}
    for host, gids in data["hosts"].items():
        if isinstance(gids, dict):
            memory[str(host)] = {str(g): Seen.from_dict(s) for g, s in gids.items() if isinstance(s, dict)}
    return memory


def save_memory(path: Path, memory: Memory) -> None:
    """Write the memory atomically (a temp file in the same folder, renamed).

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    path = path.expanduser()
    data = {"version": MEMORY_VERSION, "hosts": {h: {g: s.as_dict() for g, s in gids.items()} for h, gids in memory.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ConfigError(f"status.memory_file {path}: cannot write: {exc.strerror}") from None


# ---------------------------------------------------------------- one WN's raw answers


@dataclasses.dataclass(frozen=True)
class _Answers:
    version: Mapping[str, Any]
    stat: Mapping[str, Any]
    downloads: Sequence[Mapping[str, Any]]
    peers: dict[str, list[Mapping[str, Any]]]
    options: Mapping[str, Any] | None
    counters: SourceBytes | None
    round_trips: int
    taken_at: float


@dataclasses.dataclass(frozen=True)
class _Unread:
    reason: str
    detail: str


def parse_counters(text: str) -> SourceBytes | None:
    """The accounting counters from ``nft -j list counters table inet siteadmin_accounting``; None when absent."""
    try:
        items = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError):
        return None
    got: dict[str, int] = {}
    for item in items:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and counter.get("table") == ACCOUNTING_TABLE:
            got[str(counter.get("name"))] = int(counter.get("bytes", 0))
    if not got:
        return None
    return SourceBytes(got.get(model.SITE, 0), got.get(model.CENTRAL, 0), got.get(model.OTHER, 0))


# ---------------------------------------------------------------- the monitor


class SwarmMonitor:
    """Polls of the site's swarm, with sessions, tunnels and memory kept between polls.

    Args:
        site: the site config (``[wns] rpc_port``, ``[status]``, ``[central]``).
        inventory: the site's Inventory, when the caller has one.
        parallelism: WNs polled at once; ``ssh.parallelism`` when None.
        memory_file: where the memory is kept between runs; ``[status] memory_file`` when None,
            nowhere when ``keep_memory`` is False.
        keep_memory: read and write the memory file.
        service: a WN service to poll through (the console's; it must keep sessions); a new one,
            closed by ``close()``, when None.
        clock: Unix time now (tests move it).

    Raises (constructor):
        ConfigError: no RPC secret for the site yet, a bad key file or ssh config.
    """

    def __init__(
        self,
        site: Site,
        inventory: Inventory | None = None,
        *,
        parallelism: int | None = None,
        memory_file: Path | None = None,
        keep_memory: bool = True,
        service: WNService | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site = site
        self.inventory = inventory if inventory is not None else Inventory(site)
        self._own_service = service is None
        self.service = service if service is not None else WNService(site, self.inventory, parallelism=parallelism, keep_sessions=True)
        self.memory_file = (memory_file if memory_file is not None else site.status.memory_file) if keep_memory else None
        self.memory: Memory = load_memory(self.memory_file)
        self.clock = clock
        self.limits = Limits(
            stall_window=site.status.stall_window, no_peers_after=site.status.no_peers_after,
            seed_grace=site.status.seed_grace, min_version=site.status.min_aria2c_version,
        )
        secret = site_rpc_secret(site, create=False)
        self._site_secret = secret
        trust.note_cwd_config(site.source, "RPC calls to the WNs' aria2c")
        self._lock = threading.Lock()
        self._rpcs: dict[str, WNRpc] = {}
        self._profiles: dict[str, dict[str, str] | None] = {}
        self._options: dict[str, Mapping[str, Any] | None] = {}
        """host -> aria2c's live global options as last read."""
        self._accounting: dict[str, bool] = {}
        """host -> whether its accounting table was found (asked again with every new session)."""
        self._addresses: Addresses | None = None
        self.polls = 0

    def __enter__(self) -> SwarmMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ per-WN helpers

    def profile(self, host: str) -> dict[str, str] | None:
        """The WN's rendered profile (cached; None when it cannot be rendered)."""
        with self._lock:
            if host in self._profiles:
                return self._profiles[host]
        try:
            options: dict[str, str] | None = profile_for(self.site, host, create_secret=False)
        except SiteadminError:
            options = None
        with self._lock:
            self._profiles[host] = options
        return options

    def _secret(self, host: str) -> str | None:
        profile = self.profile(host)
        if profile is not None and "rpc-secret" in profile:
            return profile["rpc-secret"]
        return self._site_secret

    @property
    def addresses(self) -> Addresses:
        if self._addresses is None:
            self._addresses = site_addresses(self.site, self.inventory)
        return self._addresses

    def _rpc(self, session: Session, secret: str) -> WNRpc:
        with self._lock:
            rpc = self._rpcs.get(session.host)
            if rpc is not None and rpc.session is session:
                return rpc
            self._accounting.pop(session.host, None)  # a new session: look for the counters again
        if rpc is not None:
            rpc.close()
        rpc = WNRpc(session, self.site.wns.rpc_port, secret, self.site.status.rpc_timeout)
        with self._lock:
            self._rpcs[session.host] = rpc
        return rpc

    def _counters(self, session: Session) -> SourceBytes | None:
        with self._lock:
            known = self._accounting.get(session.host)
        if known is False:
            return None
        try:
            result = session.run(COUNTERS_COMMAND, timeout=self.site.status.rpc_timeout)
        except SiteadminError:
            return None
        counters = parse_counters(result.stdout) if result.ok else None
        with self._lock:
            self._accounting[session.host] = counters is not None
        return counters

    def _poll_one(self, session: Session) -> _Answers | _Unread:
        secret = self._secret(session.host)
        if secret is None:
            return _Unread(model.WRONG_SECRET, "the site has no RPC secret file yet (render and roll out a profile first)")
        rpc = self._rpc(session, secret)
        c = aria2p.Client
        host = session.host
        with self._lock:
            options: Any = self._options.get(host)
        calls: list[tuple[str, list[Any]]] = [
            (c.GET_VERSION, []),
            (c.GET_GLOBAL_STAT, []),
            (c.TELL_ACTIVE, [STATUS_KEYS]),
            (c.TELL_WAITING, [0, 1000, STATUS_KEYS]),
            (c.TELL_STOPPED, [0, 1000, STATUS_KEYS]),
        ]
        # the live options are the biggest answer and change only with an apply or a hand edit:
        # read them on a WN's first poll and every OPTIONS_EVERY polls after
        ask_options = options is None or self.polls % OPTIONS_EVERY == 0
        if ask_options:
            calls.append((c.GET_GLOBAL_OPTION, []))
        try:
            answers = rpc.multicall(calls)
            version, stat, active, waiting, stopped = answers[:5]
            if ask_options:
                options = answers[5] if isinstance(answers[5], dict) else None
                with self._lock:
                    self._options[host] = options
            taken_at = self.clock()
            trips = 1
            # peers of the downloads still fetching: where their bytes come from; a seeding
            # download's peer count is in tellStatus already
            bt_active = [
                str(d["gid"]) for d in active
                if isinstance(d, dict) and d.get("bittorrent") is not None and "gid" in d
                and d.get("completedLength") != d.get("totalLength")
            ]
            peers: dict[str, list[Mapping[str, Any]]] = {}
            if bt_active:
                answers = rpc.multicall([(c.GET_PEERS, [gid]) for gid in bt_active])
                trips = 2
                peers = {gid: list(a) if isinstance(a, list) else [] for gid, a in zip(bt_active, answers, strict=True)}
        except RpcFailure as exc:
            with self._lock:
                self._options.pop(host, None)  # aria2c may come back with other options
            return _Unread(exc.reason, exc.detail)
        downloads = [d for d in [*active, *waiting, *stopped] if isinstance(d, dict)]
        return _Answers(
            version=version if isinstance(version, dict) else {}, stat=stat if isinstance(stat, dict) else {},
            downloads=downloads, peers=peers, options=options if isinstance(options, dict) else None,
            counters=self._counters(session), round_trips=trips, taken_at=taken_at,
        )

    # ------------------------------------------------------------ polling

    def poll(
        self,
        hosts: Sequence[str],
        *,
        cancel: threading.Event | None = None,
        progress: Callable[[Progress[Any]], None] | None = None,
    ) -> SwarmReport:
        """Poll every WN once and read the answers into a report (the memory is updated and saved).

        Args:
            hosts: WN names (``Inventory(site).select(pattern)``).
            cancel: set it to stop; WNs not polled are reported unreachable (cancelled).
            progress: called with each WN's result as it lands.

        Returns:
            The report: every WN (reachable or why not), packages, problems, shares.

        Raises:
            RuntimeError: a poll is already running on this monitor.
            ConfigError: the memory file cannot be written.
            KeyboardInterrupt: after cancelling.
        """
        started = time.monotonic()
        results: list[HostResult[_Answers | _Unread]] = self.service.run(hosts, self._poll_one, cancel=cancel, progress=progress)
        now = self.clock()
        states = [self._read(r, now) for r in results]
        seed_times = {w.host: self._seed_time(w) for w in states}
        profiles = {w.host: self.profile(w.host) for w in states if w.reachable}
        problems = model.flag_problems(states, self.memory, now, self.limits, seed_times, profiles)
        report = SwarmReport(
            taken_at=now, elapsed=time.monotonic() - started, wns=tuple(states),
            packages=tuple(model.package_views(states, problems, self.memory)), problems=tuple(problems),
            share=model.site_share(states, self.memory),
        )
        self.polls += 1
        if self.memory_file is not None:
            save_memory(self.memory_file, self.memory)
        return report

    def _read(self, result: HostResult[_Answers | _Unread], now: float) -> WNState:
        value = result.value
        if not result.ok or value is None:
            return WNState(host=result.host, reachable=False, reason=SSH_FAILURE, detail=result.detail())
        if isinstance(value, _Unread):
            return WNState(host=result.host, reachable=False, reason=value.reason, detail=value.detail)
        return model.read_wn(
            result.host, value.version, value.stat, value.downloads, value.peers, value.options, self.addresses,
            self.memory, value.taken_at, counters=value.counters, round_trips=value.round_trips,
        )

    def _seed_time(self, w: WNState) -> float | None:
        text = (w.options or {}).get("seed-time")
        if text is None:
            text = (self.profile(w.host) or {}).get("seed-time")
        try:
            return float(text) if text is not None else None
        except ValueError:
            return None

    def close(self) -> None:
        """Close every tunnel and, when the monitor made it, the WN service (idempotent)."""
        with self._lock:
            rpcs, self._rpcs = list(self._rpcs.values()), {}
        for rpc in rpcs:
            rpc.close()
        if self._own_service:
            self.service.close()


def poll_once(site: Site, hosts: Sequence[str], *, parallelism: int | None = None, inventory: Inventory | None = None) -> SwarmReport:
    """One poll with a monitor opened and closed around it (``[status] memory_file`` kept).

    Raises:
        ConfigError: as ``SwarmMonitor`` and ``poll``.
    """
    with SwarmMonitor(site, inventory, parallelism=parallelism) as monitor:
        return monitor.poll(hosts)
