"""The pure half of swarm status: reading aria2c's answers, peers by source, shares, flags, Nagios and Prometheus outputs."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siteadmin.aria2conf.render import build_profile
from siteadmin.site import StatusSection, site_from_mapping
from siteadmin.swarm import accounting_ruleset, removal_ruleset
from siteadmin.swarm.model import (
    P_DRIFT,
    P_NO_PEERS,
    P_OLD_ARIA2C,
    P_SEEDING_TOO_LONG,
    P_STALLED,
    P_UNREACHABLE,
    P_WRONG_SECRET,
    REFUSED,
    WRONG_SECRET,
    Addresses,
    Limits,
    Memory,
    Share,
    SourceBytes,
    SwarmReport,
    WNState,
    classify_peers,
    drift,
    flag_problems,
    package_views,
    read_wn,
    same_option,
    site_share,
    version_tuple,
)
from siteadmin.swarm.outputs import NagiosState, nagios, prometheus_text, write_prometheus
from siteadmin.swarm.service import ACCOUNTING_TABLE, load_memory, parse_counters, save_memory

PKG = "alice-pkg-8M.tar.bz2"
SIZE = 8 * 1024 * 1024
ADDR = Addresses(wns={"10.0.2.11": "wn001", "10.0.2.12": "wn002", "10.0.2.13": "wn003"}, central=frozenset({"10.0.1.2"}))
VERSION = {"version": "1.36.0", "enabledFeatures": ["BitTorrent"]}


def bt(gid: str, completed: int, *, status: str = "active", total: int = SIZE, uploaded: int = 0, connections: int = 1,
       down: int = 0, name: str = PKG) -> dict[str, Any]:
    return {
        "gid": gid, "status": status, "totalLength": str(total), "completedLength": str(completed), "uploadLength": str(uploaded),
        "downloadSpeed": str(down), "uploadSpeed": "0", "connections": str(connections), "numSeeders": "0",
        "seeder": "true" if completed >= total else "false", "infoHash": "ab" * 20,
        "bittorrent": {"info": {"name": name}, "mode": "single"}, "dir": "/var/lib/aria2/data",
        "files": [{"index": "1", "path": f"/var/lib/aria2/data/{name}", "length": str(total), "completedLength": str(completed),
                   "selected": "true", "uris": []}],
    }


def http(gid: str, completed: int, *, total: int = SIZE, name: str = PKG) -> dict[str, Any]:
    d = bt(gid, completed, status="complete", total=total, name=name)
    del d["bittorrent"], d["infoHash"]
    d["files"][0]["uris"] = [{"uri": f"http://10.0.1.2:8080/{name}", "status": "used"}]
    return d


def metadata(gid: str, follows: str) -> dict[str, Any]:
    d = http(gid, 300, total=300, name="alice.torrent")
    d["followedBy"] = [follows]
    return d


def stat_of(active: int = 0, waiting: int = 0, stopped: int = 0, down: int = 0, up: int = 0) -> dict[str, str]:
    return {"numActive": str(active), "numWaiting": str(waiting), "numStopped": str(stopped), "numStoppedTotal": str(stopped),
            "downloadSpeed": str(down), "uploadSpeed": str(up)}


def peer(ip: str, down: int = 0) -> dict[str, str]:
    return {"ip": ip, "port": "6881", "downloadSpeed": str(down), "uploadSpeed": "0", "seeder": "true", "peerId": "x", "bitfield": "ff"}


def unreachable(host: str, reason: str, detail: str = "") -> WNState:
    return WNState(host=host, reachable=False, reason=reason, detail=detail)


# ---------------------------------------------------------------- reading and classifying


def test_peers_are_site_wns_the_central_seeder_or_other() -> None:
    peers = classify_peers([peer("10.0.2.12", 100), peer("::ffff:10.0.1.2", 50), peer("192.0.2.9", 7)], ADDR)
    assert [(p.source, p.wn, p.download_speed) for p in peers] == [("site", "wn002", 100), ("central", None, 50), ("other", None, 7)]
    assert peers[1].ip == "10.0.1.2"


def test_read_wn_counts_downloads_and_leaves_the_torrent_file_out() -> None:
    memory: Memory = {}
    downloads = [bt("a1", SIZE, uploaded=SIZE // 2), bt("a2", SIZE // 4, down=1000), metadata("m1", "a2"), http("h1", SIZE, name="other.tar.bz2")]
    peers = {"a1": [peer("10.0.2.12")], "a2": [peer("10.0.1.2", 1000)]}
    w = read_wn("wn001", VERSION, stat_of(active=2, stopped=2, down=1000), downloads, peers, {"seed-time": "10"}, ADDR, memory, 100.0)
    assert (w.version, w.active, w.seeding, w.waiting, w.stopped) == ("1.36.0", 1, 1, 0, 2)
    assert [t.gid for t in w.torrents] == ["a1", "a2", "h1"]
    seeding, downloading, fetched = w.torrents
    assert seeding.seeding and seeding.complete and seeding.ratio == pytest.approx(0.5) and seeding.seed_seconds == 0.0
    assert downloading.downloading and downloading.progress == pytest.approx(0.25)
    assert downloading.peers is not None and downloading.peers[0].source == "central"
    assert fetched.via == "http" and fetched.package == "other.tar.bz2" and not fetched.seeding and fetched.peers is None
    assert set(memory["wn001"]) == {"a1", "a2", "h1"}

    # later: a1 is gone from aria2c, so it is forgotten; the seed time counts from the first sight of completion
    w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a2", SIZE)], {"a2": []}, None, ADDR, memory, 160.0)
    assert set(memory["wn001"]) == {"a2"}
    assert w.torrents[0].seed_seconds == 0.0
    w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a2", SIZE)], {"a2": []}, None, ADDR, memory, 220.0)
    assert w.torrents[0].seed_seconds == pytest.approx(60.0)


def test_versions_and_option_values_compare_as_aria2c_writes_them() -> None:
    assert version_tuple("1.36.0") > version_tuple("1.35.0") > version_tuple("1.9")
    assert version_tuple("1.37.0-rc1") == (1, 37, 0)
    assert same_option("1M", "1048576") and same_option("0.0", "0") and same_option("50K", "51200") and same_option("true", "true")
    assert not same_option("1M", "51200") and not same_option("mem", "true")
    profile = {"bt-max-peers": "100", "bt-request-peer-speed-limit": "1M", "rpc-secret": "s3cr3t", "dir": "/data", "log": "/x"}
    live = {"bt-max-peers": "55", "bt-request-peer-speed-limit": "1048576", "dir": "/data"}
    assert drift(profile, live) == ["bt-max-peers"]  # the secret is never compared; an option aria2c does not list is not drift


# ---------------------------------------------------------------- shares


def test_share_is_exact_from_counters_and_an_estimate_from_peer_speeds() -> None:
    memory: Memory = {}
    counted = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", SIZE)], {"a1": []}, None, ADDR, memory, 0.0,
                      counters=SourceBytes(site=900, central=100, other=5))
    for now in (0.0, 10.0):
        guessed = read_wn("wn002", VERSION, stat_of(active=1), [bt("b1", SIZE // 2)],
                          {"b1": [peer("10.0.2.11", 300), peer("10.0.1.2", 100)]}, None, ADDR, memory, now)
    assert guessed.torrents[0].peers is not None
    assert memory["wn002"]["b1"].estimate == SourceBytes(site=3000, central=1000, other=0)

    only_counted = site_share([counted], memory)
    assert (only_counted.site, only_counted.central, only_counted.exact) == (900, 100, True)
    assert only_counted.label == "90% (exact)"
    both = site_share([counted, guessed, unreachable("wn003", REFUSED)], memory)
    assert (both.site, both.central, both.exact) == (3900, 1100, False)
    assert both.label == "78% (estimate)"
    assert Share(0, 0, True).fraction is None and Share(0, 0, True).label == "-"

    (view,) = package_views([counted, guessed], [], memory)
    assert view.name == PKG and view.complete == ("wn001",) and view.seeding == ("wn001",) and view.downloading == ("wn002",)
    assert (view.share.site, view.share.central, view.share.exact) == (3900, 1100, False)
    (alone,) = package_views([counted], [], memory)
    assert alone.share.exact and alone.share.fraction == pytest.approx(0.9)


def test_package_counters_are_an_estimate_on_a_wn_with_two_torrents() -> None:
    memory: Memory = {}
    w = read_wn("wn001", VERSION, stat_of(active=2), [bt("a1", SIZE), bt("a2", SIZE, name="two.tar.bz2")], {"a1": [], "a2": []},
                None, ADDR, memory, 0.0, counters=SourceBytes(site=500, central=500))
    views = {v.name: v for v in package_views([w], [], memory)}
    assert views[PKG].share.fraction is None, "a WN's counters cannot be split between its two packages"
    assert site_share([w], memory).exact


def test_a_package_fetched_over_http_shows_as_such() -> None:
    memory: Memory = {}
    w = read_wn("wn004", VERSION, stat_of(stopped=1), [http("h1", SIZE)], {}, None, ADDR, memory, 0.0)
    (view,) = package_views([w], [], memory)
    assert view.http == ("wn004",) and view.complete == ("wn004",) and view.seeding == ()


# ---------------------------------------------------------------- problem flags

LIMITS = Limits(stall_window=60.0, no_peers_after=30.0, seed_grace=60.0, min_version="1.35.0")


def test_unreachable_and_wrong_secret_are_critical_with_their_reason() -> None:
    problems = flag_problems([unreachable("wn001", REFUSED, "cannot forward to 127.0.0.1:6800: Connection refused"),
                              unreachable("wn002", WRONG_SECRET, "aria2c refused the RPC secret (Unauthorized)")],
                             {}, 0.0, LIMITS, {}, {})
    assert [(p.host, p.code, p.severity) for p in problems] == [("wn001", P_UNREACHABLE, "critical"), ("wn002", P_WRONG_SECRET, "critical")]
    assert "Connection refused" in problems[0].message


def test_old_aria2c_and_drift_are_flagged_and_a_matching_wn_is_not() -> None:
    memory: Memory = {}
    old = read_wn("wn001", {"version": "1.34.0"}, stat_of(), [], {}, {"bt-max-peers": "55"}, ADDR, memory, 0.0)
    good = read_wn("wn002", VERSION, stat_of(), [], {}, {"bt-max-peers": "100"}, ADDR, memory, 0.0)
    profiles = {"wn001": {"bt-max-peers": "100"}, "wn002": {"bt-max-peers": "100"}}
    problems = flag_problems([old, good], memory, 0.0, LIMITS, {}, profiles)
    assert [(p.host, p.code) for p in problems] == [("wn001", P_OLD_ARIA2C), ("wn001", P_DRIFT)]
    assert "bt-max-peers" in problems[1].message


def test_seeding_past_seed_time_is_flagged_after_the_grace() -> None:
    memory: Memory = {}
    for now in (0.0, 600.0 + 59.0):
        w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", SIZE)], {"a1": []}, None, ADDR, memory, now)
        assert flag_problems([w], memory, now, LIMITS, {"wn001": 10.0}, {}) == []
    now = 600.0 + 61.0
    w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", SIZE)], {"a1": []}, None, ADDR, memory, now)
    (problem,) = flag_problems([w], memory, now, LIMITS, {"wn001": 10.0}, {})
    assert (problem.code, problem.package) == (P_SEEDING_TOO_LONG, PKG)
    assert flag_problems([w], memory, now, LIMITS, {"wn001": None}, {}) == [], "no seed-time: seeding has no time limit"


def test_a_download_without_progress_over_the_window_is_stalled() -> None:
    memory: Memory = {}
    polls = [(0.0, 100), (30.0, 200), (89.0, 200)]
    for now, done in polls:
        w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", done)], {"a1": [peer("10.0.1.2")]}, None, ADDR, memory, now)
        assert flag_problems([w], memory, now, LIMITS, {}, {}) == [], now
    w = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", 200)], {"a1": [peer("10.0.1.2")]}, None, ADDR, memory, 91.0)
    (problem,) = flag_problems([w], memory, 91.0, LIMITS, {}, {})
    assert problem.code == P_STALLED and "61 s" in problem.message


def test_no_peers_is_flagged_only_while_another_wn_holds_the_package() -> None:
    memory: Memory = {}

    def poll(now: float, holder: bool) -> list[Any]:
        lonely = read_wn("wn003", VERSION, stat_of(active=1), [bt("c1", 0, connections=0)], {"c1": []}, None, ADDR, memory, now)
        other = read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", SIZE if holder else 0, connections=0)], {"a1": []}, None, ADDR, memory, now)
        return flag_problems([lonely, other], memory, now, LIMITS, {}, {})

    assert poll(0.0, True) == []
    assert poll(29.0, True) == []
    assert [(p.host, p.code) for p in poll(31.0, True)] == [("wn003", P_NO_PEERS)]
    memory.clear()
    poll(0.0, False)
    assert [p.code for p in poll(31.0, False)] == [], "nobody holds it: no peers is expected, not a problem"
    assert {p.code for p in poll(61.0, False)} == {P_STALLED}


# ---------------------------------------------------------------- Nagios and Prometheus


def report_of(wns: list[WNState], memory: Memory, now: float = 0.0) -> SwarmReport:
    problems = flag_problems(wns, memory, now, LIMITS, {}, {})
    return SwarmReport(taken_at=1_700_000_000.0, elapsed=0.25, wns=tuple(wns), packages=tuple(package_views(wns, problems, memory)),
                       problems=tuple(problems), share=site_share(wns, memory))


PERF = re.compile(r"^'?[a-z_]+'?=-?[0-9.]+(B|s|%)?(;[0-9.:]*){0,4}$")


def healthy(n: int, memory: Memory) -> list[WNState]:
    return [read_wn(f"wn{i:03d}", VERSION, stat_of(active=1), [bt(f"g{i}", SIZE)], {f"g{i}": []}, None, ADDR, memory, 0.0,
                    counters=SourceBytes(site=800, central=200)) for i in range(1, n + 1)]


def test_nagios_ok_warning_critical_unknown() -> None:
    memory: Memory = {}
    status = StatusSection()
    state, line = nagios(report_of(healthy(10, memory), memory), status)
    assert state is NagiosState.OK and line.startswith("SWARM OK - 10/10 WNs read")
    assert "from site WNs 80% (exact)" in line
    text, perf = line.split(" | ")
    assert "\n" not in line and "|" not in text
    assert all(PERF.match(item) for item in perf.split()), perf
    assert "site_share=80%" in perf

    one_down = [*healthy(9, memory), unreachable("wn010", REFUSED, "connection refused")]
    state, line = nagios(report_of(one_down, memory), status)
    assert state is NagiosState.WARNING and "1 rpc-unreachable" in line, "1 of 10 unreadable is not more than 10%"

    two_down = [*healthy(8, memory), unreachable("wn009", REFUSED), unreachable("wn010", WRONG_SECRET)]
    state, line = nagios(report_of(two_down, memory), status)
    assert state is NagiosState.CRITICAL and line.startswith("SWARM CRITICAL - 2 of 10 WNs unreadable")

    strict = StatusSection(nagios_min_site_share=90.0)
    state, line = nagios(report_of(healthy(3, memory), memory), strict)
    assert state is NagiosState.WARNING and "site share 80% below 90%" in line and "site_share=80%;90:" in line

    lenient = StatusSection(nagios_warning_percent=50.0)
    assert nagios(report_of(one_down, memory), lenient)[0] is NagiosState.OK
    assert nagios(report_of([], memory), status) == (NagiosState.UNKNOWN, "SWARM UNKNOWN - no WNs selected")


def test_prometheus_text_parses_with_the_official_parser(tmp_path: Path) -> None:
    memory: Memory = {}
    wns = [*healthy(2, memory), unreachable("wn003", WRONG_SECRET)]
    text = prometheus_text(report_of(wns, memory))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    up = {s.labels["wn"]: s.value for s in families["siteadmin_swarm_wn_up"].samples}
    assert up == {"wn001": 1.0, "wn002": 1.0, "wn003": 0.0}
    assert families["siteadmin_swarm_received_bytes"].type == "counter"
    received = {(s.labels["wn"], s.labels["source"]): s.value for s in families["siteadmin_swarm_received_bytes"].samples}
    assert received[("wn001", "site")] == 800 and received[("wn002", "central")] == 200
    progress = {(s.labels["wn"], s.labels["package"]): s.value for s in families["siteadmin_swarm_package_progress_ratio"].samples}
    assert progress == {("wn001", PKG): 1.0, ("wn002", PKG): 1.0}
    problems = [(s.labels["wn"], s.labels["problem"]) for s in families["siteadmin_swarm_problem"].samples]
    assert problems == [("wn003", P_WRONG_SECRET)]
    (site,) = families["siteadmin_swarm_site_share_ratio"].samples
    assert site.value == pytest.approx(0.8) and site.labels == {"exact": "true"}
    assert all(re.fullmatch(r"siteadmin_swarm_[a-z0-9_]+", name) for name in families)

    target = tmp_path / "siteadmin_swarm.prom"
    write_prometheus(target, report_of(wns, memory))
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["siteadmin_swarm.prom"], "no temp file left behind"
    assert {f.name for f in text_string_to_metric_families(target.read_text())} == set(families)


# ---------------------------------------------------------------- memory, counters, the accounting rule


def test_memory_survives_a_round_trip_and_a_bad_file_is_an_empty_memory(tmp_path: Path) -> None:
    memory: Memory = {}
    read_wn("wn001", VERSION, stat_of(active=1), [bt("a1", SIZE)], {"a1": [peer("10.0.2.12", 10)]}, None, ADDR, memory, 5.0)
    path = tmp_path / "state" / "memory.json"
    save_memory(path, memory)
    assert load_memory(path) == memory
    path.write_text("{not json")
    assert load_memory(path) == {}
    path.write_text(json.dumps({"version": 99, "hosts": {}}))
    assert load_memory(path) == {}
    assert load_memory(tmp_path / "missing.json") == {}


def test_counters_are_read_from_nft_json() -> None:
    listed = {"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "inet", "name": "site", "table": ACCOUNTING_TABLE, "handle": 1, "packets": 10, "bytes": 9000}},
        {"counter": {"family": "inet", "name": "central", "table": ACCOUNTING_TABLE, "handle": 2, "packets": 1, "bytes": 1000}},
        {"counter": {"family": "inet", "name": "other", "table": ACCOUNTING_TABLE, "handle": 3, "packets": 0, "bytes": 0}},
        {"counter": {"family": "inet", "name": "site", "table": "somebody_else", "handle": 1, "packets": 1, "bytes": 5}},
    ]}
    assert parse_counters(json.dumps(listed)) == SourceBytes(site=9000, central=1000, other=0)
    assert parse_counters('{"nftables": [{"metainfo": {}}]}') is None
    assert parse_counters("Error: No such file or directory") is None


def test_the_accounting_rule_names_only_its_own_table() -> None:
    addresses = Addresses(wns={"10.0.2.11": "wn001", "10.0.2.12": "wn002", "2001:db8::5": "wn005"}, central=frozenset({"10.0.1.2"}))
    text = accounting_ruleset(addresses, 2222)
    tables = set(re.findall(r"table (\w+) (\w+)", text))
    assert tables == {("inet", ACCOUNTING_TABLE)}
    assert "elements = { 10.0.2.11, 10.0.2.12 }" in text and "elements = { 2001:db8::5 }" in text
    assert "ip saddr @site4 counter name site return" in text and "ip6 saddr @site6 counter name site return" in text
    assert "ip saddr @central4 counter name central return" in text and "central6" not in text
    assert "tcp dport 2222 return" in text and "policy accept" in text
    assert not re.search(r"\b(drop|reject|flush ruleset)\b", text)
    assert set(re.findall(r"table (\w+) (\w+)", removal_ruleset())) == {("inet", ACCOUNTING_TABLE)}


# ---------------------------------------------------------------- the built-in profile


def test_the_built_in_profile_carries_the_installer_values_and_the_site_sets_seeding() -> None:
    installer = {
        "bt-max-peers": "100", "bt-request-peer-speed-limit": "1M", "file-allocation": "none", "follow-torrent": "mem",
        "bt-stop-timeout": "300", "timeout": "300", "enable-dht": "true", "bt-enable-lpd": "true", "seed-time": "10", "seed-ratio": "0.0",
    }
    profile = build_profile(site_from_mapping({}), "wn001.example.org", create_secret=False)
    assert {k: profile.options[k] for k in installer} == installer
    assert {profile.origin[k] for k in installer} == {"built-in"}
    site = site_from_mapping({"aria2c": {"options": {"seed-time": 30, "seed-ratio": 1.5}}})
    seeding = build_profile(site, "wn001.example.org", create_secret=False)
    assert (seeding.options["seed-time"], seeding.options["seed-ratio"]) == ("30", "1.5")
    assert seeding.origin["seed-time"] == "site"
