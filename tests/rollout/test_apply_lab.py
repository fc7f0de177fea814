"""``siteadmin apply`` and ``rollback`` end to end on the real lab: sshd, each WN's own aria2c and config file.

The lab's site.toml is copied beside it (same folder, so its relative paths still hold) with one
option changed in the site layer, and the commands run through ``main`` as an admin would.
WN files are read back over SSH (in netns mode each WN has its own mount namespace, so the
host cannot see them), aria2c's values over RPC from inside the WN's namespace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin import audit
from siteadmin.cli import main
from siteadmin.inventory import config_path_for, fold
from siteadmin.lab import Lab
from siteadmin.remote import SessionPool
from siteadmin.remote import files as steps
from siteadmin.rollout import lock_path
from siteadmin.site import Site, load_site

pytestmark = pytest.mark.lab

HOST_ARIA2 = Path("/etc/aria2")


def run_cli(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--json", *argv], out=out, err=err)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def variant(lab: Lab, name: str, extra: dict[str, str]) -> Path:
    """The lab's site.toml with ``extra`` added to the site layer of the profile, beside the original."""
    text = lab.site_path.read_text(encoding="utf-8")
    marker = "options = { "
    head, found, tail = text.partition("\n[aria2c]\n")
    assert found, "the lab's site.toml has an [aria2c] table"
    assert marker in tail
    added = "".join(f'"{k}" = "{v}", ' for k, v in extra.items())
    path = lab.site_path.parent / f"{name}.toml"
    path.write_text(head + found + tail.replace(marker, marker + added, 1), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def host_aria2_state() -> list[tuple[str, str]]:
    """The VoBox's own /etc/aria2: every file and its hash (empty when the folder does not exist)."""
    if not HOST_ARIA2.exists():
        return []
    return sorted((str(p), hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir") for p in HOST_ARIA2.rglob("*"))


def wn_files(site: Site, host: str) -> tuple[steps.FileState, list[steps.Backup], bool]:
    """The WN's config (bytes, owner, mode), its backups and whether a lock file exists, read over SSH."""
    path = config_path_for(site, host)
    with SessionPool(site) as pool:
        session = pool.session(host)
        with session.sftp() as sftp:
            state = steps.read_file(session, path, sftp=sftp)
            backups = steps.list_backups(session, path, sftp=sftp)
            locked = steps.read_file(session, lock_path(path), sftp=sftp).exists
    return state, backups, locked


def global_option(lab: Lab, host: str, name: str) -> str:
    value = lab.rpc(host, "aria2.getGlobalOption")[name]
    assert isinstance(value, str)
    return value


def session_id(lab: Lab, host: str) -> str:
    value = lab.rpc(host, "aria2.getSessionInfo")["sessionId"]
    assert isinstance(value, str)
    return value


def by_host(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in data["hosts"]}


@pytest.fixture
def restore_lab(lab: Lab) -> Iterator[None]:
    """Put the lab's own profile back on every WN afterwards (other tests expect it)."""
    yield
    code, data, err = run_cli("--site", str(lab.site_path), "apply", "--restart-now")
    assert code == 0, (err, data)


def test_dry_run_then_apply_then_apply_again_plans_changes_then_nothing(lab: Lab, restore_lab: None) -> None:
    site = load_site(lab.site_path)
    hosts = lab.wn_names
    host_before = host_aria2_state()
    limit = variant(lab, "rollout-live", {"max-overall-upload-limit": "3M"})
    before = {h: wn_files(site, h) for h in hosts}
    ids = {h: session_id(lab, h) for h in hosts}
    audit_lines = len(audit.read(site.audit.path)) if site.audit.path.exists() else 0

    # 1. plan: every WN changed, live; nothing written anywhere
    code, data, err = run_cli("--site", str(limit), "apply", "--dry-run", "--diff")
    assert code == 0, err
    assert data["dry_run"] is True
    for host, row in by_host(data).items():
        assert row["ok"] and row["outcome"] == "changed", row
        report = row["report"]
        assert [c["option"] for c in report["changes"]] == ["max-overall-upload-limit"]
        assert report["changes"][0]["applies"] == "live"
        assert report["reload"] == "rpc"
        assert "+max-overall-upload-limit=3M" in report["diff"]
        assert lab.rpc_secret() not in report["diff"]
        assert report["before"] == before[host][0].sha256
    for host in hosts:
        assert wn_files(site, host) == before[host], f"{host}: a dry run wrote to the WN"
    assert (len(audit.read(site.audit.path)) if site.audit.path.exists() else 0) == audit_lines

    # 2. apply: changed by RPC, read back; one backup more, no lock left, same owner and mode
    code, data, err = run_cli("--site", str(limit), "apply")
    assert code == 0, err
    for host, row in by_host(data).items():
        assert row["ok"] and row["outcome"] == "changed", row
        assert row["report"]["reloaded"] == "rpc"
        assert global_option(lab, host, "max-overall-upload-limit") == str(3 * 1024 * 1024)
        state, backups, locked = wn_files(site, host)
        old = before[host][0]
        assert b"max-overall-upload-limit=3M\n" in (state.data or b"")
        assert (state.uid, state.gid, state.mode) == (old.uid, old.gid, old.mode)
        assert not locked
        assert backups[0].hash == (old.sha256 or "")[:12]
        assert session_id(lab, host) == ids[host], f"{host}: a live change restarted aria2c"
    records = [r.event for r in audit.read(site.audit.path)[audit_lines:] if r.event]
    assert {e["host"] for e in records if e.get("action") == "rollout.apply"} == set(hosts)
    assert [e["outcome"] for e in records if e.get("action") == "rollout.apply.run"] == ["ok"]
    assert all(lab.rpc_secret() not in json.dumps(e) for e in records)

    # 3. the same apply again: nothing changes, nothing restarts, nothing is backed up
    after = {h: wn_files(site, h) for h in hosts}
    code, data, err = run_cli("--site", str(limit), "apply")
    assert code == 0, err
    assert [row["outcome"] for row in data["summary"]] == ["unchanged"]
    for host in hosts:
        assert wn_files(site, host) == after[host]
        assert session_id(lab, host) == ids[host]
    out, err_text = io.StringIO(), io.StringIO()
    assert main(["--site", str(limit), "apply"], out=out, err=err_text) == 0
    assert out.getvalue() == f"{fold(hosts)} unchanged\n"
    assert "\r" not in err_text.getvalue()  # no progress line when not on a terminal

    assert host_aria2_state() == host_before, "the VoBox's own /etc/aria2 changed"


def test_restart_class_change_restarts_that_wn_and_rollback_restores_it_byte_for_byte(lab: Lab, restore_lab: None) -> None:
    site = load_site(lab.site_path)
    host, *others = lab.wn_names
    host_before = host_aria2_state()
    cache = variant(lab, "rollout-restart", {"disk-cache": "4M"})
    original, _, _ = wn_files(site, host)
    ids = {h: session_id(lab, h) for h in lab.wn_names}

    code, data, err = run_cli("--site", str(cache), "apply", host)
    assert code == 0, err
    row = by_host(data)[host]
    assert row["report"]["reload"] == "restart"
    assert row["report"]["reloaded"] == "restarted"
    assert [c["applies"] for c in row["report"]["changes"]] == ["restart"]
    assert session_id(lab, host) != ids[host], "aria2c was not restarted"
    assert global_option(lab, host, "disk-cache") == str(4 * 1024 * 1024)
    for other in others:
        assert session_id(lab, other) == ids[other], f"{other} was not selected but its aria2c restarted"

    # the generations, as --list shows them: the newest is the file before the change
    code, listing, err = run_cli("--site", str(cache), "rollback", host, "--list")
    assert code == 0, err
    generations = listing["hosts"][0]["report"]["generations"]
    assert generations[0]["hash"] == (original.sha256 or "")[:12]

    restarted = session_id(lab, host)
    code, data, err = run_cli("--site", str(cache), "rollback", host, "--to", generations[0]["id"])
    assert code == 0, err
    row = by_host(data)[host]
    assert row["report"]["restored"] == generations[0]["id"]
    assert row["report"]["reloaded"] == "restarted"
    state, backups, locked = wn_files(site, host)
    assert state == original, "rollback did not restore the file byte for byte with owner and mode"
    assert not locked
    assert session_id(lab, host) != restarted
    assert global_option(lab, host, "disk-cache") == global_option(lab, others[0], "disk-cache")
    # the file the rollback replaced is a generation of its own
    assert backups[0].hash != generations[0]["hash"]
    assert host_aria2_state() == host_before


def test_a_held_lock_fails_the_wn_at_once_naming_its_holder(lab: Lab) -> None:
    site = load_site(lab.site_path)
    host = lab.wn_names[0]
    path = lock_path(config_path_for(site, host))
    text = '{"holder": "someone@elsewhere", "pid": 7, "since": "2099-01-01T00:00:00.000000Z", "token": "x"}\n'
    with SessionPool(site) as pool:
        session = pool.session(host)
        session.put_file(path, text.encode(), mode=0o600)
        try:
            code, data, err = run_cli("--site", str(lab.site_path), "apply", host)
        finally:
            with session.sftp() as sftp:
                sftp.remove(path)
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "locked"
    assert "someone@elsewhere" in row["error"]
    assert "locked" in err


def test_wait_lock_waits_for_the_holder_and_an_old_lock_is_reported_stale_never_taken(lab: Lab) -> None:
    site = load_site(lab.site_path)
    host = lab.wn_names[-1]
    path = lock_path(config_path_for(site, host))
    held = '{"holder": "cron@vobox", "pid": 9, "since": "%s", "token": "y"}\n'
    with SessionPool(site) as pool:
        session = pool.session(host)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        session.put_file(path, (held % now).encode(), mode=0o600)
        release = threading.Timer(1.5, lambda: session.run(f"rm -f {path}", check=True))
        release.start()
        try:
            start = time.monotonic()
            code, data, err = run_cli("--site", str(lab.site_path), "apply", host, "--wait-lock", "20")
            waited = time.monotonic() - start
        finally:
            release.join()
        assert code == 0, err
        assert waited >= 1.5, "apply did not wait for the lock"
        assert by_host(data)[host]["ok"]

        session.put_file(path, (held % "2000-01-01T00:00:00.000000Z").encode(), mode=0o600)
        try:
            code, data, err = run_cli("--site", str(lab.site_path), "apply", host, "--wait-lock", "5")
            state = steps.read_file(session, path)
        finally:
            session.run(f"rm -f {path}", check=True)
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "stale lock"
    assert "cron@vobox" in row["error"] and "lock_stale_after" in row["error"]
    assert state.data == (held % "2000-01-01T00:00:00.000000Z").encode(), "a stale lock was taken over"
