"""``siteadmin check`` against the lab, with ground truth: nftables rules inside the lab's
namespaces drop chosen things, and the check must report exactly those and nothing else.

Every rule lives in a table of its own (``preflight_test``) that the test removes again, so the
lab is left as it was found.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from siteadmin.lab import Lab
from siteadmin.preflight import run_check
from siteadmin.preflight.report import CheckReport

pytestmark = pytest.mark.lab

TABLE = "preflight_test"
NO_INBOUND = ("local", "central", "ports", "multicast", "exposure")


def netns_lab(lab: Lab) -> Lab:
    if lab.mode != "netns":
        pytest.skip("the preflight's ground truth needs the lab's network namespaces (run the tests as root)")
    return lab


def ruleset(*chains: str, family: str = "inet") -> str:
    return f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\ntable {family} {TABLE} {{\n" + "\n".join(chains) + "\n}\n"


def chain(hook: str, *rules: str, kind: str = "filter", priority: int = 0) -> str:
    body = "\n".join(f"        {r}" for r in rules)
    return f"    chain {hook} {{\n        type {kind} hook {hook} priority {priority}; policy accept;\n{body}\n    }}"


def drop_table(lab: Lab, ns: str, family: str = "inet") -> None:
    lab.apply_nft(ns, f"table {family} {TABLE} {{}}\ndelete table {family} {TABLE}\n")


@pytest.fixture
def wns(lab: Lab) -> list[str]:
    names = netns_lab(lab).wn_names
    assert len(names) >= 4, "the ground truth needs four lab WNs"
    return names


def check(lab: Lab, hosts: list[str] | None = None, **kw: object) -> CheckReport:
    return run_check(lab.site, hosts if hosts is not None else lab.wn_names, only=kw.pop("only", NO_INBOUND), **kw)  # type: ignore[arg-type]


def texts(report: CheckReport, level: str | None = None) -> set[str]:
    return {f"{f.check}: {f.text}" for f in report.findings if level is None or f.level == level}


def test_a_clean_lab_passes(lab: Lab, wns: list[str]) -> None:
    report = check(lab)
    assert report.ok, report.text()
    assert report.errors == [] and report.unchecked == {}
    n = len(wns)
    assert report.pairs == report.all_pairs == n * (n - 1) and not report.sampled
    ports = lab.site.wns.ports
    span = int(ports.split("-")[1]) - int(ports.split("-")[0]) + 1
    assert report.ports_probed == n * (n - 1) * span * 2 and report.ports_failed == 0
    assert sorted(h for island in report.islands for h in island) == sorted(wns)
    assert report.lpd_loss == 0.0
    assert report.nagios_code() in (0, 1)
    assert report.local["vobox"]["default_if"] is not None or report.local["vobox"]["interfaces"]
    for wn in wns:
        assert report.local[wn]["lpd_if"] == "eth0" and report.local[wn]["mcast_route"] is True
        assert report.local[wn]["interfaces"][0]["addrs"][0].startswith(lab.wn(wn).address + "/")
    assert f"local: {_fold(wns)}: LPD on eth0, default route on eth0, a route for 224.0.0.0/4" in report.text()


@pytest.fixture
def faults(lab: Lab, wns: list[str]) -> Iterator[dict[str, str]]:
    """A TCP range dropped on wn1, a UDP range on wn2, multicast on wn3, the seeder port at the
    router, and wn4's aria2c RPC port opened to the LAN (DNAT to its loopback)."""
    w1, w2, w3, w4 = wns[:4]
    ns = {w: lab.wn_ns(w) for w in (w1, w2, w3, w4)}
    router = lab.router_ns
    assert router is not None and all(ns.values())
    seeder_port = lab.site.central.seeder_port
    rpc_port = lab.site.wns.rpc_port
    localnet = "net.ipv4.conf.eth0.route_localnet"
    before = lab.exec_in(ns[w4], ["sysctl", "-n", localnet]).stdout.strip() or "0"
    try:
        lab.apply_nft(ns[w1], ruleset(chain("input", "tcp dport 6950-6960 drop")))  # type: ignore[arg-type]
        lab.apply_nft(ns[w2], ruleset(chain("input", "udp dport 6900-6910 drop")))  # type: ignore[arg-type]
        lab.apply_nft(ns[w3], ruleset(chain("input", "ip daddr 224.0.0.0/4 drop"), chain("output", "ip daddr 224.0.0.0/4 drop")))  # type: ignore[arg-type]
        lab.apply_nft(router, ruleset(chain("forward", f"tcp dport {seeder_port} drop")))
        assert lab.exec_in(ns[w4], ["sysctl", "-q", "-w", f"{localnet}=1"]).returncode == 0
        lab.apply_nft(ns[w4], ruleset(chain("prerouting", f"tcp dport {rpc_port} dnat to 127.0.0.1:{rpc_port}", kind="nat", priority=-100),  # type: ignore[arg-type]
                                      family="ip"))
        yield {"w1": w1, "w2": w2, "w3": w3, "w4": w4}
    finally:
        for w in (w1, w2, w3):
            drop_table(lab, ns[w])  # type: ignore[arg-type]
        drop_table(lab, ns[w4], "ip")  # type: ignore[arg-type]
        lab.exec_in(ns[w4], ["sysctl", "-q", "-w", f"{localnet}={before}"])
        drop_table(lab, router)


