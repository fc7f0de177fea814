"""siteadmin.syslog_sink: every audited change also reaches syslog, best effort, secrets never.

The listeners are the tests' own sockets (a Unix datagram socket in tmp, UDP and TCP on
loopback), given as ``[syslog] address``: what a local syslog daemon or a collector would read.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteadmin import audit, syslog_sink
from siteadmin.cli import main
from siteadmin.errors import warnings_to
from siteadmin.site import Site, parse_syslog_address, site_from_mapping

LINE = re.compile(r"<(?P<pri>\d+)>(?P<time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) (?:(?P<host>\S+) )?(?P<tag>[\w.-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)", re.S)
"""RFC 3164: <PRI>TIMESTAMP [HOSTNAME] TAG[PID]: MSG."""


def make_site(tmp_path: Path, **syslog: object) -> Site:
    site = site_from_mapping({"audit": {"path": str(tmp_path / "audit.jsonl")}, "syslog": syslog}, tmp_path / "site.toml")
    syslog_sink.attach(site)
    return site


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


@pytest.fixture(autouse=True)
def _detach(tmp_path: Path) -> Iterator[None]:
    yield
    syslog_sink.detach(tmp_path / "audit.jsonl")


def parse(data: bytes) -> re.Match[str]:
    match = LINE.fullmatch(data.decode())
    assert match, data
    return match


def test_a_change_reaches_the_configured_socket_as_one_rfc3164_line(tmp_path: Path, listener: socket.socket) -> None:
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"), facility="local3", tag="siteadmin-test")
    written = audit.record(site.audit.path, {"action": "ce.enable", "ce": "CE1", "before": "CVMFS", "after": "Torrent", "outcome": "ok"})
    line = parse(listener.recv(4096))
    assert int(line["pri"]) == 19 * 8 + 5  # local3.notice
    assert line["tag"] == "siteadmin-test" and int(line["pid"]) == os.getpid() and line["host"] is None
    assert line["msg"] == f"ce.enable ce=CE1 before=CVMFS after=Torrent outcome=ok id={written['id']} user={written['user']}"
    # the audit log stays the full record
    assert json.loads((tmp_path / "audit.jsonl").read_text())["when"] == written["when"]


def test_a_failed_change_is_a_warning(tmp_path: Path, listener: socket.socket) -> None:
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"), facility="authpriv")
    audit.record(site.audit.path, {"action": "rollout.apply", "host": "wn001.lab", "outcome": "failed: validation", "error": "bad\nline"})
    line = parse(listener.recv(4096))
    assert int(line["pri"]) == 10 * 8 + 4  # authpriv.warning
    assert re.fullmatch(r'rollout.apply host=wn001.lab outcome="failed: validation" id=\w+ user=\S+ error=bad\\nline', line["msg"]), line["msg"]
    assert "\n" not in line["msg"]  # a value cannot forge a second line


def test_secrets_never_reach_syslog(tmp_path: Path, listener: socket.socket) -> None:
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"))
    audit.record(
        site.audit.path,
        {"action": "x", "rpc_secret": "s3cr3t-rpc", "password": "pw-in-clear", "server": "ldaps://admin:hunter2@ldap.example", "outcome": "ok"},
    )
    text = listener.recv(4096).decode()
    for secret in ("s3cr3t-rpc", "pw-in-clear", "hunter2"):
        assert secret not in text
    assert "rpc_secret=********" in text and "server=ldaps://admin:********@ldap.example" in text


def test_message_fields_order_quoting_and_length() -> None:
    event = {"when": "t", "user": "root", "outcome": "ok", "action": "rollout.apply.run", "hosts": "wn[001-040]", "count": 40,
             "summary": [{"hosts": "wn[001-040]", "outcome": "unchanged"}], "note": "two words", "empty": "", "none": None, "flag": True}
    text = syslog_sink.message(event)
    assert text == ('rollout.apply.run hosts=wn[001-040] outcome=ok user=root count=40 summary=hosts:wn[001-040],outcome:unchanged '
                    'note="two words" empty="" none=- flag=true')
    long = syslog_sink.message({"action": "x", "diff": "y" * 10_000})
    assert len(long.encode()) == syslog_sink.MAX_MESSAGE and long.endswith("...")
    assert syslog_sink.severity({"outcome": "conflict"}) == "warning" and syslog_sink.severity({"action": "x"}) == "notice"
    assert re.fullmatch(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d", syslog_sink.rfc3164_time(time.time()))


def test_absent_syslog_gives_one_warning_and_the_changes_stand(tmp_path: Path) -> None:
    site = make_site(tmp_path, address=str(tmp_path / "no-such.sock"))
    warned: list[str] = []
    with warnings_to(warned.append):
        for n in range(3):
            audit.record(site.audit.path, {"action": "x", "n": n, "outcome": "ok"})
    assert [json.loads(line)["n"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()] == [0, 1, 2]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"syslog {tmp_path / 'no-such.sock'}: cannot send (No such file or directory)")


def test_a_syslog_that_goes_away_mid_run_warns_once(tmp_path: Path, listener: socket.socket) -> None:
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"))
    warned: list[str] = []
    with warnings_to(warned.append):
        audit.record(site.audit.path, {"action": "first"})
        assert b"first" in listener.recv(4096)
        listener.close()
        (tmp_path / "log.sock").unlink()
        audit.record(site.audit.path, {"action": "second"})
        audit.record(site.audit.path, {"action": "third"})
    assert len(warned) == 1 and "cannot send" in warned[0]
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 3


def test_disabled_sends_nothing_and_a_detached_log_sends_nothing(tmp_path: Path, listener: socket.socket) -> None:
    listener.settimeout(0.3)
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"), enabled=False)
    audit.record(site.audit.path, {"action": "quiet"})
    with pytest.raises(TimeoutError):
        listener.recv(4096)
    site = make_site(tmp_path, address=str(tmp_path / "log.sock"))
    syslog_sink.detach(site.audit.path)
    audit.record(site.audit.path, {"action": "quiet"})
    with pytest.raises(TimeoutError):
        listener.recv(4096)


def test_udp_and_tcp_collectors_get_the_host_name(tmp_path: Path) -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(5)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(5)
    with udp, tcp:
        site = make_site(tmp_path, address=f"udp://127.0.0.1:{udp.getsockname()[1]}", facility="daemon")
        audit.record(site.audit.path, {"action": "over-udp"})
        line = parse(udp.recv(4096))
        assert int(line["pri"]) == 3 * 8 + 5 and line["host"] == socket.gethostname().split(".")[0]
        assert line["msg"].startswith("over-udp ")
        site = make_site(tmp_path, address=f"tcp://127.0.0.1:{tcp.getsockname()[1]}")
        audit.record(site.audit.path, {"action": "over-tcp"})
        conn, _ = tcp.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while not data.endswith(b"\0"):
                chunk = conn.recv(4096)
                assert chunk, data
                data += chunk
        assert parse(data[:-1])["msg"].startswith("over-tcp ")  # a NUL ends each message on a stream


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/dev/log", ("unix", "/dev/log")),
        ("udp://logs.example.org", ("udp", ("logs.example.org", 514))),
        ("tcp://10.0.0.1:1514", ("tcp", ("10.0.0.1", 1514))),
        ("udp://[2001:db8::1]:514", ("udp", ("2001:db8::1", 514))),
    ],
)
def test_addresses(text: str, expected: tuple[str, object]) -> None:
    assert parse_syslog_address(text) == expected


@pytest.mark.parametrize("text", ["logs.example.org:514", "http://logs", "udp://logs:0", "udp://bad host", "relative/log", "/dev/log\n"])
def test_bad_addresses_are_one_line_naming_the_key(tmp_path: Path, text: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f"[syslog]\naddress = {json.dumps(text)}\n")
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "config", "show"], out=out, err=err) == 2
    assert err.getvalue().startswith("siteadmin: config: site.toml: syslog.address") and len(err.getvalue().splitlines()) == 1, err.getvalue()
    assert "udp://HOST[:PORT]" in err.getvalue()


def test_bad_facility_and_tag(tmp_path: Path) -> None:
    for table, words in (('facility = "kern"', "local0"), ('tag = "has space"', "letters")):
        path = tmp_path / "site.toml"
        path.write_text(f"[syslog]\n{table}\n")
        out, err = io.StringIO(), io.StringIO()
        assert main(["--site", str(path), "config", "show"], out=out, err=err) == 2
        assert words in err.getvalue() and len(err.getvalue().splitlines()) == 1


def test_a_stuck_syslog_costs_one_bounded_wait_then_nothing(tmp_path: Path, listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    # the listener never reads: once its queue is full a send would block for ever
    monkeypatch.setattr(syslog_sink, "SEND_TIMEOUT", 0.5)
    sink = syslog_sink.SyslogSink(make_site(tmp_path, address=str(tmp_path / "log.sock")).syslog)
    warned: list[str] = []
    started = time.monotonic()
    with warnings_to(warned.append):
        sent = [sink.send({"action": "x", "n": n, "pad": "y" * 1000}) for n in range(3000)]
    elapsed = time.monotonic() - started
    sink.close()
    assert sent[0] and not sent[-1]
    assert len(warned) == 1 and "timed out" in warned[0], warned
    assert elapsed < 5, f"{elapsed:.1f} s: a stuck syslog held the run up"


def test_a_failed_sink_tries_again_after_a_while(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syslog_sink, "RETRY_AFTER", 0.2)
    site = make_site(tmp_path, address=str(tmp_path / "later.sock"))
    warned: list[str] = []
    with warnings_to(warned.append):
        audit.record(site.audit.path, {"action": "lost"})  # nobody listens yet: one warning
        late = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with late:
            late.bind(str(tmp_path / "later.sock"))
            late.settimeout(5)
            audit.record(site.audit.path, {"action": "skipped"})  # within RETRY_AFTER: not even tried
            time.sleep(0.3)
            audit.record(site.audit.path, {"action": "back"})
            assert b": back " in late.recv(4096)
    assert len(warned) == 1
