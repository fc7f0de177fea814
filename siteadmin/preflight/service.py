"""The firewall preflight of a site: ``run_check`` runs the checks ``siteadmin check`` and the
console ask for, on the WN service, and returns one ``CheckReport``.

How a run goes (each step over SSH runs the standard-library probe, ``probe.py``, as
``<[ssh] python> -`` with the script on standard input; nothing is installed on a WN):

1. facts, one session per WN (kept for the steps below): interfaces, default route, the LPD
   route, listening sockets, and from each WN the central checks. A WN whose SSH fails, or that
   has no Python, gets that as its result and leaves the later steps; the rest go on.
2. responders: on every WN that answered, a probe that binds every free port of ``[wns] ports``
   (TCP and UDP) and listens for LPD announces, on its own SSH channel, kept open until step 5.
3. probers: each WN probes its targets (all ordered pairs, or a covering sample above
   ``[check] all_pairs_up_to``), paced at ``[check] probe_rate``, sends its LPD announces, and
   tries one other WN's aria2c RPC port.
4. inbound: with ``outside``, the same prober runs on that host against every WN's torrent ports
   and SSH port.
5. the responders are ended (SIGTERM: each answers what already arrived, then stops, so its
   ports are free when the run returns) and the LPD announces they heard are read.
6. exposure from the VoBox: each WN's RPC port; the lint's RPC rules against what each WN
   listens on.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import paramiko

from siteadmin.aria2conf.check import check_profiles
from siteadmin.aria2conf.render import rpc_secret_path
from siteadmin.errors import SiteadminError, UsageError
from siteadmin.hostlist import fold
from siteadmin.inventory import WN, Inventory
from siteadmin.preflight import probe as probe_module
from siteadmin.preflight.report import (
    CHECKS,
    ERROR,
    OPEN,
    WARNING,
    CheckReport,
    Finding,
    fold_matrix,
    lpd_islands,
    nft_accept,
    plan_pairs,
    port_ranges_text,
    subnet_of,
)
from siteadmin.remote.errors import SshError
from siteadmin.remote.service import WNService
from siteadmin.remote.session import Session
from siteadmin.site import Site, parse_port_ranges

READY_TIMEOUT = 20.0
"""Seconds a responder may take to bind its ports and say READY."""
LPD_SETTLE = 0.5
"""Seconds the responders keep listening after the last prober ended (late LPD announces)."""


def probe_source() -> str:
    """The probe's text, as sent to the WNs."""
    return Path(str(probe_module.__file__)).read_text(encoding="utf-8")


def probe_script(plan: Mapping[str, Any]) -> bytes:
    """The probe with the line that runs ``plan`` appended: what goes to ``python3 -``'s standard input."""
    return (probe_source() + f"\nsys.exit(main(json.loads({json.dumps(json.dumps(plan))})))\n").encode()


def parse_outside(text: str, default_user: str) -> WN:
    """``[user@]HOST[:PORT]`` as a WN-like target (its user in ``groups[0]``).

    Raises:
        UsageError: an empty or malformed value.
    """
    user, _, rest = text.rpartition("@")
    host, port_text = rest, ""
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    if not host or any(c.isspace() for c in text) or (port_text and not port_text.isdigit()):
        raise UsageError(f"--outside {text!r}: must be [user@]HOST[:PORT], a host outside the site you reach over SSH")
    port = int(port_text) if port_text else 22
    if not 1 <= port <= 65535:
        raise UsageError(f"--outside {text!r}: port must be 1-65535")
    return WN(name=host, address=host, port=port, groups=(user or default_user,))


@dataclasses.dataclass
class _WNState:
    """What the run learnt about one WN."""

    host: str
    address: str
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)
    subnet: str = ""
    lpd_addr: str | None = None
    lpd_if: str | None = None
    rpc_port: int = 6800
    ready: dict[str, Any] | None = None
    heard: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    probe: dict[str, Any] | None = None


