"""The firewall rules a site needs for torrent mode, for the network team: ``siteadmin check --rules``.

Derived from the site config alone (no SSH): the WN<->WN port range ``[wns] ports`` (TCP and
UDP), LPD multicast (239.192.152.143:6771 UDP), the central tracker and seeder ports, and the
aria2c RPC port, which must stay on each WN's loopback. Three formats, each loadable by its own
tool (the tests check them with ``nft -c -f``, ``iptables-restore --test`` and
``firewall-offline-cmd --check-config``):

- ``nftables``: a table of its own (``inet siteadmin_torrent``) for the WNs;
- ``iptables``: an ``iptables-restore`` file for the filter table;
- ``firewalld``: a zone (``siteadmin-torrent``) whose sources are the site's WN networks.

The WN networks come from the addresses in ``[wns.nodes]`` (each as a /32, or its /24 when
many share one) when the site config gives addresses; otherwise the private ranges, with a
comment saying to narrow them to the site's own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from siteadmin.errors import UsageError
from siteadmin.site import Site, parse_port_ranges

FORMATS: tuple[str, ...] = ("nftables", "iptables", "firewalld")
PRIVATE_NETWORKS: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
LPD_GROUP = "239.192.152.143"
LPD_PORT = 6771
ZONE = "siteadmin-torrent"


def wn_networks(site: Site) -> tuple[list[str], bool]:
    """The site's WN networks for the rules, and whether they are the private-range fallback."""
    nets: set[ipaddress.IPv4Network] = set()
    for node in site.wns.nodes.values():
        try:
            nets.add(ipaddress.IPv4Network(f"{ipaddress.IPv4Address(node.address)}/24", strict=False))
        except ValueError:
            continue
    if not nets:
        return list(PRIVATE_NETWORKS), True
    return [str(n) for n in sorted(nets)], False


def _ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _central(site: Site) -> list[tuple[str, str, int]]:
    """(what, host, port) of the central services, tracker first; one entry per distinct endpoint."""
    out: list[tuple[str, str, int]] = []
    for what, host, port in (("tracker", site.central.tracker_host, site.central.tracker_port),
                             ("seeder", site.central.seeder_host, site.central.seeder_port)):
        if (host, port) not in [(h, p) for _, h, p in out]:
            out.append((what, host, port))
    return out


def firewall_rules(site: Site, fmt: str = "nftables") -> str:
    """The rules text in ``fmt``.

    Args:
        site: the site config.
        fmt: one of FORMATS.

    Returns:
        The whole text, with comments saying where it goes.

    Raises:
        UsageError: an unknown format.
    """
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: not a rules format", f"formats: {', '.join(FORMATS)}")
    ranges = parse_port_ranges(site.wns.ports)
    nets, fallback = wn_networks(site)
    return {"nftables": _nftables, "iptables": _iptables, "firewalld": _firewalld}[fmt](site, ranges, nets, fallback)


def _header(site: Site, fallback: bool, comment: str) -> list[str]:
    name = site.site.name or "this site"
    lines = [
        f"{comment} Firewall rules for torrent mode on the WNs of {name}, from `siteadmin check --rules`.",
        f"{comment} WN<->WN BitTorrent TCP and UDP {site.wns.ports}, LPD multicast {LPD_GROUP}:{LPD_PORT}, "
        f"out to the tracker and the seeder; aria2c RPC {site.wns.rpc_port} stays on loopback.",
    ]
    if fallback:
        lines.append(f"{comment} The WN networks below are the private ranges: narrow them to the site's WN subnets.")
    return lines


