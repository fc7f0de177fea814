"""Rolling one changed aria2c profile out to 200 WNs: siteadmin against pyinfra, Ansible and a bare paramiko loop.

Every tool does the same work in the same run, on the same fake site (``_rollout_harness``: 200
WNs on loopback addresses served by 13 real sshd, logged in to as a user with a minimal shell
rc): write each WN's ~2 KB profile, mode 0600, 50 WNs at a time, all in one batch. A "changed"
run finds every WN's file different (one option's value moves each run); a "no change" run finds
every file already right. Each figure is the median of ``--runs`` runs (3); ratios come from the
same run, never from a remembered figure.

- ``paramiko``: the floor. One transport per WN, host key checked against known_hosts, the file
  read over SFTP and compared, and where it differs a 0600 temp file written beside it and
  renamed over it. 50 threads. Nothing else (no backup, no lock, no plan). ``paramiko-nodelay``:
  the same with TCP_NODELAY set (paramiko never sets it).
- ``siteadmin``: (a) the core rollout service with on-node validation and the reload turned off
  by the benchmark (the service's own parameters), so it does the peers' work plus what it
  always does (lock, plan with the profile check, backup, owner and mode kept, audit record).
- ``siteadmin-full``: (b) the whole apply: validation by each WN's aria2c and the reload with
  its read-back, on ``--full-hosts`` WNs (each runs an aria2c daemon; all share these 2 cores).
- ``siteadmin-steps``: the file steps alone (read, backup, private temp, install) on the WN
  service, without the rollout service's lock, plan and audit.
- ``pyinfra``, ``ansible``, ``pssh``: see ``_rollout_peers``; installed into a venv of the
  benchmark's own on first use.

Besides wall time each line shows the CPU seconds spent by this process (or the tool's
subprocess) and by the WNs (every sshd, shell and sftp-server), so the closing lines can say
where the time goes. Run as root (it makes a WN user and starts sshd).

    .venv/bin/python benchmarks/bench_rollout.py --hosts 200 --tools siteadmin,paramiko,pyinfra,ansible
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import cProfile
import dataclasses
import functools
import io
import os
import platform
import pstats
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, os.path.dirname(__file__))

import paramiko  # noqa: E402
from _rollout_harness import NODE_USER, Harness, Node, machine_busy, node_shell_cost, process_cpu  # noqa: E402
from _rollout_peers import Ansible, ParallelSsh, Pyinfra, peers_venv, versions  # noqa: E402
from paramiko import sftp as sftp_proto  # noqa: E402

from siteadmin import rollout  # noqa: E402
from siteadmin.aria2conf import check as check_module  # noqa: E402
from siteadmin.aria2conf import render  # noqa: E402
from siteadmin.remote import Session, SessionPool, WNService, files  # noqa: E402
from siteadmin.rollout import service as rollout_service  # noqa: E402
from siteadmin.site import NodeSection, Site, load_site  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "siteadmin-bench-cache"
ALL_TOOLS = ("siteadmin", "siteadmin-full", "siteadmin-steps", "paramiko", "paramiko-nodelay", "pyinfra", "ansible", "pssh")
DEFAULT_TOOLS = "siteadmin,siteadmin-full,paramiko,pyinfra,ansible"
DAEMON_RPC_BASE = 26800
"""The aria2c daemon of WN i (0-based) listens for RPC on this port + i: all WNs share one loopback."""
CHANGING_OPTION = "max-overall-upload-limit"
"""The one option whose value differs from run to run (live over RPC, so (b) reloads, never restarts)."""

# Options of a plausible site profile, so each WN's file is ~2 KB as on a real site.
SITE_OPTIONS = """
bt-max-peers = 80
bt-request-peer-speed-limit = "10M"
bt-max-open-files = 200
seed-ratio = 0.0
bt-stop-timeout = 0
bt-seed-unverified = true
bt-hash-check-seed = false
bt-require-crypto = false
bt-tracker-interval = 0
follow-torrent = "true"
max-overall-download-limit = "0"
max-upload-limit = "0"
max-download-limit = "0"
max-concurrent-downloads = 8
all-proxy = "proxy.bench.example.org:3128"
http-proxy = "http://proxy.bench.example.org:3128"
https-proxy = "http://proxy.bench.example.org:3128"
no-proxy = "{no_proxy}"
bt-exclude-tracker = "{exclude}"
dir = "/var/lib/aria2/packages"
save-session = "/var/lib/aria2/session"
save-session-interval = 60
force-save = false
auto-save-interval = 60
continue = true
check-integrity = false
file-allocation = "falloc"
disk-cache = "64M"
enable-mmap = false
log = "/var/log/aria2/aria2c.log"
console-log-level = "warn"
summary-interval = 0
dht-file-path = "/var/lib/aria2/dht.dat"
rpc-max-request-size = "4M"
""".format(
    no_proxy=",".join(
        ["localhost", "127.0.0.1", ".cern.ch", "alitorrent.cern.ch", "alice-ldap.cern.ch", ".bench", ".example.org", "frontier.cern.ch"]
        + ["cvmfs-stratum-one.cern.ch", "squid01.bench.example.org", "squid02.bench.example.org", "se01.bench.example.org"]
    ),
    exclude=",".join(f"{scheme}://{host}/announce" for scheme in ("http", "udp") for host in ("tracker.example.net:6969", "open.tracker.example.com:1337")),
)


class Tool(Protocol):
    name: str

    def run(self, generation: int, parallel: int) -> None: ...


# ---------------------------------------------------------------- the fake site's site.toml


def _q(text: object) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_site(harness: Harness, generation: int, tool: str = "siteadmin", daemons: Sequence[Node] = ()) -> Site:
    """The site.toml siteadmin reads (every WN with its address, port and own config path); loaded.

    ``daemons``: WNs that run an aria2c daemon; they get their own RPC port and state files
    (all WNs share this machine's loopback and disk), so their profiles differ WN by WN.
    """
    per_node_path = "config_path" in {f.name for f in dataclasses.fields(NodeSection)}
    root = harness.root
    lines = [
        "[site]",
        'name = "BENCH"',
        "[wns]",
        f"hosts = [{_q(f'wn[001-{harness.count:03d}].bench')}]",
        f"max_hosts = {max(harness.count, 1000)}",
        # WNs running aria2c daemons all share this machine: give their BitTorrent and DHT ports room
        'ports = "27000-27999"',
        "[ssh]",
        f"user = {_q(NODE_USER)}",
        f"key_file = {_q(harness.key_path)}",
        f"known_hosts = {_q(harness.known_hosts)}",
        "parallelism = 50",
        "[aria2c]",
        f"rpc_secret_file = {_q(root / 'rpc-secret')}",
        f"state_dirs = [\"/var/lib/aria2\", \"/var/log/aria2\", {_q(root / 'wn')}]",
        "[aria2c.options]",
        SITE_OPTIONS.strip(),
        f'{CHANGING_OPTION} = "{generation}M"',
        "[rollout]",
        f"config_path = {_q(root / 'unused' / 'aria2c.conf')}",
        f"batch_size = {harness.count}",
        "max_fail_percent = 100",
        "backups_kept = 3",
        "[audit]",
        f"path = {_q(root / 'audit.jsonl')}",
    ]
    for node in harness.nodes:
        lines += [f"[wns.nodes.{_q(node.name)}]", f"address = {_q(node.address)}", f"port = {node.port}"]
        if per_node_path:
            lines.append(f"config_path = {_q(node.config_path(tool))}")
        if node in daemons:
            state = node.dir / "aria2-state"
            if not state.is_dir():
                state.mkdir(mode=0o755)
                harness.own(state)
            own = {
                "rpc-listen-port": DAEMON_RPC_BASE + harness.nodes.index(node),
                "dir": _q(state / "downloads"),
                "save-session": _q(state / "session"),
                "log": _q(state / "aria2c.log"),
                "dht-file-path": _q(state / "dht.dat"),
            }
            lines.append("aria2c = { " + ", ".join(f"{k} = {v}" for k, v in own.items()) + " }")
    path = root / f"site-{tool}.toml"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    tmp.replace(path)
    return load_site(path)


def peer_template(site: Site, harness: Harness, generation: int) -> str:
    """The peers' Jinja template: siteadmin's rendering of the first WN, its name and the changing value as variables."""
    first = harness.nodes[0].name
    text = render(site, first).text
    text = text.replace(first, "{{ wn }}").replace(f"{CHANGING_OPTION}={generation}M", CHANGING_OPTION + "={{ generation }}M")
    if "{{ generation }}" not in text:
        raise SystemExit(f"the rendered profile has no {CHANGING_OPTION} line to vary")
    return text


def fill(template: str, node: Node, generation: int) -> bytes:
    return template.replace("{{ wn }}", node.name).replace("{{ generation }}", str(generation)).encode("utf-8")


# ---------------------------------------------------------------- the floor


class ParamikoFloor:
    """The floor: a bare paramiko loop (strict host keys, read + compare, 0600 temp file + rename), 50 threads."""

    def __init__(self, harness: Harness, template: str, *, nodelay: bool = False) -> None:
        self.name = "paramiko-nodelay" if nodelay else "paramiko"
        self.harness = harness
        self.template = template
        self.nodelay = nodelay
        self.host_keys = paramiko.HostKeys(str(harness.known_hosts))
        self.pkey = paramiko.Ed25519Key.from_private_key_file(str(harness.key_path))
        list(harness.tool_dirs(self.name))

    def run(self, generation: int, parallel: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda n: self._one(n, generation), self.harness.nodes))

    def _one(self, node: Node, generation: int) -> None:
        sock = socket.create_connection((node.address, node.port), timeout=10)
        if self.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            key = transport.get_remote_server_key()
            if not self.host_keys.check(f"[{node.address}]:{node.port}", key):
                raise RuntimeError(f"{node.name}: host key not in known_hosts")
            transport.auth_publickey(NODE_USER, self.pkey)
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            path = str(node.config_path(self.name))
            new = fill(self.template, node, generation)
            try:
                with sftp.open(path, "rb") as handle:
                    current: bytes | None = handle.read()
            except FileNotFoundError:
                current = None
            if current != new:
                temp = f"{os.path.dirname(path)}/.aria2c.conf.{secrets.token_hex(4)}.tmp"
                attrs = paramiko.SFTPAttributes()
                attrs.st_mode = 0o600
                flags = sftp_proto.SFTP_FLAG_WRITE | sftp_proto.SFTP_FLAG_CREATE | sftp_proto.SFTP_FLAG_EXCL
                _, msg = sftp._request(sftp_proto.CMD_OPEN, temp, flags, attrs)  # type: ignore[attr-defined]  # open with a mode
                with paramiko.SFTPFile(sftp, msg.get_binary(), "wb") as handle:
                    handle.write(new)
                sftp.posix_rename(temp, path)
            sftp.close()
        finally:
            transport.close()


# ---------------------------------------------------------------- siteadmin


class SiteadminSteps:
    """siteadmin's file steps on its WN service, without the rollout service: read, back up, 0600 temp, rename."""

    name = "siteadmin-steps"

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.paths = {n.name: str(n.config_path(self.name)) for n in harness.nodes}
        list(harness.tool_dirs(self.name))

    def run(self, generation: int, parallel: int) -> None:
        site = write_site(self.harness, generation, self.name)

        def work(session: object) -> str:
            from siteadmin.remote import Session

            assert isinstance(session, Session)
            path = self.paths[session.host]
            new = render(site, session.host).text.encode("utf-8")
            with session.sftp() as sftp:
                current = files.read_file(session, path, sftp=sftp)
                if current.data == new:
                    return "unchanged"
                files.backup(session, current, keep=site.rollout.backups_kept, sftp=sftp)
                with files.staged(session, path, new, sftp=sftp) as temp:
                    files.install(session, temp, current, sftp=sftp)
            return "changed"

        with WNService(site, parallelism=parallel, global_known_hosts=()) as service:
            results = service.run([n.name for n in self.harness.nodes], work)
        bad = [r for r in results if not r.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} WNs failed, first {bad[0].host}: {bad[0].error}")


class SiteadminRollout:
    """siteadmin: the core rollout service (``siteadmin.rollout.apply``), one batch, on every WN or a subset.

    ``full`` False is figure (a): ``validate=False, reload=False``, the service's own parameters,
    so it does the peers' work plus the lock, the plan (profile check), the backup and the audit
    records. ``full`` True is figure (b): validation by each WN's aria2c and the live reload with
    its read-back, so each WN of the subset runs an aria2c daemon (``start_daemons``).
    """

    def __init__(self, harness: Harness, *, full: bool = False, nodes: Sequence[Node] | None = None) -> None:
        self.name = "siteadmin-full" if full else "siteadmin"
        self.harness = harness
        self.full = full
        self.nodes = list(nodes if nodes is not None else harness.nodes)
        self.daemons: list[subprocess.Popen[bytes]] = []
        list(harness.tool_dirs(self.name))

    @property
    def pids(self) -> list[int]:
        """The aria2c daemons' process ids (their CPU is the WNs')."""
        return [p.pid for p in self.daemons]

    def site(self, generation: int) -> Site:
        return write_site(self.harness, generation, self.name, daemons=self.nodes if self.full else ())

    def run(self, generation: int, parallel: int) -> None:
        site = self.site(generation)
        self._signal(signal.SIGCONT)
        try:
            with one_local_check() if self.full else contextlib.nullcontext():
                result = rollout.apply(site, [n.name for n in self.nodes], validate=self.full, reload=bool(self.daemons), parallelism=parallel)
        finally:
            self._signal(signal.SIGSTOP)
        if not result.ok:
            first = result.failed[0]
            raise RuntimeError(f"{self.name}: {len(result.failed)} WNs failed, first {first.host}: {first.error}")
        if self.full and self.daemons:
            wrong = [r.host for r in result.reports if r.outcome != "unchanged" and r.reloaded != "rpc"]
            if wrong:
                raise RuntimeError(f"{self.name}: {len(wrong)} changed WNs not reloaded over RPC, first {wrong[0]}")

    def start_daemons(self) -> None:
        """One aria2c daemon per WN of the subset, as the WN user, reading the file the warm-up run wrote."""
        user = self.harness.user
        assert user is not None
        if not self.full:
            return
        for node in self.nodes:
            state = node.dir / "aria2-state"
            log = state / "daemon.out"
            with log.open("ab") as out:
                self.daemons.append(
                    subprocess.Popen(
                        ["aria2c", f"--conf-path={node.config_path(self.name)}"],
                        cwd=state, env={"HOME": str(state), "PATH": "/usr/bin:/bin"}, user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                )
        for node in self.nodes:
            wait_port(DAEMON_RPC_BASE + self.harness.nodes.index(node), 10.0)
        # 200 idle aria2c daemons still spend ~0.5 s of CPU per second (their timers): they are
        # stopped between this tool's runs, so they never weigh on another tool's figures
        self._signal(signal.SIGSTOP)

    def _signal(self, sig: signal.Signals) -> None:
        for proc in self.daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def stop_daemons(self) -> None:
        self._signal(signal.SIGCONT)
        for proc in self.daemons:
            proc.terminate()
        for proc in self.daemons:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.daemons = []


_HARNESS_ONLY = ("rpc-listen-port=", "dir=", "save-session=", "log=", "dht-file-path=", "# host:", "# profile:", "# options:")
"""Lines of a daemon WN's profile that differ WN by WN only because all WNs share this machine."""


@contextlib.contextmanager
def one_local_check() -> Iterator[None]:
    """For one run, the VoBox-side aria2c check reads the profile once, as on a real site.

    The profile check runs aria2c once per distinct profile; on a real site the WNs share one
    RPC port and state paths, but here each daemon WN needs its own, which would make 200
    distinct profiles and 200 local aria2c runs. Texts that differ only in those lines share
    one answer for the run.
    """
    original: Callable[..., list[str]] = getattr(check_module, "check_with_aria2c")  # noqa: B009 - not re-exported
    said: dict[str, list[str]] = {}
    lock = threading.Lock()

    def once(text: str, *args: Any, **kwargs: Any) -> list[str]:
        key = "\n".join(line for line in text.splitlines() if not line.startswith(_HARNESS_ONLY))
        with lock:
            if key not in said:
                said[key] = original(text, *args, **kwargs)
            return said[key]

    setattr(check_module, "check_with_aria2c", once)  # noqa: B010
    try:
        yield
    finally:
        setattr(check_module, "check_with_aria2c", original)  # noqa: B010


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no aria2c RPC on 127.0.0.1:{port} within {timeout:g} s") from None
            time.sleep(0.05)


class StepTimer:
    """Wall time per rollout step, summed over the WNs (threads), by wrapping the steps the service calls."""

    STEPS = (
        (rollout_service, "check_profiles", "profile check (VoBox)"),
        (SessionPool, "connect", "connect + handshake + auth"),
        (Session, "sftp", "sftp channel open"),
        (rollout_service._Checks, "of", "wait for the profile check"),
        (rollout_service, "take_lock", "lock"),
        (files, "read_file", "read current file"),
        (rollout_service, "_report", "plan (classify, diff)"),
        (files, "remove_held_temp", "left temp file (unchanged)"),
        (files, "list_folder", "folder listing (changed)"),
        (files, "remove_stale_temps", "stale temp removal"),
        (files, "write_temp", "write private temp"),
        (files, "validate", "validate with WN's aria2c"),
        (files, "link_backup", "backup (hard link)"),
        (files, "backup", "backup (copy)"),
        (files, "install", "install (owner/mode, rename)"),
        (rollout_service, "_reload", "reload (RPC + read-back)"),
        (rollout_service, "drop_lock", "unlock"),
        (rollout_service, "_audit_host", "audit record"),
        (rollout_service, "_apply_host", "whole WN (after connect)"),
    )

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._saved: list[tuple[object, str, object]] = []

    def __enter__(self) -> StepTimer:
        for owner, attr, label in self.STEPS:
            original = getattr(owner, attr)
            self._saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(original, label, attr == "sftp"))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, original in reversed(self._saved):
            setattr(owner, attr, original)
        self._saved = []

    def _add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.totals[label] = self.totals.get(label, 0.0) + seconds
            self.counts[label] = self.counts.get(label, 0) + 1

    def _wrap(self, fn: Callable[..., object], label: str, context: bool) -> Callable[..., object]:
        if context:
            @contextlib.contextmanager
            def opened(*args: object, **kwargs: object) -> Iterator[object]:
                t0 = time.perf_counter()
                with fn(*args, **kwargs) as value:  # type: ignore[attr-defined]
                    self._add(label, time.perf_counter() - t0)
                    yield value

            return opened

        @functools.wraps(fn)
        def timed_step(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(label, time.perf_counter() - t0)

        return timed_step

    def lines(self, hosts: int) -> list[str]:
        out = []
        for _, _, label in self.STEPS:
            if label in self.totals:
                total = self.totals[label]
                out.append(f"    {label:28} {total:7.2f} s over {self.counts[label]:4d} calls, {total / hosts * 1000:7.1f} ms per WN")
        return out


# ---------------------------------------------------------------- measuring


@dataclasses.dataclass
class Sample:
    wall: float
    client_cpu: float
    node_cpu: float
    other_cpu: float = 0.0
    """CPU the rest of the machine spent meanwhile (other users' work is noise here)."""


@dataclasses.dataclass
class Figures:
    changed: list[Sample] = dataclasses.field(default_factory=list)
    unchanged: list[Sample] = dataclasses.field(default_factory=list)

    @staticmethod
    def median(samples: Sequence[Sample]) -> Sample:
        return Sample(*(statistics.median(getattr(s, f) for s in samples) for f in ("wall", "client_cpu", "node_cpu", "other_cpu")))


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(harness: Harness, fn: Callable[[], None], pids: Sequence[int] = ()) -> Sample:
    """Wall time of ``fn``, with the CPU this process (and its finished subprocesses) and the WNs spent.

    ``pids``: more WN processes to count (the aria2c daemons of figure (b)).
    """
    harness.wait_idle()
    node0, cpu0, busy0 = harness.node_cpu() + sum(map(process_cpu, pids)), _cpu_now(), machine_busy()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    cpu, busy = _cpu_now() - cpu0, machine_busy() - busy0
    harness.wait_idle()
    node = harness.node_cpu() + sum(map(process_cpu, pids)) - node0
    # the WNs' last sessions are reaped after ``fn`` returns, so their CPU is read after the pause
    return Sample(wall, cpu, node, max(0.0, busy - cpu - node))


def verify(harness: Harness, tool: str, generation: int, nodes: Sequence[Node] | None = None) -> None:
    """Every WN's file for ``tool`` holds generation ``generation``, mode 0600 (not timed)."""
    want = f"{CHANGING_OPTION}={generation}M\n"
    for node in nodes if nodes is not None else harness.nodes:
        path = node.config_path(tool)
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode & 0o777
        if want not in text or node.name not in text or mode != 0o600:
            raise SystemExit(f"{tool}: {node.name}: {path} not rolled out (mode {mode:o}, generation {generation} expected)")


def measure(harness: Harness, tools: Sequence[Tool], runs: int, parallel: int, log: Callable[[str], None]) -> dict[str, Figures]:
    """A warm-up run per tool (it creates the files), then ``runs`` rounds of changed runs and ``runs`` of no-change runs.

    Each round runs every tool once, one after the other, so that load from elsewhere on the
    machine falls on all tools alike rather than on whichever ran at that moment.
    """
    figures = {tool.name: Figures() for tool in tools}
    generation = 1000
    for tool in tools:
        tool.run(generation, parallel)
        verify(harness, tool.name, generation, getattr(tool, "nodes", None))
        start = getattr(tool, "start_daemons", None)
        if start is not None:
            start()
    for kind in ("changed", "no change"):
        for _ in range(runs):
            if kind == "changed":
                generation += 1
            for tool in tools:
                try:
                    sample = timed(harness, lambda t=tool, g=generation: t.run(g, parallel), getattr(tool, "pids", ()))  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - say it, then measure again: one failure must not lose the whole run
                    log(f"  {tool.name:17} {kind:9}: FAILED ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); run again")
                    sample = timed(harness, lambda t=tool, g=generation: t.run(g, parallel), getattr(tool, "pids", ()))  # type: ignore[misc]
                verify(harness, tool.name, generation, getattr(tool, "nodes", None))
                (figures[tool.name].changed if kind == "changed" else figures[tool.name].unchanged).append(sample)
                log(f"  {tool.name:17} {kind:9}: {_fmt(sample)}")
    return figures


def _fmt(sample: Sample) -> str:
    return f"{sample.wall:6.2f} s wall, CPU: tool {sample.client_cpu:5.2f} s, WNs {sample.node_cpu:5.2f} s, rest of the machine {sample.other_cpu:5.2f} s"


def profile_run(tool: Tool, generation: int, parallel: int, top: int = 40, sort: str = "tottime") -> str:
    """cProfile of one run in every thread (the workers and paramiko's transport threads too), merged.

    ``threading.setprofile`` gives each thread started during the run a profiler of its own,
    timed by the thread's own CPU clock: wall-clock profiles of 100 threads sharing 2 cores
    charge a function for the time its thread waited for a core.
    """
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start(*_: object) -> None:
        profiler = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append(profiler)
        profiler.enable()

    main_thread = cProfile.Profile(time.thread_time)
    threading.setprofile(start)
    try:
        main_thread.runcall(tool.run, generation, parallel)
    finally:
        threading.setprofile(None)
    out = io.StringIO()
    stats = pstats.Stats(main_thread, stream=out)
    for profiler in profiles:
        stats.add(profiler)
    stats.sort_stats(sort).print_stats(top)
    return out.getvalue()


@contextlib.contextmanager
def sftp_requests() -> Iterator[collections.Counter[str]]:
    """Count the SFTP requests paramiko sends in the block, by kind (``open``, ``fsync@openssh.com``...)."""
    counts: collections.Counter[str] = collections.Counter()
    names = {v: k.removeprefix("CMD_").lower() for k, v in vars(sftp_proto).items() if k.startswith("CMD_") and isinstance(v, int)}
    original = paramiko.SFTPClient._async_request  # type: ignore[attr-defined]

    def counted(self: paramiko.SFTPClient, fileobj: object, kind: int, *args: object) -> object:
        counts[str(args[0]) if kind == sftp_proto.CMD_EXTENDED else names.get(kind, str(kind))] += 1
        return original(self, fileobj, kind, *args)

    paramiko.SFTPClient._async_request = counted  # type: ignore[attr-defined]
    try:
        yield counts
    finally:
        paramiko.SFTPClient._async_request = original  # type: ignore[attr-defined]


def count_requests(tools: Sequence[Tool], hosts: int, parallel: int, generation: int) -> None:
    """Print the SFTP requests per WN of the in-process tools, one changed and one no-change run."""
    for tool in tools:
        if not isinstance(tool, SiteadminRollout | ParamikoFloor):
            continue
        count = len(getattr(tool, "nodes", ())) or hosts
        for label in ("changed", "no change"):
            with sftp_requests() as counts:
                tool.run(generation, parallel)
            detail = ", ".join(f"{name} {n / count:g}" for name, n in counts.most_common())
            print(f"{tool.name}: {sum(counts.values()) / count:g} SFTP requests per WN, {label} ({detail})")
        generation += 1


# ---------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--hosts", type=int, default=200, help="fake WNs (default 200)")
    parser.add_argument("--tools", default=DEFAULT_TOOLS, help=f"comma-separated, of: {', '.join(ALL_TOOLS)} (default {DEFAULT_TOOLS})")
    parser.add_argument("--runs", type=int, default=3, help="changed and no-change runs per tool; the median is shown (default 3)")
    parser.add_argument("--parallel", type=int, default=50, help="WNs at once, for every tool (default 50)")
    parser.add_argument("--ansible-hosts", type=int, default=0, help="run ansible on the first N WNs only (default: all)")
    parser.add_argument("--full-hosts", type=int, default=200, help="WNs for siteadmin-full, each with an aria2c daemon (default 200)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one changed siteadmin run")
    parser.add_argument("--profile-sort", default="tottime", help="the profile's order: tottime (default), cumulative...")
    parser.add_argument("--count-requests", action="store_true", help="print the SFTP requests per WN of siteadmin and the floor")
    args = parser.parse_args(argv)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in ALL_TOOLS]
    if unknown:
        parser.error(f"unknown tool {unknown[0]}; known: {', '.join(ALL_TOOLS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_rollout: run as root (it creates the WN user and runs sshd)", file=sys.stderr)
        return 2
    CACHE.mkdir(exist_ok=True)
    peers = [t for t in args.tools if t in ("pyinfra", "ansible", "pssh")]
    bin_dir = peers_venv(CACHE) if peers else None
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}, paramiko {paramiko.__version__}")
    if bin_dir is not None:
        print("peers: " + ", ".join(f"{k} {v}" for k, v in sorted(versions(bin_dir).items())))
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="siteadmin-bench-rollout-") as tmp:
        harness = Harness(Path(tmp), args.hosts, CACHE)
        try:
            harness.up()
            print(
                f"site: {args.hosts} WNs on {len(harness.specs)} sshd, parallelism {args.parallel}, one batch, median of {args.runs}; "
                f"WN shell: {node_shell_cost(harness.user) * 1000:.1f} ms CPU per command (root's rc here: {node_shell_cost(None, 5) * 1000:.0f} ms)"
            )
            site = write_site(harness, 1)
            template = peer_template(site, harness, 1)
            template_path = Path(tmp) / "aria2c.conf.j2"
            template_path.write_text(template, encoding="utf-8")
            print(f"profile: {len(fill(template, harness.nodes[0], 10))} bytes per WN")
            tools = [build_tool(name, harness, template, template_path, bin_dir, Path(tmp) / "peers" / name, args.full_hosts) for name in args.tools]
            for tool in tools:
                print(f"{tool.name}: {len(getattr(tool, 'nodes', harness.nodes))} WNs")
            try:
                results = measure(harness, tools, args.runs, args.parallel, print)
                generation = 5000
                for tool in tools:
                    if not isinstance(tool, SiteadminRollout):
                        continue
                    for label, gen in (("changed", generation), ("no change", generation)):
                        with StepTimer() as steps:
                            sample = timed(harness, lambda g=gen, t=tool: t.run(g, args.parallel), tool.pids)  # type: ignore[misc]
                        print(f"{tool.name}: where the time goes, one {label} run ({_fmt(sample)}), summed over the WNs' threads:")
                        print("\n".join(steps.lines(len(tool.nodes))))
                    if args.profile:
                        print(profile_run(tool, generation + 1, args.parallel, sort=args.profile_sort))
                    generation += 10
                if args.count_requests:
                    count_requests(tools, args.hosts, args.parallel, generation + 100)
            finally:
                for tool in tools:
                    if isinstance(tool, SiteadminRollout):
                        tool.stop_daemons()
        finally:
            harness.down()
    summary(results, args)
    return 0


