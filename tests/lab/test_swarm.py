"""The site LAN carries the swarm: a WN cut off from cern gets the package from a site neighbour.

End to end through the real parts: aria2c on the WNs, opentracker and the seeder in cern, the
router's nftables, the LAN bridge. Each test uses its own pair of WNs that have never met a peer
(no DHT nodes: the lab gives none and deletes dht.dat; no PEX without a first connection), so a
WN cut off from cern can only find a neighbour by Local Peer Discovery (LPD). The negative
control blocks LPD on the bridge and shows the same WN then gets nothing, and gets the package
again as soon as LPD is allowed.

These tests run on their own lab (6 WNs): aria2c keeps DHT and peer state the session lab could
not be given back, and each test needs WNs no other test has touched. Each test still leaves
that lab as it found it (rules flushed, downloads removed, downloaded files deleted), checked.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.lab import Lab, central, netns

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces (LPD is off in loopback mode)"),
]

SWARM_WNS = 6
PACKAGE_MB = 8
LPD_GROUP, LPD_PORT = "239.192.152.143", 6771
DOWNLOAD_TIMEOUT = 60.0
"""Bound for any download that must happen; LPD peers are dialled on aria2c's ~10 s timer."""
LPD_BLOCKED_WINDOW = 20.0
"""How long a WN with LPD blocked must stay empty-handed: two ticks of that timer (found in 2-10 s)."""
LAN_RATE_LIMIT = "8M"
"""Per-download limit for the neighbour downloads, so getPeers sampling cannot miss the transfer."""
BYTES_TABLE = "lab_swarm_bytes"
LPD_BLOCK_TABLE = "lab_lpd_block"
LPD_BLOCK = f"""
table bridge {LPD_BLOCK_TABLE} {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip daddr {LPD_GROUP} udp dport {LPD_PORT} counter drop
    }}
}}
"""
"""Drops LPD on the bridge itself: every WN-to-WN copy of an announce, whichever WN sends it."""
LPD_UNBLOCK = f"table bridge {LPD_BLOCK_TABLE} {{}}\ndelete table bridge {LPD_BLOCK_TABLE}\n"

RecordProperty = Callable[[str, object], None]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def swarm_lab(tmp_path_factory: pytest.TempPathFactory, lab_cache_dir: Path) -> Iterator[Lab]:
    handle = Lab(tmp_path_factory.mktemp("swarm-lab"), cache_dir=lab_cache_dir)
    try:
        handle.up(SWARM_WNS, package_mb=PACKAGE_MB)
        yield handle
    finally:
        handle.down()


@pytest.fixture
def swarm(swarm_lab: Lab) -> Iterator[Lab]:
    """The module's lab, checked clean before each test and swept (then checked) after it."""
    lab = swarm_lab
    assert_clean(lab)
    before = {name: set(data_dir(lab, name).iterdir()) for name in lab.wn_names}
    try:
        yield lab
    finally:
        for ns in lab.namespaces:
            lab.flush_nft(ns)
        for name in lab.wn_names:
            remove_downloads(lab, name)
            for path in set(data_dir(lab, name).iterdir()) - before[name]:
                path.unlink()
    assert_clean(lab)


def assert_clean(lab: Lab) -> None:
    for ns in lab.namespaces:
        assert lab.exec_in(ns, ["nft", "list", "ruleset"]).stdout.strip() == "", ns
    for name in lab.wn_names:
        assert all_gids(lab, name) == [], name
        assert list(data_dir(lab, name).iterdir()) == [], name


# ---------------------------------------------------------------- helpers


def data_dir(lab: Lab, name: str) -> Path:
    return lab.wn(name).host_path("/var/lib/aria2/data")


def all_gids(lab: Lab, name: str) -> list[str]:
    keys = ["gid"]
    found = lab.rpc(name, "aria2.tellActive", [keys]) + lab.rpc(name, "aria2.tellWaiting", [0, 1000, keys])
    found += lab.rpc(name, "aria2.tellStopped", [0, 1000, keys])
    return [str(d["gid"]) for d in found]


def remove_downloads(lab: Lab, name: str, timeout: float = 10.0) -> None:
    """Remove every download of a WN and its result (forceRemove: no stop announce to a tracker)."""
    gids = all_gids(lab, name)
    for gid in gids:
        if lab.rpc(name, "aria2.tellStatus", [gid, ["status"]])["status"] in ("active", "waiting", "paused"):
            lab.rpc(name, "aria2.forceRemove", [gid])
    deadline = time.monotonic() + timeout
    for gid in gids:
        while lab.rpc(name, "aria2.tellStatus", [gid, ["status"]])["status"] in ("active", "waiting", "paused"):
            assert time.monotonic() < deadline, f"{name}: {gid} not removed within {timeout} s"
            time.sleep(0.05)
        lab.rpc(name, "aria2.removeDownloadResult", [gid])


def torrent_b64(lab: Lab) -> str:
    return base64.b64encode(Path(lab.state["package"]["torrent"]).read_bytes()).decode()


