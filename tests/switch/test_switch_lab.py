"""``siteadmin switch`` end to end on the real lab: slapd, each WN's sshd, aria2c and own files, the router's nftables.

Each test runs the command through ``main`` as an admin would, with a copy of the lab's
site.toml beside it (so its relative paths hold) that changes one option of the profile (so
the rollout really changes every WN's file) and says which WNs serve CE1. What happened is read
from the parts themselves: LDAP through a new connection, each WN's config from inside the WN,
aria2c's live option over RPC, the audit log. Every test leaves the lab as it found it: CE1
back on its method, the lab's own profile on every WN, the router's rules removed.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin import audit
from siteadmin.cli import main
from siteadmin.directory import Directory
from siteadmin.hostlist import fold, parse_hostlist
from siteadmin.inventory import config_path_for
from siteadmin.lab import Lab
from siteadmin.site import load_site

pytestmark = pytest.mark.lab

CE = "CE1"
LIMIT = "3M"
TABLE = "siteadmin_switch_test"


def run_cli(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--json", *argv], out=out, err=err)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def run_text(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def ce_wns(lab: Lab) -> list[str]:
    """The WNs CE1 serves in these tests: all but the last, so one WN shows a switch leaves others alone."""
    return lab.wn_names[:-1]


def variant(lab: Lab, name: str) -> Path:
    """The lab's site.toml with max-overall-upload-limit added to the site profile and ``[ces."CE1"] wns`` set."""
    text = lab.site_path.read_text(encoding="utf-8")
    head, found, tail = text.partition("\n[aria2c]\n")
    assert found and "options = { " in tail
    tail = tail.replace("options = { ", f'options = {{ "max-overall-upload-limit" = "{LIMIT}", ', 1)
    path = lab.site_path.parent / f"{name}.toml"
    path.write_text(head + found + tail + f'\n[ces."{CE}"]\nwns = ["{fold(ce_wns(lab))}"]\n', encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def lab_hosts(folded: str) -> list[str]:
    return list(parse_hostlist(folded, 1000))


def method(lab: Lab) -> tuple[str, ...]:
    with Directory(lab.site) as directory:
        return directory.show(CE).install_methods


def wn_file(lab: Lab, host: str) -> str:
    done = lab.wn_exec(host, ["cat", config_path_for(lab.site, host)])
    assert done.returncode == 0, done.stderr
    return str(done.stdout)


def files(lab: Lab) -> dict[str, str]:
    return {h: wn_file(lab, h) for h in lab.wn_names}


def live_limit(lab: Lab, host: str) -> str:
    value = lab.rpc(host, "aria2.getGlobalOption")["max-overall-upload-limit"]
    assert isinstance(value, str)
    return value


def audit_events(lab: Lab) -> list[dict[str, Any]]:
    return [r.event for r in audit.read(lab.site.audit.path) if r.event is not None]


def wn_sh(lab: Lab, host: str, script: str, input_text: str | None = None) -> None:
    done = lab.wn_exec(host, ["sh", "-c", script], input_text=input_text)
    assert done.returncode == 0, f"{host}: {script}: {done.stderr}"


@pytest.fixture
def clean_lab(lab: Lab) -> Iterator[dict[str, str]]:
    """The WNs' files before the test; afterwards CE1 is back on its method and the lab's own profile is on every WN."""
    original = method(lab)
    assert len(original) == 1
    before = files(lab)
    yield before
    if method(lab) != original:
        with Directory(lab.site) as directory:
            directory.set_method(CE, original[0])
    code, data, err = run_cli("--site", str(lab.site_path), "apply", "--restart-now")
    assert code == 0, (err, data)
    assert files(lab) == before


def test_switch_ce1_to_torrent_and_back(lab: Lab, clean_lab: dict[str, str]) -> None:
    before = clean_lab
    site_file = variant(lab, "switch-there-and-back")
    hosts, other = ce_wns(lab), lab.wn_names[-1]
    assert method(lab) == ("CVMFS",)

    code, data, err = run_cli("--site", str(site_file), "switch", CE, "--to", "Torrent", "--yes")
    assert code == 0, (err, data)
    (result,) = data
    assert result["outcome"] == "ok" and result["undone"] == []
    assert [(s["step"], s["outcome"]) for s in result["steps"]] == [("preflight", "ok"), ("rollout", "ok"), ("ldap", "ok"), ("wait", "ok")]
    assert "600 s" in err
    # LDAP, the WNs that serve CE1 and their live aria2c; the WN that does not serve it is untouched
    assert method(lab) == ("Torrent",)
    for host in hosts:
        assert f"max-overall-upload-limit={LIMIT}" in wn_file(lab, host)
        assert live_limit(lab, host) == str(3 * 1024 * 1024)
    assert wn_file(lab, other) == before[other]
    assert sorted(result["backups"]) == sorted(hosts)

    # one switch record linking its steps' records, each of which is in the log
    events = audit_events(lab)
    by_id = {e["id"]: e for e in events}
    record = by_id[result["record"]]
    assert record["action"] == "switch" and record["outcome"] == "ok" and record["before"] == "CVMFS" and record["after"] == "Torrent"
    steps = {s["step"]: s for s in record["steps"]}
    rollout_records = [by_id[i] for i in steps["rollout"]["records"]]
    assert sorted(e["host"] for e in rollout_records if e["action"] == "rollout.apply") == sorted(hosts)
    assert [e["action"] for e in rollout_records].count("rollout.apply.run") == 1
    (ldap_record,) = [by_id[i] for i in steps["ldap"]["records"]]
    assert ldap_record["ce"] == CE and ldap_record["after"] == "Torrent" and ldap_record["outcome"] == "ok"

    # back: LDAP first, then the profile each WN had before the switch
    code, data, err = run_cli("--site", str(site_file), "switch", CE, "--to", "CVMFS", "--restore-profile", "--yes")
    assert code == 0, (err, data)
    (back,) = data
    assert [(s["step"], s["outcome"]) for s in back["steps"]] == [("ldap", "ok"), ("restore-profile", "ok")]
    assert method(lab) == ("CVMFS",)
    assert files(lab) == before
    for host in hosts:
        assert live_limit(lab, host) != str(3 * 1024 * 1024)
    back_record = {e["id"]: e for e in audit_events(lab)}[back["record"]]
    assert back_record["restored_from"] == result["record"]
    ldap_first = [back_record["steps"][0]["step"], back_record["steps"][1]["step"]]
    assert ldap_first == ["ldap", "restore-profile"]


def test_a_dry_run_shows_the_whole_plan_and_changes_nothing(lab: Lab, clean_lab: dict[str, str]) -> None:
    site_file = variant(lab, "switch-dry-run")
    lines = len(audit_events(lab))
    code, out, err = run_text("--site", str(site_file), "switch", CE, "--to", "Torrent", "--dry-run")
    assert code == 0, err
    for wanted in ("preflight checks: local, central, ports, multicast, exposure", "per-WN diff:", f"+max-overall-upload-limit={LIMIT}",
                   "LDIF:", "delete: installMethod", "installMethod: CVMFS", "installMethod: Torrent", "changetype: modify"):
        assert wanted in out, out
    assert [line.split(":")[0].strip() for line in out.splitlines() if line.startswith("  ")][:4] == ["1. preflight", "2. rollout", "3. ldap", "4. wait"]
    # the WNs that serve CE1, and no other, each in a diff's heading (folded when they differ only by name)
    headed = [line.removeprefix("=== ").split(" ")[0] for line in out.splitlines() if line.startswith("=== ")]
    assert sorted(h for heading in headed for h in lab_hosts(heading)) == sorted(ce_wns(lab)), out
    assert f"WNs: {fold(ce_wns(lab))} ({len(ce_wns(lab))})" in out
    assert method(lab) == ("CVMFS",)
    assert files(lab) == clean_lab
    assert len(audit_events(lab)) == lines


def test_a_switch_the_preflight_stops_says_why_and_changes_nothing(lab: Lab, clean_lab: dict[str, str]) -> None:
    if lab.mode != "netns" or lab.router_ns is None:
        pytest.skip("cutting the tracker off needs the lab's router namespace (run the tests as root)")
    site_file = variant(lab, "switch-blocked")
    central = lab.site.central
    rules = (f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n    chain forward {{\n"
             f"        type filter hook forward priority 0; policy accept;\n        tcp dport {central.tracker_port} drop\n    }}\n}}\n")
    lab.apply_nft(lab.router_ns, rules)
    try:
        code, out, err = run_text("--site", str(site_file), "switch", CE, "--to", "Torrent", "--yes")
    finally:
        lab.apply_nft(lab.router_ns, f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n")
    assert code == 1, (out, err)
    assert f"{CE}: preflight: blocked: stopped by the preflight" in out
    assert f"tracker {central.tracker_host}:{central.tracker_port}" in out  # the finding that stopped it
    assert f"{CE}: NOT switched to Torrent (blocked) at preflight" in out and "nothing to undo" in out
    assert "rollout: ok" not in out and "undo" not in out.replace("nothing to undo", "")
    assert method(lab) == ("CVMFS",)
    assert files(lab) == clean_lab
    record = [e for e in audit_events(lab) if e.get("action") == "switch"][-1]
    assert record["outcome"] == "blocked" and [s["outcome"] for s in record["steps"]] == ["blocked", "not run", "not run", "not run"]


def test_a_switch_whose_rollout_fails_is_undone(lab: Lab, clean_lab: dict[str, str]) -> None:
    if lab.mode != "netns":
        pytest.skip("a read-only config folder on one WN needs its own mount namespace (run the tests as root)")
    site_file = variant(lab, "switch-undone")
    broken = ce_wns(lab)[1]
    path = config_path_for(lab.site, broken)
    folder = posixpath.dirname(path)
    data = wn_file(lab, broken)
    wn_sh(lab, broken, f"mount -t tmpfs -o size=256k,mode=0755 siteadmin-switch {folder}")
    try:
        wn_sh(lab, broken, f"umask 077; cat > {path}; chmod 600 {path}; mount -o remount,ro {folder}", input_text=data)
        code, out, err = run_text("--site", str(site_file), "switch", CE, "--to", "Torrent", "--yes")
    finally:
        wn_sh(lab, broken, f"umount {folder} || umount -l {folder}")
    assert code == 1, (out, err)
    assert f"{CE}: rollout: failed: 1 of {len(ce_wns(lab))} WN(s) failed: {broken}:" in out and "read-only" in out
    changed = [h for h in ce_wns(lab) if h != broken]
    assert f"{CE}: undo rollout: undone: put back the profile {fold(changed)} had before" in out
    assert f"{CE}: NOT switched to Torrent (failed) at rollout" in out and "undone: rollout" in out
    assert method(lab) == ("CVMFS",)
    assert files(lab) == clean_lab  # every WN's file back as it was, byte for byte
    for host in changed:
        assert live_limit(lab, host) != str(3 * 1024 * 1024)
    record = [e for e in audit_events(lab) if e.get("action") == "switch"][-1]
    assert record["outcome"] == "failed" and record["backups"] == {}
    assert [(u["step"], u["outcome"]) for u in record["undone"]] == [("rollout", "undone")]
    by_id = {e["id"]: e for e in audit_events(lab)}
    undo_records = [by_id[i] for i in record["undone"][0]["records"]]
    assert sorted(e["host"] for e in undo_records if e["action"] == "rollout.rollback") == sorted(changed)


def test_an_ldif_request_prepares_the_wns_writes_the_file_and_leaves_ldap_alone(lab: Lab, clean_lab: dict[str, str], tmp_path: Path) -> None:
    site_file = variant(lab, "switch-request")
    request = tmp_path / "ce1-torrent.ldif"
    code, out, err = run_text("--site", str(site_file), "switch", CE, "--to", "Torrent", "--ldif-request", str(request), "--yes")
    assert code == 0, (out, err)
    assert f"{CE}: ldif-request: ok: LDIF change request written to {request}; LDAP not changed" in out
    assert f"{CE}: prepared for Torrent" in out and "switch --verify" in err and "600 s" not in err
    text = request.read_text()
    assert "installMethod: CVMFS" in text and "installMethod: Torrent" in text and "# CE: CE1" in text
    assert method(lab) == ("CVMFS",)
    for host in ce_wns(lab):
        assert f"max-overall-upload-limit={LIMIT}" in wn_file(lab, host)

    # not applied yet: verify says so; once applied (as the central team would), verify confirms it
    code, out, err = run_text("--site", str(site_file), "switch", "--verify", CE)
    assert code == 1 and "not Torrent" in out and "the LDIF request of the switch" in out, (out, err)
    with Directory(load_site(site_file)) as directory:
        directory.set_method(CE, "Torrent", expected=("CVMFS",))
    code, data, err = run_cli("--site", str(site_file), "switch", "--verify", CE, "--timeout", "60")
    assert code == 0, (data, err)
    assert data[0]["ok"] and data[0]["to"] == "Torrent" and data[0]["wait"]["outcome"] == "ok"


def test_wns_that_never_get_ready_undo_ldap_then_the_rollout(lab: Lab, clean_lab: dict[str, str]) -> None:
    site_file = variant(lab, "switch-not-ready")
    stopped = ce_wns(lab)[0]
    assert "stopped" in lab.aria2c_service(stopped, "stop")
    try:
        code, data, err = run_cli("--site", str(site_file), "switch", CE, "--to", "Torrent", "--yes", "--timeout", "3")
    finally:
        assert "started" in lab.aria2c_service(stopped, "start")
    assert code == 1, (data, err)
    (result,) = data
    assert [(s["step"], s["outcome"]) for s in result["steps"]] == [("preflight", "ok"), ("rollout", "ok"), ("ldap", "ok"), ("wait", "failed")]
    wait = result["steps"][3]
    assert wait["summary"] == f"1 of {len(ce_wns(lab))} WN(s) not ready after 3 s"
    assert wait["details"][0].startswith(f"{stopped}: refused")
    # reverse order: the LDAP value first, then the WNs' files
    assert [(u["step"], u["outcome"]) for u in result["undone"]] == [("ldap", "undone"), ("rollout", "undone")]
    assert result["outcome"] == "failed" and "600 s" not in err
    assert method(lab) == ("CVMFS",)
    assert files(lab) == clean_lab
    events = audit_events(lab)
    by_id = {e["id"]: e for e in events}
    (undo_ldap,) = [by_id[i] for i in result["undone"][0]["records"]]
    assert undo_ldap["before"] == "Torrent" and undo_ldap["after"] == "CVMFS" and undo_ldap["outcome"] == "ok"
    # the undo is recorded after the change it undoes
    assert events.index(undo_ldap) > events.index(by_id[result["steps"][2]["records"][0]])


def _on_a_terminal(argv: list[str], answer: str, timeout: float = 120.0) -> tuple[int, str]:
    """Run siteadmin with a pseudo-terminal as its stdin, stdout and stderr; answer its question; return (exit code, all it wrote)."""
    import select
    import subprocess
    import sys
    import time

    master, slave = os.openpty()
    child = subprocess.Popen([sys.executable, "-m", "siteadmin", *argv], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[y/N]" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
            if child.poll() is not None and not ready:
                break
        code = child.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(master)
    assert answered, seen.decode(errors="replace")
    return code, seen.decode(errors="replace").replace("\r\n", "\n")


def test_on_a_terminal_it_asks_and_no_changes_nothing(lab: Lab, clean_lab: dict[str, str]) -> None:
    site_file = variant(lab, "switch-asked")
    lines = len(audit_events(lab))
    code, text = _on_a_terminal(["--site", str(site_file), "switch", CE, "--to", "Torrent"], "n")
    assert code == 1, text
    assert f"+max-overall-upload-limit={LIMIT}" in text and "installMethod: Torrent" in text  # the plan came before the question
    assert f"switch {CE} to Torrent? [y/N]" in text and f"{CE}: not switched; nothing changed" in text
    assert method(lab) == ("CVMFS",) and files(lab) == clean_lab and len(audit_events(lab)) == lines

    # the low-level command asks too, and points at switch
    code, text = _on_a_terminal(["--site", str(lab.site_path), "ce", "enable", CE], "n")
    assert code == 1 and "CE1: CVMFS -> Torrent (dry run" in text and "nothing changed" in text, text
    assert method(lab) == ("CVMFS",)


def test_several_ces_are_planned_each_on_its_own_and_the_exit_code_is_the_worst(lab: Lab, clean_lab: dict[str, str]) -> None:
    site_file = variant(lab, "switch-several")
    code, data, err = run_cli("--site", str(site_file), "switch", CE, "NOPE", "CE4", "--to", "Torrent", "--dry-run")
    assert code == 2, (data, err)
    assert [d.get("outcome") for d in data] == ["dry-run", "error", "dry-run"]
    assert data[0]["plan"]["ce"] == CE and data[0]["plan"]["hosts"] == fold(ce_wns(lab))
    assert data[2]["plan"]["ce"] == "CE4" and data[2]["plan"]["before"] == "Parrot" and data[2]["plan"]["wns"] == len(lab.wn_names)
    errors = err.splitlines()
    assert len(errors) == 1 and errors[0].startswith("siteadmin: usage: no CE 'NOPE' at site LAB"), err
    assert method(lab) == ("CVMFS",) and files(lab) == clean_lab
