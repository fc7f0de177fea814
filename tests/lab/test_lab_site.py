"""The session lab: every component healthy by a real check, the site.toml it writes, secrets, firewall."""

from __future__ import annotations

import json
import os
import stat
import time
from io import StringIO
from pathlib import Path

import pytest

from siteadmin.cli import main
from siteadmin.inventory import Inventory
from siteadmin.lab import Lab
from siteadmin.lab.wns import CONFIG_PATH
from siteadmin.secrets import read_secret_file
from siteadmin.site import load_site

pytestmark = pytest.mark.lab


def by_component(lab: Lab) -> dict[str, list[tuple[str, bool, str]]]:
    out: dict[str, list[tuple[str, bool, str]]] = {}
    for check in lab.status().checks:
        out.setdefault(check.component, []).append((check.target, check.ok, check.detail))
    return out


def test_status_every_component_healthy(lab: Lab) -> None:
    status = lab.status()
    assert status.healthy, status.text()
    seen = by_component(lab)
    wns = set(lab.wn_names)
    assert len(wns) == 4
    for component in ("ssh", "rpc", "tracker"):
        assert {target for target, _, _ in seen[component]} == wns, component
    assert len(seen["ldap"]) == 1 and "over TLS" in seen["ldap"][0][2]
    assert len(seen["seeder"]) == 1 and "complete peer" in seen["seeder"][0][2]
    assert len(seen["http"]) == 1 and "sha1 matches" in seen["http"][0][2]
    assert all(detail.startswith("aria2 1.") for _, _, detail in seen["rpc"])


def test_cli_status_folds_wns_and_exits_0(lab: Lab) -> None:
    out, err = StringIO(), StringIO()
    assert main(["lab", "status", "--dir", str(lab.dir)], out=out, err=err) == 0, err.getvalue() + out.getvalue()
    text = out.getvalue()
    for component in ("ssh", "rpc", "tracker"):
        assert any(line.split() == [component, "wn[001-004].lab:", "ok"] for line in text.splitlines()), text
    assert text.strip().endswith("healthy")
    out = StringIO()
    assert main(["lab", "status", "--dir", str(lab.dir), "--json"], out=out, err=StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["healthy"] is True
    assert len(data["checks"]) == 3 + 3 * 4


def test_generated_site_toml_loads_and_points_at_the_lab(lab: Lab) -> None:
    site = load_site(lab.site_path)
    assert site.site.name == "LAB"
    assert site.ldap.url.startswith("ldaps://")
    assert site.ldap.ca_file is not None and site.ldap.ca_file.is_file()
    assert site.ldap.password_file is not None and read_secret_file(site.ldap.password_file)
    assert site.ldap.bind_dn.startswith("cn=admin,")
    assert site.central.tracker_host == lab.state["central"]["host"]
    assert site.central.http_fallback == f"http://{site.central.tracker_host}:{lab.state['central']['http_port']}/"
    inventory = Inventory(site)
    assert inventory.select() == lab.wn_names
    for layout in lab.wn_layouts:
        wn = inventory.wn(layout.name)
        assert (wn.address, wn.port) == (layout.address, layout.ssh_port)
    assert site.ssh.key_file is not None and site.ssh.key_file.is_file()
    assert site.ssh.known_hosts.is_file()
    assert site.aria2c.rpc_secret_file is not None and read_secret_file(site.aria2c.rpc_secret_file)
    assert site.audit.path == lab.dir / "audit.jsonl"
    out = StringIO()
    assert main(["--site", str(lab.site_path), "hosts"], out=out, err=StringIO()) == 0
    assert out.getvalue().startswith("wn[001-004].lab")


def test_secrets_are_never_in_argv_and_files_are_0600(lab: Lab) -> None:
    site = lab.site
    assert site.aria2c.rpc_secret_file is not None and site.ldap.password_file is not None
    secrets = [read_secret_file(site.aria2c.rpc_secret_file), read_secret_file(site.ldap.password_file),
               read_secret_file(Path(lab.state["ldap"]["reader_password_file"]))]
    checked = 0
    for record in lab.processes:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{record.pid}/environ").read_bytes()
        for secret in secrets:
            assert secret.encode() not in cmdline, record.name
            assert secret.encode() not in environ, record.name
        checked += 1
    assert checked == 4 + 2 * len(lab.wn_names)
    confs = [lab.dir / "cern" / "seeder.conf"] + [wn.host_path(CONFIG_PATH) for wn in lab.wn_layouts]
    for path in confs + [site.aria2c.rpc_secret_file, site.ldap.password_file]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert f"rpc-secret={secrets[0]}\n" in lab.wn_layouts[0].host_path(CONFIG_PATH).read_text()
    logs = [Path(r.log) for r in lab.processes]
    for path in [lab.state_path, lab.site_path, *logs]:
        text = path.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), path