def add_torrent(lab: Lab, name: str, options: dict[str, str] | None = None) -> str:
    """Give a WN the package's .torrent over RPC (its content, no HTTP involved); the GID."""
    return str(lab.rpc(name, "aria2.addTorrent", [torrent_b64(lab), [], options or {}]))


def status(lab: Lab, name: str, gid: str) -> dict[str, Any]:
    keys = ["status", "completedLength", "totalLength", "uploadLength", "errorMessage"]
    result: dict[str, Any] = lab.rpc(name, "aria2.tellStatus", [gid, keys])
    return result


def complete(st: dict[str, Any]) -> bool:
    return bool(st["totalLength"] != "0" and st["completedLength"] == st["totalLength"])


def wait_complete(lab: Lab, name: str, gid: str, timeout: float = DOWNLOAD_TIMEOUT, *, bt: bool = True) -> tuple[float, float, set[str]]:
    """Poll until the download is complete: (seconds to the first byte, seconds to complete, BitTorrent peer IPs seen).

    The WN's own address is left out of the peers: it hears its own LPD announce (multicast
    loopback) and dials itself, which aria2c drops at the handshake (same peer id).
    """
    started = time.monotonic()
    first_byte: float | None = None
    peers: set[str] = set()
    while True:
        st = status(lab, name, gid)
        assert st["status"] in ("active", "complete"), (name, st)
        if bt:
            peers |= {str(p["ip"]) for p in lab.rpc(name, "aria2.getPeers", [gid])} - {lab.wn(name).address}
        now = time.monotonic() - started
        if first_byte is None and int(st["completedLength"]) > 0:
            first_byte = now
        if complete(st):
            return (first_byte if first_byte is not None else now), now, peers
        assert now < timeout, f"{name}: {st['completedLength']} of {st['totalLength']} bytes after {timeout:g} s"
        time.sleep(0.1)


def count_bytes(lab: Lab, name: str, sources: dict[str, str]) -> None:
    """Count bytes arriving at a WN per source (named nft counters in the WN's own namespace)."""
    ns = lab.wn_ns(name)
    assert ns is not None
    counters = "\n".join(f"    counter {label} {{}}" for label in sources)
    rules = "\n".join(f"        ip saddr {addr} counter name {label}" for label, addr in sources.items())
    lab.apply_nft(ns, f"table inet {BYTES_TABLE} {{\n{counters}\n    chain input {{\n"
                      f"        type filter hook input priority 0; policy accept;\n{rules}\n    }}\n}}\n")


def nft_objects(lab: Lab, ns: str, family: str, table: str) -> list[dict[str, Any]]:
    listed = lab.exec_in(ns, ["nft", "-j", "list", "table", family, table])
    assert listed.returncode == 0, listed.stderr
    items: list[dict[str, Any]] = json.loads(listed.stdout)["nftables"]
    return items


def byte_counts(lab: Lab, name: str) -> dict[str, int]:
    ns = lab.wn_ns(name)
    assert ns is not None
    return {str(o["counter"]["name"]): int(o["counter"]["bytes"]) for o in nft_objects(lab, ns, "inet", BYTES_TABLE) if "counter" in o}


def rule_drops(lab: Lab, family: str, table: str) -> list[int]:
    """Packets counted by each counting rule of a router table, in rule order."""
    router = lab.router_ns
    assert router is not None
    drops = []
    for item in nft_objects(lab, router, family, table):
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                drops.append(int(expr["counter"]["packets"]))
    return drops


def reachable(lab: Lab, name: str, port: int) -> bool:
    """Whether a WN can open a TCP connection to cern on ``port`` (within 0.5 s: inside the lab a connect takes < 1 ms)."""
    try:
        netns.connect(lab.wn_ns(name), lab.state["central"]["host"], port, timeout=0.5).close()
    except OSError:
        return False
    return True


def package_from_cern(lab: Lab, name: str) -> str:
    """A WN gets the package by BitTorrent from the tracker and seeder, and keeps seeding it; the GID."""
    gid = add_torrent(lab, name)
    wait_complete(lab, name, gid)
    return gid


def assert_is_the_package(lab: Lab, name: str) -> None:
    package = lab.state["package"]
    assert central.sha1_file(data_dir(lab, name) / package["name"]) == package["sha1"]


# ---------------------------------------------------------------- tests


def test_lpd_finds_a_site_neighbour_when_cern_is_cut_off(swarm: Lab, record_property: RecordProperty) -> None:
    lab = swarm
    seed, fresh = "wn001.lab", "wn002.lab"
    size = int(lab.state["package"]["size"])
    seed_gid = package_from_cern(lab, seed)
    uploaded_before = int(status(lab, seed, seed_gid)["uploadLength"])

    lab.cut_cern([fresh])
    c = lab.state["central"]
    assert not reachable(lab, fresh, c["tracker_port"]) and not reachable(lab, fresh, c["seeder_port"])
    assert reachable(lab, seed, c["tracker_port"]), "the cut is for the fresh WN only"
    count_bytes(lab, fresh, {"neighbour": lab.wn(seed).address, "cern": lab.topology.cern_net})

    gid = add_torrent(lab, fresh, {"max-download-limit": LAN_RATE_LIMIT})
    first_byte, seconds, peers = wait_complete(lab, fresh, gid)

    assert peers == {lab.wn(seed).address}
    assert_is_the_package(lab, fresh)
    got = byte_counts(lab, fresh)
    assert got["cern"] == 0
    assert size <= got["neighbour"] < 1.1 * size  # the payload plus TCP/IP headers
    uploaded = int(status(lab, seed, seed_gid)["uploadLength"]) - uploaded_before
    assert size <= uploaded < 1.05 * size
    wn_to_cern_dropped = rule_drops(lab, "inet", netns.CERN_CUT_TABLE)[0]
    assert wn_to_cern_dropped > 0, "the fresh WN's tracker announces must have met the cut"
    record_property("first_byte_s", round(first_byte, 2))
    record_property("complete_s", round(seconds, 2))
    record_property("bytes_from_neighbour", got["neighbour"])
    record_property("bytes_from_cern", got["cern"])
    record_property("neighbour_uploaded", uploaded)


