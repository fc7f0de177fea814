"""The pure half of swarm status: what one poll of the WNs' aria2c says, read into a report.

Owns the report's types (``WNState``, ``Torrent``, ``Peer``, ``Share``, ``Problem``,
``PackageView``, ``SwarmReport``), reading aria2c's answers into them (``read_wn``), peer
classification (site WN, central seeder, other), the share of bytes from site WNs, the problem
flags (``flag_problems``), the per-package view and the memory kept between polls (when a download
was first seen complete, when it last made progress, estimated bytes by source). No I/O here:
everything takes plain data and a clock reading, so it is tested without a WN.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import aria2p

SITE, CENTRAL, OTHER = "site", "central", "other"
"""Where a peer (or a byte) comes from: a site WN, the central seeder (or the central HTTP fallback), anything else."""
SOURCES = (SITE, CENTRAL, OTHER)

# why a WN cannot be read
REFUSED = "refused"
WRONG_SECRET = "wrong secret"  # noqa: S105 - a reason, not a secret
TIMEOUT = "timeout"
SSH_FAILURE = "ssh failure"
RPC_ERROR = "rpc error"

# problem codes: stable names used in the text, JSON, Nagios and Prometheus outputs
P_UNREACHABLE = "rpc-unreachable"
P_WRONG_SECRET = "wrong-secret"  # noqa: S105 - a problem code, not a secret
P_SEEDING_TOO_LONG = "seeding-too-long"
P_STALLED = "stalled"
P_NO_PEERS = "no-peers"
P_OLD_ARIA2C = "old-aria2c"
P_DRIFT = "drift"
PROBLEMS = (P_UNREACHABLE, P_WRONG_SECRET, P_SEEDING_TOO_LONG, P_STALLED, P_NO_PEERS, P_OLD_ARIA2C, P_DRIFT)
CRITICAL_PROBLEMS = frozenset({P_UNREACHABLE, P_WRONG_SECRET})
"""Problems that leave a WN unread: they count towards the Nagios CRITICAL threshold."""

Severity = Literal["critical", "warning"]

STATUS_KEYS = [
    "gid", "status", "totalLength", "completedLength", "uploadLength", "downloadSpeed", "uploadSpeed",
    "connections", "numSeeders", "seeder", "infoHash", "bittorrent", "files", "dir", "followedBy",
    "following", "errorCode", "errorMessage",
]
"""tellStatus keys asked for every download (aria2p's ``Download`` reads them)."""

DRIFT_IGNORED = frozenset({"rpc-secret", "conf-path", "input-file"})
"""Options never compared for drift: aria2c never returns the secret, and conf-path/input-file
describe how it was started, not how it runs."""

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KkMm]?)$")


# ---------------------------------------------------------------- types


@dataclasses.dataclass(frozen=True)
class Peer:
    """One BitTorrent peer of a download, classified."""

    ip: str
    port: int
    source: str
    """``site``, ``central`` or ``other``."""
    wn: str | None
    """The site WN at that address, when it is one."""
    download_speed: int
    """Bytes/s this WN receives from the peer."""
    upload_speed: int
    seeder: bool


@dataclasses.dataclass(frozen=True)
class Torrent:
    """One download on one WN (BitTorrent, or a plain HTTP fetch of a package)."""

    gid: str
    package: str
    """The package's name (the torrent's name, or the fetched file's name)."""
    info_hash: str | None
    via: Literal["bittorrent", "http"]
    status: str
    """aria2c's: active, waiting, paused, error, complete, removed."""
    total: int
    completed: int
    uploaded: int
    download_speed: int
    upload_speed: int
    connections: int
    seeding: bool
    """Complete and still serving (a seeding download stays ``active`` in aria2c)."""
    seed_seconds: float | None
    """Seconds since this download was first seen complete (None when it is not complete, or
    was complete when first seen: then the time is counted from that first sight)."""
    ratio: float
    """Uploaded / completed bytes."""
    peers: tuple[Peer, ...] | None
    """Peers as getPeers gave them (None when not asked: only BitTorrent downloads still fetching are asked;
    a seeding one's peer count is ``connections``)."""
    error: str | None

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.completed >= self.total

    @property
    def progress(self) -> float:
        """0.0-1.0."""
        return self.completed / self.total if self.total > 0 else 0.0

    @property
    def downloading(self) -> bool:
        return self.status == "active" and not self.complete


