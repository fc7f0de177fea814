"""siteadmin.audit: append-only JSON lines, durable, unreadable lines kept visible."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import pytest

from siteadmin import audit
from siteadmin.errors import ConfigError


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
