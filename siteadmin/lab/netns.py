"""The lab's network: addresses, namespaces, links, routes and nftables rules.

netns mode (root): namespaces ``<tag>-router``, ``<tag>-cern`` and ``<tag>-wnNNN``. The router
holds the site LAN bridge (``br0``, ``mcast_snooping 0``, bridge-nf-call-iptables=0 so router
rules never see WN-to-WN traffic), a routed link to cern and a link to the VoBox (the root
namespace), which gets one veth (``<tag>-vb``) and one route for the lab's /16 only.
``ip_forward`` is switched on inside the router namespace only. With ``lans`` above 1 the WNs are
split over several subnets (``br1``... beside ``br0``) that the router routes between, so subnet
pairs and LPD islands exist.

loopback mode (not root): no namespaces; services on 127.S.x.y addresses with free ports.

Every name derives from a tag computed from the lab directory, so a test lab and a demo lab
never clash, and a crashed lab's leftovers can be found by name.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from siteadmin.errors import LabError

CLONE_NEWNET = 0x40000000
SUBNET_SECOND_OCTETS = range(200, 250)
"""10.S.0.0/16 candidates; the host uses none of them (checked against its routes at up)."""
MAX_WNS = 200
LAN_HOST_OFFSET = 10


def lab_tag(lab_dir: Path) -> str:
    """Short name prefix unique to a lab directory ("sl" + 6 hex digits)."""
    digest = hashlib.sha1(str(lab_dir.resolve()).encode(), usedforsecurity=False).hexdigest()
    return "sl" + digest[:6]


@dataclasses.dataclass(frozen=True)
class Topology:
    """Names and addresses of one lab instance (stored in lab.json)."""

    mode: str
    """"netns" or "loopback"."""
    tag: str
    subnet: str
    """10.S.0.0/16 in netns mode, 127.S.0.0/16 in loopback mode."""
    wns: int
    lans: int = 1
    """WN subnets behind the router (netns mode): 1, or more for subnet pairs and LPD islands.
    WNs are split over them in order (wn001... on the first); each LAN has its own bridge."""

    def _host(self, third: int, fourth: int) -> str:
        net = ipaddress.ip_network(self.subnet)
        return str(net.network_address + third * 256 + fourth)

    # ---- namespaces and interfaces (netns mode)
    @property
    def router_ns(self) -> str:
        return f"{self.tag}-router"

    @property
    def cern_ns(self) -> str:
        return f"{self.tag}-cern"

    def wn_ns(self, index: int) -> str:
        return f"{self.tag}-wn{index:03d}"

    @property
    def namespaces(self) -> list[str]:
        if self.mode != "netns":
            return []
        return [self.router_ns, self.cern_ns] + [self.wn_ns(i) for i in range(1, self.wns + 1)]

    @property
    def vobox_if(self) -> str:
        return f"{self.tag}-vb"

    # ---- addresses
    @property
    def vobox_addr(self) -> str:
        return self._host(0, 1)

    @property
    def router_vobox_addr(self) -> str:
        return self._host(0, 2)

    @property
    def router_cern_addr(self) -> str:
        return self._host(1, 1)

    @property
    def cern_addr(self) -> str:
        return self._host(1, 2)

    @property
    def router_lan_addr(self) -> str:
        return self._host(2, 1)

    def wn_addr(self, index: int) -> str:
        return self._host(1 + self.wn_lan(index), LAN_HOST_OFFSET + index)

    def wn_lan(self, index: int) -> int:
        """The LAN (1..lans) WN ``index`` sits on."""
        return 1 + (index - 1) * self.lans // max(self.wns, 1)

    def router_addr_on(self, lan: int) -> str:
        """The router's address on LAN ``lan`` (the WNs' gateway there); LAN 1's is ``router_lan_addr``."""
        return self._host(1 + lan, 1)

    def lan_net(self, lan: int) -> str:
        return self._host(1 + lan, 0) + "/24"

    @property
    def lan(self) -> str:
        return self._host(2, 0) + "/24"

    @property
    def cern_net(self) -> str:
        return self._host(1, 0) + "/24"


# ---------------------------------------------------------------- running ip


def _ip_batch(commands: Sequence[str], netns: str | None = None, force: bool = False) -> str:
    argv = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0 and not force:
        raise LabError(f"ip{' -n ' + netns if netns else ''}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
    return proc.stderr


def _ip_json(*args: str) -> list[dict[str, object]]:
    proc = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else []


def run_in(ns: str | None, argv: Sequence[str], *, input_text: str | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace (or here when ``ns`` is None), output captured."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    return subprocess.run(full, input=input_text, capture_output=True, text=True, timeout=timeout, check=False)


# ---------------------------------------------------------------- choosing a subnet


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(route.get("dst", ""))
        if dst in ("", "default") or ":" in dst:
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else dst + "/32", strict=False))
    for link in _ip_json("-4", "addr"):
        infos = link.get("addr_info", [])
        for info in infos if isinstance(infos, list) else []:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                nets.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return nets


