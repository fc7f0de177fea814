"""Each lab WN has its own files at a site's paths, and its aria2c is supervised by the lab.

On an own 2-WN lab: the rollout's target (/etc/aria2/aria2c.conf in netns mode) is the WN's own,
the VoBox's /etc, /var and /root are untouched and no mount is left behind; the restart command
of site.toml, run over SSH, restarts that WN's aria2c only; ``lab down`` stops a restarted aria2c.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteadmin.aria2conf import render
from siteadmin.inventory import config_path_for, restart_command_for
from siteadmin.lab import Lab, netns, proc, wns
from siteadmin.remote import WNService

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root (netns mode)"),
]

HOST_PATHS = ("/etc/aria2", "/etc/init.d/aria2c", "/etc/ssh/sshd_config", "/var/lib/aria2", "/var/log/aria2", "/root/.bashrc", "/root/.ssh")
"""What a lab WN has of its own at the same path as the VoBox: the VoBox's must never change."""


def snapshot(paths: tuple[str, ...] = HOST_PATHS) -> dict[str, str]:
    """Each path's kind, mode and content digest (a folder: its sorted entries), or "absent"."""
    seen = {}
    for text in paths:
        path = Path(text)
        if not path.exists():
            seen[text] = "absent"
        elif path.is_dir():
            seen[text] = f"dir {oct(path.stat().st_mode)} {sorted(os.listdir(path))}"
        else:
            seen[text] = f"file {oct(path.stat().st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
    return seen


def lab_mounts(lab_dir: Path) -> list[str]:
    """Mounts of this (VoBox) namespace naming the lab dir, or overlays."""
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if str(lab_dir) in line or " overlay " in line]


@pytest.fixture(scope="module")
def own_lab(tmp_path_factory: pytest.TempPathFactory, lab_cache_dir: Path) -> Iterator[tuple[Lab, dict[str, str], list[str]]]:
    lab_dir = tmp_path_factory.mktemp("wnns") / "lab"
    before, mounts_before = snapshot(), lab_mounts(lab_dir)
    lab = Lab(lab_dir, mode="netns", cache_dir=lab_cache_dir)
    lab.up(2, package_mb=1)
    try:
        yield lab, before, mounts_before
    finally:
        lab.down()


def ssh_run(lab: Lab, hosts: list[str], command: str) -> dict[str, tuple[int, str, str]]:
    """Run a command on WNs through siteadmin's SSH layer: host -> (exit status, stdout, stderr)."""
    with WNService(lab.site) as service:
        results = service.run(hosts, lambda s: s.run(command))
    out = {}
    for result in results:
        assert result.ok and result.value is not None, result.line()
        out[result.host] = (result.value.exit_status, result.value.stdout, result.value.stderr)
    return out


def test_the_vobox_files_are_untouched_and_nothing_is_mounted_here(own_lab: tuple[Lab, dict[str, str], list[str]]) -> None:
    lab, before, mounts_before = own_lab
    assert snapshot() == before
    # the WNs' overlays and binds live in their own mount namespaces only
    assert lab_mounts(lab.dir) == mounts_before
    assert not any(str(lab.dir) in line for line in mounts_before)


def test_each_wn_has_its_own_config_at_the_sites_path(own_lab: tuple[Lab, dict[str, str], list[str]]) -> None:
    lab, _, _ = own_lab
    site = lab.site
    assert site.rollout.config_path == "/etc/aria2/aria2c.conf"
    assert all(config_path_for(site, name) == "/etc/aria2/aria2c.conf" for name in lab.wn_names)
    seen = ssh_run(lab, lab.wn_names, "stat -c %a /etc/aria2/aria2c.conf && cat /etc/aria2/aria2c.conf")
    texts = {}
    for name in lab.wn_names:
        status, out, err = seen[name]
        assert status == 0, err
        mode, _, text = out.partition("\n")
        assert mode == "600"
        assert text == render(site, name, create_secret=False).text
        texts[name] = text
    assert texts["wn001.lab"] != texts["wn002.lab"]
    # the lab's own way in sees the same files (and the host path is where they live)
    for name in lab.wn_names:
        done = lab.wn_exec(name, ["cat", "/etc/aria2/aria2c.conf"])
        assert done.returncode == 0 and done.stdout == texts[name] == lab.wn(name).host_path("/etc/aria2/aria2c.conf").read_text()
    assert "# host: wn001.lab\n" in texts["wn001.lab"] and "wn002.lab" not in texts["wn001.lab"]


