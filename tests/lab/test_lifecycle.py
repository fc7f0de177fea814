"""Own labs (not the session one): up/down twice without leftovers, up after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siteadmin.lab import Lab, central, netns, proc

pytestmark = pytest.mark.lab

ROOT = os.geteuid() == 0


def pgrep(lab_dir: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(lab_dir) + "/"], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def assert_nothing_left(lab_dir: Path, tag: str, pids: list[int], subnet: str | None) -> None:
    still = [p for p in pids if Path(f"/proc/{p}").exists() and proc._stat(p) is not None and proc._stat(p)[0] != "Z"]  # type: ignore[index]
    assert still == [], f"processes left: {still}"
    assert pgrep(lab_dir) == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert tag not in namespaces
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert tag not in links
    if subnet:
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
        assert subnet not in routes
    for name in ("lab.json", "site.toml", "cern", "wns", "ssh", "secrets"):
        assert not (lab_dir / name).exists(), name


def download_by_torrent(lab: Lab, wn: str, timeout: float = 60.0) -> Path:
    """Have a WN's aria2c fetch the package through its .torrent; the path of the finished file."""
    central, package = lab.state["central"], lab.state["package"]
    url = f"http://{central['host']}:{central['http_port']}/{package['torrent_name']}"
    gid = lab.rpc(wn, "aria2.addUri", [[url]])
    deadline = time.monotonic() + timeout
    bt_gid = None
    while time.monotonic() < deadline:
        if bt_gid is None:
            followed = lab.rpc(wn, "aria2.tellStatus", [gid, ["followedBy", "status", "errorMessage"]])
            assert followed.get("status") != "error", followed
            bt_gid = (followed.get("followedBy") or [None])[0]
        else:
            st = lab.rpc(wn, "aria2.tellStatus", [bt_gid, ["status", "completedLength", "totalLength", "errorMessage"]])
            assert st["status"] != "error", st
            if st["totalLength"] != "0" and st["completedLength"] == st["totalLength"]:
                return lab.wn(wn).host_path("/var/lib/aria2/data") / str(package["name"])
        time.sleep(0.1)
    raise AssertionError(f"{wn}: no complete download within {timeout} s")


def test_up_down_twice_leaves_nothing(tmp_path: Path, lab_cache_dir: Path) -> None:
    lab_dir = tmp_path / "lab"
    for round_ in range(2):
        lab = Lab(lab_dir, cache_dir=lab_cache_dir)
        lab.up(2, package_mb=8)
        pids = [r.pid for r in lab.processes]
        subnet = lab.state["subnet"] if lab.mode == "netns" else None
        assert len(pids) == 4 + 2 * 2
        # found as down finds them: by the lab dir in their command line, or (netns mode) in the lab's
        # namespaces, where the WNs' sshd and aria2c name only their own /etc files
        assert set(pgrep(lab_dir)) | set(netns.namespace_pids(lab.namespaces)) >= set(pids)
        if ROOT:
            assert set(lab.namespaces) <= set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split())
            assert subnet is not None and subnet in subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
        status = lab.status()
        assert status.healthy, status.text()
        if round_ == 0:  # the swarm works: a WN gets the package by BitTorrent from the seeder
            path = download_by_torrent(lab, "wn002.lab")
            assert central.sha1_file(path) == lab.state["package"]["sha1"]
        seconds = lab.down()
        assert seconds < 10
        assert_nothing_left(lab_dir, lab.tag, pids, subnet)
    assert any(lab_cache_dir.glob("*.tar.bz2")), "the package cache must survive lab down"


