"""``siteadmin reach`` through siteadmin.cli.main against real sshd."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest

from siteadmin.cli import main
from siteadmin.lab.sshd import known_hosts_line

pytestmark = pytest.mark.lab


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_reach_all_ok(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "--site", str(ssh_lab.site_path))
    assert code == 0
    assert out == "wn[001-003].lab: ok\n"
    assert err.startswith("siteadmin: all 3 WNs reached in ")
    assert err.count("\n") == 1


def test_reach_pattern_selects(ssh_lab: Any) -> None:
    code, out, _ = _run("reach", "wn002.lab", "--site", str(ssh_lab.site_path))
    assert (code, out) == (0, "wn002.lab: ok\n")


def _mixed_site(ssh_lab: Any, tmp_path: Path) -> Path:
    good, other = ssh_lab.spec("wn001.lab"), ssh_lab.spec("wn002.lab")
    down = ssh_lab.free_port()
    known = tmp_path / "known_hosts"
    known.write_text(
        known_hosts_line(["127.0.0.1"], good.port, good.host_key_pub_line)
        + "\n"
        + known_hosts_line(["wn003.lab"], other.port, good.host_key_pub_line)  # not wn002's key
        + "\n"
    )
    nodes = {"wn001.lab": good.port, "wn002.lab": good.port, "wn003.lab": other.port, "wn004.lab": down, "wn005.lab": ssh_lab.spec("wn003.lab").port}
    return ssh_lab.write_site("mixed", nodes, known_hosts=known)  # type: ignore[no-any-return]


def test_reach_failures_exit_1_and_a_lone_host_keeps_its_whole_error(ssh_lab: Any, tmp_path: Path) -> None:
    site = _mixed_site(ssh_lab, tmp_path)
    code, out, err = _run("reach", "--site", str(site), "--parallel", "2")
    assert code == 1
    assert out.splitlines() == [
        "wn[001-002].lab: ok",
        "wn003.lab: HOST KEY CHANGED",
        "wn004.lab: connection refused",
        "wn005.lab: host key unknown",
    ]
    lines = err.splitlines()
    assert "Traceback" not in err
    assert len(lines) == 4
    assert lines[0].startswith("siteadmin: hostkey: wn003.lab: HOST KEY CHANGED for [wn003.lab]:")
    assert lines[1].startswith("siteadmin: unreachable: wn004.lab: connection refused by 127.0.0.1:")
    assert lines[2].startswith("siteadmin: hostkey: wn005.lab: host key not in known_hosts ")
    assert lines[3].startswith("siteadmin: 3 of 5 WNs not reached (wn[003-005].lab) in ")


def test_reach_folds_failures_by_outcome_on_stderr_as_on_stdout(ssh_lab: Any, tmp_path: Path) -> None:
    good = ssh_lab.spec("wn001.lab")
    down = ssh_lab.free_port()
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(["127.0.0.1"], good.port, good.host_key_pub_line) + "\n")
    nodes = {
        "wn001.lab": good.port,
        "wn002.lab": down,  # refused, the very same text for both
        "wn003.lab": down,
        "wn004.lab": ssh_lab.spec("wn002.lab").port,  # unknown keys: texts differ (each names its port)
        "wn005.lab": ssh_lab.spec("wn003.lab").port,
        "wn006.lab": good.port,
        "wn007.lab": down,
    }
    site = ssh_lab.write_site("folded", nodes, known_hosts=known)
    code, out, err = _run("reach", "--site", str(site))
    assert code == 1
    assert out.splitlines() == [
        "wn[001,006].lab: ok",
        "wn[002-003,007].lab: connection refused",
        "wn[004-005].lab: host key unknown",
    ]
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 3, err
    # one outcome, one text: the hosts folded, the text once
    assert lines[0] == f"siteadmin: unreachable: wn[002-003,007].lab: connection refused by 127.0.0.1:{down} (is sshd running there, on that port?)"
    # one outcome, texts differing: the outcome, then the first host's whole text as the example
    assert lines[1].startswith("siteadmin: hostkey: wn[004-005].lab: host key unknown; e.g. wn004.lab: host key not in known_hosts ")
    assert f"[127.0.0.1]:{ssh_lab.spec('wn002.lab').port}" in lines[1]
    assert lines[2].startswith("siteadmin: 5 of 7 WNs not reached (wn[002-005,007].lab) in ")
    # each host's own error is still there in --json
    code, out, _ = _run("reach", "--site", str(site), "--json")
    errors = {h["host"]: h["error"] for h in json.loads(out)["hosts"]}
    assert errors["wn005.lab"].startswith("wn005.lab: host key not in known_hosts ")
    assert f"[127.0.0.1]:{ssh_lab.spec('wn003.lab').port}" in errors["wn005.lab"]


def test_reach_json(ssh_lab: Any, tmp_path: Path) -> None:
    code, out, _ = _run("reach", "--site", str(_mixed_site(ssh_lab, tmp_path)), "--json")
    assert code == 1
    data = json.loads(out)
    assert (data["count"], data["ok"], data["failed"]) == (5, 2, 3)
    assert data["summary"][0] == {"hosts": "wn[001-002].lab", "outcome": "ok"}
    by_host = {h["host"]: h for h in data["hosts"]}
    assert list(by_host) == [f"wn00{i}.lab" for i in range(1, 6)]
    assert by_host["wn001.lab"]["uname"] == socket.gethostname()
    assert by_host["wn001.lab"]["error"] is None
    assert by_host["wn004.lab"]["outcome"] == "connection refused"
    assert by_host["wn004.lab"]["category"] == "unreachable"
    assert by_host["wn004.lab"]["error"].startswith("wn004.lab: connection refused by 127.0.0.1:")


def test_reach_unknown_host_is_a_usage_error(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "wn999.lab", "--site", str(ssh_lab.site_path))
    assert code == 2
    assert out == ""
    assert err == "siteadmin: hosts: wn999.lab: not a WN of this site (see `siteadmin hosts` for the site's WNs)\n"


def test_reach_parallel_must_be_positive(ssh_lab: Any) -> None:
    code, out, err = _run("reach", "--parallel", "0", "--site", str(ssh_lab.site_path))
    assert (code, out, err) == (2, "", "siteadmin: usage: --parallel 0: must be 1 or more\n")


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf"])
def test_reach_timeout_must_be_finite_and_positive(ssh_lab: Any, value: str) -> None:
    code, out, err = _run("reach", f"--timeout={value}", "--site", str(ssh_lab.site_path))
    shown = f"{float(value):g}"
    assert (code, out, err) == (2, "", f"siteadmin: usage: --timeout {shown}: must be a number of seconds greater than 0, like 30\n")


@contextlib.contextmanager
def _fake_wn(behaviour: str) -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that is no sshd: ``close`` hangs up at once, ``garbage`` sends
    an HTTP answer and hangs up, ``silent`` accepts and never says anything, ``blackhole`` never
    accepts (its backlog is full, so a connect waits for the SYN's answer that never comes)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if behaviour == "garbage":
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4)
            if behaviour == "silent":
                held.append(conn)
            else:
                conn.close()

    server = None
    if behaviour == "blackhole":
        filler = socket.create_connection(("127.0.0.1", port), timeout=2)  # fills the accept queue
        held.append(filler)
    else:
        server = threading.Thread(target=serve, daemon=True)
        server.start()
    try:
        yield port
    finally:
        stop.set()
        if server is not None:
            server.join(2)
        for conn in held:
            conn.close()
        listener.close()


def _no_ssh_site(ssh_lab: Any, ports: dict[str, int], connect_timeout: float) -> Path:
    nodes = {"wn001.lab": ssh_lab.spec("wn001.lab").port, **ports}
    return ssh_lab.write_site(f"nossh{len(ports)}", nodes, ssh={"connect_timeout": connect_timeout})  # type: ignore[no-any-return]


def _siteadmin(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "siteadmin", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )


def test_reach_hosts_without_sshd_fold_into_one_line_and_no_traceback(ssh_lab: Any, caplog: pytest.LogCaptureFixture) -> None:
    with _fake_wn("close") as closes, _fake_wn("garbage") as garbage, _fake_wn("silent") as silent:
        site = _no_ssh_site(ssh_lab, {"wn002.lab": closes, "wn003.lab": garbage, "wn004.lab": silent}, 1.0)
        results = [_run("reach", "--site", str(site))]
        time.sleep(0.2)  # paramiko's transport threads log as they die
        # in-process, pytest's handlers on the root logger hide the last-resort handler: check
        # that paramiko's records stop at its own logger instead of reaching the root
        assert [r.getMessage() for r in caplog.records if r.name.startswith("paramiko")] == []
        # paramiko logs through Python's last-resort handler, which writes to the real sys.stderr
        proc = _siteadmin("--site", str(site), "reach")
        out, err = proc.communicate(timeout=20)
        results.append((proc.returncode, out, err))
    for code, out, err in results:
        assert "Traceback" not in err
        assert "Exception" not in err
        assert code == 1
        assert out.splitlines() == ["wn001.lab: ok", "wn[002-004].lab: ssh handshake failed"]
        lines = err.splitlines()
        assert len(lines) == 2, err
        # one outcome, three different texts: the outcome, and the first host's text as the example
        assert lines[0].startswith(
            f"siteadmin: unreachable: wn[002-004].lab: ssh handshake failed; e.g. wn002.lab: SSH handshake with {ssh_lab.user}@127.0.0.1:{closes} failed"
        )
        assert lines[1].startswith("siteadmin: 3 of 4 WNs not reached (wn[002-004].lab) in ")


def test_reach_ctrl_c_exits_at_once_while_connects_hang(ssh_lab: Any) -> None:
    with _fake_wn("blackhole") as blackhole, _fake_wn("silent") as silent:
        site = _no_ssh_site(ssh_lab, {"wn002.lab": blackhole, "wn003.lab": silent}, 30.0)
        proc = _siteadmin("--site", str(site), "reach")
        try:
            time.sleep(1.5)  # interpreter start-up, then both connects are hanging
            assert proc.poll() is None
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=10)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 130, err
    assert took < 3, f"exit took {took:.1f} s after SIGINT"
    assert "Traceback" not in err
    assert err == "siteadmin: interrupted\n"
    assert out == ""