def test_root_on_a_wn_has_its_own_home_and_a_minimal_shell_rc(own_lab: tuple[Lab, dict[str, str], list[str]]) -> None:
    lab, _, _ = own_lab
    seen = ssh_run(lab, ["wn001.lab"], "echo $HOME; cat ~/.bashrc; env | grep -c PYENV; ls /var/lib/aria2")
    status, out, _ = seen["wn001.lab"]
    home, rest = out.split("\n", 1)
    assert home == "/root"
    assert rest.startswith(wns.SHELL_RC)
    count, listing = rest[len(wns.SHELL_RC):].split("\n", 1)
    assert count == "0", "the VoBox's shell rc (pyenv) ran on the WN"
    assert {"aria2c.pid", "data"} <= set(listing.split())
    assert Path(lab.wn("wn001.lab").host_path("/root/.bashrc")).read_text() == wns.SHELL_RC


def test_the_restart_command_restarts_that_wns_aria2c_only(own_lab: tuple[Lab, dict[str, str], list[str]]) -> None:
    lab, _, _ = own_lab
    site = lab.site
    command = restart_command_for(site, "wn001.lab")
    assert command == "/etc/init.d/aria2c restart" == site.rollout.restart_command
    old_1, old_2 = lab.aria2c_pid("wn001.lab"), lab.aria2c_pid("wn002.lab")
    assert old_1 is not None and old_2 is not None
    old_record = proc.record_of("old", old_1, log=Path("/dev/null"))
    assert old_record is not None
    status, out, err = ssh_run(lab, ["wn001.lab"], command)["wn001.lab"]
    assert status == 0, err
    new_1 = lab.aria2c_pid("wn001.lab")
    assert new_1 is not None and new_1 != old_1, out
    assert f"pid {new_1}" in out
    assert not proc.alive(old_record)
    assert lab.rpc("wn001.lab", "aria2.getVersion")["version"]
    assert lab.aria2c_pid("wn002.lab") == old_2
    # the restarted aria2c is in the WN's namespaces, where lab down looks for it
    ns = lab.wn_ns("wn001.lab")
    assert ns is not None and new_1 in netns.namespace_pids([ns])
    assert os.readlink(f"/proc/{new_1}/ns/mnt") == os.readlink(f"/proc/{next(r.pid for r in lab.processes if r.name == 'sshd wn001.lab')}/ns/mnt")
    assert os.readlink(f"/proc/{new_1}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def test_a_config_aria2c_refuses_makes_the_restart_fail_and_start_brings_the_good_one_back(
    own_lab: tuple[Lab, dict[str, str], list[str]],
) -> None:
    lab, _, _ = own_lab
    name = "wn002.lab"
    conf = "/etc/aria2/aria2c.conf"
    good = lab.wn(name).host_path(conf).read_text()
    broken = f"cp -p {conf} /tmp/.lab-keep-{name} && echo max-concurrent-downloads=0 >> {conf} && {restart_command_for(lab.site, name)}"
    try:
        status, _, err = ssh_run(lab, [name], broken)[name]
        assert status != 0
        assert "aria2c did not start" in err or "does not listen" in err, err
        status, out, _ = ssh_run(lab, [name], "/etc/init.d/aria2c status")[name]
        assert status == 3 and "not running" in out
    finally:
        ssh_run(lab, [name], f"cp -p /tmp/.lab-keep-{name} {conf} && rm -f /tmp/.lab-keep-{name} && /etc/init.d/aria2c start")
    assert lab.wn(name).host_path(conf).read_text() == good
    assert lab.aria2c_service(name, "status").startswith("aria2c is running")
    assert lab.rpc(name, "aria2.getVersion")["version"]


def test_down_stops_a_restarted_aria2c_and_leaves_no_mount(tmp_path: Path, lab_cache_dir: Path) -> None:
    before = snapshot()
    lab = Lab(tmp_path / "lab", mode="netns", cache_dir=lab_cache_dir)
    lab.up(1, package_mb=1)
    try:
        old = lab.aria2c_pid("wn001.lab")
        lab.aria2c_service("wn001.lab", "restart")
        new = lab.aria2c_pid("wn001.lab")
        assert new is not None and new != old
        record = proc.record_of("restarted", new, log=tmp_path / "x")
        assert record is not None
    finally:
        lab.down()
    deadline = time.monotonic() + 5
    while proc.alive(record) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not proc.alive(record), "lab down left the restarted aria2c running"
    assert lab_mounts(lab.dir) == []
    assert not (lab.dir / "wns").exists()
    assert snapshot() == before
