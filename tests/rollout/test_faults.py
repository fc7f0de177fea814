"""Faults during ``siteadmin apply`` on the real lab: sshd, each WN's own aria2c, its own files and mounts.

Each test breaks one thing for real (another key, a host that never sends a banner, the SSH
session killed mid-upload, a read-only or full config folder, a config aria2c refuses, a second
apply, unreachable WNs, ``kill -9`` of siteadmin, a download in flight) and then looks at the WN
itself: the config's bytes, owner and mode over SFTP, temp files and locks beside it, aria2c's
live values and session over RPC. The exit code and outcome are checked too, never alone.

Site config copies live beside the lab's site.toml (its relative paths hold). Every test leaves
the lab as it found it: mounts, qdiscs and rules removed, the lab's own profile applied again.
"""

from __future__ import annotations

import _thread
import contextlib
import io
import json
import math
import os
import posixpath
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from siteadmin import audit, rollout
from siteadmin.aria2conf.render import render
from siteadmin.cli import main
from siteadmin.inventory import config_path_for
from siteadmin.lab import Lab
from siteadmin.remote import SessionPool
from siteadmin.remote import files as steps
from siteadmin.rollout import lock_path
from siteadmin.site import Site, load_site

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- site config copies


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(data: Mapping[str, Any]) -> str:
    """The site config as TOML: top-level and nesting dicts as tables, dicts of plain values inline."""
    lines: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in body.items() if isinstance(v, dict) and any(isinstance(x, dict) for x in v.values())}
        for key, value in body.items():
            if key not in nested:
                lines.append(f"{json.dumps(key)} = {_toml_value(value)}")
        lines.append("")
        for key, value in nested.items():
            table(f"{name}.{json.dumps(key)}", value)

    for key, value in data.items():
        table(json.dumps(key), value)
    return "\n".join(lines)


