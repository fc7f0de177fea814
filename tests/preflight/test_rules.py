"""``siteadmin check --rules``: each format is accepted by its own tool's syntax check, and the
same check refuses a broken copy (so the test can fail). No daemon is started: ``nft -c``,
``iptables-restore --test`` and ``firewall-offline-cmd --check-config`` only read the text."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from siteadmin.preflight.rules import FORMATS, firewall_rules, wn_networks
from siteadmin.site import Site, site_from_mapping

TOOLS = {"nftables": "nft", "iptables": "iptables-restore", "firewalld": "firewall-offline-cmd"}


def site(**wns: object) -> Site:
    return site_from_mapping({"site": {"name": "TEST"}, "wns": {"hosts": ["wn[001-003].example.org"], **wns}})


def tool(fmt: str) -> str:
    found = shutil.which(TOOLS[fmt]) or (f"/usr/sbin/{TOOLS[fmt]}" if Path(f"/usr/sbin/{TOOLS[fmt]}").exists() else None)
    if found is None:
        pytest.fail(f"{TOOLS[fmt]} missing (run `bash .ci/setup.sh`, which installs nftables, iptables and firewalld)")
    if os.geteuid() != 0 and fmt != "firewalld":
        pytest.skip(f"{TOOLS[fmt]}'s syntax check needs root (netlink); run the tests as root")
    return found


def syntax_check(fmt: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = tool(fmt)
    if fmt == "nftables":
        path = tmp_path / "rules.nft"
        path.write_text(text)
        return subprocess.run([binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60, check=False)
    if fmt == "iptables":
        return subprocess.run([binary, "--test"], input=text, capture_output=True, text=True, timeout=60, check=False)
    config = tmp_path / "firewalld"
    (config / "zones").mkdir(parents=True)
    if Path("/etc/firewalld/firewalld.conf").exists():
        shutil.copy("/etc/firewalld/firewalld.conf", config / "firewalld.conf")
    (config / "zones" / "siteadmin-torrent.xml").write_text(text)
    return subprocess.run([binary, "--system-config", str(config), "--check-config"], capture_output=True, text=True, timeout=120, check=False)


BROKEN = {
    "nftables": ("tcp dport 6881-6999 drop", "tcp dport 6881-6999 dorp"),
    "iptables": ("-j DROP", "-j DORP --no-such-option"),
    "firewalld": ('<port protocol="tcp"', '<port protocol="tpc"'),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("ports", ["6881-6999", "6881-6999,7001,7010-7020"])
def test_rules_pass_their_tools_check(fmt: str, ports: str, tmp_path: Path) -> None:
    text = firewall_rules(site(ports=ports), fmt)
    done = syntax_check(fmt, text, tmp_path)
    assert done.returncode == 0, f"{TOOLS[fmt]} refused the rules: {done.stderr.strip()}\n{text}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_broken_copy_is_refused(fmt: str, tmp_path: Path) -> None:
    old, new = BROKEN[fmt]
    text = firewall_rules(site(), fmt)
    assert old in text
    done = syntax_check(fmt, text.replace(old, new, 1), tmp_path)
    assert done.returncode != 0


def test_rules_carry_the_site_ports_and_central_services() -> None:
    s = site_from_mapping({
        "central": {"tracker_host": "192.0.2.10", "tracker_port": 8088, "seeder_host": "192.0.2.11", "seeder_port": 8092},
        "wns": {"hosts": ["wn[001-002]"], "ports": "6900-6950", "rpc_port": 6800,
                "nodes": {"wn001": {"address": "10.1.2.3"}, "wn002": {"address": "10.1.3.4"}}},
    })
    text = firewall_rules(s, "nftables")
    assert "ip saddr @site_wns tcp dport 6900-6950 accept" in text
    assert "ip saddr @site_wns udp dport 6900-6950 accept" in text
    assert "ip daddr 192.0.2.10 tcp dport 8088 accept" in text and "ip daddr 192.0.2.11 tcp dport 8092 accept" in text
    assert 'iifname != "lo" tcp dport 6800 drop' in text
    assert "ip saddr @site_wns ip daddr 239.192.152.143 udp dport 6771 accept" in text
    assert wn_networks(s) == (["10.1.2.0/24", "10.1.3.0/24"], False)
    ipt = firewall_rules(s, "iptables")
    assert "-A INPUT -s 10.1.3.0/24 -p udp -m multiport --dports 6900:6950 -j ACCEPT" in ipt


def test_without_addresses_the_rules_say_to_narrow_the_private_ranges() -> None:
    nets, fallback = wn_networks(site())
    assert fallback and "10.0.0.0/8" in nets
    assert "narrow them" in firewall_rules(site(), "nftables")


def test_cli_rules_and_bad_format(tmp_path: Path) -> None:
    from siteadmin.cli import main

    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "TEST"\n[wns]\nhosts = ["wn[001-002]"]\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "check", "--rules", "--format", "iptables"], out, err) == 0
    assert out.getvalue().startswith("# Firewall rules") and "*filter" in out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "check", "--rules", "--format", "pf"], out, err) == 2
    assert err.getvalue().count("\n") == 1 and "--format" in err.getvalue() and "Traceback" not in err.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "check", "--rules", "--nagios"], out, err) == 2
    assert "--rules takes only --format" in err.getvalue()