def test_wn_aria2c_state_stays_in_the_wn_dir(lab: Lab) -> None:
    wn = lab.wn_layouts[0]
    loopback = lab.mode == "loopback"
    options = lab.rpc(wn.name, "aria2.getGlobalOption")
    # at a site's paths inside the WN (netns mode), backed by the WN's own folder in the lab dir
    for option, wn_path in (("dir", "/var/lib/aria2/data"), ("dht-file-path", "/var/lib/aria2/dht.dat"),
                            ("save-session", "/var/lib/aria2/aria2c.session")):
        assert options[option] == (str(wn.host_path(wn_path)) if loopback else wn_path), option
    assert wn.host_path("/var/lib/aria2/data").is_dir()
    assert str(wn.host_path("/var/lib/aria2/data")).startswith(str(wn.path) + "/")
    environ = Path(f"/proc/{next(p.pid for p in lab.processes if p.name == f'aria2c {wn.name}')}/environ").read_bytes()
    assert f"HOME={wn.host_path('/root') if loopback else '/root'}".encode() in environ.split(b"\0")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_router_rule_dropping_wn_to_tracker_fails_the_tracker_check(lab: Lab) -> None:
    router = lab.router_ns
    assert router is not None
    central = lab.state["central"]
    lan = lab.topology.lan
    rules = f"""
table inet labtest {{
    chain forward {{
        type filter hook forward priority 0; policy accept;
        ip saddr {lan} ip daddr {central['host']} tcp dport {central['tracker_port']} drop
    }}
}}
"""
    lab.apply_nft(router, rules)
    try:
        listed = lab.exec_in(router, ["nft", "list", "ruleset"]).stdout
        assert "tcp dport 8088 drop" in listed
        seen = by_component(lab)
        assert [ok for _, ok, _ in seen["tracker"]] == [False] * len(lab.wn_names)
        # everything not on the WN -> tracker path still works
        for component in ("ldap", "ssh", "rpc", "seeder", "http"):
            assert all(ok for _, ok, _ in seen[component]), (component, seen[component])
        out, err = StringIO(), StringIO()
        assert main(["lab", "status", "--dir", str(lab.dir)], out=out, err=err) == 1
        assert "tracker  wn[001-004].lab: FAILED" in out.getvalue()
    finally:
        lab.flush_nft(router)
    assert lab.exec_in(router, ["nft", "list", "ruleset"]).stdout.strip() == ""
    deadline = time.monotonic() + 10
    while not (status := lab.status()).healthy and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status.healthy, status.text()


def test_nft_helpers_refuse_foreign_namespaces(lab: Lab) -> None:
    from siteadmin.errors import LabError

    with pytest.raises(LabError, match="not a namespace of this lab"):
        lab.apply_nft("some-other-ns", "flush ruleset\n")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_vobox_gets_lab_routes_only_and_forwarding_is_router_only(lab: Lab) -> None:
    import ipaddress
    import subprocess

    topo = lab.topology
    routes = json.loads(subprocess.run(["ip", "-j", "route", "show", "dev", topo.vobox_if], capture_output=True, text=True, check=True).stdout)
    assert {r["dst"] for r in routes} == {topo.subnet, str(ipaddress.ip_network(topo.vobox_addr + "/30", strict=False))}
    defaults = json.loads(subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True, check=True).stdout)
    assert all(not r.get("dev", "").startswith(lab.tag) for r in defaults)
    sysctl = ["sysctl", "-n", "net.ipv4.ip_forward"]
    assert lab.exec_in(lab.router_ns, sysctl).stdout.strip() == "1"
    assert lab.exec_in(lab.cern_ns, sysctl).stdout.strip() == "0"
    assert lab.exec_in(lab.wn_ns("wn001.lab"), sysctl).stdout.strip() == "0"
    bridge = lab.exec_in(lab.router_ns, ["ip", "-d", "link", "show", "br0"]).stdout
    assert "mcast_snooping 0" in bridge


def test_ldap_check_refuses_a_server_the_ca_does_not_vouch_for(lab: Lab, tmp_path: Path) -> None:
    from siteadmin.lab import health
    from siteadmin.lab.tls import make_ca

    ldap = lab.state["ldap"]
    args = (ldap["ldaps_url"], ldap["reader_dn"], Path(ldap["reader_password_file"]), ldap["base"])
    good = health.check_ldap(args[0], Path(ldap["ca_file"]), *args[1:])
    assert good.ok, good.detail
    other = make_ca(tmp_path / "other-ca")
    bad = health.check_ldap(args[0], other.cert, *args[1:])
    assert not bad.ok
    assert "CERTIFICATE_VERIFY_FAILED" in bad.detail or "certificate verify failed" in bad.detail


def test_the_rpc_check_fails_with_a_wrong_secret(lab: Lab) -> None:
    from siteadmin.lab import health

    checks = health.check_wns_over_ssh(lab.site, lab.wn_layouts[:2], "not-the-" + lab.rpc_secret())
    assert [(c.component, c.ok) for c in checks] == [("ssh", True), ("rpc", False)] * 2
    assert all("Unauthorized" in c.detail for c in checks if c.component == "rpc"), checks
