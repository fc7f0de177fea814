"""The preflight report: what ``siteadmin check`` found, folded so a site of hundreds of WNs reads
in a few lines, with each failure's reason and the rule that would open it.

Pure: no SSH and no sockets here. ``siteadmin.preflight.service`` gathers the probes' answers
and builds a ``CheckReport`` with the functions below; the CLI prints it (text, ``--json`` or
``--nagios``), the console shows it, and the last one is saved in siteadmin's state directory.

Levels: ``error`` (central, ports, inbound, exposure, a WN that could not be checked: exit 1,
Nagios CRITICAL), ``warning`` (multicast loss, an LPD island inside a subnet, a sampled rather
than a full matrix, lint warnings: exit 0, Nagios WARNING). A check that could not run at all
(usage, config, SSH to every WN refused) is Nagios UNKNOWN.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from siteadmin.hostlist import fold

CHECKS: tuple[str, ...] = ("local", "central", "ports", "multicast", "inbound", "exposure")
"""Every check ``siteadmin check --only`` may name, in the order they run."""

ERROR, WARNING = "error", "warning"

NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
NAGIOS_NAMES = {NAGIOS_OK: "OK", NAGIOS_WARNING: "WARNING", NAGIOS_CRITICAL: "CRITICAL", NAGIOS_UNKNOWN: "UNKNOWN"}

OPEN = "open"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of the report: what failed (hosts folded), why, and what would fix it."""

    check: str
    """One of CHECKS."""
    level: str
    """``error`` or ``warning``."""
    text: str
    """What was found, naming folded hosts: ``wn[001-040] -> wn[041-080] udp 6900-6910 filtered``."""
    reason: str = ""
    """Why it matters or what the probe saw."""
    rule: str = ""
    """The firewall rule (nftables) or setting that would fix it; "" when none applies."""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class CheckReport:
    """The result of one ``siteadmin check`` run."""

    checks: tuple[str, ...]
    hosts: list[str]
    started: float = dataclasses.field(default_factory=time.time)
    """Seconds since the epoch when the run began."""
    elapsed: float = 0.0
    findings: list[Finding] = dataclasses.field(default_factory=list)
    unchecked: dict[str, str] = dataclasses.field(default_factory=dict)
    """WN -> why it could not be checked (SSH failed, no python3...)."""
    pairs: int = 0
    """Ordered WN pairs probed."""
    all_pairs: int = 0
    """Ordered WN pairs there are."""
    sampled: bool = False
    sample: str = ""
    """How the pairs were chosen, when sampled."""
    ports_probed: int = 0
    """Port verdicts in the matrix (pairs x ports x protocols)."""
    ports_failed: int = 0
    islands: list[list[str]] = dataclasses.field(default_factory=list)
    """LPD islands: groups of WNs that hear each other's announces."""
    lpd_loss: float = 0.0
    """Share (0-1) of LPD announces a WN of the same island did not hear."""
    notes: list[str] = dataclasses.field(default_factory=list)
    local: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Host (the VoBox as ``vobox``, then each WN) -> its local facts: interfaces and IPv4
    addresses, the default-route interface, the LPD interface, the route for 224.0.0.0/4."""
    fatal: str | None = None
    """Why the check could not run at all (Nagios UNKNOWN)."""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def ok(self) -> bool:
        """No error finding, every WN checked, and the run itself completed."""
        return self.fatal is None and not self.errors and not self.unchecked

    def exit_code(self) -> int:
        """siteadmin's exit status: 0 all checks passed (warnings allowed), 1 otherwise."""
        return 0 if self.ok else 1

    def nagios_code(self) -> int:
        if self.fatal is not None or (self.hosts and len(self.unchecked) == len(self.hosts)):
            return NAGIOS_UNKNOWN
        if self.errors or self.unchecked:
            return NAGIOS_CRITICAL
        if self.warnings:
            return NAGIOS_WARNING
        return NAGIOS_OK

    def nagios_line(self) -> str:
        """One Nagios/Icinga status line with perfdata."""
        code = self.nagios_code()
        if self.fatal is not None:
            summary = self.fatal
        elif code == NAGIOS_OK:
            summary = f"{len(self.hosts)} WNs, {self.pairs} pairs, all checks passed"
        else:
            first = (self.errors or self.warnings or [Finding("", "", "")])[0]
            parts = []
            if self.unchecked:
                parts.append(f"{len(self.unchecked)} WNs not checked")
            if self.errors:
                parts.append(f"{len(self.errors)} errors")
            if self.warnings:
                parts.append(f"{len(self.warnings)} warnings")
            summary = ", ".join(parts) + (f"; {first.check}: {first.text}" if first.text else "")
        perf = (
            f"wns={len(self.hosts)} unchecked={len(self.unchecked)} errors={len(self.errors)} warnings={len(self.warnings)} "
            f"pairs={self.pairs} ports_failed={self.ports_failed} lpd_islands={len(self.islands)} "
            f"lpd_loss={self.lpd_loss * 100:.1f}%;;;0;100 time={self.elapsed:.2f}s"
        )
        return f"SITEADMIN CHECK {NAGIOS_NAMES[code]} - {' '.join(summary.split())} | {perf}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": list(self.checks),
            "started": self.started,
            "elapsed": round(self.elapsed, 3),
            "wns": len(self.hosts),
            "hosts": fold(self.hosts),
            "unchecked": dict(self.unchecked),
            "pairs": self.pairs,
            "all_pairs": self.all_pairs,
            "sampled": self.sampled,
            "sample": self.sample,
            "ports_probed": self.ports_probed,
            "ports_failed": self.ports_failed,
            "lpd_islands": [fold(i) for i in self.islands],
            "lpd_loss": round(self.lpd_loss, 4),
            "findings": [f.as_dict() for f in self.findings],
            "notes": list(self.notes),
            "local": dict(self.local),
            "fatal": self.fatal,
            "nagios": self.nagios_code(),
        }

    def text(self) -> str:
        """The report for a terminal: a summary, then one line per finding with reason and rule."""
        lines = [f"checked {len(self.hosts)} WNs ({fold(self.hosts) or 'none'}): {', '.join(self.checks)} in {self.elapsed:.1f} s"]
        if self.pairs:
            how = f"sampled: {self.sample}" if self.sampled else "all pairs"
            lines.append(f"ports: {self.pairs} of {self.all_pairs} WN pairs ({how}), {self.ports_probed} port verdicts, {self.ports_failed} not open")
        by_local: dict[str, list[str]] = {}
        for host, facts in self.local.items():
            if host != "vobox" and "lpd_if" in facts:
                route = "a route for 224.0.0.0/4" if facts.get("mcast_route") else "NO route for 224.0.0.0/4"
                by_local.setdefault(f"LPD on {facts.get('lpd_if') or '?'}, default route on {facts.get('default_if') or 'none'}, {route}",
                                    []).append(host)
        lines += [f"local: {fold(hosts)}: {what}" for what, hosts in by_local.items()]
        if self.islands:
            lines.append(f"LPD islands: {' | '.join(fold(i) for i in self.islands)}; loss {self.lpd_loss * 100:.1f}%")
        for host, why in sorted(self.unchecked.items()):
            lines.append(f"error: {host}: not checked: {why}")
        for finding in self.findings:
            lines.append(f"{finding.level}: {finding.check}: {finding.text}")
            if finding.reason:
                lines.append(f"    why: {finding.reason}")
            if finding.rule:
                lines.append(f"    fix: {finding.rule}")
        lines += [f"note: {n}" for n in self.notes]
        if self.fatal is not None:
            lines.append(f"error: {self.fatal}")
        elif self.ok:
            lines.append("all checks passed" + (f" ({len(self.warnings)} warnings)" if self.warnings else ""))
        return "\n".join(lines)