class _Responder:
    """A responder probe on its own SSH channel: READY is awaited, later lines are collected."""

    def __init__(self, session: Session, command: str, script: bytes, python: str) -> None:
        self.host = session.host
        self._session = session
        self._python = python
        self.pid: int | None = None
        self.lines: list[str] = []
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._chan = session.transport.open_session(timeout=READY_TIMEOUT)
        self._chan.exec_command(command)
        self._chan.sendall(script)
        self._chan.shutdown_write()
        self._thread = threading.Thread(target=self._read, name=f"responder-{self.host}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                block = self._chan.recv(65536)
                if not block:
                    break
                buffer += block
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    text = line.decode("utf-8", "replace")
                    with self._lock:
                        self.lines.append(text)
                    if text.startswith("READY "):
                        self.ready.set()
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            self.ready.set()  # whoever waits sees no READY line and says so

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        """The READY report.

        Raises:
            SshError: no READY line in time (the WN's stderr tail in the message).
        """
        self.ready.wait(timeout)
        with self._lock:
            line = next((line for line in self.lines if line.startswith("READY ")), None)
        if line is None:
            err = b""
            while self._chan.recv_stderr_ready():
                err += self._chan.recv_stderr(65536)
            tail = " ".join(err.decode("utf-8", "replace").split())[-200:]
            raise SshError(self.host, f"the responder did not start: {tail or 'no answer'}", outcome="responder failed")
        data: dict[str, Any] = json.loads(line[6:])
        pid = data.get("pid")
        self.pid = pid if isinstance(pid, int) and pid > 1 else None
        return data

    def close(self) -> list[str]:
        """Stop the responder now and return the lines it wrote.

        Closing the channel alone stops it at its next heartbeat; its ports must be free before
        this returns, or a check right after would find them held. So it is also ended by its pid
        (sshd refuses signal requests for root), once that pid is seen to be ``<python> -``.
        """
        if self.pid is not None and self._session.is_active():
            pid, argv = self.pid, shlex.quote(f"{self._python} - ")
            with contextlib.suppress(SiteadminError):
                self._session.run(
                    f'[ "$(tr "\\0" " " </proc/{pid}/cmdline 2>/dev/null)" = {argv} ] && kill {pid}; '
                    f"i=0; while [ -d /proc/{pid} ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i+1)); done",
                    timeout=10.0,
                )
        self._chan.close()
        self._thread.join(2.0)
        with self._lock:
            return list(self.lines)


def _python_failed(host: str, python: str, status: int, stderr: str) -> SshError:
    tail = " ".join(stderr.split())[-200:]
    if status == 127:
        return SshError(host, f"{python}: not found on the WN; set [ssh] python to its Python 3.6+ (e.g. /usr/libexec/platform-python)",
                        outcome="no python")
    if "SyntaxError" in stderr:
        return SshError(host, f"{python} on the WN is older than Python 3.6, which the probe needs; set [ssh] python to a newer one",
                        outcome="python too old")
    return SshError(host, f"the probe failed under {python} (status {status}): {tail or 'no message'}", outcome="probe failed")


def _run_probe(session: Session, python: str, plan: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    result = session.run(f"{shlex.quote(python)} -", stdin=probe_script(plan), timeout=timeout)
    line = next((text for text in reversed(result.stdout.splitlines()) if text.startswith("{")), None)
    if result.exit_status != 0 or line is None:
        raise _python_failed(session.host, python, result.exit_status, result.stderr)
    data: dict[str, Any] = json.loads(line)
    return data


def run_check(
    site: Site,
    hosts: Sequence[str],
    *,
    only: Iterable[str] = CHECKS,
    outside: str | None = None,
    parallelism: int | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
    global_known_hosts: Sequence[Path] | None = None,
) -> CheckReport:
    """Run the preflight checks on the given WNs.

    Args:
        site: the site config (``[wns] ports``, ``[central]``, ``[check]``, ``[ssh] python``).
        hosts: WN names, e.g. ``Inventory(site).select(pattern)``.
        only: the checks to run (names in ``CHECKS``); ``inbound`` needs ``outside``.
        outside: ``[user@]HOST[:PORT]`` of a host outside the site, reached over SSH like a WN
            (its host key in ``ssh.known_hosts``), for the inbound check.
        parallelism: WNs worked on at once; ``ssh.parallelism`` when None.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop; WNs not started get a ``cancelled`` result.
        progress: called with one line per step as the run goes.
        global_known_hosts: passed to the WN service (tests).

    Returns:
        The report; per-WN failures (SSH, no Python) are in ``report.unchecked``, never raised.

    Raises:
        UsageError: an unknown check name, or ``inbound`` without ``outside``.
        ConfigError: unreadable key file or ssh config.
    """
    checks = tuple(c for c in CHECKS if c in set(only))
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        raise UsageError(f"--only {','.join(unknown)}: no such check", f"checks: {','.join(CHECKS)}")
    if "inbound" in checks and outside is None:
        if set(only) == {"inbound"}:
            raise UsageError("--only inbound needs --outside [user@]HOST, a host outside the site reached over SSH")
        checks = tuple(c for c in checks if c != "inbound")
    outside_wn = parse_outside(outside, site.ssh.user) if outside is not None and "inbound" in checks else None
    say = progress or (lambda _line: None)
    inventory = inventory if inventory is not None else Inventory(site)
    report = CheckReport(checks=checks, hosts=list(hosts))
    start = time.monotonic()
    ports = [p for a, b in parse_port_ranges(site.wns.ports) for p in range(a, b + 1)]
    python = site.ssh.python
    token = secrets.token_hex(6)
    states = {h: _WNState(h, inventory.wn(h).address, rpc_port=site.wns.rpc_port) for h in hosts}
    profiles = _profiles(site, hosts)
    for host, options in profiles.items():
        if options.get("rpc-listen-port", "").isdigit():
            states[host].rpc_port = int(options["rpc-listen-port"])

    with WNService(site, inventory, parallelism=parallelism, keep_sessions=True, global_known_hosts=global_known_hosts) as service:
        # 1. facts and central checks
        say(f"facts from {len(hosts)} WNs")
        central = []
        if "central" in checks:
            central = [{"service": "tracker", "host": site.central.tracker_host, "port": site.central.tracker_port},
                       {"service": "seeder", "host": site.central.seeder_host, "port": site.central.seeder_port}]

        def facts_work(session: Session) -> dict[str, Any]:
            state = states[session.host]
            plan = {"mode": "facts", "ports": sorted({*ports, state.rpc_port}), "central": central, "timeout": 3.0}
            return _run_probe(session, python, plan, 30.0)

        live: list[str] = []
        for result in service.run(hosts, facts_work, cancel=cancel):
            if result.ok and result.value is not None:
                states[result.host].facts = result.value
                live.append(result.host)
            else:
                report.unchecked[result.host] = result.detail()
        report.local["vobox"] = vobox_facts()
        for host in live:
            _learn_local(states[host], profiles.get(host, {}))
            facts = states[host].facts
            report.local[host] = {
                "python": facts.get("python"), "interfaces": facts.get("interfaces", []), "default_if": facts.get("default_if"),
                "lpd_if": states[host].lpd_if, "mcast_if": facts.get("mcast_if"), "mcast_route": bool(facts.get("mcast_source")),
                "subnet": states[host].subnet,
            }
        if "local" in checks:
            report.findings += _local_findings(site, [states[h] for h in live], profiles)
        if "central" in checks:
            report.findings += _central_findings(site, [states[h] for h in live])
        if "exposure" in checks:
            report.findings += _profile_rpc_findings(site, hosts)
            report.findings += _listening_findings(site, [states[h] for h in live], ports)

        # 2.-5. responders, probers, outside
        needs_wire = any(c in checks for c in ("ports", "multicast", "inbound", "exposure"))
        if needs_wire and live and not (cancel is not None and cancel.is_set()):
            _wire(site, service, report, states, live, checks, ports, python, token, outside_wn, cancel, say)

    if "exposure" in checks and live:
        say("exposure: RPC ports from the VoBox")
        report.findings += _rpc_from_vobox(site, [states[h] for h in live])
    report.elapsed = time.monotonic() - start
    return report


def vobox_facts() -> dict[str, Any]:
    """The VoBox's own interfaces (netifaces) and default-route interface."""
    try:
        import netifaces
    except ImportError:  # pragma: no cover - a dependency of siteadmin
        return {"error": "netifaces is not installed"}
    interfaces = []
    for name in netifaces.interfaces():
        addrs = []
        for item in netifaces.ifaddresses(name).get(netifaces.AF_INET, []):
            mask = ipaddress.IPv4Network("0.0.0.0/" + str(item.get("netmask") or "255.255.255.255")).prefixlen
            addrs.append(f"{item.get('addr')}/{mask}")
        if name != "lo" and addrs:
            interfaces.append({"name": name, "addrs": addrs})
    gateways: Any = netifaces.gateways()
    default = gateways.get("default", {}).get(netifaces.AF_INET)
    return {"interfaces": interfaces, "default_if": default[1] if default else None}


def _profiles(site: Site, hosts: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each WN's rendered options (empty for a WN whose profile cannot be rendered)."""
    checked = check_profiles(site, hosts, aria2c=False, create_secret=False)
    return {h.host: dict(h.options or {}) for h in checked.hosts}


def _learn_local(state: _WNState, options: Mapping[str, str]) -> None:
    facts = state.facts
    interfaces = facts.get("interfaces", [])
    lpd_if = options.get("bt-lpd-interface") or facts.get("mcast_if")
    state.lpd_if = lpd_if
    for item in interfaces:
        if item["name"] == lpd_if and item["addrs"]:
            state.lpd_addr = item["addrs"][0].split("/")[0]
    cidrs = [a for item in interfaces for a in item["addrs"]]
    address = state.address
    try:
        socket.inet_aton(address)
    except OSError:
        address = state.lpd_addr or facts.get("mcast_source") or ""
    state.subnet = subnet_of(address, cidrs) or subnet_of(facts.get("mcast_source"), cidrs)


def _local_findings(site: Site, states: Sequence[_WNState], profiles: Mapping[str, Mapping[str, str]]) -> list[Finding]:
    out: list[Finding] = []
    no_route = [s.host for s in states if not s.facts.get("mcast_source")]
    if no_route:
        out.append(Finding("local", ERROR, f"{fold(no_route)}: no route for 224.0.0.0/4",
                           "LPD announces cannot leave the WN (aria2 fails to start LPD without a route or bt-lpd-interface)",
                           "ip route add 224.0.0.0/4 dev <LAN interface>, or set bt-lpd-interface in the profile"))
    missing: dict[str, list[str]] = {}
    for state in states:
        wanted = profiles.get(state.host, {}).get("bt-lpd-interface")
        names = [i["name"] for i in state.facts.get("interfaces", []) if i["addrs"]]
        if wanted and wanted not in names:
            missing.setdefault(wanted, []).append(state.host)
    for name, hosts in missing.items():
        out.append(Finding("local", ERROR, f"{fold(hosts)}: bt-lpd-interface {name} has no IPv4 address on the WN",
                           "aria2c cannot announce or listen for LPD there", "set bt-lpd-interface to the WN's LAN interface"))
    # several candidate interfaces and no bt-lpd-interface: the lint's own rule, judged by the WNs' interfaces
    facts = {s.host: [i["name"] for i in s.facts.get("interfaces", []) if i["addrs"]] for s in states}
    if facts:
        checked = check_profiles(site, list(facts), aria2c=False, create_secret=False, interfaces=lambda hs: {h: facts[h] for h in hs})
        flagged: dict[str, list[str]] = {}
        for host_check in checked.hosts:
            for finding in host_check.findings:
                if finding.rule == "lpd-no-interface" and finding.level != "allowed":
                    flagged.setdefault(finding.message.removeprefix(f"{host_check.host}: "), []).append(host_check.host)
        for message, hosts in flagged.items():
            out.append(Finding("local", WARNING, f"{fold(hosts)}: {message} [lpd-no-interface]", "",
                               "set bt-lpd-interface to the LAN interface in the site or group profile"))
    return out


RPC_RULES = ("rpc-no-secret", "rpc-weak-secret", "rpc-listen-all", "rpc-allow-origin-all")
"""The lint's rules about the aria2c RPC, which the exposure check reports from the profiles too."""


def _profile_rpc_findings(site: Site, hosts: Sequence[str]) -> list[Finding]:
    """The lint's RPC errors in the WNs' rendered profiles, folded by message."""
    checked = check_profiles(site, hosts, aria2c=False, create_secret=False)
    # without the site's secret file the check renders no secret, but `apply` generates one first
    no_secret_yet = not rpc_secret_path(site).exists()
    flagged: dict[tuple[str, str], list[str]] = {}
    for host_check in checked.hosts:
        for finding in host_check.findings:
            if finding.rule == "rpc-no-secret" and no_secret_yet:
                continue
            if finding.rule in RPC_RULES and finding.level == ERROR:
                flagged.setdefault((finding.rule, finding.message.removeprefix(f"{host_check.host}: ")), []).append(host_check.host)
    return [Finding("exposure", ERROR, f"{fold(hosts)}: the profile: {message} [{rule}]", "what the rendered profile asks aria2c to do",
                    "fix the profile (siteadmin lint explains each rule), then siteadmin apply")
            for (rule, message), hosts in flagged.items()]


def _central_findings(site: Site, states: Sequence[_WNState]) -> list[Finding]:
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for state in states:
        for item in state.facts.get("central", []):
            if item["tcp"] == "ok" and item["protocol"] == "ok":
                continue
            step = "tcp" if item["tcp"] != "ok" else "protocol"
            what = {"refused": "connection refused", "timeout": "timed out", "name": "name lookup failed",
                    "unreachable": "unreachable"}.get(item["tcp"], item["tcp"]) if step == "tcp" else "no protocol answer"
            target = f"{item['service']} {item['host']}:{item['port']}"
            groups.setdefault((target, what, item["detail"], str(item["port"])), []).append(state.host)
    out = []
    for (target, what, detail, port), hosts in groups.items():
        out.append(Finding("central", ERROR, f"{fold(hosts)} -> {target}: {what}", detail,
                           nft_accept("output", "tcp", port) + " (on the WNs; and the site firewall towards CERN)"))
    return out


def _listening_findings(site: Site, states: Sequence[_WNState], ports: Sequence[int]) -> list[Finding]:
    """The lint's RPC and port rules held against what each WN really listens on."""
    all_addr: dict[str, list[str]] = {}
    for state in states:
        for sock in state.facts.get("listening", []):
            if sock["proto"] == "tcp" and sock["port"] == state.rpc_port and sock["addr"] not in ("127.0.0.1", "::1"):
                all_addr.setdefault(f"{sock['program'] or 'a program'} listens on {sock['addr']}:{sock['port']}", []).append(state.host)
    return [Finding("exposure", ERROR, f"{fold(hosts)}: {what} [rpc-listen-all]",
                    "the aria2c RPC port must listen on loopback only; the WN's own sockets say otherwise",
                    "set rpc-listen-all = false in the profile and restart aria2c")
            for what, hosts in all_addr.items()]


def _wire(
    site: Site,
    service: WNService,
    report: CheckReport,
    states: dict[str, _WNState],
    live: list[str],
    checks: tuple[str, ...],
    ports: list[int],
    python: str,
    token: str,
    outside_wn: WN | None,
    cancel: threading.Event | None,
    say: Callable[[str], None],
) -> None:
    cfg = site.check
    multicast = "multicast" in checks
    do_ports = "ports" in checks
    pairs: list[tuple[str, str]] = []
    if do_ports:
        pairs, report.sampled, report.sample = plan_pairs(live, {h: states[h].subnet for h in live}, cfg.all_pairs_up_to)
        report.pairs = len(pairs)
        report.all_pairs = len(live) * (len(live) - 1)
    respond_ports = ports if (do_ports or "inbound" in checks) else []
    by_source: dict[str, list[str]] = {}
    for a, b in pairs:
        by_source.setdefault(a, []).append(b)
    per_prober = max((len(v) for v in by_source.values()), default=0) * len(ports) * 2
    inbound_probes = len(live) * (len(ports) * 2 + 1) if outside_wn is not None else 0
    estimate = (per_prober + inbound_probes) / cfg.probe_rate * 2 + cfg.probe_timeout * 4 + 15
    lifetime = estimate * 2 + 60
    responders: dict[str, _Responder] = {}
    lock = threading.Lock()

    def start_responder(session: Session) -> dict[str, Any]:
        state = states[session.host]
        plan = {"mode": "respond", "tcp": respond_ports, "udp": respond_ports, "lifetime": lifetime, "lpd": multicast,
                "lpd_addr": state.lpd_addr, "token": token}
        limit = lifetime + 5
        command = f"timeout -k 1 {limit:.0f} {shlex.quote(python)} -"
        try:
            responder = _Responder(session, command, probe_script(plan), python)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise SshError(session.host, f"cannot start the responder: {exc or type(exc).__name__}", outcome="responder failed") from None
        with lock:
            responders[session.host] = responder
        return responder.wait_ready(READY_TIMEOUT)

    say(f"responders on {len(live)} WNs")
    ready: list[str] = []
    try:
        for result in service.run(live, start_responder, cancel=cancel):
            if result.ok and result.value is not None:
                states[result.host].ready = result.value
                ready.append(result.host)
            else:
                report.unchecked[result.host] = result.detail()
        ready_set = set(ready)
        for host in ready:
            errors = (states[host].ready or {}).get("errors", [])
            if errors:
                report.findings.append(Finding("ports", WARNING, f"{host}: the responder could not listen on {len(errors)} ports, "
                                               f"which were not probed; e.g. {errors[0]}", "", ""))
        rpc_peer = {h: ready[(i + 1) % len(ready)] for i, h in enumerate(ready)} if len(ready) > 1 else {}

        def target(host: str, tcp: list[int], udp: list[int]) -> dict[str, Any]:
            got = states[host].ready or {}
            # ports the responder could not listen on (not held by another program) cannot be judged
            broken = {(item.split()[0], int(item.split()[1].rstrip(":"))) for item in got.get("errors", [])}
            return {"host": host, "address": states[host].address, "tcp": [p for p in tcp if ("tcp", p) not in broken],
                    "udp": [p for p in udp if ("udp", p) not in broken],
                    "held_tcp": got.get("held_tcp", []), "held_udp": got.get("held_udp", [])}

        def prober(session: Session) -> dict[str, Any]:
            host = session.host
            targets = [target(t, ports, ports) for t in by_source.get(host, []) if t in ready_set]
            if "exposure" in checks and host in rpc_peer:
                peer = rpc_peer[host]
                targets.append({"host": peer, "address": states[peer].address, "tcp": [states[peer].rpc_port], "udp": [], "rpc": True})
            plan: dict[str, Any] = {"mode": "probe", "rate": cfg.probe_rate, "timeout": cfg.probe_timeout, "token": token,
                                    "targets": targets}
            if multicast:
                plan["lpd"] = {"count": cfg.lpd_announces, "addr": states[host].lpd_addr, "port": ports[0] if ports else 6881}
            probes = sum(len(t["tcp"]) + len(t["udp"]) for t in targets)
            return _run_probe(session, python, plan, probes / cfg.probe_rate * 2 + cfg.probe_timeout * 4 + 30)

        if ready and any(c in checks for c in ("ports", "multicast", "exposure")):
            say(f"probers on {len(ready)} WNs ({len(pairs)} pairs, {len(ports)} ports)")
            for result in service.run(ready, prober, cancel=cancel):
                if result.ok and result.value is not None:
                    states[result.host].probe = result.value
                else:
                    report.unchecked[result.host] = result.detail()
        if outside_wn is not None and ready:
            say(f"inbound from {outside_wn.name}")
            report.findings += _inbound(site, outside_wn, [states[h] for h in ready], ports, python, token, target)
    finally:
        time.sleep(LPD_SETTLE if multicast else 0.0)
        with ThreadPoolExecutor(max_workers=max(1, min(32, len(responders)))) as pool:
            written = dict(zip(responders, pool.map(_Responder.close, responders.values()), strict=True))
        for host, lines in written.items():
            for line in lines:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "HEARD":
                    states[host].heard.append((parts[1], parts[2]))
    probed = [states[h] for h in ready if states[h].probe is not None]
    if do_ports:
        report.findings += _matrix_findings(report, probed, states, site)
    if multicast:
        report.findings += _multicast_findings(report, probed, states, token, site.check.lpd_announces)
    if "exposure" in checks:
        report.findings += _rpc_from_wns(probed)


def _matrix_findings(report: CheckReport, probed: Sequence[_WNState], states: Mapping[str, _WNState], site: Site) -> list[Finding]:
    verdicts: dict[tuple[str, str, str], dict[int, str]] = {}
    for state in probed:
        assert state.probe is not None
        for item in state.probe["targets"]:
            if item.get("error"):
                verdicts[(state.host, item["host"], "tcp")] = {0: "unresolved"}
                continue
            if item["host"] not in states or item.get("rpc"):
                continue  # the RPC probe of the exposure check
            for proto in ("tcp", "udp"):
                row = {int(p): s for p, s in item[proto].items()}
                verdicts[(state.host, item["host"], proto)] = row
                report.ports_probed += len(row)
                report.ports_failed += sum(1 for s in row.values() if s != OPEN)
    out = []
    nets = sorted({states[h].subnet for h in states if h in report.hosts and states[h].subnet})
    for sources, targets, proto, ports_text, verdict in fold_matrix(verdicts):
        why = {"filtered": "no answer: a firewall drops it (UDP: the responder's echo never came back)",
               "refused": "reset: a firewall rejects it (the responder was listening)",
               "unreachable": "an ICMP error came back: a firewall rejects it"}.get(verdict, verdict)
        out.append(Finding("ports", ERROR, f"{sources} -> {targets} {proto} {ports_text} {verdict}", why,
                           nft_accept("input", proto, ports_text, ", ".join(nets)) + f" (on {targets})"))
    if report.sampled:
        out.append(Finding("ports", WARNING, f"sampled matrix: {report.sample}", "above [check] all_pairs_up_to WNs not every pair is probed",
                           "raise [check] all_pairs_up_to for a full matrix"))
    return out


def _multicast_findings(report: CheckReport, probed: Sequence[_WNState], states: Mapping[str, _WNState], token: str, sent: int) -> list[Finding]:
    by_addr: dict[str, str] = {}
    for state in states.values():
        for item in state.facts.get("interfaces", []):
            for cidr in item["addrs"]:
                by_addr[cidr.split("/")[0]] = state.host
    senders = [s.host for s in probed if s.probe is not None and s.probe.get("lpd_sent")]
    listeners = [s for s in states.values() if s.ready is not None and s.ready.get("lpd") == "listening"]
    heard: dict[str, dict[str, int]] = {}
    for state in listeners:
        seen: dict[str, set[str]] = {}
        for source, infohash in state.heard:
            sender = by_addr.get(source)
            if sender is None or sender == state.host or not infohash.startswith(token):
                continue  # a WN hears its own announce: counted by source, never as heard
            seen.setdefault(sender, set()).add(infohash)
        heard[state.host] = {k: len(v) for k, v in seen.items()}
    members = [s.host for s in listeners if s.host in senders]
    islands = lpd_islands(members, heard)
    report.islands = islands
    expected = got = 0
    for island in islands:
        for listener in island:
            for sender in island:
                if sender != listener:
                    expected += sent
                    got += min(sent, heard.get(listener, {}).get(sender, 0))
    report.lpd_loss = (1 - got / expected) if expected else 0.0
    out = []
    for state in states.values():
        if state.ready is not None and state.ready.get("lpd") not in ("listening", "off", None):
            out.append(Finding("multicast", WARNING, f"{state.host}: LPD {state.ready['lpd']}", "", ""))
    if len(islands) > 1:
        subnets_per_island = [{states[h].subnet for h in island} for island in islands]
        split = [island for island, nets in zip(islands, subnets_per_island, strict=True)
                 if any(sum(1 for other in subnets_per_island if n in other) > 1 for n in nets)]
        text = " | ".join(fold(i) for i in islands)
        if split:
            out.append(Finding("multicast", WARNING, f"LPD islands inside one subnet: {text}",
                               "WNs of one subnet do not hear each other's LPD announces (multicast dropped)",
                               f"nft add rule inet filter input ip daddr {probe_module.LPD_GROUP} udp dport {probe_module.LPD_PORT} accept "
                               f"(on {' '.join(fold(i) for i in split if len(i) < max(len(j) for j in islands)) or 'the WNs'})"))
        else:
            report.notes.append(f"LPD islands map subnets (LPD does not cross routers): {text}")
    if report.lpd_loss > 0:
        out.append(Finding("multicast", WARNING, f"LPD loss {report.lpd_loss * 100:.1f}% within islands",
                           f"each WN sent {sent} announces; some were not heard by WNs of its own island", ""))
    return out


def _rpc_from_wns(probed: Sequence[_WNState]) -> list[Finding]:
    out = []
    for state in probed:
        assert state.probe is not None
        for item in state.probe["targets"]:
            if item.get("rpc"):
                for port, verdict in item["tcp"].items():
                    if verdict != OPEN:
                        continue
                    out.append(Finding("exposure", ERROR, f"{item['host']}: aria2c RPC port {port} open from {state.host}",
                                       "another WN (or anyone on the LAN) can drive its aria2c",
                                       "set rpc-listen-all = false; nft add rule inet filter input iifname != \"lo\" "
                                       f"tcp dport {port} drop"))
    return out


def _rpc_from_vobox(site: Site, states: Sequence[_WNState]) -> list[Finding]:
    def attempt(state: _WNState) -> tuple[_WNState, bool]:
        try:
            with socket.create_connection((state.address, state.rpc_port), timeout=site.check.probe_timeout):
                return state, True
        except OSError:
            return state, False

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(attempt, states))
    open_hosts = [s.host for s, is_open in answers if is_open]
    if not open_hosts:
        return []
    return [Finding("exposure", ERROR, f"{fold(open_hosts)}: aria2c RPC port open from the VoBox",
                    "the RPC must be reached through SSH only (loopback on the WN)",
                    "set rpc-listen-all = false; nft add rule inet filter input iifname != \"lo\" "
                    f"tcp dport {site.wns.rpc_port} drop")]


def _inbound(
    site: Site,
    outside: WN,
    states: Sequence[_WNState],
    ports: list[int],
    python: str,
    token: str,
    target: Callable[[str, list[int], list[int]], dict[str, Any]],
) -> list[Finding]:
    user = outside.groups[0]
    out_site = dataclasses.replace(site, ssh=dataclasses.replace(site.ssh, user=user, jump_host=""))
    inventory = Inventory(site)
    targets = [target(state.host, [*ports, inventory.wn(state.host).port], ports) for state in states]
    plan = {"mode": "probe", "rate": site.check.probe_rate, "timeout": site.check.probe_timeout, "token": token, "targets": targets}
    probes = sum(len(t["tcp"]) + len(t["udp"]) for t in targets)
    timeout = probes / site.check.probe_rate * 2 + site.check.probe_timeout * 4 + 30
    try:
        # the outside host is no WN of the site: the service reaches it at its own address and port
        with WNService(out_site, Inventory(out_site), parallelism=1) as service:
            [result] = service.run([outside], lambda session: _run_probe(session, python, plan, timeout))
    except SiteadminError as exc:  # a bad key file or ssh config
        return [Finding("inbound", ERROR, f"outside host {outside.name}: not checked: {exc.one_line()}", "", "")]
    if not result.ok or result.value is None:
        if result.exception is not None and not isinstance(result.exception, SiteadminError):
            raise result.exception  # a defect, not the host's answer: as loud as it always was
        why = result.exception.one_line() if isinstance(result.exception, SiteadminError) else result.line()
        return [Finding("inbound", ERROR, f"outside host {outside.name}: not checked: {why}", "", "")]
    answer = result.value
    rows: dict[tuple[str, str], list[str]] = {}
    for item in answer["targets"]:
        for proto in ("tcp", "udp"):
            opened = [int(p) for p, s in item[proto].items() if s == OPEN]
            if opened:
                rows.setdefault((proto, port_ranges_text(opened)), []).append(item["host"])
    return [Finding("inbound", ERROR, f"{outside.name} -> {fold(hosts)} {proto} {ports_text} open",
                    "the world can open connections to these WNs", f"drop {proto} {ports_text} from outside the site at the site firewall")
            for (proto, ports_text), hosts in rows.items()]