def test_up_after_a_crash_cleans_and_comes_up(tmp_path: Path, lab_cache_dir: Path) -> None:
    lab_dir = tmp_path / "crashed"
    first = Lab(lab_dir, cache_dir=lab_cache_dir)
    first.up(2, package_mb=8)
    old = first.processes
    victims = [r for r in old if r.name in ("seeder", "slapd", "aria2c wn001.lab", "sshd wn002.lab")]
    assert len(victims) == 4
    for record in victims:
        os.kill(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(proc.alive(r) for r in victims) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(proc.alive(r) for r in victims)
    assert not first.status().healthy  # the crash is visible
    if ROOT:
        assert netns.leftovers(first.tag)[0], "namespaces are still there after the crash"

    second = Lab(lab_dir, cache_dir=lab_cache_dir)  # a new process would start from lab.json alone
    try:
        second.up(2, package_mb=8)
        assert not any(proc.alive(r) for r in old), "survivors of the crashed run must be stopped"
        status = second.status()
        assert status.healthy, status.text()
        assert {r.pid for r in second.processes}.isdisjoint({r.pid for r in old})
    finally:
        pids = [r.pid for r in second.processes] if second.state_path.exists() else []
        subnet = second.state["subnet"] if second.state_path.exists() and ROOT else None
        second.down()
    assert_nothing_left(lab_dir, second.tag, pids + [r.pid for r in old], subnet)


def test_up_cleans_leftovers_found_only_by_name(tmp_path: Path) -> None:
    """No lab.json (deleted), yet namespaces and a process of the lab dir remain: up/down still finds them."""
    lab_dir = tmp_path / "orphan"
    lab_dir.mkdir()
    lab = Lab(lab_dir)
    # a lab program working in the lab's own folders, as the HTTP server does in <dir>/cern/www
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(lab_dir) + "/cern/www"], start_new_session=True)
    bystander = subprocess.Popen(["sh", "-c", "sleep 300", str(lab_dir) + "/cern/seeder.log"], start_new_session=True)
    try:
        if ROOT:
            subprocess.run(["ip", "netns", "add", f"{lab.tag}-wn001"], check=True)
        time.sleep(0.1)
        assert sleeper.poll() is None and bystander.poll() is None
        lab.down()
        assert sleeper.wait(timeout=5) is not None
        assert bystander.poll() is None, "only lab programs are stopped, not an admin's viewer of a lab file"
        assert netns.leftovers(lab.tag) == ([], [])
    finally:
        for child in (sleeper, bystander):
            if child.poll() is None:
                child.kill()
                child.wait()


def test_down_spares_what_is_not_this_labs(tmp_path: Path, lab_cache_dir: Path) -> None:
    """A running lab's down stops its own processes only: not an admin's server over the lab's files,
    not a second lab that lives in a sub-directory of the first."""
    outer = Lab(tmp_path / "outer", cache_dir=lab_cache_dir)
    inner = Lab(tmp_path / "outer" / "nested", cache_dir=lab_cache_dir)
    outer.up(1, package_mb=1)
    admins = None
    try:
        inner.up(1, package_mb=1)
        www = outer.dir / "cern" / "www"
        # in netns mode the lab's own HTTP server is in a namespace; this one, in the VoBox, is the admin's
        admins = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", "--directory", str(www)], start_new_session=True)
        time.sleep(0.1)
        netns_mode = outer.mode == "netns"
        outer.down()
        assert all(proc.alive(r) for r in inner.processes), "the nested lab lost processes"
        assert inner.status().healthy
        if netns_mode:  # (a loopback lab cannot tell this server from its own)
            assert admins.poll() is None, "an admin's process outside the lab's namespaces was stopped"
    finally:
        if admins is not None and admins.poll() is None:
            admins.kill()
            admins.wait()
        inner.down()
        outer.down()


@pytest.mark.skipif(not ROOT, reason="needs root for network namespaces")
def test_status_with_a_namespace_deleted_by_hand_reports_each_check(tmp_path: Path, lab_cache_dir: Path) -> None:
    lab = Lab(tmp_path / "hurt", cache_dir=lab_cache_dir)
    lab.up(2, package_mb=1)
    try:
        ns = lab.wn_ns("wn002.lab")
        assert ns is not None
        subprocess.run(["ip", "netns", "del", ns], check=True)
        status = lab.status()
        failed = {(c.component, c.target) for c in status.failed()}
        assert ("tracker", "wn002.lab") in failed
        assert all(target == "wn002.lab" for _, target in failed), failed
        assert ("tracker", "wn001.lab") not in failed and ("ldap", lab.state["ldap"]["ldaps_url"]) not in failed
        assert any(c.component == "tracker" and "wn002" in c.detail and "No such file" in c.detail for c in status.failed())
    finally:
        lab.down()
    assert netns.leftovers(lab.tag) == ([], [])


@pytest.mark.skipif(not ROOT, reason="needs root for network namespaces")
def test_the_hosts_own_networking_is_untouched(tmp_path: Path, lab_cache_dir: Path) -> None:
    def host_state() -> tuple[str, str, list[str]]:
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
        bridge_nf = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")
        routes = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True).stdout
        return forward, bridge_nf.read_text() if bridge_nf.exists() else "", sorted(routes.splitlines())

    before = host_state()
    lab = Lab(tmp_path / "quiet", cache_dir=lab_cache_dir)
    lab.up(1, package_mb=1)
    try:
        forward, bridge_nf, routes = host_state()
        assert (forward, bridge_nf) == before[:2]
        added = set(routes) - set(before[2])
        # the only new routes in the VoBox: the lab subnet through the lab's own veth (and its link route)
        assert added and all(f"dev {lab.tag}-vb" in route for route in added), added
        assert set(before[2]) <= set(routes)
    finally:
        lab.down()
    assert host_state() == before
