"""`siteadmin status` on a real lab swarm: WNs fetch a package as the installer would, status reads them.

End to end through the real parts: the WNs' aria2c (each behind its own sshd, reached over an
SSH tunnel), opentracker, the central seeder and HTTP server in cern, the router, nftables on the
WNs (the accounting rule that `status --accounting on` installs). The seeder shares the package;
four WNs are told over their RPC to fetch its .torrent URL (aria2c follows it in memory, as the
installer's WNs did), one first, two when it is done, one last, with cern's link limited to 40
Mbit/s as a WAN link would be. Status must show the four complete and seeding, and the last WN's
exact counters must show most of its bytes came from site WNs. Then three broken WNs: one cut by
a firewall rule from every peer and from cern while it downloads (no-peers), one with its aria2c
stopped (rpc-unreachable, refused), and the whole site read with another secret file
(wrong-secret). The Nagios line, the Prometheus file (parsed with the official parser) and
`--watch` are read from the same state.

This test runs on its own lab (6 WNs): it leaves DHT and peer state behind that the session lab
could not be given back. It still restores what it changed (aria2c restarted, rules flushed,
accounting off, cern's link unlimited) and checks it did.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from siteadmin.cli import main
from siteadmin.lab import Lab, health
from siteadmin.remote import WNService
from siteadmin.secrets import generate_secret, read_secret_file, write_secret_file
from siteadmin.swarm import ACCOUNTING_TABLE, SwarmMonitor

pytestmark = [
    pytest.mark.lab,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces (firewall rules per WN, cern's link)"),
]

WNS = 6
PACKAGE_MB = 8
FIRST, SECOND, LAST = ["wn001.lab"], ["wn002.lab", "wn003.lab"], ["wn004.lab"]
FETCHERS = [*FIRST, *SECOND, *LAST]
CUT, STOPPED = "wn005.lab", "wn006.lab"
CERN_RATE = "40mbit"
DOWNLOAD_TIMEOUT = 60.0
NO_PEERS_AFTER = 3.0
ISOLATE_TABLE = "status_test_isolate"
ISOLATE = f"""
table inet {ISOLATE_TABLE} {{
    chain input {{
        type filter hook input priority 0; policy drop;
        iifname "lo" accept
        tcp dport 22 accept
    }}
    chain output {{
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        tcp sport 22 accept
    }}
}}
"""
"""Cuts a WN from every peer and from cern; only the VoBox's SSH (and the WN's own loopback, its RPC) stay."""


# ---------------------------------------------------------------- helpers


def site_copy(lab: Lab, name: str, memory: Path, secret_file: Path | None = None) -> Path:
    """The lab's site.toml with a [status] table for the test (and another RPC secret file when given).

    Written beside the lab's own, so its relative paths still hold; removed by the fixture.
    """
    text = lab.site_path.read_text()
    if secret_file is not None:
        text = text.replace('rpc_secret_file = "secrets/aria2c-rpc-secret"', f'rpc_secret_file = "{secret_file}"')
        assert str(secret_file) in text
    text += f'\n[status]\nmemory_file = "{memory}"\nno_peers_after = {NO_PEERS_AFTER}\nstall_window = 600.0\n'
    path = lab.dir / f"status-test-{name}.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def status_json(site: Path, *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("--site", str(site), "status", "--json", *argv)
    assert out, err
    data: dict[str, Any] = json.loads(out)
    return code, data


def fetch_like_the_installer(lab: Lab, name: str) -> str:
    """addUri of the package's .torrent URL on cern's HTTP server; aria2c follows it (follow-torrent=mem). The metadata GID."""
    url = lab.site.central.http_fallback + lab.state["package"]["torrent_name"]
    return str(lab.rpc(name, "aria2.addUri", [[url]]))


def bt_gid(lab: Lab, name: str, meta_gid: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        st = lab.rpc(name, "aria2.tellStatus", [meta_gid, ["status", "followedBy", "errorMessage"]])
        if st.get("followedBy"):
            return str(st["followedBy"][0])
        assert st["status"] in ("active", "waiting", "complete"), (name, st)
        assert time.monotonic() < deadline, f"{name}: the .torrent was not followed within {timeout:g} s"
        time.sleep(0.05)


def wait_complete(lab: Lab, names: list[str], gids: dict[str, str], timeout: float = DOWNLOAD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        for name in list(pending):
            st = lab.rpc(name, "aria2.tellStatus", [gids[name], ["status", "completedLength", "totalLength"]])
            assert st["status"] in ("active", "complete"), (name, st)
            if st["totalLength"] != "0" and st["completedLength"] == st["totalLength"]:
                pending.remove(name)
        assert time.monotonic() < deadline, f"{pending}: not complete within {timeout:g} s"
        time.sleep(0.1)


def seeder_uploaded(lab: Lab) -> int:
    """Bytes the central seeder says it has uploaded (its own RPC, inside cern)."""
    secret = read_secret_file(lab.dir / "cern" / "seeder-rpc-secret")
    port = int(lab.state["central"]["seeder_rpc_port"])
    active = health.rpc_call(lab.cern_ns, port, secret, "aria2.tellActive", [["uploadLength"]])
    return sum(int(d["uploadLength"]) for d in active)


def on_wn(lab: Lab, host: str, command: str) -> str:
    """Run a command on a WN over SSH, as siteadmin does (the WN's own mount namespace: its service script)."""
    with WNService(lab.site) as service:
        (result,) = service.run([host], lambda s: s.run(command, check=True).stdout)
    assert result.ok, result.error
    return str(result.value)


def rpc_answers(lab: Lab, name: str) -> bool:
    try:
        lab.rpc(name, "aria2.getVersion")
    except (OSError, ValueError):
        return False
    return True


def nft_tables(lab: Lab, ns: str) -> str:
    listed = lab.exec_in(ns, ["nft", "list", "tables"])
    assert listed.returncode == 0, listed.stderr
    return str(listed.stdout)


def by_host(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["host"]: w for w in data["wns"]}


def problems_of(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["host"], p["code"]) for p in data["problems"]}