def choose_subnet(tag: str, used: Sequence[ipaddress.IPv4Network] | None = None) -> str:
    """A 10.S.0.0/16 no route or address of the host overlaps, preferring one derived from the tag.

    Args:
        tag: the lab's tag (``sl`` + hex).
        used: networks in use; None reads the host's routes and addresses.

    Raises:
        LabError: when every candidate is in use.
    """
    used = _used_networks() if used is None else used
    start = int(tag[2:], 16) % len(SUBNET_SECOND_OCTETS)
    octets = list(SUBNET_SECOND_OCTETS)
    for second in octets[start:] + octets[:start]:
        candidate = ipaddress.IPv4Network(f"10.{second}.0.0/16")
        if not any(candidate.overlaps(net) for net in used if net.prefixlen > 0):
            return str(candidate)
    raise LabError("no free 10.200-249.0.0/16 subnet for the lab", "remove stale labs with `siteadmin lab down --dir ...`")


def loopback_subnet(tag: str) -> str:
    return f"127.{100 + int(tag[2:], 16) % 150}.0.0/16"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (loopback mode)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------- build and destroy


def _leaf(address: str, gateway: str) -> list[str]:
    """ip commands configuring a namespace with one link (eth0) and a default route."""
    return ["link set lo up", f"addr add {address}/24 dev eth0", "link set eth0 up", f"route add default via {gateway}"]


def build(topo: Topology) -> None:
    """Create namespaces, veths, the LAN bridge, addresses and routes of a netns-mode lab.

    Raises:
        LabError: when an ``ip`` command fails (the caller cleans up by tag).
    """
    root = [f"netns add {ns}" for ns in topo.namespaces]
    root.append(f"link add name {topo.vobox_if} type veth peer name vobox netns {topo.router_ns}")
    root.append(f"link add name cern netns {topo.router_ns} type veth peer name eth0 netns {topo.cern_ns}")
    for i in range(1, topo.wns + 1):
        root.append(f"link add name w{i:03d} netns {topo.router_ns} type veth peer name eth0 netns {topo.wn_ns(i)}")
    root.append(f"addr add {topo.vobox_addr}/30 dev {topo.vobox_if}")
    root.append(f"link set {topo.vobox_if} up")
    _ip_batch(root)

    router = [
        "link set lo up",
        "link add br0 type bridge mcast_snooping 0",
        f"addr add {topo.router_lan_addr}/24 dev br0",
        f"addr add {topo.router_cern_addr}/24 dev cern",
        f"addr add {topo.router_vobox_addr}/30 dev vobox",
        "link set br0 up",
        "link set cern up",
        "link set vobox up",
    ]
    for lan in range(2, topo.lans + 1):
        # further WN subnets: a bridge each, routed (not bridged) to the first, as between a site's subnets
        router += [f"link add br{lan - 1} type bridge mcast_snooping 0", f"addr add {topo.router_addr_on(lan)}/24 dev br{lan - 1}",
                   f"link set br{lan - 1} up"]
    for i in range(1, topo.wns + 1):
        router += [f"link set w{i:03d} master br{topo.wn_lan(i) - 1}", f"link set w{i:03d} up"]
    jobs: list[tuple[str, list[str]]] = [(topo.router_ns, router)]
    jobs.append((topo.cern_ns, _leaf(topo.cern_addr, topo.router_cern_addr)))
    for i in range(1, topo.wns + 1):
        jobs.append((topo.wn_ns(i), _leaf(topo.wn_addr(i), topo.router_addr_on(topo.wn_lan(i)))))
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda job: _ip_batch(job[1], netns=job[0]), jobs))
    sysctl = run_in(topo.router_ns, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    if sysctl.returncode != 0:
        raise LabError(f"{topo.router_ns}: cannot enable ip_forward: {sysctl.stderr.strip()}")
    if Path("/proc/sys/net/bridge").exists():
        run_in(topo.router_ns, ["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0"])
    _ip_batch([f"route add {topo.subnet} via {topo.router_vobox_addr} dev {topo.vobox_if}"])


def leftovers(tag: str) -> tuple[list[str], list[str]]:
    """(namespaces, root links) whose names carry the tag."""
    names = [str(n.get("name")) for n in _ip_json("netns", "list")]
    links = [str(link.get("ifname")) for link in _ip_json("link", "show")]
    return [n for n in names if n.startswith(tag + "-")], [n for n in links if n.startswith(tag + "-")]


def namespace_pids(namespaces: Sequence[str]) -> list[int]:
    """Pids of every process living in the given namespaces."""
    pids: list[int] = []
    for ns in namespaces:
        proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30, check=False)
        pids += [int(p) for p in proc.stdout.split() if p.isdigit()]
    return pids


