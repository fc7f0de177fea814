"""The unprivileged flavour: everything on 127.x addresses with free ports, no namespaces."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from siteadmin.aria2conf import render
from siteadmin.cli import main
from siteadmin.inventory import config_path_for, restart_command_for
from siteadmin.lab import Lab, netns, proc
from siteadmin.remote import WNService

pytestmark = pytest.mark.lab


def listening_addresses(pids: set[int]) -> list[str]:
    out = subprocess.run(["ss", "-H", "-lntupa", "-p"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            local = line.split()[4]
            found.append(local.rsplit(":", 1)[0].strip("[]").split("%")[0])
    return found


def test_loopback_lab_is_healthy_and_listens_on_loopback_only(tmp_path: Path, lab_cache_dir: Path) -> None:
    lab = Lab(tmp_path / "lo", mode="loopback", cache_dir=lab_cache_dir)
    lab.up(2, package_mb=8)
    records = lab.processes
    try:
        assert lab.mode == "loopback" and lab.namespaces == [] and lab.router_ns is None
        status = lab.status()
        assert status.healthy, status.text()
        pids = {r.pid for r in lab.processes}
        addresses = listening_addresses(pids)
        assert addresses, "the lab's services should be listening"
        assert all(ipaddress.ip_address(a if a != "*" else "0.0.0.0").is_loopback for a in addresses), addresses  # noqa: S104
        layouts = lab.wn_layouts
        assert len({wn.rpc_port for wn in layouts}) == len({wn.ssh_port for wn in layouts}) == 2
        site = lab.site
        assert site.wns.nodes["wn002.lab"].aria2c["rpc-listen-port"] == str(layouts[1].rpc_port)
        assert json.loads(lab.state_path.read_text())["mode"] == "loopback"
        # the lab's own profile passes its own lint: the free ports it uses are the ports it declares
        out, err = io.StringIO(), io.StringIO()
        assert main(["--site", str(lab.site_path), "lint"], out=out, err=err) == 0
        assert "warning" not in out.getvalue() + err.getvalue(), out.getvalue()
        # the WNs share the host's filesystem: each has its own config path under the lab dir, and the
        # restart command (the lab's service script, told that path) restarts that WN's aria2c only
        for wn in layouts:
            own = config_path_for(site, wn.name)
            assert own == str(wn.host_path("/etc/aria2/aria2c.conf")) and own.startswith(str(lab.dir) + "/")
            assert Path(own).read_text() == render(site, wn.name, create_secret=False).text
        old_1, old_2 = lab.aria2c_pid("wn001.lab"), lab.aria2c_pid("wn002.lab")
        assert old_1 is not None and old_2 is not None
        with WNService(site) as service:
            [result] = service.run(["wn001.lab"], lambda s: s.run(restart_command_for(site, s.host)))
        assert result.ok and result.value is not None and result.value.exit_status == 0, (result.line(), result.value)
        new_1 = lab.aria2c_pid("wn001.lab")
        assert new_1 is not None and new_1 != old_1
        assert lab.rpc("wn001.lab", "aria2.getVersion")["version"]
        assert lab.aria2c_pid("wn002.lab") == old_2
        restarted = proc.record_of("restarted", new_1, log=Path("/dev/null"))
        assert restarted is not None
        records.append(restarted)
    finally:
        lab.down()
    assert not any(proc.alive(r) for r in records)
    assert proc.pids_mentioning(str(lab.dir) + "/") == []  # any lab program naming the dir at all
    assert netns.leftovers(lab.tag) == ([], [])
