"""Pure parts of the lab: bencoding, names and addresses, subnet choice, package cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from siteadmin.lab import bencode, central, netns
from siteadmin.lab.netns import Topology


def test_bencode_round_trip_and_errors() -> None:
    value = {b"announce": b"http://x/announce", b"info": {b"length": 5, b"name": b"a", b"pieces": b"\x00" * 20}, b"list": [1, b"x"]}
    data = bencode.encode(value)
    assert data.startswith(b"d8:announce")
    assert bencode.decode(data) == value
    assert bencode.encode({"b": 1, "a": 2}) == b"d1:ai2e1:bi1ee"
    for bad in (b"", b"i12", b"d1:a", b"5:abc", b"i1ei2e", b"x"):
        with pytest.raises(ValueError):
            bencode.decode(bad)


def test_tags_are_per_directory_and_interface_names_fit(tmp_path: Path) -> None:
    a, b = netns.lab_tag(tmp_path / "a"), netns.lab_tag(tmp_path / "b")
    assert a != b and a == netns.lab_tag(tmp_path / "a")
    topo = Topology(mode="netns", tag=a, subnet="10.213.0.0/16", wns=200)
    assert len(topo.vobox_if) <= 15
    assert len(set(topo.namespaces)) == 202
    assert all(ns.startswith(a + "-") for ns in topo.namespaces)
    assert topo.wn_addr(1) == "10.213.2.11" and topo.wn_addr(200) == "10.213.2.210"
    assert topo.cern_addr == "10.213.1.2" and topo.vobox_addr == "10.213.0.1" and topo.router_vobox_addr == "10.213.0.2"


def test_chosen_subnet_avoids_the_hosts_networks() -> None:
    import ipaddress

    taken = [ipaddress.IPv4Network("192.0.2.0/24"), *(ipaddress.IPv4Network(f"10.{n}.0.0/16") for n in range(200, 249))]
    assert netns.choose_subnet("sl000000", taken) == "10.249.0.0/16"
    taken.append(ipaddress.IPv4Network("10.249.7.0/24"))
    with pytest.raises(Exception, match="no free"):
        netns.choose_subnet("sl000000", taken)
    # and on this host: whatever it picks overlaps none of the host's own networks
    chosen = ipaddress.IPv4Network(netns.choose_subnet("sl000000"))
    assert not any(chosen.overlaps(net) for net in netns._used_networks() if net.prefixlen > 0)


def test_package_is_deterministic_and_cached(tmp_path: Path) -> None:
    first = central.make_package(tmp_path / "c1", 1)
    again = central.make_package(tmp_path / "c1", 1)
    other = central.make_package(tmp_path / "c2", 1)
    assert first == again and first.name.endswith("-1M.tar.bz2")
    assert central.sha1_file(first) == central.sha1_file(other)
    assert first.stat().st_size > 1_000_000
    torrent = central.make_torrent(first, tmp_path / "p.torrent", "http://10.213.1.2:8088/announce")
    meta = bencode.decode(torrent.read_bytes())
    assert meta[b"announce"] == b"http://10.213.1.2:8088/announce"
    assert meta[b"info"][b"piece length"] == 1 << 18
    assert b"private" not in meta[b"info"]
    assert central.infohash(torrent) == hashlib.sha1(bencode.encode(meta[b"info"])).hexdigest()