def test_with_lpd_blocked_a_cut_off_wn_gets_nothing_until_lpd_is_allowed(swarm: Lab, record_property: RecordProperty) -> None:
    lab = swarm
    router = lab.router_ns
    assert router is not None
    seed, fresh = "wn003.lab", "wn004.lab"
    package_from_cern(lab, seed)
    lab.cut_cern([fresh])
    lab.apply_nft(router, LPD_BLOCK)

    gid = add_torrent(lab, fresh)
    deadline = time.monotonic() + LPD_BLOCKED_WINDOW
    while time.monotonic() < deadline:
        st = status(lab, fresh, gid)
        assert st["status"] == "active", st
        assert st["completedLength"] == "0", f"{fresh} got bytes with LPD blocked and cern cut off"
        assert lab.rpc(fresh, "aria2.getPeers", [gid]) == []
        time.sleep(0.5)
    (lpd_dropped,) = rule_drops(lab, "bridge", LPD_BLOCK_TABLE)
    assert lpd_dropped > 0, "the fresh WN's LPD announce must have been sent, and dropped on the bridge"

    # the same WN, neighbour and cut, with LPD allowed again: the package comes, so the block alone kept it out.
    # LPD announces only when a torrent starts (then every 5 min): restart the download to announce again.
    lab.apply_nft(router, LPD_UNBLOCK)
    remove_downloads(lab, fresh)
    gid = add_torrent(lab, fresh, {"max-download-limit": LAN_RATE_LIMIT})
    _, seconds, peers = wait_complete(lab, fresh, gid)
    assert peers == {lab.wn(seed).address}
    assert_is_the_package(lab, fresh)
    record_property("lpd_blocked_window_s", LPD_BLOCKED_WINDOW)
    record_property("lpd_dropped_packets", lpd_dropped)
    record_property("after_unblock_complete_s", round(seconds, 2))


def test_a_package_fetched_over_http_is_seeded_to_the_lan(swarm: Lab, record_property: RecordProperty) -> None:
    lab = swarm
    fetcher, fresh = "wn005.lab", "wn006.lab"
    c, package = lab.state["central"], lab.state["package"]
    size = int(package["size"])

    # cern only reachable over HTTP: the WN falls back to the HTTP tarball
    lab.cut_cern([fetcher], allow_tcp_ports=[c["http_port"]])
    assert not reachable(lab, fetcher, c["tracker_port"]) and not reachable(lab, fetcher, c["seeder_port"])
    count_bytes(lab, fetcher, {"cern": lab.topology.cern_net})
    http_gid = str(lab.rpc(fetcher, "aria2.addUri", [[lab.site.central.http_fallback + package["name"]]]))
    wait_complete(lab, fetcher, http_gid, bt=False)
    assert_is_the_package(lab, fetcher)
    over_http = byte_counts(lab, fetcher)["cern"]
    assert size <= over_http < 1.1 * size

    # it seeds what it fetched: the torrent checks the file already there and downloads nothing
    seed_gid = add_torrent(lab, fetcher, {"check-integrity": "true"})
    wait_complete(lab, fetcher, seed_gid, timeout=20.0)
    assert status(lab, fetcher, seed_gid)["status"] == "active"  # seeding
    assert byte_counts(lab, fetcher)["cern"] - over_http < 64 * 1024  # no second copy from cern

    # cern gone for both: a fresh WN gets the package from the HTTP-fed neighbour, found by LPD
    lab.cut_cern([fetcher, fresh])
    count_bytes(lab, fresh, {"neighbour": lab.wn(fetcher).address, "cern": lab.topology.cern_net})
    gid = add_torrent(lab, fresh, {"max-download-limit": LAN_RATE_LIMIT})
    _, seconds, peers = wait_complete(lab, fresh, gid)
    assert peers == {lab.wn(fetcher).address}
    assert_is_the_package(lab, fresh)
    got = byte_counts(lab, fresh)
    assert got["cern"] == 0
    assert size <= got["neighbour"] < 1.1 * size
    assert size <= int(status(lab, fetcher, seed_gid)["uploadLength"]) < 1.05 * size
    record_property("http_bytes", over_http)
    record_property("from_http_seeded_neighbour_complete_s", round(seconds, 2))