def _nft_ports(ranges: Sequence[tuple[int, int]]) -> str:
    items = [f"{a}-{b}" if a != b else str(a) for a, b in ranges]
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _nftables(site: Site, ranges: Sequence[tuple[int, int]], nets: Sequence[str], fallback: bool) -> str:
    ports = _nft_ports(ranges)
    lines = _header(site, fallback, "#")
    lines += [
        "# Load with `nft -f FILE` on each WN (a table of its own: other rules stay).",
        "table inet siteadmin_torrent {",
        "    set site_wns {",
        "        type ipv4_addr",
        "        flags interval",
        f"        elements = {{ {', '.join(nets)} }}",
        "    }",
        "    chain input {",
        "        type filter hook input priority 0; policy accept;",
        "        ct state established,related accept",
        f"        ip saddr @site_wns tcp dport {ports} accept",
        f"        ip saddr @site_wns udp dport {ports} accept",
        f"        ip saddr @site_wns ip daddr {LPD_GROUP} udp dport {LPD_PORT} accept",
        "        # the world may not open connections to the WNs' torrent ports",
        f"        tcp dport {ports} drop",
        f"        udp dport {ports} drop",
        "        # aria2c's RPC answers on loopback only",
        f'        iifname != "lo" tcp dport {site.wns.rpc_port} drop',
        "    }",
        "    chain output {",
        "        type filter hook output priority 0; policy accept;",
    ]
    for what, host, port in _central(site):
        address = _ip(host)
        where = f"ip daddr {address} " if address else ""
        note = "" if address else f"  # {what} {host}: nft needs addresses, add ip daddr once resolved"
        lines.append(f"        {where}tcp dport {port} accept{note}")
    lines += [
        f"        ip daddr @site_wns tcp dport {ports} accept",
        f"        ip daddr @site_wns udp dport {ports} accept",
        f"        ip daddr {LPD_GROUP} udp dport {LPD_PORT} accept",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _ipt_ports(ranges: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{a}:{b}" if a != b else str(a) for a, b in ranges)


def _iptables(site: Site, ranges: Sequence[tuple[int, int]], nets: Sequence[str], fallback: bool) -> str:
    ports = _ipt_ports(ranges)
    lines = _header(site, fallback, "#")
    lines += [
        "# Load with `iptables-restore --noflush FILE` on each WN.",
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        "-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]
    for net in nets:
        lines += [
            f"-A INPUT -s {net} -p tcp -m multiport --dports {ports} -j ACCEPT",
            f"-A INPUT -s {net} -p udp -m multiport --dports {ports} -j ACCEPT",
            f"-A INPUT -s {net} -d {LPD_GROUP}/32 -p udp --dport {LPD_PORT} -j ACCEPT",
        ]
    lines += [
        f"-A INPUT -p tcp -m multiport --dports {ports} -j DROP",
        f"-A INPUT -p udp -m multiport --dports {ports} -j DROP",
        f"-A INPUT ! -i lo -p tcp --dport {site.wns.rpc_port} -j DROP",
    ]
    for _, host, port in _central(site):
        address = _ip(host)
        lines.append(f"-A OUTPUT{f' -d {address}/32' if address else ''} -p tcp --dport {port} -j ACCEPT")
    lines += [f"-A OUTPUT -d {LPD_GROUP}/32 -p udp --dport {LPD_PORT} -j ACCEPT", "COMMIT"]
    return "\n".join(lines) + "\n"


def _firewalld(site: Site, ranges: Sequence[tuple[int, int]], nets: Sequence[str], fallback: bool) -> str:
    lines = ['<?xml version="1.0" encoding="utf-8"?>']
    # an XML comment may not hold "--": the header names the option in words
    header = [line.removeprefix("#").strip().replace("`siteadmin check --rules`", "siteadmin check (rules option)") for line in _header(site, fallback, "#")]
    lines += ["<!--", *header,
              f"Save as /etc/firewalld/zones/{ZONE}.xml on each WN, then reload firewalld (firewall-cmd, reload option).",
              "Only the site's WN networks (the zone's sources) reach the torrent ports; other zones keep them closed,",
              f"and the RPC port {site.wns.rpc_port} is opened in none. firewalld lets outgoing connections through.", "-->"]
    lines += ['<zone target="default">', f"  <short>{ZONE}</short>",
              "  <description>WN to WN BitTorrent and LPD for ALICE torrent mode (siteadmin)</description>"]
    lines += [f'  <source address="{net}"/>' for net in nets]
    for a, b in ranges:
        span = f"{a}-{b}" if a != b else str(a)
        lines += [f'  <port protocol="tcp" port="{span}"/>', f'  <port protocol="udp" port="{span}"/>']
    lines += ['  <rule family="ipv4">', f'    <destination address="{LPD_GROUP}"/>', f'    <port protocol="udp" port="{LPD_PORT}"/>',
              "    <accept/>", "  </rule>", "</zone>"]
    return "\n".join(lines) + "\n"
