"""siteadmin.audit: append-only JSON lines, durable, unreadable lines kept visible."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from siteadmin import audit
from siteadmin.cli import main
from siteadmin.errors import ConfigError, UntrustedFile

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
HOSTILE_CE = "CE\x1b[2J\x1b]0;owned\x07\u202eevil"
"""A CE name that clears the screen, retitles the terminal and reverses the text after it."""


def test_record_adds_when_and_user_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "state" / "audit.jsonl"
    first = audit.record(path, {"action": "enable", "ce": "CE1", "before": "CVMFS", "after": "Torrent", "outcome": "ok"})
    assert first["when"].endswith("Z") and first["user"]
    audit.record(path, {"action": "disable", "ce": "CE1", "outcome": "ok", "when": "fixed"})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["enable", "disable"]
    assert json.loads(lines[1])["when"] == "fixed"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_record_never_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.record(path, {"n": 1})
    inode = path.stat().st_ino
    before = path.read_bytes()
    audit.record(path, {"n": 2})
    assert path.stat().st_ino == inode and path.read_bytes().startswith(before)


def test_concurrent_records_keep_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    def write(k: int) -> None:
        for i in range(25):
            audit.record(path, {"writer": k, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = audit.read(path)
    assert len(records) == 200 and all(r.ok for r in records)


def test_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.record(path, {"n": 1})
    with path.open("ab") as handle:
        handle.write(b'{"n": 2, "cut')
    audit.record(path, {"n": 3})
    records = audit.read(path)
    assert [r.event["n"] if r.event else None for r in records] == [1, None, 3]
    assert records[1].error is not None and records[1].error.startswith("not JSON") and records[1].line == 2


@pytest.mark.parametrize(
    ("raw", "error"),
    [(b"\xff\xfe", "not UTF-8"), (b"[1, 2]", "not a JSON object (list)"), (b"nope", "not JSON"), (b'"text"', "not a JSON object (str)")],
)
def test_unreadable_lines_are_reported_not_dropped(tmp_path: Path, raw: bytes, error: str) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"n": 1}\n' + raw + b'\n\n{"n": 2}\n')
    records = audit.read(path)
    assert [r.line for r in records] == [1, 2, 4]
    assert records[0].event == {"n": 1} and records[2].event == {"n": 2}
    assert records[1].event is None and records[1].error is not None and records[1].error.startswith(error)


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert audit.read(tmp_path / "none.jsonl") == []


def test_unserialisable_event_is_refused_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with pytest.raises(ConfigError, match="JSON"):
        audit.record(path, {"bad": object()})
    assert not path.exists()


def test_unwritable_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot append"):
        audit.check_writable(blocker / "audit.jsonl")  # a file where the folder should be
    with pytest.raises(ConfigError, match="cannot append"):
        audit.record(blocker / "audit.jsonl", {"n": 1})


def run_cli(tmp_path: Path, audit_path: Path, *argv: str) -> tuple[int, str, str]:
    site = tmp_path / "site.toml"
    site.write_text(f'[audit]\npath = "{audit_path}"\n')
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_the_log_is_never_written_through_a_symbolic_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    for attempt in (lambda: audit.record(link, {"n": 1}), lambda: audit.check_writable(link), lambda: audit.read(link)):
        with pytest.raises(ConfigError, match="symbolic link") as info:
            attempt()
        assert info.value.message.startswith(f"audit.path {link}: is a symbolic link")
    assert target.read_text() == "precious\n"


def test_a_dangling_link_at_the_log_path_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "made-by-siteadmin"
    target.parent.mkdir()
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        audit.record(link, {"n": 1})
    assert not target.exists()


@needs_root
def test_a_log_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.record(path, {"ce": "CE1", "action": "enable", "before": "CVMFS", "after": "Torrent", "outcome": "ok"})
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UntrustedFile, match="owned by nobody"):
        audit.read(path)
    with pytest.raises(UntrustedFile, match="owned by nobody"):
        audit.check_writable(path)


def test_a_log_in_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    path = folder / "audit.jsonl"
    audit.record(path, {"n": 1})
    folder.chmod(0o777)
    with pytest.raises(UntrustedFile) as info:
        audit.record(path, {"n": 2})
    assert info.value.message.startswith(f"{folder}: folder holding the audit log {path} is writable by group or others (mode 0777)")
    assert info.value.hint == f"check its content, then `chmod go-w {folder}`"


def test_a_line_longer_than_the_bound_is_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": "' + b"x" * 300 + b'"}\n{"n": 3}\n' + b"y" * 1000)
    records = list(audit.iter_records(path, max_line=100))
    assert [(r.line, r.event) for r in records] == [(1, {"n": 1}), (2, None), (3, {"n": 3}), (4, None)]
    assert records[1].error == "longer than 100 bytes, skipped" and records[1].raw.startswith('{"n": "xxx')
    assert len(records[1].raw) <= 120


def test_audit_command_refuses_a_device_instead_of_reading_it_whole(tmp_path: Path) -> None:
    code, out, err = run_cli(tmp_path, Path("/dev/zero"), "audit")
    assert (code, out) == (2, "")
    assert err == "siteadmin: config: audit.path /dev/zero: not a regular file (point audit.path at a file)\n"


def test_audit_command_shows_terminal_escapes_visibly_and_json_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit.record(path, {"action": "enable", "ce": HOSTILE_CE, "before": ["CVMFS\x9b"], "after": "Torrent", "outcome": "refused",
                        "error": "no\nsecond line"})
    code, out, err = run_cli(tmp_path, path, "audit")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\x9b" not in out
    assert out.count("\n") == 1
    assert "enable CE\\x1b[2J\\x1b]0;owned\\x07\\u202eevil  CVMFS\\x9b -> Torrent  refused: no\\nsecond line" in out
    code, out, err = run_cli(tmp_path, path, "audit", "--json")
    assert code == 0 and "\x1b" not in out  # JSON escapes it as \u001b
    assert json.loads(out)[0]["ce"] == HOSTILE_CE


def test_audit_last_keeps_only_the_last_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    for n in range(5):
        audit.record(path, {"action": "enable", "ce": f"CE{n}", "outcome": "ok"})
    code, out, _ = run_cli(tmp_path, path, "audit", "--last", "2", "--json")
    assert code == 0 and [e["ce"] for e in json.loads(out)] == ["CE3", "CE4"]