def site_copy(
    lab: Lab,
    name: str,
    *,
    options: Mapping[str, str] | None = None,
    ssh: Mapping[str, Any] | None = None,
    rollout_settings: Mapping[str, Any] | None = None,
    nodes: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """The lab's site.toml beside it with ``options`` added to the profile's site layer, ``ssh`` and
    ``rollout_settings`` merged into their tables, and ``nodes`` added as WNs of the site."""
    data = tomllib.loads(lab.site_path.read_text(encoding="utf-8"))
    data["aria2c"]["options"] = {**data["aria2c"]["options"], **(options or {})}
    data["ssh"].update(ssh or {})
    data["rollout"].update(rollout_settings or {})
    if nodes:
        data["wns"]["hosts"] = [*data["wns"]["hosts"], *nodes]
        data["wns"]["nodes"].update({k: dict(v) for k, v in nodes.items()})
    path = lab.site_path.parent / f"faults-{name}.toml"
    path.write_text(toml_text(data), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def run_cli(*argv: str) -> tuple[int, Any, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--json", *argv], out=out, err=err)
    text = out.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def by_host(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in data["hosts"]}


def rendered(path: Path, host: str) -> bytes:
    return render(load_site(path), host, create_secret=False).text.encode("utf-8")


# ---------------------------------------------------------------- the WN's ground truth


class WNView:
    """What is on a WN beside its config, read over SSH (in netns mode only the WN sees its mounts)."""

    def __init__(self, state: steps.FileState, names: list[str], lock: bytes | None) -> None:
        self.state = state
        self.names = names
        self.lock = lock

    @property
    def temps(self) -> list[str]:
        base = posixpath.basename(self.state.path)
        return [n for n in self.names if steps.is_temp_name(base, n)]

    @property
    def backups(self) -> list[str]:
        base = posixpath.basename(self.state.path)
        return [n for n in self.names if steps.parse_backup_name(base, n) is not None]


def look(site: Site, host: str) -> WNView:
    path = config_path_for(site, host)
    with SessionPool(site) as pool:
        session = pool.session(host)
        with session.sftp() as sftp:
            state = steps.read_file(session, path, sftp=sftp)
            names = sorted(sftp.listdir(posixpath.dirname(path)))
            lock = steps.read_file(session, lock_path(path), sftp=sftp).data
    return WNView(state, names, lock)


def option(lab: Lab, host: str, name: str) -> str:
    value = lab.rpc(host, "aria2.getGlobalOption").get(name, "")
    assert isinstance(value, str)
    return value


def session_id(lab: Lab, host: str) -> str:
    value = lab.rpc(host, "aria2.getSessionInfo")["sessionId"]
    assert isinstance(value, str)
    return value


def wn_sh(lab: Lab, host: str, script: str, *, input_text: str | None = None, check: bool = True) -> str:
    """Run a shell script on the WN as its sshd would (its namespaces), as root."""
    done = lab.wn_exec(host, ["sh", "-c", script], input_text=input_text)
    if check:
        assert done.returncode == 0, f"{host}: {script}: {done.stderr.strip()}"
    return str(done.stdout)


def sshd_sessions(lab: Lab, host: str) -> list[int]:
    """Pids of the sshd processes serving connections to the WN (the listener's descendants named sshd)."""
    listener = next(r.pid for r in lab.processes if r.name == f"sshd {host}")
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        pid = int(entry.name)
        names[pid] = head.partition("(")[2]
        children.setdefault(int(tail.split()[1]), []).append(pid)
    found: list[int] = []
    todo = list(children.get(listener, []))
    while todo:
        pid = todo.pop()
        if names.get(pid, "").startswith("sshd"):
            found.append(pid)
        todo += children.get(pid, [])
    return found


def needs_root_mounts(lab: Lab) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs at a WN's config folder needs root (the lab runs in loopback mode without it)")


@pytest.fixture
def restore_lab(lab: Lab) -> Iterator[None]:
    """Afterwards, the lab's own profile on every WN again (restarting where it must), no lock left."""
    yield
    site = lab.site
    with SessionPool(site) as pool:
        for host in lab.wn_names:
            pool.session(host).run(f"rm -f {lock_path(config_path_for(site, host))}", check=True)
    code, data, err = run_cli("--site", str(lab.site_path), "apply", "--restart-now")
    assert code == 0, (err, data)


# ---------------------------------------------------------------- SSH faults


def test_failed_authentication_fails_each_wn_as_auth_failed_and_touches_nothing(lab: Lab, tmp_path: Path) -> None:
    key = lab.site_path.parent / "faults-other-key"
    private = ed25519.Ed25519PrivateKey.generate()
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
    os.chmod(key, 0o600)
    path = site_copy(lab, "auth", options={"max-overall-upload-limit": "5M"}, ssh={"key_file": key.name})
    site = lab.site
    before = {h: look(site, h) for h in lab.wn_names}

    code, data, err = run_cli("--site", str(path), "apply")
    assert code == 1
    assert len(data["hosts"]) == len(lab.wn_names)
    for row in data["hosts"]:
        assert row["outcome"] == "auth failed", row
        assert row["category"] == "denied"
        assert str(key) in row["error"] or key.name in row["error"]
    assert "auth failed" in data["summary"][0]["outcome"]
    for host in lab.wn_names:
        now = look(site, host)
        assert (now.state, now.names, now.lock) == (before[host].state, before[host].names, before[host].lock)
        assert option(lab, host, "max-overall-upload-limit") != str(5 * 1024 * 1024)


class Tarpit:
    """A TCP listener on loopback that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(2)
        for conn in self.held:
            conn.close()


def test_a_wn_that_never_sends_a_banner_fails_within_the_timeout_and_fifty_end_in_bounded_time(lab: Lab) -> None:
    timeout = 1.0
    pit = Tarpit()
    try:
        mute = {f"mute{i:02d}.lab": {"address": "127.0.0.1", "port": pit.port} for i in range(1, 51)}
        path = site_copy(lab, "banner", ssh={"connect_timeout": timeout, "auth_timeout": timeout}, nodes=mute)
        parallel = load_site(path).ssh.parallelism

        code, data, err = run_cli("--site", str(path), "apply", "--dry-run", "mute01.lab")
        assert code == 1
        row = by_host(data)["mute01.lab"]
        assert row["category"] == "unreachable", row
        assert row["outcome"] == "ssh handshake failed", row
        assert row["elapsed"] < timeout + 2.0, f"the mute WN took {row['elapsed']} s with a {timeout:g} s timeout"

        code, data, err = run_cli("--site", str(path), "apply", "mute[01-50].lab,wn001.lab", "--batch", "100%")
        fifty = data["elapsed"]
    finally:
        pit.close()
    assert code == 1
    rows = by_host(data)
    assert len(pit.held) >= 50, "the mute WNs were not even dialled"
    assert {rows[h]["outcome"] for h in mute} == {"ssh handshake failed"}, {r["error"] for r in rows.values()}
    assert rows["wn001.lab"]["ok"], "a working WN in the same run failed"
    bound = math.ceil(51 / parallel) * timeout + 10.0  # one after the other they would take 50 s
    assert fifty < bound, f"50 mute WNs took {fifty:.1f} s (parallelism {parallel}, timeout {timeout:g} s)"


BIG_PROFILE = {"bt-exclude-tracker": ",".join(f"http://t{i}.invalid/a" for i in range(12000))}
"""A long list of trackers to exclude: a ~300 KB profile, whose upload takes seconds on a slowed link."""


def mid_upload(lab: Lab, host: str, path: Path, action: Any) -> tuple[int, Any, str, int]:
    """``apply`` of ``path`` to ``host`` with the WN's link slowed to 1 Mbit/s, calling ``action()``
    once the new file's temp file on the WN holds 64 KiB; (exit code, JSON, stderr, temp size then)."""
    site = lab.site
    router, port = lab.router_ns, f"w{lab.wn(host).index:03d}"
    assert router is not None
    upper = lab.wn(host).host_path(posixpath.dirname(config_path_for(site, host)))
    base = posixpath.basename(config_path_for(site, host))
    cut_at: list[int] = []

    def temp_size() -> int | None:
        with os.scandir(upper) as entries:
            for entry in entries:
                # the new file's temp file, not a backup's (".<name>.siteadmin-<id>.siteadmin-<token>.tmp")
                if steps.is_temp_name(base, entry.name) and entry.name.count(steps.BACKUP_MARK) == 1:
                    with contextlib.suppress(FileNotFoundError):
                        return entry.stat().st_size
        return None

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            size = temp_size()
            if size is not None and size >= 64 * 1024:
                action()
                cut_at.append(size)
                return
            time.sleep(0.002)

    lab.exec_in(router, ["tc", "qdisc", "add", "dev", port, "root", "tbf", "rate", "1mbit", "burst", "16kb", "latency", "2s"])
    thread = threading.Thread(target=watch)
    thread.start()
    try:
        code, data, err = run_cli("--site", str(path), "apply", host)
    finally:
        thread.join()
        lab.exec_in(router, ["tc", "qdisc", "del", "dev", port, "root"])
    assert cut_at, "the upload was never seen under way"
    return code, data, err, cut_at[0]


def test_the_connection_cut_mid_upload_keeps_the_old_config_releases_the_lock_and_leaves_no_temp_file(lab: Lab, restore_lab: None) -> None:
    if lab.mode != "netns":
        pytest.skip("shaping one WN's link needs the netns lab's router (loopback mode has none)")
    host = lab.wn_names[0]
    site = lab.site
    before = look(site, host)
    path = site_copy(lab, "cut", options=BIG_PROFILE)
    new = rendered(path, host)

    def kill_sessions() -> None:
        for pid in sshd_sessions(lab, host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    code, data, err, size = mid_upload(lab, host, path, kill_sessions)
    assert size < len(new), "the session was not cut in the middle of the upload"
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "connection lost", row
    after = look(site, host)
    assert after.state == before.state, "the old config was not left intact"
    assert after.lock is None, "the run left its lock on the WN although the WN could be reached again"
    assert not after.temps, f"temp files left: {after.temps}"
    assert option(lab, host, "bt-exclude-tracker") == ""

    # and a run after it finds the WN clean and works
    code, data, err = run_cli("--site", str(lab.site_path), "apply", host)
    assert code == 0, err
    after = look(site, host)
    assert not after.temps and after.lock is None and after.state == before.state


def test_traffic_dropped_mid_upload_keeps_the_old_config_and_names_the_lock_it_could_not_remove(lab: Lab, restore_lab: None) -> None:
    if lab.mode != "netns":
        pytest.skip("shaping and dropping one WN's traffic needs the netns lab's namespaces")
    host = lab.wn_names[1]
    ns = lab.wn_ns(host)
    assert ns is not None
    site = lab.site
    before = look(site, host)
    path = site_copy(lab, "drop", options=BIG_PROFILE, ssh={"command_timeout": 2.0, "connect_timeout": 1.0})
    rules = """table inet siteadmin_faults {
        chain input { type filter hook input priority 0; tcp dport 22 drop; }
        chain output { type filter hook output priority 0; tcp sport 22 drop; }
    }
    """
    try:
        code, data, err, size = mid_upload(lab, host, path, lambda: lab.apply_nft(ns, rules))
    finally:
        lab.exec_in(ns, ["nft", "delete", "table", "inet", "siteadmin_faults"])
    assert size < len(rendered(path, host)), "the traffic was not dropped in the middle of the upload"
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "sftp timed out", row
    lock = lock_path(config_path_for(site, host))
    assert f"its lock {lock} is left on the WN" in row["error"], row["error"]
    assert f"{host}: the lock {lock} of this run is still on the WN" in err
    after = look(site, host)
    assert after.state == before.state, "the old config was not left intact"
    assert after.lock is not None and after.temps, "the WN kept no lock or temp file: nothing was cut"
    # the lock is reported, never taken over; once the admin removed it, the next run clears the temp file
    code, data, err = run_cli("--site", str(lab.site_path), "apply", host)
    assert (code, by_host(data)[host]["outcome"]) == (1, "locked")
    wn_sh(lab, host, f"rm {lock}")
    code, data, err = run_cli("--site", str(lab.site_path), "apply", host)
    assert code == 0, err
    after = look(site, host)
    assert after.state == before.state and not after.temps and after.lock is None


# ---------------------------------------------------------------- the config folder


@contextlib.contextmanager
def config_dir_mount(lab: Lab, host: str, *, size_kb: int, read_only: bool = False, free_pages: int | None = None) -> Iterator[str]:
    """A small tmpfs at the WN's config folder (in the WN's own mount namespace), holding a copy
    of its config with the same mode; optionally remounted read-only, or filled up to leave
    ``free_pages`` pages free. Unmounted afterwards, which leaves the WN's real folder as it was."""
    site = lab.site
    path = config_path_for(site, host)
    folder = posixpath.dirname(path)
    state = look(site, host).state
    assert state.data is not None and state.mode is not None
    wn_sh(lab, host, f"mount -t tmpfs -o size={size_kb}k,mode=0755 siteadmin-faults {folder}")
    try:
        wn_sh(lab, host, f"umask 077; cat > {path}; chmod {state.mode:o} {path}", input_text=state.data.decode())
        if free_pages is not None:
            wn_sh(lab, host, f"dd if=/dev/zero of={folder}/filler bs=4096 2>/dev/null; truncate -s -{4096 * free_pages} {folder}/filler; sync", check=False)
        if read_only:
            wn_sh(lab, host, f"mount -o remount,ro {folder}")
        yield folder
    finally:
        wn_sh(lab, host, f"umount {folder} || umount -l {folder}")


def test_a_read_only_config_folder_fails_clearly_and_keeps_the_old_config(lab: Lab, restore_lab: None) -> None:
    needs_root_mounts(lab)
    host = lab.wn_names[1]
    site = lab.site
    path = site_copy(lab, "readonly", options={"max-overall-upload-limit": "6M"})
    with config_dir_mount(lab, host, size_kb=256, read_only=True) as folder:
        before = look(site, host)
        code, data, err = run_cli("--site", str(path), "apply", host)
        after = look(site, host)
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "read-only", row
    assert f"{folder} is on a read-only filesystem" in row["error"]
    assert after.state == before.state and after.names == before.names
    assert option(lab, host, "max-overall-upload-limit") != str(6 * 1024 * 1024)


def test_a_full_config_filesystem_fails_clearly_keeps_the_old_config_and_leaves_nothing_behind(lab: Lab, restore_lab: None) -> None:
    needs_root_mounts(lab)
    host = lab.wn_names[1]
    site = lab.site
    path = site_copy(lab, "full", options={"max-overall-upload-limit": "7M"})
    # one page free: the lock fits, the backup and the new file do not
    with config_dir_mount(lab, host, size_kb=64, free_pages=1):
        before = look(site, host)
        code, data, err = run_cli("--site", str(path), "apply", host)
        after = look(site, host)
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "disk full", row
    assert "no space left" in row["error"]
    assert after.state == before.state, "the old config changed on a full filesystem"
    assert after.names == before.names, f"left behind: {sorted(set(after.names) - set(before.names))}"
    assert after.lock is None
    assert option(lab, host, "max-overall-upload-limit") != str(7 * 1024 * 1024)
    record = [r.event for r in audit.read(site.audit.path) if r.event and r.event.get("host") == host][-1]
    assert (record["outcome"], record["after"], record["backup"]) == ("disk full", before.state.sha256, None)


# ---------------------------------------------------------------- configs aria2c refuses


def test_a_log_file_aria2c_could_not_open_is_refused_on_the_wn_before_it_goes_in_place(lab: Lab, restore_lab: None) -> None:
    """aria2c reads ``log`` without complaint in a mode that starts nothing, and even takes it over
    RPC (answering OK and reading it back) though it cannot open it; its next start fails. The
    WN-side validation must refuse it, so the file never goes in place."""
    host = lab.wn_names[2]
    site = lab.site
    before = look(site, host)
    ids = session_id(lab, host)
    path = site_copy(lab, "log", options={"log": "/var/log/no-such-folder/aria2c.log"})
    code, data, err = run_cli("--site", str(path), "apply", host)
    assert code == 1, data
    row = by_host(data)[host]
    assert row["outcome"] == "failed: validation", row
    assert "/var/log/no-such-folder" in row["error"]
    after = look(site, host)
    assert after.state == before.state and after.temps == [] and after.lock is None
    assert option(lab, host, "log") == "" and session_id(lab, host) == ids


def test_a_config_aria2c_refuses_at_start_restores_the_backup_and_aria2c_runs_the_old_values(lab: Lab, restore_lab: None) -> None:
    """``interface`` naming no interface of the WN: aria2c reads it fine, and refuses to start with it."""
    host = lab.wn_names[2]
    site = lab.site
    before = look(site, host)
    old_cache = option(lab, host, "disk-cache")
    ids = session_id(lab, host)
    path = site_copy(lab, "refused", options={"interface": "nosuch0", "disk-cache": "2M"})
    code, data, err = run_cli("--site", str(path), "apply", host)
    assert code == 1
    row = by_host(data)[host]
    assert row["outcome"] == "failed: restart", row
    assert "restored and aria2c restarted with it" in row["error"], row["error"]
    report = row["report"]
    assert report["restored"] == report["backup"] and report["backup"]
    after = look(site, host)
    assert after.state == before.state, "the backup was not put back byte for byte with owner and mode"
    assert after.lock is None and not after.temps
    assert session_id(lab, host) != ids, "aria2c was not restarted with the old file"
    assert option(lab, host, "interface") == "" and option(lab, host, "disk-cache") == old_cache
    records = [r.event for r in audit.read(site.audit.path) if r.event and r.event.get("host") == host]
    assert records[-1]["outcome"] == "failed: restart" and records[-1]["after"] == before.state.sha256


def test_a_restart_class_option_next_to_a_live_one_restarts_and_reads_both_back(lab: Lab, restore_lab: None) -> None:
    host = lab.wn_names[3]
    site = lab.site
    ids = {h: session_id(lab, h) for h in lab.wn_names}
    path = site_copy(lab, "mixed", options={"max-overall-upload-limit": "4M", "disk-cache": "8M"})
    code, data, err = run_cli("--site", str(path), "apply", host)
    assert code == 0, err
    report = by_host(data)[host]["report"]
    assert {c["option"]: c["applies"] for c in report["changes"]} == {"max-overall-upload-limit": "live", "disk-cache": "restart"}
    assert (report["reload"], report["reloaded"]) == ("restart", "restarted")
    assert session_id(lab, host) != ids[host], "the restart path was not taken"
    assert option(lab, host, "disk-cache") == str(8 * 1024 * 1024)
    assert option(lab, host, "max-overall-upload-limit") == str(4 * 1024 * 1024)
    assert look(site, host).state.data == rendered(path, host)
    assert all(session_id(lab, h) == ids[h] for h in lab.wn_names if h != host)


# ---------------------------------------------------------------- two runs, many WNs


def test_two_concurrent_applies_on_one_wn_never_tear_the_file(lab: Lab, restore_lab: None) -> None:
    host = lab.wn_names[0]
    site = lab.site
    original = look(site, host).state.data
    paths = [site_copy(lab, f"race-{n}", options={"max-overall-upload-limit": size}) for n, size in (("a", "3M"), ("b", "5M"))]
    renders = {rendered(p, host) for p in paths}
    allowed = {original, *renders}
    seen: list[bytes | None] = []
    stop = threading.Event()

    def watch() -> None:
        # the WN's file as anyone on the WN reads it, as often as we can
        while not stop.is_set():
            seen.append(wn_file_bytes(lab, host))

    def race(wait_lock: float) -> list[rollout.RolloutRun]:
        results: list[rollout.RolloutRun | BaseException] = [RuntimeError("not run")] * 2
        barrier = threading.Barrier(2)

        def one(i: int) -> None:
            try:
                barrier.wait()
                results[i] = rollout.apply(load_site(paths[i]), [host], wait_lock=wait_lock, restart_now=True, holder=f"run-{'ab'[i]}@test")
            except BaseException as exc:  # noqa: BLE001 - reported below
                results[i] = exc

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(isinstance(r, rollout.RolloutRun) for r in results), results
        return [r for r in results if isinstance(r, rollout.RolloutRun)]

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        first = race(0.0)
        outcomes = sorted(r.results[0].outcome for r in first)
        second = race(60.0)
    finally:
        stop.set()
        watcher.join()
    # without waiting: one works, the other fails at once on the lock, naming the holder
    assert outcomes in (["locked", "ok"], ["ok", "ok"]), outcomes
    if outcomes == ["locked", "ok"]:
        loser = next(r for r in first if not r.ok).results[0]
        assert loser.error is not None and "held by run-" in loser.error
    # with --wait-lock both get their turn, one after the other
    assert [r.results[0].outcome for r in second] == ["ok", "ok"], [r.results[0].error for r in second]
    final = look(site, host)
    assert final.state.data in renders and final.lock is None and not final.temps
    assert seen and all(s in allowed for s in seen), "the WN's file was seen torn, empty or missing"


def steps_backups(folder: Path, host: str, lab: Lab) -> list[str]:
    """Backup generations in the WN's config folder, as this host sees the folder."""
    base = posixpath.basename(config_path_for(lab.site, host))
    return [n for n in os.listdir(folder) if steps.parse_backup_name(base, n) is not None]


def lock_on_wn(lab: Lab, host: str) -> Path:
    """The WN's rollout lock as the host sees it (netns: in the upper layer of the WN's /etc)."""
    path = lock_path(config_path_for(lab.site, host))
    return lab.wn(host).host_path(path) if lab.mode == "netns" else Path(path)


def wait_for(condition: Any, why: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, why
        time.sleep(0.005)


def wn_file_bytes(lab: Lab, host: str) -> bytes | None:
    """The WN's config read from the host side of its own files (netns: the overlay's upper layer)."""
    site = lab.site
    path = config_path_for(site, host)
    where = lab.wn(host).host_path(path) if lab.mode == "netns" else Path(path)
    try:
        return where.read_bytes()
    except FileNotFoundError:
        return None


def test_max_fail_stops_before_the_next_batch_and_lists_the_wns_not_started(lab: Lab, restore_lab: None) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    down = {f"down{i}.lab": {"address": "127.0.0.1", "port": port} for i in (1, 2)}
    path = site_copy(lab, "maxfail", options={"max-overall-upload-limit": "9M"}, nodes=down)
    site = lab.site
    selected = [*down, *lab.wn_names]  # natural order: down1, down2, wn001...
    before = {h: look(site, h) for h in lab.wn_names}

    code, data, err = run_cli("--site", str(path), "apply", "--batch", "50%", "--max-fail", "20%")
    assert code == 1
    assert [h["host"] for h in data["hosts"]] == selected
    rows = by_host(data)
    first, rest = selected[:3], selected[3:]
    assert [rows[h]["outcome"] for h in first] == ["connection refused", "connection refused", "changed"]
    assert all(rows[h]["outcome"] == "not started" for h in rest), {h: rows[h]["outcome"] for h in rest}
    assert ("wn[002-004].lab", "not started") in [(s["hosts"], s["outcome"]) for s in data["summary"]]
    assert "not started" in err
    assert look(site, "wn001.lab").state.data == rendered(path, "wn001.lab")
    for host in rest:
        now = look(site, host)
        assert (now.state, now.names) == (before[host].state, before[host].names), f"{host} was touched"
        assert option(lab, host, "max-overall-upload-limit") != str(9 * 1024 * 1024)


def test_kill_9_mid_batch_leaves_each_wn_its_old_or_new_file_and_the_lock_reported_never_stolen(lab: Lab, restore_lab: None) -> None:
    site = lab.site
    path = site_copy(lab, "kill", options={"max-overall-upload-limit": "6M"})
    old = {h: look(site, h).state for h in lab.wn_names}
    new = {h: rendered(path, h) for h in lab.wn_names}
    target = lab.wn_names[1]
    folder = lock_on_wn(lab, target).parent  # the WN's config folder as this host sees it
    backups = set(look(site, target).backups)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "siteadmin", "--site", str(path), "apply", "--batch", "2", "--parallel", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=str(lab.dir),
    )
    try:
        # killed as soon as the second WN of the batch has its backup: next come the write, validation and reload
        deadline = time.monotonic() + 60
        while not set(steps_backups(folder, target, lab)) - backups and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.001)
        child.send_signal(signal.SIGKILL)
        assert set(steps_backups(folder, target, lab)) - backups, "the apply never reached the second WN of the batch"
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL

    for host in lab.wn_names:
        now = look(site, host)
        assert now.state.data in (old[host].data, new[host]), f"{host}: neither its old nor its new file"
        assert (now.state.uid, now.state.gid, now.state.mode) == (old[host].uid, old[host].gid, old[host].mode)
    assert look(site, lab.wn_names[0]).state.data == new[lab.wn_names[0]]
    for host in lab.wn_names[2:]:
        assert look(site, host).state == old[host], f"{host} of the next batch was touched"

    held = look(site, target).lock
    assert held is not None and str(child.pid) in held.decode()
    code, data, err = run_cli("--site", str(path), "apply", target)
    assert code == 1
    row = by_host(data)[target]
    assert row["outcome"] == "locked", row
    assert f"pid {child.pid}) since" in row["error"] and "no longer running on this VoBox" in row["error"], row["error"]
    assert look(site, target).lock == held, "the lock of the killed run was taken over"


# ---------------------------------------------------------------- downloads in flight


@contextlib.contextmanager
def slow_download(lab: Lab, host: str, name: str) -> Iterator[str]:
    """The lab's package fetched from cern's HTTP fallback by the WN's aria2c at 32 KiB/s; its GID.

    Removed afterwards, with the file it wrote."""
    package = lab.state["package"]["name"]
    url = lab.site.central.http_fallback.rstrip("/") + "/" + package
    gid = lab.rpc(host, "aria2.addUri", [[url], {"out": name, "max-download-limit": "32K"}])
    assert isinstance(gid, str)
    try:
        assert lab.rpc(host, "aria2.tellStatus", [gid, ["status"]])["status"] in ("active", "waiting")
        yield gid
    finally:
        for method in ("aria2.forceRemove", "aria2.removeDownloadResult"):
            with contextlib.suppress(OSError, ValueError):
                lab.rpc(host, method, [gid])
        folder = data_dir(lab, host)
        wn_sh(lab, host, f"rm -f {folder}/{name} {folder}/{name}.aria2", check=False)


def data_dir(lab: Lab, host: str) -> str:
    """The WN's aria2c download folder, as the WN names it."""
    return str(lab.site.wns.nodes[host].aria2c["dir"])


def download_state(lab: Lab, host: str, gid: str) -> tuple[str, int]:
    status = lab.rpc(host, "aria2.tellStatus", [gid, ["status", "completedLength"]])
    return str(status["status"]), int(status["completedLength"])


def test_a_restart_class_change_waits_for_a_download_in_flight_and_ends_busy_with_it_intact(lab: Lab, restore_lab: None) -> None:
    host = lab.wn_names[3]
    site = lab.site
    drain = 2.0
    path = site_copy(lab, "drain", options={"disk-cache": "12M"}, rollout_settings={"drain_timeout": drain})
    ids = session_id(lab, host)
    with slow_download(lab, host, "faults-drain.bin") as gid:
        _, done_before = download_state(lab, host, gid)
        start = time.monotonic()
        code, data, err = run_cli("--site", str(path), "apply", host)
        waited = time.monotonic() - start
        status, done_after = download_state(lab, host, gid)
        assert code == 1
        row = by_host(data)[host]
        assert row["outcome"] == "busy", row
        assert waited >= drain, f"it did not wait for the download ({waited:.1f} s)"
        assert status == "active" and done_after > done_before, "the download was not left running"
        assert session_id(lab, host) == ids, "aria2c was restarted under a download"
        after = look(site, host)
        assert after.state.data == rendered(path, host), "the new file is not kept for the next restart"
        assert after.lock is None
        assert "aria2c.conf.siteadmin-restart" in after.names, "nothing on the WN says its file waits for a restart"
        assert option(lab, host, "disk-cache") != str(12 * 1024 * 1024)

        # the same apply again, the download now finishing: it waits for it, then restarts
        threading.Timer(1.0, lambda: lab.rpc(host, "aria2.changeOption", [gid, {"max-download-limit": "0"}])).start()
        long_drain = site_copy(lab, "drain-long", options={"disk-cache": "12M"}, rollout_settings={"drain_timeout": 60.0})
        code, data, err = run_cli("--site", str(long_drain), "apply", host)
        assert code == 0, (err, data)
        assert by_host(data)[host]["report"]["reloaded"] == "restarted", by_host(data)[host]
        assert data["summary"] == [{"hosts": host, "outcome": "unchanged (restarted)"}]
        assert session_id(lab, host) != ids, "the restart the busy run left pending never happened"
        assert "aria2c.conf.siteadmin-restart" not in look(site, host).names
        assert option(lab, host, "disk-cache") == str(12 * 1024 * 1024)
        size = int(wn_sh(lab, host, f"stat -c %s {data_dir(lab, host)}/faults-drain.bin").strip())
        assert size == lab.state["package"]["size"], "the download was cut by the restart"


def test_a_cancel_or_ctrl_c_while_draining_releases_the_wn_lock(lab: Lab, restore_lab: None) -> None:
    host = lab.wn_names[3]
    site = lab.site
    path = site_copy(lab, "cancel", options={"disk-cache": "10M"}, rollout_settings={"drain_timeout": 60.0})
    ids = session_id(lab, host)
    with slow_download(lab, host, "faults-cancel.bin") as gid:
        # a console-style cancel: the run returns, the WN cancelled, its lock gone
        cancel = threading.Event()
        lock_file = lock_on_wn(lab, host)

        def cancel_while_draining() -> None:
            wait_for(lock_file.exists, "the run never locked the WN")
            time.sleep(0.7)  # past the write: waiting for the download
            cancel.set()

        threading.Thread(target=cancel_while_draining).start()
        run = rollout.apply(load_site(path), [host], cancel=cancel)
        assert run.results[0].outcome == "cancelled", run.results[0]
        assert look(site, host).lock is None, "a cancelled run left its lock on the WN"
        assert download_state(lab, host, gid)[0] == "active" and session_id(lab, host) == ids

        # Ctrl-C: KeyboardInterrupt in the main thread, as the terminal's SIGINT raises it
        def interrupt() -> None:
            wait_for(lock_file.exists, "the run never locked the WN")
            time.sleep(0.7)  # the draining WN is waiting now
            _thread.interrupt_main()

        again = site_copy(lab, "interrupt", options={"disk-cache": "11M"}, rollout_settings={"drain_timeout": 60.0})
        threading.Thread(target=interrupt).start()
        with pytest.raises(KeyboardInterrupt):
            rollout.apply(load_site(again), [host])
        assert look(site, host).lock is None, "Ctrl-C left the run's lock on the WN"
        assert download_state(lab, host, gid)[0] == "active" and session_id(lab, host) == ids