def build_tool(name: str, harness: Harness, template: str, template_path: Path, bin_dir: Path | None, work: Path, full_hosts: int) -> Tool:
    if name == "paramiko":
        return ParamikoFloor(harness, template)
    if name == "paramiko-nodelay":
        return ParamikoFloor(harness, template, nodelay=True)
    if name == "siteadmin-steps":
        return SiteadminSteps(harness)
    if name == "siteadmin":
        return SiteadminRollout(harness)
    if name == "siteadmin-full":
        return SiteadminRollout(harness, full=True, nodes=harness.nodes[:full_hosts])
    if name == "pyinfra":
        assert bin_dir is not None
        return Pyinfra(harness, bin_dir, template_path, work)
    if name == "ansible":
        assert bin_dir is not None
        return Ansible(harness, bin_dir, template_path, work)
    if name == "pssh":
        assert bin_dir is not None
        return ParallelSsh(harness, bin_dir, template_path, work)
    raise SystemExit(f"{name}: not built yet")


def summary(results: dict[str, Figures], args: argparse.Namespace) -> None:
    """The table (median wall time, CPU of the tool and of the WNs; ratio = tool / siteadmin) and the goals."""
    medians = {name: (Figures.median(f.changed), Figures.median(f.unchanged)) for name, f in results.items()}
    base = medians.get("siteadmin")
    print()
    print(f"median of {args.runs}, {args.hosts} WNs (siteadmin-full: {min(args.full_hosts, args.hosts)}), parallelism {args.parallel}, one batch")
    print(f"{'tool':18} {'changed':>9} {'no change':>9} {'ratio vs siteadmin':>19}   {'CPU: tool / WNs, changed':>25} {'no change':>13}  {'rest':>15}")
    for name, (changed, unchanged) in medians.items():
        ratios = f"{changed.wall / base[0].wall:5.2f}x / {unchanged.wall / base[1].wall:5.2f}x" if base else ""
        print(
            f"{name:18} {changed.wall:8.2f}s {unchanged.wall:8.2f}s {ratios:>19}   "
            f"{changed.client_cpu:11.2f}s / {changed.node_cpu:5.2f}s {unchanged.client_cpu:5.2f}s / {unchanged.node_cpu:5.2f}s"
            f"  {changed.other_cpu:6.2f}s / {unchanged.other_cpu:5.2f}s"
        )
    if base is None:
        return
    print()

    def ratio(label: str, value: float, goal: str, ok: bool | None) -> None:
        verdict = "" if ok is None else f" ({goal}: {'met' if ok else 'NOT met'})"
        print(f"{label}: {value:.2f}x{verdict}")

    for peer, goal in (("pyinfra", 2.0), ("ansible", 20.0), ("pssh", None)):
        if peer in medians:
            pc, pu = medians[peer]
            ok = None if goal is None else pc.wall / base[0].wall >= goal
            ratio(f"{peer}/siteadmin changed", pc.wall / base[0].wall, f"goal >= {goal}x", ok)
            ratio(f"{peer}/siteadmin no change", pu.wall / base[1].wall, "", None)
    if "paramiko" in medians:
        fc, fu = medians["paramiko"]
        ratio("siteadmin/paramiko floor changed", base[0].wall / fc.wall, "goal <= 1.3x", base[0].wall / fc.wall <= 1.3)
        ratio("siteadmin/paramiko floor no change", base[1].wall / fu.wall, "goal <= 1.3x", base[1].wall / fu.wall <= 1.3)
    if "siteadmin-full" in medians:
        full_c, full_u = medians["siteadmin-full"]
        if min(args.full_hosts, args.hosts) == args.hosts:
            print(
                f"siteadmin-full over siteadmin: changed +{full_c.wall - base[0].wall:.2f} s ({full_c.wall / base[0].wall:.2f}x), "
                f"no change +{full_u.wall - base[1].wall:.2f} s ({full_u.wall / base[1].wall:.2f}x)"
            )
        else:
            print(f"siteadmin-full ran on {args.full_hosts} WNs, siteadmin on {args.hosts}: compare per WN, not the totals")
        if "pyinfra" in medians:
            pc, pu = medians["pyinfra"]
            ratio("pyinfra/siteadmin-full changed", pc.wall / full_c.wall, "goal >= 1x", pc.wall / full_c.wall >= 1)
            ratio("pyinfra/siteadmin-full no change", pu.wall / full_u.wall, "goal >= 1x", pu.wall / full_u.wall >= 1)


if __name__ == "__main__":
    raise SystemExit(main())
