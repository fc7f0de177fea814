"""The unprivileged flavour: everything on 127.x addresses with free ports, no namespaces."""

from __future__ import annotations

import io
import ipaddress
import json
import subprocess
from pathlib import Path

import pytest

from siteadmin.cli import main
from siteadmin.lab import Lab, netns, proc

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
    finally:
        lab.down()
    assert not any(proc.alive(r) for r in records)
    assert proc.pids_mentioning(str(lab.dir) + "/") == []  # any lab program naming the dir at all
    assert netns.leftovers(lab.tag) == ([], [])