# ---------------------------------------------------------------- the last result


def state_dir() -> Path:
    """siteadmin's state directory: $XDG_STATE_HOME/siteadmin or ~/.local/state/siteadmin."""
    base = os.environ.get("XDG_STATE_HOME") or "~/.local/state"
    return Path(base).expanduser() / "siteadmin"


LAST_RESULT = "check-last.json"


def save_last(report: CheckReport, folder: Path | None = None) -> Path:
    """Write the report as the last check result (0600, atomic); returns the file's path.

    Raises:
        OSError: the state directory cannot be written.
    """
    folder = folder if folder is not None else state_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / LAST_RESULT
    temp = path.with_name(f".{LAST_RESULT}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(report.as_dict(), handle, indent=1)
        handle.write("\n")
    os.replace(temp, path)
    return path


def load_last(folder: Path | None = None) -> dict[str, Any] | None:
    """The last saved check result (its ``started`` gives its age), or None when there is none or it is unreadable."""
    path = (folder if folder is not None else state_dir()) / LAST_RESULT
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------- which pairs


def subnet_of(address: str | None, cidrs: Iterable[str]) -> str:
    """The network (``10.1.2.0/24``) among ``cidrs`` (``10.1.2.5/24``...) holding ``address``; "" when none."""
    if not address:
        return ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ""
    for cidr in cidrs:
        try:
            net = ipaddress.ip_interface(cidr).network
        except ValueError:
            continue
        if ip in net:
            return str(net)
    return ""


def plan_pairs(hosts: Sequence[str], subnets: Mapping[str, str], all_pairs_up_to: int, seed: int = 0) -> tuple[list[tuple[str, str]], bool, str]:
    """The ordered (source, target) WN pairs to probe.

    Up to ``all_pairs_up_to`` WNs: every ordered pair. Above: a covering sample in which every
    WN is a source and a target at least once (a ring, and a second ring of random stride) and
    every ordered pair of subnets (and each subnet with itself) has a pair.

    Args:
        hosts: the WNs that answered, in order.
        subnets: WN -> its subnet ("" when unknown).
        all_pairs_up_to: the ``[check] all_pairs_up_to`` key.
        seed: makes the sample reproducible.

    Returns:
        (pairs, sampled, how the sample was chosen).
    """
    n = len(hosts)
    if n < 2:
        return [], False, ""
    if n <= all_pairs_up_to:
        return [(a, b) for a in hosts for b in hosts if a != b], False, ""
    chosen: dict[tuple[str, str], None] = {}
    for i, host in enumerate(hosts):
        chosen[(host, hosts[(i + 1) % n])] = None
    stride = random.Random(seed).randrange(2, n) if n > 3 else 1  # noqa: S311 - a sample, not a secret
    if stride != 1:
        for i, host in enumerate(hosts):
            target = hosts[(i + stride) % n]
            if target != host:
                chosen[(host, target)] = None
    by_subnet: dict[str, list[str]] = {}
    for host in hosts:
        by_subnet.setdefault(subnets.get(host, ""), []).append(host)
    for net_a, members_a in by_subnet.items():
        for net_b, members_b in by_subnet.items():
            if net_a == net_b and len(members_a) < 2:
                continue
            source = members_a[0]
            target = next(h for h in members_b if h != source)
            chosen[(source, target)] = None
    how = (f"{len(chosen)} of {n * (n - 1)} pairs: every WN as source and as target at least twice, "
           f"and each of the {len(by_subnet)} subnets with every subnet")
    return list(chosen), True, how


# ---------------------------------------------------------------- folding


def port_ranges_text(ports: Iterable[int]) -> str:
    """``6881-6890,6900`` from port numbers."""
    values = sorted(set(ports))
    parts: list[str] = []
    start = prev = None
    for port in values:
        if start is None:
            start = prev = port
        elif prev is not None and port == prev + 1:
            prev = port
        else:
            parts.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = port
    if start is not None:
        parts.append(f"{start}-{prev}" if start != prev else str(start))
    return ",".join(parts)


def fold_matrix(verdicts: Mapping[tuple[str, str, str], Mapping[int, str]]) -> list[tuple[str, str, str, str, str]]:
    """Fold port verdicts that are not open into (sources, targets, proto, ports, state) rows.

    Args:
        verdicts: (source, target, proto) -> port -> state.

    Returns:
        Rows like ``("wn[001-040]", "wn[041-080]", "udp", "6900-6910", "filtered")``: first the
        sources sharing a (target, proto, ports, state) are folded, then the targets sharing the
        same sources, proto, ports and state.
    """
    by_target: dict[tuple[str, str, str, str], list[str]] = {}
    for (source, target, proto), ports in verdicts.items():
        states: dict[str, list[int]] = {}
        for port, state in ports.items():
            if state != OPEN:
                states.setdefault(state, []).append(port)
        for state, bad in states.items():
            by_target.setdefault((target, proto, port_ranges_text(bad), state), []).append(source)
    by_sources: dict[tuple[str, str, str, str], list[str]] = {}
    for (target, proto, ports_text, state), sources in by_target.items():
        by_sources.setdefault((fold(sources), proto, ports_text, state), []).append(target)
    rows = [(sources, fold(targets), proto, ports_text, state) for (sources, proto, ports_text, state), targets in by_sources.items()]
    return sorted(rows, key=lambda r: (r[1], r[0], r[2], r[3]))


def lpd_islands(hosts: Sequence[str], heard: Mapping[str, Mapping[str, int]]) -> list[list[str]]:
    """Groups of WNs joined by LPD announces heard both ways (connected components).

    Args:
        hosts: the WNs that took part.
        heard: listener -> sender -> announces heard (a WN's own announces left out).

    Returns:
        Islands in the order of their first WN; a WN nobody hears and that hears nobody is an island alone.
    """
    parent = {h: h for h in hosts}

    def root(h: str) -> str:
        while parent[h] != h:
            parent[h] = parent[parent[h]]
            h = parent[h]
        return h

    for listener, senders in heard.items():
        for sender, count in senders.items():
            if count > 0 and listener in parent and sender in parent and heard.get(sender, {}).get(listener, 0) > 0:
                parent[root(listener)] = root(sender)
    groups: dict[str, list[str]] = {}
    for host in hosts:
        groups.setdefault(root(host), []).append(host)
    return list(groups.values())


def nft_accept(direction: str, proto: str, ports: str, peers: str = "") -> str:
    """An nftables rule line (``inet filter``) accepting ``proto`` ``ports`` in ``direction`` (input/output)."""
    peer = ""
    if peers:
        peer = f"ip {'saddr' if direction == 'input' else 'daddr'} {{ {peers} }} "
    shown = "{ " + ports.replace(",", ", ") + " }" if "," in ports else ports
    return f"nft add rule inet filter {direction} {peer}{proto} dport {shown} accept"