@dataclasses.dataclass(frozen=True)
class SourceBytes:
    """Bytes by source: exact (nftables counters on the WN) or estimated (peers' speeds over time)."""

    site: int = 0
    central: int = 0
    other: int = 0

    def __add__(self, other: SourceBytes) -> SourceBytes:
        return SourceBytes(self.site + other.site, self.central + other.central, self.other + other.other)

    def __sub__(self, other: SourceBytes) -> SourceBytes:
        return SourceBytes(self.site - other.site, self.central - other.central, self.other - other.other)

    def as_dict(self) -> dict[str, int]:
        return {SITE: self.site, CENTRAL: self.central, OTHER: self.other}


@dataclasses.dataclass(frozen=True)
class Share:
    """How much came from site WNs rather than the central seeder."""

    site: int
    central: int
    exact: bool
    """True when every byte counted comes from per-source counters; False: an estimate."""

    @property
    def fraction(self) -> float | None:
        """site / (site + central), None when nothing was counted."""
        total = self.site + self.central
        return self.site / total if total > 0 else None

    @property
    def label(self) -> str:
        """``87% (exact)``, ``40% (estimate)`` or ``-``."""
        fraction = self.fraction
        if fraction is None:
            return "-"
        return f"{fraction * 100:.0f}% ({'exact' if self.exact else 'estimate'})"

    def as_dict(self) -> dict[str, Any]:
        return {"site_bytes": self.site, "central_bytes": self.central, "fraction": self.fraction, "exact": self.exact}


