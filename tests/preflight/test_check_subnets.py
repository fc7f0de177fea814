"""``siteadmin check`` on a lab of two WN subnets with an sshd in CERN as the outside host:
subnet pairs, LPD islands that follow subnets, a router rule between the subnets, the sample
above ``all_pairs_up_to``, and the inbound check (CERN is the world; the site keeps it out except
where a test opens one WN to it).

The lab here is this module's own (4 WNs: two per subnet); rules live in a table of their own
that each test removes again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from siteadmin.hostlist import fold
from siteadmin.lab import Lab
from siteadmin.preflight import run_check
from siteadmin.preflight.report import CheckReport

pytestmark = pytest.mark.lab

TABLE = "preflight_test"
NO_INBOUND = ("local", "central", "ports", "multicast", "exposure")


@pytest.fixture(scope="module")
def subnet_lab(tmp_path_factory: pytest.TempPathFactory, lab_cache_dir: Path) -> Iterator[Lab]:
    import os

    if os.geteuid() != 0:
        pytest.skip("two WN subnets and an outside sshd need the lab's network namespaces (run the tests as root)")
    handle = Lab(tmp_path_factory.mktemp("subnet-lab"), cache_dir=lab_cache_dir)
    try:
        handle.up(4, package_mb=4, lans=2, outside_ssh=True)
        yield handle
    finally:
        handle.down()


def router_rules(lab: Lab, *rules: str) -> None:
    assert lab.router_ns is not None
    body = "\n".join(f"        {r}" for r in rules)
    lab.apply_nft(lab.router_ns, f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n    chain forward {{\n"
                                 f"        type filter hook forward priority 0; policy accept;\n{body}\n    }}\n}}\n")


def clear(lab: Lab) -> None:
    assert lab.router_ns is not None
    lab.apply_nft(lab.router_ns, f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")


def texts(report: CheckReport) -> set[str]:
    return {f"{f.check}: {f.text}" for f in report.findings}


def halves(lab: Lab) -> tuple[list[str], list[str]]:
    topo = lab.topology
    first = [w.name for w in lab.wn_layouts if topo.wn_lan(w.index) == 1]
    second = [w.name for w in lab.wn_layouts if topo.wn_lan(w.index) == 2]
    assert first and second
    return first, second


def test_two_subnets_pass_and_their_lpd_islands_follow_them(subnet_lab: Lab) -> None:
    first, second = halves(subnet_lab)
    report = run_check(subnet_lab.site, subnet_lab.wn_names, only=NO_INBOUND)
    assert report.ok and report.findings == [], report.text()
    assert report.pairs == 12 and report.ports_failed == 0
    assert report.islands == [first, second]
    assert any("LPD islands map subnets" in note for note in report.notes)
    assert report.nagios_code() == 0


def test_a_router_rule_between_subnets_folds_to_one_line(subnet_lab: Lab) -> None:
    first, second = halves(subnet_lab)
    lan2 = subnet_lab.topology.lan_net(2)
    try:
        router_rules(subnet_lab, f"ip daddr {lan2} udp dport 6900-6910 drop")
        report = run_check(subnet_lab.site, subnet_lab.wn_names, only=("ports",))
    finally:
        clear(subnet_lab)
    assert texts(report) == {f"ports: {fold(first)} -> {fold(second)} udp 6900-6910 filtered"}, report.text()
    assert report.ports_failed == 11 * len(first) * len(second)


def test_above_all_pairs_up_to_a_covering_sample_is_a_warning(subnet_lab: Lab) -> None:
    site = dataclasses.replace(subnet_lab.site, check=dataclasses.replace(subnet_lab.site.check, all_pairs_up_to=3))
    report = run_check(site, subnet_lab.wn_names, only=("ports",))
    assert report.sampled and report.pairs < report.all_pairs == 12
    assert report.errors == [] and [f.check for f in report.warnings] == ["ports"]
    assert report.warnings[0].text.startswith("sampled matrix: ")
    assert report.exit_code() == 0 and report.nagios_code() == 1


def test_inbound_names_exactly_the_wn_opened_to_the_world(subnet_lab: Lab) -> None:
    outside = subnet_lab.outside_target
    assert outside is not None
    cern = subnet_lab.topology.cern_net
    opened = subnet_lab.wn_layouts[2]
    try:
        # the site's own firewall: the world opens nothing on the WNs, except one WN's TCP range a test opens
        router_rules(subnet_lab, f"ip saddr {cern} ip daddr {opened.address} tcp dport 6881-6999 accept",
                     f"ip saddr {cern} ct state new drop")
        report = run_check(subnet_lab.site, subnet_lab.wn_names, only=("inbound",), outside=outside)
    finally:
        clear(subnet_lab)
    host = outside.split("@")[1]
    assert texts(report) == {f"inbound: {host} -> {opened.name} tcp 6881-6999 open"}, report.text()
    assert report.nagios_code() == 2


def test_cli_inbound_with_outside(subnet_lab: Lab) -> None:
    from siteadmin.cli import main

    outside = subnet_lab.outside_target
    assert outside is not None
    out, err = StringIO(), StringIO()
    code = main(["--site", str(subnet_lab.site_path), "check", "--only", "inbound", "--outside", outside, "--nagios"], out, err)
    # nothing keeps the world out of this lab: every WN's ports and SSH answer from CERN
    assert code == 2 and out.getvalue().startswith("SITEADMIN CHECK CRITICAL - "), out.getvalue() + err.getvalue()
    out, err = StringIO(), StringIO()
    assert main(["--site", str(subnet_lab.site_path), "check", "--only", "inbound", "--outside", "root@192.0.2.1:0"], out, err) == 2
    assert "--outside" in err.getvalue() and err.getvalue().count("\n") == 1
