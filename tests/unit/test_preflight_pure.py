"""The preflight's pure parts: which pairs are probed, how verdicts fold, LPD islands, the report's
exit codes and Nagios line, the probe's protocol helpers, --outside parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from siteadmin.errors import UsageError
from siteadmin.preflight import probe
from siteadmin.preflight.report import (
    CheckReport,
    Finding,
    fold_matrix,
    load_last,
    lpd_islands,
    plan_pairs,
    port_ranges_text,
    save_last,
    subnet_of,
)
from siteadmin.preflight.service import parse_outside, probe_script
from siteadmin.site import site_from_mapping


def hosts(n: int, prefix: str = "wn") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(1, n + 1)]


def test_all_pairs_up_to_the_limit() -> None:
    names = hosts(5)
    pairs, sampled, how = plan_pairs(names, {}, 5)
    assert not sampled and how == ""
    assert len(pairs) == 20 and len(set(pairs)) == 20
    assert all(a != b for a, b in pairs)


@pytest.mark.parametrize("n", [33, 40, 200])
def test_sample_covers_every_wn_and_every_subnet_pair(n: int) -> None:
    names = hosts(n)
    subnets = {h: f"10.0.{i % 3}.0/24" for i, h in enumerate(names)}
    pairs, sampled, how = plan_pairs(names, subnets, 32, seed=7)
    assert sampled and str(len(pairs)) in how
    assert len(pairs) < n * (n - 1)
    assert {a for a, _ in pairs} == set(names)
    assert {b for _, b in pairs} == set(names)
    assert all(a != b for a, b in pairs)
    covered = {(subnets[a], subnets[b]) for a, b in pairs}
    nets = set(subnets.values())
    assert covered == {(x, y) for x in nets for y in nets}


def test_fewer_than_two_wns_have_no_pairs() -> None:
    assert plan_pairs(["wn001"], {}, 32) == ([], False, "")


def test_port_ranges_text() -> None:
    assert port_ranges_text([6900, 6901, 6902, 6910, 6881]) == "6881,6900-6902,6910"
    assert port_ranges_text([]) == ""


def test_matrix_folds_sources_then_targets() -> None:
    verdicts: dict[tuple[str, str, str], dict[int, str]] = {}
    sources, targets = hosts(4), ["wn101", "wn102"]
    for s in sources:
        for t in targets:
            verdicts[(s, t, "udp")] = {p: ("filtered" if 6900 <= p <= 6910 else "open") for p in range(6881, 7000)}
            verdicts[(s, t, "tcp")] = {p: "open" for p in range(6881, 7000)}
    verdicts[("wn001", "wn003", "tcp")] = {6950: "refused", 6951: "refused", 6952: "open"}
    rows = fold_matrix(verdicts)
    assert ("wn[001-004]", "wn[101-102]", "udp", "6900-6910", "filtered") in rows
    assert ("wn001", "wn003", "tcp", "6950-6951", "refused") in rows
    assert len(rows) == 2


def test_an_open_matrix_folds_to_nothing() -> None:
    assert fold_matrix({("a", "b", "tcp"): {1: "open"}}) == []


def test_lpd_islands_need_both_directions() -> None:
    names = hosts(4)
    heard = {
        "wn001": {"wn002": 3},
        "wn002": {"wn001": 3},
        "wn003": {"wn004": 3},  # wn004 never hears wn003: no island link
        "wn004": {},
    }
    assert lpd_islands(names, heard) == [["wn001", "wn002"], ["wn003"], ["wn004"]]


def test_subnet_of() -> None:
    assert subnet_of("10.1.2.5", ["192.168.0.3/24", "10.1.2.9/24"]) == "10.1.2.0/24"
    assert subnet_of("10.9.9.9", ["10.1.2.9/24"]) == ""
    assert subnet_of("wn001", ["10.1.2.9/24"]) == ""


def report(**kw: object) -> CheckReport:
    base = CheckReport(checks=("ports",), hosts=hosts(3))
    for key, value in kw.items():
        setattr(base, key, value)
    return base


def test_exit_and_nagios_codes() -> None:
    clean = report()
    assert clean.ok and clean.exit_code() == 0 and clean.nagios_code() == 0
    assert clean.nagios_line().startswith("SITEADMIN CHECK OK - ")
    warned = report(findings=[Finding("multicast", "warning", "LPD islands inside one subnet: a | b")])
    assert warned.exit_code() == 0 and warned.nagios_code() == 1
    failed = report(findings=[Finding("ports", "error", "wn001 -> wn002 udp 6900-6910 filtered")])
    assert failed.exit_code() == 1 and failed.nagios_code() == 2
    assert "ports: wn001 -> wn002 udp 6900-6910 filtered" in failed.nagios_line()
    one_down = report(unchecked={"wn002": "auth failed"})
    assert one_down.exit_code() == 1 and one_down.nagios_code() == 2
    all_down = report(unchecked={h: "connection refused" for h in hosts(3)})
    assert all_down.nagios_code() == 3
    fatal = report(fatal="config: bad")
    assert fatal.exit_code() == 1 and fatal.nagios_code() == 3


def test_nagios_line_is_one_line_with_perfdata() -> None:
    line = report(findings=[Finding("central", "error", "wn[001-003] -> tracker x:8088: timed out")], pairs=6, elapsed=1.5).nagios_line()
    assert "\n" not in line
    status, perf = line.split(" | ")
    assert status.startswith("SITEADMIN CHECK CRITICAL - ")
    fields = dict(item.split("=", 1) for item in perf.split())
    assert fields["errors"] == "1" and fields["pairs"] == "6" and fields["time"] == "1.50s"


def test_text_names_reason_and_rule() -> None:
    text = report(findings=[Finding("ports", "error", "wn001 -> wn002 udp 6900 filtered", "no answer", "nft add rule ...")]).text()
    assert "error: ports: wn001 -> wn002 udp 6900 filtered" in text
    assert "why: no answer" in text and "fix: nft add rule ..." in text


def test_last_result_is_saved_private(tmp_path: Path) -> None:
    path = save_last(report(pairs=6), tmp_path / "state")
    assert path.stat().st_mode & 0o777 == 0o600
    data = load_last(tmp_path / "state")
    assert data is not None and data["pairs"] == 6 and data["ok"] is True
    assert load_last(tmp_path / "nothing") is None


# ---------------------------------------------------------------- the probe's helpers


def test_bdecode() -> None:
    assert probe.bdecode(b"d8:intervali1800e5:peers0:e") == {b"interval": 1800, b"peers": b""}
    assert probe.bdecode(b"li1ei2ee") == [1, 2]
    for bad in (b"", b"d", b"5:ab", b"i1ex", b"<html>"):
        with pytest.raises(ValueError):
            probe.bdecode(bad)


def test_dht_ping_and_answer() -> None:
    ping = probe.dht_ping(b"ab12", b"N" * 20)
    assert probe.bdecode(ping) == {b"a": {b"id": b"N" * 20}, b"q": b"ping", b"t": b"ab12", b"y": b"q"}
    answer = b"d1:rd2:id20:" + b"M" * 20 + b"e1:t4:ab121:y1:re"
    assert probe.is_dht_answer(answer, b"ab12")
    assert not probe.is_dht_answer(answer, b"zz99")  # another probe's transaction
    assert not probe.is_dht_answer(ping, b"ab12")  # a query is no answer


def test_lpd_announce_round_trip() -> None:
    data = probe.lpd_announce(6881, "ab" * 20)
    assert data.startswith(b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n")
    assert probe.parse_lpd(data) == (6881, ["ab" * 20])
    assert probe.parse_lpd(b"GET / HTTP/1.1\r\n\r\n") is None
    assert probe.parse_lpd(b"\xff\xfe") is None


def test_handshake_layout() -> None:
    shake = probe.handshake(b"I" * 20, b"P" * 20)
    assert len(shake) == 68 and shake[:20] == b"\x13BitTorrent protocol" and shake[28:48] == b"I" * 20


def test_probe_script_carries_the_plan_as_data() -> None:
    plan = {"mode": "facts", "note": "it's \"quoted\" and\nmultiline"}
    text = probe_script(plan).decode()
    last = text.rstrip("\n").splitlines()[-1]
    assert last.startswith("sys.exit(main(json.loads(")
    assert json.loads(json.loads(last[len("sys.exit(main(json.loads(") : -len(")))")])) == plan


# ---------------------------------------------------------------- --outside


def test_parse_outside() -> None:
    wn = parse_outside("alice@gw.example.org:2222", "root")
    assert (wn.name, wn.address, wn.port, wn.groups) == ("gw.example.org", "gw.example.org", 2222, ("alice",))
    assert parse_outside("gw", "root").groups == ("root",) and parse_outside("gw", "root").port == 22


@pytest.mark.parametrize("bad", ["", "user@", "host:abc", "a b", "host:70000"])
def test_parse_outside_refuses(bad: str) -> None:
    with pytest.raises(UsageError, match="--outside"):
        parse_outside(bad, "root")


def test_site_keys() -> None:
    site = site_from_mapping({"check": {"all_pairs_up_to": 8, "probe_rate": 100}, "ssh": {"python": "/usr/libexec/platform-python"}})
    assert site.check.all_pairs_up_to == 8 and site.check.probe_rate == 100
    assert site.ssh.python == "/usr/libexec/platform-python"
    with pytest.raises(Exception, match="ssh.python"):
        site_from_mapping({"ssh": {"python": "python3; rm -rf /"}})


def test_lab_topology_splits_wns_over_lans() -> None:
    from siteadmin.lab.netns import Topology

    one = Topology(mode="netns", tag="sl000000", subnet="10.213.0.0/16", wns=4)
    assert [one.wn_addr(i) for i in range(1, 5)] == ["10.213.2.11", "10.213.2.12", "10.213.2.13", "10.213.2.14"]
    two = Topology(mode="netns", tag="sl000000", subnet="10.213.0.0/16", wns=4, lans=2)
    assert [two.wn_lan(i) for i in range(1, 5)] == [1, 1, 2, 2]
    assert [two.wn_addr(i) for i in range(1, 5)] == ["10.213.2.11", "10.213.2.12", "10.213.3.13", "10.213.3.14"]
    assert two.router_addr_on(2) == "10.213.3.1" and two.lan_net(2) == "10.213.3.0/24" and two.lan == "10.213.2.0/24"


def test_local_findings_no_multicast_route_and_lpd_no_interface() -> None:
    from siteadmin.preflight.service import _local_findings, _profiles, _WNState

    site = site_from_mapping({"wns": {"hosts": ["wn[001-003]"]}, "aria2c": {"options": {"bt-enable-lpd": "true"}}})
    profiles = _profiles(site, ["wn001", "wn002", "wn003"])
    two = [{"name": "eth0", "addrs": ["10.0.0.1/24"]}, {"name": "ib0", "addrs": ["10.1.0.1/24"]}]
    states = [
        _WNState("wn001", "wn001", facts={"interfaces": two, "mcast_source": "10.0.0.1"}),
        _WNState("wn002", "wn002", facts={"interfaces": [{"name": "eth0", "addrs": ["10.0.0.2/24"]}], "mcast_source": "10.0.0.2"}),
        _WNState("wn003", "wn003", facts={"interfaces": [{"name": "eth0", "addrs": ["10.0.0.3/24"]}], "mcast_source": None}),
    ]
    found = {(f.level, f.text) for f in _local_findings(site, states, profiles)}
    assert ("error", "wn003: no route for 224.0.0.0/4") in found
    lpd = [text for level, text in found if level == "warning"]
    assert len(lpd) == 1 and lpd[0].startswith("wn001: ") and lpd[0].endswith("[lpd-no-interface]") and "eth0, ib0" in lpd[0]
    assert len(found) == 2


def test_exposure_reports_the_profiles_rpc_rules(tmp_path: Path) -> None:
    from siteadmin.preflight.service import _profile_rpc_findings
    from siteadmin.secrets import generate_secret, write_secret_file

    secret = tmp_path / "rpc-secret"
    write_secret_file(secret, generate_secret())
    wns = {"hosts": ["wn[001-002]"]}
    site = site_from_mapping({"wns": wns, "aria2c": {"rpc_secret_file": str(secret), "options": {"rpc-listen-all": "true"}}})
    found = _profile_rpc_findings(site, ["wn001", "wn002"])
    assert len(found) == 1 and found[0].text.startswith("wn[001-002]: the profile: ") and found[0].text.endswith("[rpc-listen-all]")
    assert found[0].level == "error" and found[0].check == "exposure"
    assert _profile_rpc_findings(site_from_mapping({"wns": wns, "aria2c": {"rpc_secret_file": str(secret)}}), ["wn001", "wn002"]) == []
    # no secret file yet: apply generates one before any profile goes out, so that is no finding
    assert _profile_rpc_findings(site_from_mapping({"wns": wns, "aria2c": {"rpc_secret_file": str(tmp_path / "none")}}), ["wn001"]) == []