@dataclasses.dataclass(frozen=True)
class WNState:
    """One WN's aria2c as one poll saw it."""

    host: str
    reachable: bool
    reason: str | None = None
    """Why it could not be read: refused, wrong secret, timeout, ssh failure, rpc error."""
    detail: str = ""
    """The one-line error behind ``reason``."""
    version: str | None = None
    active: int = 0
    waiting: int = 0
    seeding: int = 0
    stopped: int = 0
    download_speed: int = 0
    upload_speed: int = 0
    torrents: tuple[Torrent, ...] = ()
    options: Mapping[str, str] | None = None
    """aria2c's live global options (getGlobalOption)."""
    counters: SourceBytes | None = None
    """Bytes received by source since accounting was turned on; None without the accounting rule."""
    round_trips: int = 0
    """RPC round trips this poll took (at most 2)."""

    def bt_torrents(self) -> list[Torrent]:
        return [t for t in self.torrents if t.via == "bittorrent"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A flag raised on one WN (and package, when it concerns one)."""

    host: str
    code: str
    message: str
    package: str | None = None

    @property
    def severity(self) -> Severity:
        return "critical" if self.code in CRITICAL_PROBLEMS else "warning"

    def as_dict(self) -> dict[str, Any]:
        return {"host": self.host, "code": self.code, "severity": self.severity, "package": self.package, "message": self.message}


@dataclasses.dataclass(frozen=True)
class PackageView:
    """One package across the WNs."""

    name: str
    complete: tuple[str, ...]
    seeding: tuple[str, ...]
    downloading: tuple[str, ...]
    stuck: tuple[str, ...]
    """WNs whose download of it is flagged (stalled, or no peers)."""
    http: tuple[str, ...]
    """WNs that fetched it over the HTTP fallback instead of BitTorrent."""
    share: Share

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "complete": list(self.complete), "seeding": list(self.seeding),
            "downloading": list(self.downloading), "stuck": list(self.stuck), "http": list(self.http),
            "share": self.share.as_dict(),
        }


@dataclasses.dataclass(frozen=True)
class SwarmReport:
    """One poll of the selected WNs."""

    taken_at: float
    """Unix time of the poll."""
    elapsed: float
    wns: tuple[WNState, ...]
    packages: tuple[PackageView, ...]
    problems: tuple[Problem, ...]
    share: Share
    """Site-wide: exact when every WN that received bytes has counters."""

    @property
    def reachable(self) -> list[WNState]:
        return [w for w in self.wns if w.reachable]

    def problems_of(self, host: str) -> list[Problem]:
        return [p for p in self.problems if p.host == host]

    def as_dict(self) -> dict[str, Any]:
        return {
            "taken_at": self.taken_at,
            "elapsed": round(self.elapsed, 3),
            "share": self.share.as_dict(),
            "wns": [wn_as_dict(w) for w in self.wns],
            "packages": [p.as_dict() for p in self.packages],
            "problems": [p.as_dict() for p in self.problems],
        }


def wn_as_dict(w: WNState) -> dict[str, Any]:
    """A WN's state as JSON-ready data (live options left out: they hold paths, not news)."""
    return {
        "host": w.host, "reachable": w.reachable, "reason": w.reason, "detail": w.detail or None, "version": w.version,
        "active": w.active, "waiting": w.waiting, "seeding": w.seeding, "stopped": w.stopped,
        "download_speed": w.download_speed, "upload_speed": w.upload_speed,
        "counters": w.counters.as_dict() if w.counters is not None else None,
        "round_trips": w.round_trips,
        "torrents": [
            {
                "gid": t.gid, "package": t.package, "info_hash": t.info_hash, "via": t.via, "status": t.status,
                "progress": round(t.progress, 4), "total": t.total, "completed": t.completed, "uploaded": t.uploaded,
                "download_speed": t.download_speed, "upload_speed": t.upload_speed, "connections": t.connections,
                "seeding": t.seeding, "seed_seconds": None if t.seed_seconds is None else round(t.seed_seconds, 1),
                "ratio": round(t.ratio, 3), "error": t.error,
                "peers": None if t.peers is None else [
                    {"ip": p.ip, "port": p.port, "source": p.source, "wn": p.wn, "download_speed": p.download_speed,
                     "upload_speed": p.upload_speed, "seeder": p.seeder}
                    for p in t.peers
                ],
            }
            for t in w.torrents
        ],
    }


# ---------------------------------------------------------------- classification


@dataclasses.dataclass(frozen=True)
class Addresses:
    """Who is who by IP address: the site's WNs and the central seeder (and HTTP fallback) hosts."""

    wns: Mapping[str, str]
    """IP address -> WN name."""
    central: frozenset[str]

    def classify(self, ip: str) -> tuple[str, str | None]:
        """(source, WN name) of an address."""
        ip = _plain_ip(ip)
        if ip in self.wns:
            return SITE, self.wns[ip]
        if ip in self.central:
            return CENTRAL, None
        return OTHER, None


def _plain_ip(ip: str) -> str:
    # aria2c gives IPv4-mapped IPv6 for dual-stack sockets
    return ip.removeprefix("::ffff:")


def classify_peers(raw: Iterable[Mapping[str, Any]], addresses: Addresses) -> tuple[Peer, ...]:
    """getPeers entries as classified ``Peer``s."""
    peers = []
    for p in raw:
        ip = str(p.get("ip", ""))
        source, wn = addresses.classify(ip)
        peers.append(Peer(
            ip=_plain_ip(ip), port=_int(p.get("port")), source=source, wn=wn,
            download_speed=_int(p.get("downloadSpeed")), upload_speed=_int(p.get("uploadSpeed")),
            seeder=str(p.get("seeder", "false")) == "true",
        ))
    return tuple(peers)


def speeds_by_source(peers: Iterable[Peer]) -> SourceBytes:
    """Bytes/s received now, by source."""
    got = {SITE: 0, CENTRAL: 0, OTHER: 0}
    for p in peers:
        got[p.source] += p.download_speed
    return SourceBytes(got[SITE], got[CENTRAL], got[OTHER])


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------- memory between polls


@dataclasses.dataclass
class Seen:
    """What the monitor remembers of one download between polls."""

    first_seen: float
    completed: int
    progress_at: float
    """When ``completed`` last grew (or first seen)."""
    complete_at: float | None = None
    peers_at: float | None = None
    """When it last had a peer."""
    estimate: SourceBytes = dataclasses.field(default_factory=SourceBytes)
    """Bytes by source, integrated from the peers' speeds between polls."""
    last_poll: float = 0.0
    last_speeds: SourceBytes = dataclasses.field(default_factory=SourceBytes)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Seen:
        def num(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

        def sb(key: str) -> SourceBytes:
            v = data.get(key)
            if not isinstance(v, Mapping):
                return SourceBytes()
            return SourceBytes(_int(v.get(SITE)), _int(v.get(CENTRAL)), _int(v.get(OTHER)))

        first = num("first_seen") or 0.0
        return cls(
            first_seen=first, completed=_int(data.get("completed")), progress_at=num("progress_at") or first,
            complete_at=num("complete_at"), peers_at=num("peers_at"), estimate=sb("estimate"),
            last_poll=num("last_poll") or first, last_speeds=sb("last_speeds"),
        )


Memory = dict[str, dict[str, Seen]]
"""host -> gid -> what was seen."""


def remember(memory: Memory, host: str, gid: str, completed: int, complete: bool, peers: Sequence[Peer] | None, now: float) -> Seen:
    """Update (or start) what is remembered of one download; returns it.

    The estimate integrates the peers' download speeds over the time since the last poll (the
    mean of the last and the current speeds), so short transfers between polls are missed or
    blurred: that is why it is labelled an estimate.
    """
    by_host = memory.setdefault(host, {})
    seen = by_host.get(gid)
    speeds = speeds_by_source(peers or ())
    if seen is None:
        seen = Seen(first_seen=now, completed=completed, progress_at=now, last_poll=now, last_speeds=speeds)
        by_host[gid] = seen
    else:
        dt = max(0.0, now - seen.last_poll)
        mean = SourceBytes(
            int((seen.last_speeds.site + speeds.site) / 2 * dt),
            int((seen.last_speeds.central + speeds.central) / 2 * dt),
            int((seen.last_speeds.other + speeds.other) / 2 * dt),
        )
        seen.estimate = seen.estimate + mean
        if completed > seen.completed:
            seen.progress_at = now
        seen.completed = completed
        seen.last_poll = now
        seen.last_speeds = speeds
    if complete and seen.complete_at is None:
        seen.complete_at = now
    if peers:
        seen.peers_at = now
    return seen


def forget_missing(memory: Memory, host: str, gids: Iterable[str]) -> None:
    """Drop what is remembered of a WN's downloads that are gone (removed from aria2c)."""
    keep = set(gids)
    by_host = memory.get(host)
    if by_host is not None:
        for gid in [g for g in by_host if g not in keep]:
            del by_host[gid]


# ---------------------------------------------------------------- reading one WN


def _download(struct: Mapping[str, Any]) -> aria2p.Download:
    # aria2p's Download reads the tellStatus struct; it needs its API only to act, which we never do
    return aria2p.Download(cast("aria2p.API", None), dict(struct))


def package_name(d: aria2p.Download) -> str:
    """The package a download is: the torrent's name, else the file's name."""
    bt = d.bittorrent
    if bt is not None and bt.info:
        return str(bt.info.get("name", ""))
    try:
        files = d.files
    except (KeyError, IndexError, TypeError):
        return d.gid
    if files and str(files[0].path):
        return str(files[0].path).rsplit("/", 1)[-1]
    try:
        return str(files[0].uris[0]["uri"]).rsplit("/", 1)[-1] if files and files[0].uris else d.gid
    except (KeyError, IndexError):
        return d.gid


def is_metadata(struct: Mapping[str, Any]) -> bool:
    """A .torrent fetched to start a BitTorrent download (followedBy set, or a [METADATA] entry)."""
    if struct.get("followedBy"):
        return True
    files = struct.get("files") or []
    return bool(files) and str(files[0].get("path", "")).startswith("[METADATA]")


def read_wn(
    host: str,
    version: Mapping[str, Any],
    stat: Mapping[str, Any],
    downloads: Sequence[Mapping[str, Any]],
    peers: Mapping[str, Sequence[Mapping[str, Any]]],
    options: Mapping[str, Any] | None,
    addresses: Addresses,
    memory: Memory,
    now: float,
    *,
    counters: SourceBytes | None = None,
    round_trips: int = 0,
) -> WNState:
    """A reachable WN's state from its aria2c answers (and update the memory).

    Args:
        host: the WN.
        version: getVersion's answer.
        stat: getGlobalStat's answer.
        downloads: tellActive + tellWaiting + tellStopped, in that order.
        peers: gid -> getPeers' answer, for the BitTorrent downloads still fetching.
        options: getGlobalOption's answer, when asked.
        addresses: the site's WNs and central hosts by address.
        memory: what earlier polls saw; updated here.
        now: the poll's time (Unix seconds).
        counters: the WN's accounting counters, when installed.
        round_trips: RPC round trips the poll took.

    Returns:
        The WN's state.
    """
    torrents = []
    gids = []
    for struct in downloads:
        if is_metadata(struct):
            continue
        d = _download(struct)
        gids.append(d.gid)
        bt = struct.get("bittorrent") is not None
        raw_peers = peers.get(d.gid)
        classified = classify_peers(raw_peers, addresses) if raw_peers is not None else None
        total, completed = d.total_length, d.completed_length
        complete = total > 0 and completed >= total
        seen = remember(memory, host, d.gid, completed, complete, classified, now)
        seeding = bt and complete and d.status == "active"
        seed_seconds = now - seen.complete_at if complete and seen.complete_at is not None else None
        torrents.append(Torrent(
            gid=d.gid, package=package_name(d), info_hash=d.info_hash, via="bittorrent" if bt else "http", status=d.status,
            total=total, completed=completed, uploaded=d.upload_length, download_speed=d.download_speed,
            upload_speed=d.upload_speed, connections=d.connections, seeding=seeding, seed_seconds=seed_seconds,
            ratio=d.upload_length / completed if completed > 0 else 0.0, peers=classified,
            error=d.error_message if d.status == "error" else None,
        ))
    forget_missing(memory, host, gids)
    s = aria2p.Stats(dict(stat))
    n_seeding = sum(1 for t in torrents if t.seeding)
    return WNState(
        host=host, reachable=True, version=str(version.get("version", "")) or None,
        active=s.num_active - n_seeding, waiting=s.num_waiting, seeding=n_seeding, stopped=s.num_stopped,
        download_speed=s.download_speed, upload_speed=s.upload_speed, torrents=tuple(torrents),
        options={str(k): str(v) for k, v in options.items()} if options is not None else None,
        counters=counters, round_trips=round_trips,
    )


# ---------------------------------------------------------------- versions and drift


def version_tuple(text: str) -> tuple[int, ...]:
    """``1.36.0`` -> (1, 36, 0); non-numeric parts end the tuple."""
    parts = []
    for part in text.strip().split("."):
        m = re.match(r"\d+", part)
        if m is None:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def _normal(value: str) -> str | float:
    m = _SIZE.match(value.strip())
    if m is None:
        return value.strip()
    number = float(m.group(1))
    return number * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def same_option(rendered: str, live: str) -> bool:
    """Whether aria2c's live value is the rendered one (``1M`` = ``1048576``, ``0.0`` = ``0``)."""
    return _normal(rendered) == _normal(live)


def drift(profile: Mapping[str, str], live: Mapping[str, str]) -> list[str]:
    """Option names whose live value differs from the rendered profile (secret never compared, never shown)."""
    return sorted(
        name for name, value in profile.items()
        if name not in DRIFT_IGNORED and name in live and not same_option(value, live[name])
    )


# ---------------------------------------------------------------- problems


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the flags compare against (``[status]`` of the site config, and each WN's seed time)."""

    stall_window: float = 300.0
    no_peers_after: float = 120.0
    seed_grace: float = 120.0
    min_version: str = "1.35.0"


def flag_problems(
    wns: Sequence[WNState],
    memory: Memory,
    now: float,
    limits: Limits,
    seed_time_minutes: Mapping[str, float | None],
    profiles: Mapping[str, Mapping[str, str] | None],
) -> list[Problem]:
    """Every problem of this poll, WN by WN in the order given.

    Args:
        wns: the WNs' states.
        memory: what the polls so far saw (for windows).
        now: the poll's time.
        limits: windows and the version floor.
        seed_time_minutes: host -> how long it should seed (aria2c's seed-time; None: no limit).
        profiles: host -> the rendered profile, for drift (None: not compared).

    Returns:
        Problems, each naming host, code, package when it concerns one, and what was seen.
    """
    holders: dict[str, set[str]] = {}
    for w in wns:
        for t in w.torrents:
            if t.complete:
                holders.setdefault(t.package, set()).add(w.host)
    floor = version_tuple(limits.min_version)
    problems: list[Problem] = []
    for w in wns:
        if not w.reachable:
            code = P_WRONG_SECRET if w.reason == WRONG_SECRET else P_UNREACHABLE
            problems.append(Problem(w.host, code, f"{w.reason}: {w.detail}" if w.detail else str(w.reason)))
            continue
        if w.version and floor and version_tuple(w.version) < floor:
            problems.append(Problem(w.host, P_OLD_ARIA2C, f"aria2c {w.version} is older than status.min_aria2c_version {limits.min_version}"))
        profile = profiles.get(w.host)
        if profile is not None and w.options is not None:
            differs = drift(profile, w.options)
            if differs:
                problems.append(Problem(w.host, P_DRIFT, f"live options differ from the rendered profile: {', '.join(differs)}"))
        seen_by_gid = memory.get(w.host, {})
        limit = seed_time_minutes.get(w.host)
        for t in w.torrents:
            seen = seen_by_gid.get(t.gid)
            if t.seeding and limit is not None and limit > 0 and t.seed_seconds is not None and t.seed_seconds > limit * 60 + limits.seed_grace:
                problems.append(Problem(
                    w.host, P_SEEDING_TOO_LONG,
                    f"{t.package}: seeding for {t.seed_seconds / 60:.0f} min, seed-time is {limit:g} min", t.package,
                ))
            if not t.downloading or seen is None:
                continue
            others = holders.get(t.package, set()) - {w.host}
            if t.via == "bittorrent" and t.connections == 0 and others and now - (seen.peers_at or seen.first_seen) >= limits.no_peers_after:
                problems.append(Problem(
                    w.host, P_NO_PEERS,
                    f"{t.package}: no peers for {now - (seen.peers_at or seen.first_seen):.0f} s while {len(others)} other WN(s) hold it",
                    t.package,
                ))
            elif now - seen.progress_at >= limits.stall_window:
                problems.append(Problem(
                    w.host, P_STALLED,
                    f"{t.package}: no progress for {now - seen.progress_at:.0f} s at {t.progress * 100:.1f}%", t.package,
                ))
    return problems


# ---------------------------------------------------------------- shares and packages


def wn_share(w: WNState, memory: Memory) -> Share | None:
    """A WN's own share: from its counters when it has them, else the estimate of its downloads."""
    if w.counters is not None:
        return Share(w.counters.site, w.counters.central, exact=True)
    seen = memory.get(w.host, {})
    est = SourceBytes()
    for t in w.torrents:
        if t.gid in seen:
            est = est + seen[t.gid].estimate
    if est.site + est.central == 0:
        return None
    return Share(est.site, est.central, exact=False)


def package_share(name: str, wns: Sequence[WNState], memory: Memory) -> Share:
    """The share for one package over the WNs holding it.

    A WN's counters count everything it received, so they are the package's own bytes only on a
    WN whose one BitTorrent download is this package; elsewhere the estimate is used, and then the
    whole share is an estimate.
    """
    site = central = 0
    exact = True
    for w in wns:
        mine = [t for t in w.torrents if t.package == name and t.via == "bittorrent"]
        if not mine:
            continue
        if w.counters is not None and len(w.bt_torrents()) == 1:
            site += w.counters.site
            central += w.counters.central
            continue
        seen = memory.get(w.host, {})
        for t in mine:
            est = seen[t.gid].estimate if t.gid in seen else SourceBytes()
            if est.site + est.central == 0 and t.peers:
                # nothing integrated yet (first poll): the current speeds are the only evidence
                est = speeds_by_source(t.peers)
            if est.site + est.central:
                exact = False
            site += est.site
            central += est.central
    return Share(site, central, exact)


def site_share(wns: Sequence[WNState], memory: Memory) -> Share:
    """Site-wide share: sum over the WNs of their own shares; exact only when all of them are."""
    site = central = 0
    exact = True
    for w in wns:
        if not w.reachable:
            continue
        share = wn_share(w, memory)
        if share is None:
            continue
        site += share.site
        central += share.central
        exact = exact and share.exact
    return Share(site, central, exact)


def package_views(wns: Sequence[WNState], problems: Sequence[Problem], memory: Memory) -> list[PackageView]:
    """Each package seen on any WN: who holds it complete, seeds it, downloads it, is stuck, fetched it over HTTP."""
    names = sorted({t.package for w in wns for t in w.torrents})
    stuck_by = {(p.host, p.package) for p in problems if p.code in (P_STALLED, P_NO_PEERS)}
    views = []
    for name in names:
        complete, seeding, downloading, stuck, http = set(), set(), set(), set(), set()
        for w in wns:
            for t in w.torrents:
                if t.package != name:
                    continue
                if t.complete:
                    complete.add(w.host)
                if t.seeding:
                    seeding.add(w.host)
                if t.downloading:
                    downloading.add(w.host)
                if t.via == "http" and t.complete:
                    http.add(w.host)
                if (w.host, name) in stuck_by:
                    stuck.add(w.host)
        views.append(PackageView(
            name=name, complete=tuple(sorted(complete)), seeding=tuple(sorted(seeding)), downloading=tuple(sorted(downloading)),
            stuck=tuple(sorted(stuck)), http=tuple(sorted(http)), share=package_share(name, wns, memory),
        ))
    return views