def test_the_check_reports_exactly_the_dropped_things(lab: Lab, wns: list[str], faults: dict[str, str]) -> None:
    from siteadmin.hostlist import fold

    report = check(lab)
    w1, w2, w3, w4 = faults["w1"], faults["w2"], faults["w3"], faults["w4"]

    def others(*skip: str) -> str:
        return fold([w for w in wns if w not in skip])

    central = lab.site.central
    seeder = f"seeder {central.seeder_host}:{central.seeder_port}"
    rpc = lab.site.wns.rpc_port
    peer_of_w4 = wns[(wns.index(w4) - 1) % len(wns)]  # each WN tries the next WN's RPC port
    expected = {
        f"central: {fold(wns)} -> {seeder}: timed out",
        f"ports: {others(w1)} -> {w1} tcp 6950-6960 filtered",
        f"ports: {others(w2)} -> {w2} udp 6900-6910 filtered",
        f"multicast: LPD islands inside one subnet: {others(w3)} | {w3}",  # islands in the order of their first WN
        f"exposure: {w4}: aria2c RPC port open from the VoBox",
        f"exposure: {w4}: aria2c RPC port {rpc} open from {peer_of_w4}",
    }
    assert texts(report) == expected, report.text()
    assert report.unchecked == {}
    assert report.exit_code() == 1 and report.nagios_code() == 2
    # never guessed: 11 dropped UDP ports from each of the other WNs, 11 dropped TCP ports likewise
    assert report.ports_failed == 11 * (len(wns) - 1) * 2
    # each failure carries its reason and the rule that would open it
    for finding in report.findings:
        assert finding.reason or finding.check == "multicast"
        assert finding.rule


def test_lab_firewall_apply_shows_as_central_failures(lab: Lab, wns: list[str], tmp_path: Path) -> None:
    from siteadmin.cli import main

    cern = lab.topology.cern_net
    rules = tmp_path / "cut.nft"
    rules.write_text(ruleset(chain("forward", f"ip daddr {cern} drop", f"ip saddr {cern} drop")))
    d = str(lab.dir)
    out, err = StringIO(), StringIO()
    try:
        assert main(["lab", "firewall", "apply", str(rules), "--dir", d], out, err) == 0, err.getvalue()
        report = check(lab, only=("central",))
    finally:
        assert lab.router_ns is not None
        drop_table(lab, lab.router_ns)
    central = lab.site.central
    assert texts(report) == {
        f"central: {_fold(wns)} -> tracker {central.tracker_host}:{central.tracker_port}: timed out",
        f"central: {_fold(wns)} -> seeder {central.seeder_host}:{central.seeder_port}: timed out",
    }, report.text()
    assert report.nagios_code() == 2


def _fold(names: list[str]) -> str:
    from siteadmin.hostlist import fold

    return fold(names)


def test_a_wn_whose_ssh_fails_gets_that_and_the_matrix_still_runs(lab: Lab, wns: list[str]) -> None:
    broken = wns[-1]
    nodes = dict(lab.site.wns.nodes)
    nodes[broken] = dataclasses.replace(nodes[broken], port=1)  # nothing listens on port 1 of the WN
    site = dataclasses.replace(lab.site, wns=dataclasses.replace(lab.site.wns, nodes=nodes))
    report = run_check(site, wns, only=("ports", "central"))
    assert list(report.unchecked) == [broken]
    assert "refused" in report.unchecked[broken]
    rest = len(wns) - 1
    assert report.pairs == rest * (rest - 1)
    assert report.errors == [] and report.ports_failed == 0
    assert report.exit_code() == 1 and report.nagios_code() == 2


def test_an_outside_host_that_cannot_be_reached_is_one_inbound_error(lab: Lab, wns: list[str]) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    report = run_check(lab.site, wns[:1], only=("inbound",), outside=f"root@127.0.0.1:{port}")
    [finding] = [f for f in report.findings if f.check == "inbound"]
    assert finding.level == "error"
    assert finding.text.startswith("outside host 127.0.0.1: not checked: 127.0.0.1: connection refused"), finding.text
    assert str(port) in finding.text


def test_a_wn_without_the_interpreter_gets_its_own_result(lab: Lab, wns: list[str]) -> None:
    site = dataclasses.replace(lab.site, ssh=dataclasses.replace(lab.site.ssh, python="python3-not-there"))
    report = run_check(site, wns[:2], only=("local",))
    assert set(report.unchecked) == set(wns[:2])
    assert all("python3-not-there: not found on the WN; set [ssh] python" in why for why in report.unchecked.values())
    assert report.nagios_code() == 3


def test_cli_json_nagios_and_usage(lab: Lab, wns: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siteadmin.cli import main

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    site = str(lab.site_path)
    out, err = StringIO(), StringIO()
    code = main(["--site", site, "check", "--only", "central,local", "--json"], out, err)
    data = json.loads(out.getvalue())
    assert code == 0 and data["ok"] is True and data["checks"] == ["local", "central"], err.getvalue()
    saved = json.loads((tmp_path / "state" / "siteadmin" / "check-last.json").read_text())
    assert saved["started"] == data["started"]
    out, err = StringIO(), StringIO()
    assert main(["--site", site, "check", "--only", "central", "--nagios"], out, err) == 0
    assert out.getvalue().startswith("SITEADMIN CHECK OK - ") and out.getvalue().count("\n") == 1
    out, err = StringIO(), StringIO()
    assert main(["--site", site, "check", "--only", "inbound"], out, err) == 2
    assert err.getvalue() == "siteadmin: usage: --only inbound needs --outside [user@]HOST, a host outside the site reached over SSH\n"
    out, err = StringIO(), StringIO()
    assert main(["--site", site, "check", "--only", "inbound", "--nagios"], out, err) == 3
    assert out.getvalue().startswith("SITEADMIN CHECK UNKNOWN - --only inbound needs --outside")
    out, err = StringIO(), StringIO()
    assert main(["--site", site, "check", "--only", "ports,bogus"], out, err) == 2
    assert "--only bogus: no such check" in err.getvalue()