def destroy(tag: str, subnet: str | None, namespaces: Sequence[str] = (), links: Sequence[str] = ()) -> None:
    """Delete the lab's route, root links and namespaces (the given ones and any found by tag).

    Processes inside must be gone first, or a namespace outlives its name.
    """
    found_ns, found_links = leftovers(tag)
    commands = []
    if subnet:
        for route in _ip_json("-4", "route", "show", subnet):
            dev = str(route.get("dev", ""))
            if dev.startswith(tag + "-"):
                commands.append(f"route del {subnet} dev {dev}")
    commands += [f"link del {link}" for link in sorted(set(links) | set(found_links))]
    commands += [f"netns del {ns}" for ns in sorted(set(namespaces) | set(found_ns))]
    if commands:
        _ip_batch(commands, force=True)


# ---------------------------------------------------------------- sockets in a namespace

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise LabError(f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: str | None) -> Iterator[None]:
    """Switch the *calling thread* into network namespace ``ns`` and back (no-op for None).

    Sockets created inside stay in that namespace after leaving, so a check can open its
    socket here and talk through it from anywhere. Needs CAP_SYS_ADMIN.
    """
    if ns is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    except OSError as exc:
        os.close(home)
        raise LabError(f"network namespace {ns}: {exc.strerror}") from None
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def connect(ns: str | None, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside namespace ``ns`` (or from here).

    Raises:
        OSError: when the connection fails.
    """
    with entered(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------- nftables


def nft_error(stderr: str) -> str:
    """nft's error in one line: it explains over several (message, the line, a caret marker)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not set(line.strip()) <= {"^", "~"}]
    return " | ".join(lines[:2])[:300] or "no message"


def apply_nft(ns: str, ruleset_text: str) -> None:
    """Load an nftables ruleset (``nft -f`` syntax) into a lab namespace, e.g. the router.

    Raises:
        LabError: when nft rejects the ruleset.
    """
    proc = run_in(ns, ["nft", "-f", "-"], input_text=ruleset_text)
    if proc.returncode != 0:
        raise LabError(f"{ns}: nft refused the ruleset: {nft_error(proc.stderr)}")


def flush_nft(ns: str) -> None:
    """Remove every nftables rule of a lab namespace.

    Raises:
        LabError: when nft fails.
    """
    proc = run_in(ns, ["nft", "flush", "ruleset"])
    if proc.returncode != 0:
        raise LabError(f"{ns}: nft flush failed: {nft_error(proc.stderr)}")


# ---------------------------------------------------------------- cutting the site off from cern

CERN_CUT_TABLE = "lab_cern_cut"
"""The router's nftables table (family inet) holding a cern cut; nothing else uses the name."""


def cern_cut_ruleset(topo: Topology, sources: Sequence[str] = (), allow_tcp_ports: Sequence[int] = ()) -> str:
    """Rules for the router cutting ``sources`` off from cern, both directions (``nft -f`` text).

    Every forwarded packet between a source (a WN address or prefix; the whole LAN when empty)
    and the cern subnet is dropped, established flows included: cutting only the WN to cern
    direction is not enough, the seeder dials WNs itself once the tracker told it about them.
    ``allow_tcp_ports`` keeps new connections from the sources to those cern ports (and their
    replies) open, e.g. the HTTP fallback. VoBox <-> WN and VoBox <-> cern paths are untouched,
    and WN-to-WN traffic is bridged, never seen here. The text first replaces any earlier cut
    (loading it twice is fine); flushing the router's rules removes it.
    """
    src = "{ " + ", ".join(sources or [topo.lan_net(k) for k in range(1, topo.lans + 1)]) + " }"
    lines = [*_delete_table_lines("inet", CERN_CUT_TABLE), f"table inet {CERN_CUT_TABLE} {{", "    chain forward {",
             "        type filter hook forward priority 0; policy accept;"]
    if allow_tcp_ports:
        ports = "{ " + ", ".join(str(p) for p in allow_tcp_ports) + " }"
        lines += [f"        ip saddr {src} ip daddr {topo.cern_net} tcp dport {ports} accept",
                  f"        ip saddr {topo.cern_net} ip daddr {src} tcp sport {ports} ct state established accept"]
    lines += [f"        ip saddr {src} ip daddr {topo.cern_net} counter drop",
              f"        ip saddr {topo.cern_net} ip daddr {src} counter drop",
              "    }", "}"]
    return "\n".join(lines) + "\n"


def _delete_table_lines(family: str, table: str) -> list[str]:
    # nft 1.0.6 has no `destroy`: declaring the table first makes the delete succeed either way
    return [f"table {family} {table} {{}}", f"delete table {family} {table}"]
