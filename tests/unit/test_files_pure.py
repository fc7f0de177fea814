"""Pure parts of the file steps: names of temp files and backup generations, finding one, the validation command."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from siteadmin.remote.files import (
    Backup,
    FileState,
    backup_id,
    backup_name,
    find_backup,
    held_temp_path,
    is_temp_name,
    newest_first,
    output_tail,
    parse_backup_name,
    split_target,
    temp_name,
    validation_command,
)

DIGEST = hashlib.sha256(b"rpc-secret=x\n").hexdigest()
WHEN = dt.datetime(2026, 12, 1, 14, 9, 15, 123999, tzinfo=dt.UTC)


def _backup(id_: str) -> Backup:
    parsed = parse_backup_name("aria2c.conf", f"aria2c.conf.siteadmin-{id_}")
    assert parsed is not None, id_
    return Backup(parsed[0], f"/etc/aria2/aria2c.conf.siteadmin-{id_}", "/etc/aria2/aria2c.conf", parsed[1], parsed[2])


def test_backup_name_carries_utc_time_to_the_millisecond_and_a_short_hash() -> None:
    assert backup_id(WHEN, DIGEST) == f"20261201T140915.123Z-{DIGEST[:12]}"
    assert backup_name("aria2c.conf", WHEN, DIGEST) == f"aria2c.conf.siteadmin-20261201T140915.123Z-{DIGEST[:12]}"
    # a local time is written as UTC
    paris = WHEN.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert backup_id(paris, DIGEST) == backup_id(WHEN, DIGEST)


def test_parse_backup_name_round_trips_and_refuses_others() -> None:
    name = backup_name("aria2c.conf", WHEN, DIGEST)
    assert parse_backup_name("aria2c.conf", name) == (name.removeprefix("aria2c.conf.siteadmin-"), WHEN.replace(microsecond=123000), DIGEST[:12])
    for other in (
        "aria2c.conf",
        "aria2c.conf.bak",
        f"other.conf.siteadmin-20261201T140915.123Z-{DIGEST[:12]}",  # another file's backup
        f"aria2c.conf.siteadmin-20261301T140915.123Z-{DIGEST[:12]}",  # month 13
        f"aria2c.conf.siteadmin-20261201T140915.123Z-{DIGEST[:11]}",
        f"aria2c.conf.siteadmin-20261201T140915.123Z-{DIGEST[:12].upper()}",
        f"aria2c.conf.siteadmin-20261201T140915Z-{DIGEST[:12]}",
        temp_name("aria2c.conf"),
    ):
        assert parse_backup_name("aria2c.conf", other) is None, other
    # a file whose name extends ours is not ours
    assert parse_backup_name("aria2c", name) is None


def test_temp_names_are_hidden_random_and_recognised() -> None:
    first, second = temp_name("aria2c.conf"), temp_name("aria2c.conf")
    assert first != second
    assert first.startswith(".aria2c.conf.siteadmin-") and first.endswith(".tmp")
    assert is_temp_name("aria2c.conf", first)
    assert is_temp_name("aria2c.conf", temp_name("aria2c.conf", "0123abcd"))
    # the temp file of a backup of the file is ours too
    assert is_temp_name("aria2c.conf", temp_name(backup_name("aria2c.conf", WHEN, DIGEST)))
    for other in (".aria2c.conf.swp", temp_name("other.conf"), ".aria2c.conf.siteadmin-0123abcd.tmp.x", ".aria2c.conf.siteadmin-xyz.tmp", "aria2c.conf"):
        assert not is_temp_name("aria2c.conf", other), other
    assert not is_temp_name("aria2c.conf", temp_name("aria2c.conf.siteadmin-garbage"))


def test_newest_first_and_find_by_id_or_unique_prefix() -> None:
    a = _backup(f"20261130T235959.999Z-{'a' * 12}")
    b = _backup(f"20261201T140915.123Z-{'b' * 12}")
    c = _backup(f"20261201T140916.001Z-{'c' * 12}")
    assert newest_first([a, c, b]) == [c, b, a]
    assert find_backup([a, b, c], b.id) is b
    assert find_backup([a, b, c], "20261130") is a
    with pytest.raises(LookupError, match=r"^backup '20261201T1409' is ambiguous: 20261201T140916.001Z-c+, 20261201T140915.123Z-b+$"):
        find_backup([a, b, c], "20261201T1409")
    with pytest.raises(LookupError, match=r"^no backup '2025' \(there are: 20261201T140916"):
        find_backup([a, b, c], "2025")
    with pytest.raises(LookupError, match=r"there are: none"):
        find_backup([], "")


def test_validation_command_quotes_the_path_and_leaves_other_braces() -> None:
    assert validation_command("aria2c --conf-path={path} --dry-run", "/etc/aria2/.a b.tmp") == "aria2c --conf-path='/etc/aria2/.a b.tmp' --dry-run"
    assert validation_command("awk '{print}' {path} && test -s {path}", "/x;rm -rf /") == "awk '{print}' '/x;rm -rf /' && test -s '/x;rm -rf /'"
    with pytest.raises(ValueError, match="must contain {path}"):
        validation_command("aria2c --dry-run", "/x")


@pytest.mark.parametrize("path", ["aria2c.conf", "etc/aria2c.conf", "", "/tmp/", "/tmp/..", "/tmp/.", "/a\x00b"])
def test_split_target_refuses_what_names_no_file(path: str) -> None:
    with pytest.raises(ValueError, match="must be absolute and name a file"):
        split_target(path)


def test_split_target() -> None:
    assert split_target("/etc/aria2/aria2c.conf") == ("/etc/aria2", "aria2c.conf")
    assert split_target("/aria2c.conf") == ("/", "aria2c.conf")


def test_output_tail_is_one_line() -> None:
    assert output_tail("", "first\nlast line  \n\n") == "last line"
    assert output_tail("err\n", "out\n") == "err"
    assert output_tail("", "") == ""
    assert output_tail("x" * 500) == "x" * 200


def test_file_state_hash_and_absence() -> None:
    assert FileState("/x", None).exists is False and FileState("/x", None).sha256 is None
    assert FileState("/x", b"rpc-secret=x\n").sha256 == DIGEST
    assert FileState("/x", b"").exists


def test_the_lock_holders_temp_file_has_one_name_that_the_stale_scan_knows() -> None:
    held = held_temp_path("/etc/aria2/aria2c.conf")
    assert held == "/etc/aria2/.aria2c.conf.siteadmin-00000000.tmp"
    assert is_temp_name("aria2c.conf", held.rsplit("/", 1)[1])
    assert not is_temp_name("other.conf", held.rsplit("/", 1)[1])
    with pytest.raises(ValueError):
        held_temp_path("aria2c.conf")
