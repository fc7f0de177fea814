"""The WN lock's pure parts: the lock file's content, its parsing, its age and staleness, and who is gone.

The lock taken on a real WN (held, stale, waited for, left by a kill) is tested on the lab in
tests/rollout/test_apply_lab.py and tests/rollout/test_faults.py."""

from __future__ import annotations

import datetime as dt
import os
import subprocess

import pytest

from siteadmin.errors import ExitCode
from siteadmin.remote import SshError
from siteadmin.remote import wnlock as w

NOW = dt.datetime(2026, 12, 1, 14, 9, 15, 123000, tzinfo=dt.UTC)


def test_lock_text_round_trips_and_ages() -> None:
    text = w.lock_text("root@vobox", "abc123", NOW, pid=4242)
    info = w.parse_lock(text.encode())
    assert (info.holder, info.pid, info.token, info.since) == ("root@vobox", 4242, "abc123", NOW)
    assert info.describe() == "held by root@vobox (pid 4242) since 2026-12-01T14:09:15Z"
    later = NOW + dt.timedelta(seconds=3601)
    assert info.age(later) == pytest.approx(3601)
    assert info.stale(later, 3600)
    assert not info.stale(later, 3602)


@pytest.mark.parametrize("data", [b"", b"{torn", b"[1, 2]", b"\xff\xfe", b'{"holder": 5, "since": "yesterday"}'])
def test_a_torn_or_foreign_lock_is_held_by_an_unknown_holder_since_its_mtime(data: bytes) -> None:
    info = w.parse_lock(data, mtime=NOW)
    assert info.holder == "" and info.since == NOW and info.token == ""
    assert info.describe().startswith("held by an unknown holder since 2026-12-01T14:09:15Z")
    assert w.parse_lock(data).stale(NOW, 1) is False  # no time known: never called stale


def test_the_lock_file_sits_beside_the_config() -> None:
    assert w.lock_path("/etc/aria2/aria2c.conf") == "/etc/aria2/aria2c.conf.siteadmin-lock"
    assert w.lock_path("/srv/wn 2/aria2c.conf") == "/srv/wn 2/aria2c.conf.siteadmin-lock"


def test_a_holder_of_this_vobox_whose_process_ended_is_gone() -> None:
    ended = subprocess.Popen(["true"])  # noqa: S607 - a process that ends at once, for its pid
    ended.wait()
    assert w._holder_gone(w.LockInfo(w.holder_name(), NOW, pid=ended.pid))
    assert not w._holder_gone(w.LockInfo(w.holder_name(), NOW, pid=os.getpid()))  # still running
    assert not w._holder_gone(w.LockInfo("someone@elsewhere", NOW, pid=ended.pid))  # another VoBox's pid says nothing here
    assert not w._holder_gone(w.LockInfo(w.holder_name(), NOW, pid=None))


def test_a_held_lock_fails_the_wn_with_its_own_outcome_and_exit_code() -> None:
    held = w.WNLocked("wn001.lab", "locked: /etc/aria2/aria2c.conf.siteadmin-lock held by root@vobox")
    stale = w.WNLocked("wn001.lab", "stale lock /etc/aria2/aria2c.conf.siteadmin-lock", outcome=w.STALE_LOCK)
    assert isinstance(held, SshError)
    assert (held.outcome, stale.outcome) == ("locked", "stale lock")
    assert held.exit_code == stale.exit_code == ExitCode.FAILED
    assert held.category == "rollout"  # as --json and the folded failures have always named a held lock
    assert held.message == "wn001.lab: locked: /etc/aria2/aria2c.conf.siteadmin-lock held by root@vobox"