# ---------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def swarm_lab(tmp_path_factory: pytest.TempPathFactory, lab_cache_dir: Path) -> Iterator[Lab]:
    handle = Lab(tmp_path_factory.mktemp("status-lab"), cache_dir=lab_cache_dir)
    try:
        handle.up(WNS, package_mb=PACKAGE_MB)
        yield handle
    finally:
        handle.down()


# ---------------------------------------------------------------- the test


def test_status_reads_the_swarm_and_flags_each_broken_wn(swarm_lab: Lab, tmp_path: Path, record_property: Any) -> None:
    lab = swarm_lab
    cern = lab.cern_ns
    assert cern is not None
    memory = tmp_path / "memory.json"
    site = site_copy(lab, "main", memory)
    other_secret = tmp_path / "other-secret"
    write_secret_file(other_secret, generate_secret())
    wrong = site_copy(lab, "wrong-secret", tmp_path / "memory-wrong.json", other_secret)
    size = int(lab.state["package"]["size"])
    package = lab.state["package"]["name"]
    stopped = False
    try:
        # ---- the accounting rule: asked for, refused without a terminal, then installed with --yes
        code, _, err = cli("--site", str(site), "status", "--accounting", "on")
        assert code == 2 and "no terminal" in err
        assert ACCOUNTING_TABLE not in nft_tables(lab, str(lab.wn_ns("wn001.lab")))
        code, out, err = cli("--site", str(site), "status", "--accounting", "on", "--yes")
        assert code == 0, err
        assert "wn[001-006].lab: accounting on" in out
        assert f"load nft table inet {ACCOUNTING_TABLE}" in err
        for name in lab.wn_names:
            assert nft_tables(lab, str(lab.wn_ns(name))).split() == ["table", "inet", ACCOUNTING_TABLE], name
        records = [json.loads(line) for line in (lab.dir / "audit.jsonl").read_text().splitlines()]
        assert [r["phase"] for r in records if r.get("action") == "status accounting"][-2:] == ["start", "done"]

        # ---- cern's link is a WAN link; the WNs fetch the package as the installer would
        assert lab.exec_in(cern, ["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", CERN_RATE,
                                  "burst", "64kb", "latency", "50ms"]).returncode == 0
        gids: dict[str, str] = {}
        started = time.monotonic()
        for wave in (FIRST, SECOND, LAST):
            metas = {name: fetch_like_the_installer(lab, name) for name in wave}
            gids.update({name: bt_gid(lab, name, meta) for name, meta in metas.items()})
            wait_complete(lab, wave, gids)
        record_property("four_wns_fetched_s", round(time.monotonic() - started, 2))

        code, data = status_json(site, "wn[001-004].lab")
        assert code == 0, data["problems"]
        wns = by_host(data)
        for name in FETCHERS:
            w = wns[name]
            assert w["reachable"] and w["version"] and w["seeding"] == 1 and w["active"] == 0, w
            (t,) = [t for t in w["torrents"] if t["package"] == package]
            assert t["via"] == "bittorrent" and t["progress"] == 1.0 and t["seeding"] and t["status"] == "active"
            assert t["peers"] is None and t["connections"] >= 0  # seeding: its peer count, no getPeers
            assert w["round_trips"] == 1
            counted = w["counters"]["site"] + w["counters"]["central"]
            assert counted >= size, (name, w["counters"])  # nothing missed
        # the counters are exact: what the WNs counted from cern is what the seeder says it sent, what they
        # counted from site WNs is what those say they uploaded, within 8%: a sender counts what it queued, and a
        # connection dropped when a download completes loses what was in flight; the receiver counts TCP/IP headers
        from_cern = sum(wns[name]["counters"]["central"] for name in FETCHERS)
        from_site = sum(wns[name]["counters"]["site"] for name in FETCHERS)
        seeder_sent = seeder_uploaded(lab)
        wns_sent = sum(t["uploaded"] for name in FETCHERS for t in wns[name]["torrents"])
        assert abs(from_cern - seeder_sent) < 0.08 * seeder_sent + 64 * 1024, (from_cern, seeder_sent)
        assert abs(from_site - wns_sent) < 0.08 * wns_sent + 64 * 1024, (from_site, wns_sent)
        record_property("bytes_from_cern_counted", from_cern)
        record_property("bytes_seeder_uploaded", seeder_sent)
        record_property("bytes_from_site_counted", from_site)
        record_property("bytes_wns_uploaded", wns_sent)
        (view,) = data["packages"]
        assert view["name"] == package and view["complete"] == FETCHERS and view["seeding"] == FETCHERS
        assert view["stuck"] == [] and view["http"] == []
        last = wns[LAST[0]]["counters"]
        last_share = last["site"] / (last["site"] + last["central"])
        assert last_share > 0.5, f"the WN that started last got only {last_share:.0%} of its bytes from site WNs: {last}"
        assert data["share"]["exact"] is True
        for name in FETCHERS:
            c = wns[name]["counters"]
            record_property(f"{name}_site_share", round(c["site"] / (c["site"] + c["central"]), 3))
        record_property("site_share", round(data["share"]["fraction"], 3))
        assert lab.exec_in(cern, ["tc", "qdisc", "del", "dev", "eth0", "root"]).returncode == 0

        # ---- drift: an option changed over RPC behind the profile's back, then put back
        lab.rpc(LAST[0], "aria2.changeGlobalOption", [{"bt-max-peers": "7"}])
        try:
            code, data = status_json(site, "wn[001-004].lab")
        finally:
            lab.rpc(LAST[0], "aria2.changeGlobalOption", [{"bt-max-peers": "100"}])
        assert code == 1 and problems_of(data) == {(LAST[0], "drift")}, data["problems"]
        assert "bt-max-peers" in data["problems"][0]["message"]
        assert status_json(site, "wn[001-004].lab")[0] == 0

        # ---- a version floor above the WNs' aria2c
        floor = site_copy(lab, "floor", tmp_path / "memory-floor.json")
        floor.write_text(floor.read_text().replace("[status]\n", '[status]\nmin_aria2c_version = "99.0"\n'))
        try:
            code, data = status_json(floor, "wn[001-004].lab")
        finally:
            floor.unlink()
        assert code == 1 and problems_of(data) == {(name, "old-aria2c") for name in FETCHERS}

        # ---- a WN cut from every peer and from cern while it downloads: no peers while others hold the package
        cut_ns = lab.wn_ns(CUT)
        assert cut_ns is not None
        lab.apply_nft(cut_ns, ISOLATE)
        torrent = Path(lab.state["package"]["torrent"]).read_bytes()
        lab.rpc(CUT, "aria2.addTorrent", [base64.b64encode(torrent).decode()])

        # ---- a WN whose aria2c is stopped; the same monitor sees it go and come back on its kept session
        with SwarmMonitor(lab.site, keep_memory=False) as monitor:
            before = monitor.poll([STOPPED]).wns[0]
            assert before.reachable
            on_wn(lab, STOPPED, "/etc/init.d/aria2c stop")
            stopped = True
            gone = monitor.poll([STOPPED]).wns[0]
            assert (gone.reachable, gone.reason) == (False, "refused"), gone
            assert "refused" in gone.detail.lower()

            # ---- status of the whole site: each broken WN with the right reason
            status_json(site)  # first sight of the cut WN's download
            time.sleep(NO_PEERS_AFTER + 0.5)
            code, data = status_json(site)
            assert code == 1
            found = problems_of(data)
            assert found == {(CUT, "no-peers"), (STOPPED, "rpc-unreachable")}, data["problems"]
            wns = by_host(data)
            assert wns[STOPPED]["reason"] == "refused" and not wns[STOPPED]["reachable"]
            cut = [t for t in wns[CUT]["torrents"] if t["package"] == package]
            assert len(cut) == 1 and cut[0]["progress"] == 0.0 and cut[0]["connections"] == 0
            assert cut[0]["peers"] == [] and wns[CUT]["round_trips"] == 2  # fetching: its peers asked for, none
            (view,) = data["packages"]
            assert view["stuck"] == [CUT] and view["downloading"] == [CUT] and view["complete"] == FETCHERS

            code, out, _ = cli("--site", str(site), "status")
            assert code == 1
            assert f"warning: {CUT}: no-peers: {package}: no peers for" in out
            assert f"critical: {STOPPED}: rpc-unreachable: refused:" in out

            # Nagios: 1 of 6 WNs unreadable is more than status.nagios_critical_percent (10%)
            prom = tmp_path / "siteadmin_swarm.prom"
            code, out, _ = cli("--site", str(site), "status", "--nagios", "--prometheus", str(prom))
            assert code == 2, out
            assert out.startswith("SWARM CRITICAL - 1 of 6 WNs unreadable") and out.count("\n") == 1 and " | wns=6" in out
            families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
            up = {s.labels["wn"]: s.value for s in families["siteadmin_swarm_wn_up"].samples}
            assert up == {name: (0.0 if name == STOPPED else 1.0) for name in lab.wn_names}
            flagged = {(s.labels["wn"], s.labels["problem"]) for s in families["siteadmin_swarm_problem"].samples}
            assert flagged == {(CUT, "no-peers"), (STOPPED, "rpc-unreachable")}
            received = {(s.labels["wn"], s.labels["source"]): s.value for s in families["siteadmin_swarm_received_bytes"].samples}
            assert received[(LAST[0], "site")] > received[(LAST[0], "central")]

            # ---- the site read with another secret: every WN that answers refuses it
            code, data = status_json(wrong, "wn[001-004].lab")
            assert code == 1
            assert problems_of(data) == {(name, "wrong-secret") for name in FETCHERS}
            assert {w["reason"] for w in data["wns"]} == {"wrong secret"}

            # ---- --package narrows the view to one package
            code, out, _ = cli("--site", str(site), "status", "--package", package, "wn[001-004].lab")
            assert code == 0 and f"package {package}: from site WNs" in out and "(exact)" in out

            on_wn(lab, STOPPED, "/etc/init.d/aria2c start")
            stopped = False
            back = monitor.poll([STOPPED]).wns[0]
            assert back.reachable, back

        # ---- the other reasons a WN is unreadable: an aria2c that does not answer (timeout), a WN sshd refuses (ssh failure)
        hung = site_copy(lab, "hung", tmp_path / "memory-hung.json")
        hung.write_text(hung.read_text().replace("[status]\n", "[status]\nrpc_timeout = 1.0\n"))
        on_wn(lab, LAST[0], "kill -STOP $(cat /var/lib/aria2/aria2c.pid)")
        try:
            code, data = status_json(hung, LAST[0])
        finally:
            on_wn(lab, LAST[0], "kill -CONT $(cat /var/lib/aria2/aria2c.pid)")
            hung.unlink()
        (w,) = data["wns"]
        assert (code, w["reachable"], w["reason"]) == (1, False, "timeout"), w
        assert "within 1 s" in w["detail"]
        no_ssh = site_copy(lab, "no-ssh", tmp_path / "memory-no-ssh.json")
        text = no_ssh.read_text()
        node = f'[wns.nodes."{STOPPED}"]\naddress = "{lab.wn(STOPPED).address}"\nport = 22\n'
        assert node in text
        no_ssh.write_text(text.replace(node, node.replace("port = 22", "port = 2")))
        try:
            code, data = status_json(no_ssh, STOPPED)
        finally:
            no_ssh.unlink()
        (w,) = data["wns"]
        assert (code, w["reachable"], w["reason"]) == (1, False, "ssh failure"), w
        assert problems_of(data) == {(STOPPED, "rpc-unreachable")}

        # ---- --watch polls again in place until Ctrl-C (exit 130)
        watch = subprocess.Popen(
            [sys.executable, "-m", "siteadmin", "--site", str(site), "status", "--watch", "0.5", "wn[001-004].lab"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        assert watch.stdout is not None
        seen, polls, deadline = [], 0, time.monotonic() + 60
        while polls < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([watch.stdout], [], [], 1.0)
            if ready:
                text = watch.stdout.readline()
                if not text:
                    break
                seen.append(text)
                polls += "4/4 WNs read" in text
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=20)
        assert polls == 2, "".join(seen) + out + err
        assert watch.returncode == 130, err
    finally:
        if stopped:
            on_wn(lab, STOPPED, "/etc/init.d/aria2c start")
        lab.exec_in(cern, ["tc", "qdisc", "del", "dev", "eth0", "root"])
        cut_ns = lab.wn_ns(CUT)
        if cut_ns is not None:
            lab.exec_in(cut_ns, ["nft", "delete", "table", "inet", ISOLATE_TABLE])
        code, out, err = cli("--site", str(site), "status", "--accounting", "off", "--yes")
        for path in (site, wrong):
            path.unlink(missing_ok=True)
    assert code == 0, err
    # left as found: every aria2c answers, no rule of ours in any namespace, cern's link unlimited
    for name in lab.wn_names:
        assert rpc_answers(lab, name), name
    for ns in lab.namespaces:
        assert lab.exec_in(ns, ["nft", "list", "ruleset"]).stdout.strip() == "", ns
    assert "tbf" not in lab.exec_in(cern, ["tc", "qdisc", "show", "dev", "eth0"]).stdout
