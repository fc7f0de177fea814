"""Pure parts of the lab: bencoding, names and addresses, subnet choice, package cache."""

from __future__ import annotations

import hashlib
import shlex
import tomllib
from pathlib import Path

import pytest

from siteadmin.errors import ConfigError, LabError
from siteadmin.inventory import config_path_for, restart_command_for
from siteadmin.lab import bencode, central, netns, sitefile, wns
from siteadmin.lab.netns import Topology
from siteadmin.site import site_from_mapping


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


# ---------------------------------------------------------------- WN paths, per-WN config path and restart command


def _wn(tmp_path: Path, ns: str | None = "sl000000-wn001") -> wns.WNLayout:
    return wns.WNLayout(name="wn001.lab", index=1, ns=ns, address="10.200.2.11", ssh_port=22, rpc_port=6800, bt_port=6881,
                        dir=str(tmp_path / "wns" / "wn001.lab"))


def test_a_wn_keeps_its_own_etc_var_and_root_under_its_folder(tmp_path: Path) -> None:
    wn = _wn(tmp_path)
    assert wn.host_path("/etc/aria2/aria2c.conf") == tmp_path / "wns/wn001.lab/fs/etc/aria2/aria2c.conf"
    assert wn.host_path("/var/lib/aria2/data") == tmp_path / "wns/wn001.lab/fs/var/lib/aria2/data"
    assert wn.seen_path("/var/lib/aria2/dht.dat", loopback=False) == "/var/lib/aria2/dht.dat"
    assert wn.seen_path("/var/lib/aria2/dht.dat", loopback=True) == str(tmp_path / "wns/wn001.lab/fs/var/lib/aria2/dht.dat")
    for outside in ("/usr/bin/aria2c", "etc/aria2/aria2c.conf", "/etc/../usr/x", "/"):
        with pytest.raises(LabError, match="not a file the WN keeps of its own"):
            wn.host_path(outside)
    node = wns.node_options(wn, loopback=False)
    assert (node["dir"], node["dht-file-path"], node["save-session"]) == (
        "/var/lib/aria2/data", "/var/lib/aria2/dht.dat", "/var/lib/aria2/aria2c.session")
    assert wns.service_command(wn, "restart", None) == ["/etc/init.d/aria2c", "restart"]
    assert wns.service_command(wn, "start", tmp_path / "svc") == ["sh", str(tmp_path / "svc"), "start", str(wn.host_path(wns.CONFIG_PATH))]
    assert wns.launcher_argv(wn)[:4] == ["unshare", "--mount", "--propagation", "private"]


def test_netns_lab_refuses_a_dir_overlay_mounts_cannot_name(tmp_path: Path) -> None:
    wn = _wn(tmp_path / "a,b")
    with pytest.raises(LabError, match="must not hold , : or"):
        wns.prepare(wn, "x=1\n", authorized_keys=tmp_path / "keys", loopback=False)
    assert not wn.path.exists()


def _facts(tmp_path: Path, *, loopback: bool) -> sitefile.SiteFacts:
    wn = _wn(tmp_path, None if loopback else "sl000000-wn001")
    service = tmp_path / "lab dir" / "wns" / "aria2c-service" if loopback else None
    return sitefile.SiteFacts(
        ldaps_url="ldaps://10.200.1.2:636", ca_file=tmp_path / "ca.pem", bind_dn="cn=admin,o=alice,dc=cern,dc=ch",
        password_file=tmp_path / "pw", base="o=alice,dc=cern,dc=ch", tracker_host="10.200.1.2", tracker_port=8088,
        seeder_host="10.200.1.2", seeder_port=8092, http_fallback="http://10.200.1.2:8080/", wns=[wn], ssh_user="root",
        ssh_key=tmp_path / "key", known_hosts=tmp_path / "kh", rpc_secret_file=tmp_path / "secret", rpc_port=6800,
        loopback=loopback, restart_command=wns.restart_command(service),
    )


def test_the_lab_site_rolls_out_to_each_wns_own_config(tmp_path: Path) -> None:
    site = site_from_mapping(tomllib.loads(sitefile.site_toml_text(_facts(tmp_path, loopback=False), tmp_path)))
    assert (site.rollout.config_path, site.rollout.backups_kept, site.rollout.restart_command) == (
        "/etc/aria2/aria2c.conf", 3, "/etc/init.d/aria2c restart")
    assert config_path_for(site, "wn001.lab") == "/etc/aria2/aria2c.conf"
    assert restart_command_for(site, "wn001.lab") == "/etc/init.d/aria2c restart"

    loop = site_from_mapping(tomllib.loads(sitefile.site_toml_text(_facts(tmp_path, loopback=True), tmp_path)))
    own = str(tmp_path / "wns/wn001.lab/fs/etc/aria2/aria2c.conf")
    assert config_path_for(loop, "wn001.lab") == own
    assert not loop.rollout.config_path.startswith("/etc/")
    script = shlex.quote(str(tmp_path / "lab dir" / "wns" / "aria2c-service"))
    assert restart_command_for(loop, "wn001.lab") == f"sh {script} restart {shlex.quote(own)}"
    assert shlex.split(restart_command_for(loop, "wn001.lab"))[-1] == own


def test_restart_command_placeholder_is_shell_quoted_and_other_braces_stay() -> None:
    site = site_from_mapping({
        "wns": {"hosts": ["wn[1-2].x"], "nodes": {"wn1.x": {"config_path": "/srv/a b/it's.conf"}}},
        "rollout": {"restart_command": 'svc restart --conf {config_path} "${HOME}" {config_path}'},
    })
    assert config_path_for(site, "wn1.x") == "/srv/a b/it's.conf"
    assert config_path_for(site, "wn2.x") == "/etc/aria2/aria2c.conf"
    quoted = shlex.quote("/srv/a b/it's.conf")
    assert restart_command_for(site, "wn1.x") == f'svc restart --conf {quoted} "${{HOME}}" {quoted}'
    assert shlex.split(restart_command_for(site, "wn1.x"))[3] == "/srv/a b/it's.conf"
    assert restart_command_for(site, "wn2.x") == 'svc restart --conf /etc/aria2/aria2c.conf "${HOME}" /etc/aria2/aria2c.conf'


@pytest.mark.parametrize("bad", ["relative/aria2c.conf", "/etc/aria2/a\nb.conf"])
def test_a_nodes_config_path_must_be_absolute(bad: str) -> None:
    with pytest.raises(ConfigError, match=r'wn1\.x.*config_path.*absolute path'):
        site_from_mapping({"wns": {"hosts": ["wn1.x"], "nodes": {"wn1.x": {"config_path": bad}}}})
