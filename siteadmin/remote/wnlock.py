"""The WN lock: a lock file next to a WN's config, taken atomically over SFTP, holder and time inside;
stale reported, never stolen.

Whatever changes a WN (a rollout or rollback of its aria2c profile, the byte-accounting rule of
``status --accounting``) takes this lock first, so two runs never work on one WN at once.

- ``lock_path``: ``<config>.siteadmin-lock`` beside the WN's config.
- ``take_lock``: the file is hard-linked into place from a private temp file (never seen empty;
  O_EXCL where the server has no hard links), holding who, since when, the pid and the run's
  random token. A held lock fails at once (``locked``, saying when its holder is a siteadmin of
  this VoBox no longer running) unless ``wait`` gives it time; one older than ``stale_after`` is
  reported (``stale lock``), never taken over.
- ``drop_lock``: removes the lock only while it still holds the taker's token (read back, or
  trusted without reading while the lock is younger than half of ``stale_after``: nobody takes
  over or removes a lock that is not stale).
- ``lock_text`` / ``parse_lock`` / ``LockInfo``: the pure part, the file's content and its age
  (unit tested in ``tests/unit/test_wnlock_pure.py``).

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import posixpath
import secrets
import socket
import time

import paramiko
from paramiko import sftp as sftp_proto

from siteadmin import audit
from siteadmin.errors import ExitCode
from siteadmin.remote import files
from siteadmin.remote.errors import SshError
from siteadmin.remote.session import Session

LOCK_SUFFIX = ".siteadmin-lock"
"""The lock file is the config's path with this appended (``/etc/aria2/aria2c.conf.siteadmin-lock``)."""
LOCK_POLL = 0.5
"""Seconds between looks at a held lock while ``take_lock``'s ``wait`` lasts."""

LOCKED = "locked"
"""Outcome of a WN whose lock another run holds."""
STALE_LOCK = "stale lock"
"""Outcome of a WN whose lock is older than ``stale_after``: reported, never taken over."""


class WNLocked(SshError):
    """The WN's lock is held by another run (``locked``) or left stale (``stale lock``)."""

    # the lock is the WN's rollout lock: a held one reads as it always has, under ``rollout``
    category = "rollout"
    outcome = LOCKED
    exit_code = ExitCode.FAILED


# ---------------------------------------------------------------- the lock file's content (pure)


@dataclasses.dataclass(frozen=True)
class LockInfo:
    """Who holds a WN's lock, as its file says."""

    holder: str
    """``user@vobox`` of the run holding it."""
    since: dt.datetime | None
    """When it was taken (UTC); None when the file does not say (torn or foreign)."""
    pid: int | None = None
    token: str = ""
    """The holding run's random id: a run removes a lock only when it still holds its own token."""

    def age(self, now: dt.datetime) -> float | None:
        """Seconds since it was taken, None when unknown."""
        return None if self.since is None else (now - self.since).total_seconds()

    def stale(self, now: dt.datetime, after: float) -> bool:
        """Older than ``after`` seconds (``[rollout] lock_stale_after``)."""
        age = self.age(now)
        return age is not None and age > after

    def describe(self) -> str:
        """``held by root@vobox1 (pid 4242) since 2026-12-01T14:09:15Z``."""
        who = self.holder or "an unknown holder"
        pid = f" (pid {self.pid})" if self.pid is not None else ""
        since = f" since {self.since.strftime('%Y-%m-%dT%H:%M:%SZ')}" if self.since is not None else ""
        return f"held by {who}{pid}{since}"


def lock_text(holder: str, token: str, now: dt.datetime, pid: int | None = None) -> str:
    """The content of a WN's lock file: one JSON object."""
    body = {"holder": holder, "since": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "pid": pid, "token": token}
    return json.dumps(body, sort_keys=True) + "\n"


def parse_lock(data: bytes, mtime: dt.datetime | None = None) -> LockInfo:
    """Who holds a lock, from its file; a torn or foreign file is held by an unknown holder since its mtime.

    Args:
        data: the lock file's bytes.
        mtime: the file's modification time, used when the content gives no time.

    Returns:
        The holder, time, pid and token the file names (empty or None where it names none).
    """
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict):
        return LockInfo("", mtime)
    holder = body.get("holder")
    since: dt.datetime | None = mtime
    text = body.get("since")
    if isinstance(text, str):
        try:
            since = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        except ValueError:
            since = mtime
    pid = body.get("pid")
    token = body.get("token")
    return LockInfo(
        holder if isinstance(holder, str) else "",
        since,
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        token if isinstance(token, str) else "",
    )


def lock_path(config_path: str) -> str:
    """The lock file of a WN's config."""
    return config_path + LOCK_SUFFIX


def holder_name() -> str:
    """Who a lock names: ``user@vobox``."""
    return f"{audit.local_user()}@{socket.gethostname()}"


def _holder_gone(info: LockInfo) -> bool:
    """The lock names a siteadmin process of this VoBox (same ``user@host``) that no longer runs."""
    if info.pid is None or info.holder != holder_name():
        return False
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it exists (another user's process)
    return False


# ---------------------------------------------------------------- the lock on the WN


@dataclasses.dataclass(frozen=True)
class HeldLock:
    """A WN's lock taken by this run."""

    path: str
    token: str
    taken: float | None = None
    """``time.monotonic()`` when it was taken (``take_lock`` sets it); ``drop_lock`` trusts a young lock to be ours."""


def take_lock(
    session: Session, sftp: paramiko.SFTPClient, config_path: str, *, holder: str, wait: float, stale_after: float, token: str | None = None
) -> HeldLock:
    """Take the WN's lock: create its file atomically (O_EXCL, 0600) with who and since when.

    Args:
        session, sftp: the WN's session and an SFTP client on it.
        config_path: the config the lock guards.
        holder: who takes it (``user@vobox``).
        wait: seconds to wait for a held lock to go; 0 fails at once.
        stale_after: seconds after which a held lock is reported as stale (never taken over).
        token: the random id written into the lock (a new one when None); only a run knowing it removes the lock.

    Returns:
        The lock, for ``drop_lock``.

    Raises:
        WNLocked: ``locked`` (naming the holder) or ``stale lock``.
        FileStepError: the lock cannot be created (no such directory, permission denied, read-only...).
    """
    path = lock_path(config_path)
    directory = posixpath.dirname(path) or "/"
    token = token or secrets.token_hex(8)
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        now = dt.datetime.now(dt.UTC)
        try:
            _create_lock(sftp, path, config_path, lock_text(holder, token, now, os.getpid()).encode())
        except FileExistsError:
            pass
        except OSError as exc:
            # SFTP v3 answers O_EXCL (and a link over an existing name) with a plain "Failure": look whether it exists
            if not _exists(sftp, path):
                raise _lock_failure(session, sftp, exc, path, directory) from None
        except (EOFError, paramiko.SSHException) as exc:
            raise _lock_failure(session, sftp, exc, path, directory) from None
        else:
            return HeldLock(path, token, time.monotonic())
        info = read_lock(sftp, path)
        if info is None:
            continue  # released between our open and our read: try again at once
        gone = " (no longer running on this VoBox: an interrupted run left it)" if _holder_gone(info) else ""
        if info.stale(now, stale_after):
            raise WNLocked(
                session.host,
                f"stale lock {path}: {info.describe()}{gone}, older than rollout.lock_stale_after {stale_after:g} s; not taken over",
                f"if no siteadmin run is still working on this WN, remove {path} on it and run again",
                outcome=STALE_LOCK,
            )
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait:g} s" if wait > 0 else ""
            hint = "another apply or rollback is working on this WN; wait for it (--wait-lock SECONDS)"
            if gone:
                hint = f"if no other siteadmin run works on this WN, remove {path} on it and run again"
            raise WNLocked(session.host, f"locked: {path} {info.describe()}{gone}{waited}", hint, outcome=LOCKED)
        time.sleep(LOCK_POLL)


def _create_lock(sftp: paramiko.SFTPClient, path: str, config_path: str, data: bytes) -> None:
    """Create the lock file at ``path`` holding ``data``, never seen empty: the content goes to a private
    temp file beside the config first, then OpenSSH's ``hardlink@openssh.com`` links it to ``path``
    (link(2) fails on an existing name: the lock stays atomic). A server without hard links gets
    the file created in place (O_EXCL) and written; a kill between the two leaves it empty.

    Raises:
        FileExistsError: the lock exists (held); OSError, EOFError, paramiko.SSHException: as SFTP's.
    """
    temp = posixpath.join(posixpath.dirname(path), files.temp_name(posixpath.basename(config_path)))
    handle = files.create_exclusive(sftp, temp)  # nothing secret in it: the open's 0600 is not checked back
    try:
        with handle:
            handle.write(data)
        try:
            sftp._request(sftp_proto.CMD_EXTENDED, "hardlink@openssh.com", temp, path)  # type: ignore[attr-defined]  # no public API
            return
        except OSError:
            if _exists(sftp, path):
                raise FileExistsError(path) from None
    finally:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.remove(temp)
    handle, _ = files.create_private(sftp, path)
    try:
        with handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            sftp.remove(path)
        raise


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.lstat(path)
    except (OSError, EOFError, paramiko.SSHException):
        return False
    return True


def read_lock(sftp: paramiko.SFTPClient, path: str) -> LockInfo | None:
    """Who holds the lock at ``path``, or None when there is no lock."""
    try:
        info = sftp.stat(path)
        with sftp.open(path, "rb") as handle:
            data = handle.read(4096)
    except FileNotFoundError:
        return None
    mtime = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC) if info.st_mtime is not None else None
    return parse_lock(data, mtime)


def drop_lock(sftp: paramiko.SFTPClient, lock: HeldLock, *, stale_after: float | None = None) -> bool:
    """Remove our lock, only if the file still holds our token (quietly: this runs on the way out).

    With ``stale_after`` (what ``take_lock`` was given), a lock taken less than half of it ago is
    removed by name without reading it back: no run takes over or removes a lock that is not
    stale (a held one is reported ``locked``; only a stale one is named for the admin to remove),
    so until then the file at the path is the one we made. The half leaves room for another
    VoBox's clock.

    Returns:
        True when no lock of ours is left (removed, gone, or another run's); False when the WN
        could not be asked (the connection is gone).
    """
    if stale_after is not None and lock.taken is not None and time.monotonic() - lock.taken < stale_after / 2:
        try:
            sftp.remove(lock.path)
        except FileNotFoundError:
            return True
        except (OSError, EOFError, paramiko.SSHException):
            return False
        return True
    try:
        held = read_lock(sftp, lock.path)
        if held is not None and held.token == lock.token:
            sftp.remove(lock.path)
    except FileNotFoundError:
        return True
    except (OSError, EOFError, paramiko.SSHException):
        return False
    return True


def _lock_failure(session: Session, sftp: paramiko.SFTPClient, exc: BaseException, path: str, directory: str) -> files.FileStepError:
    return files._failure(session, sftp, exc, f"cannot lock {path}", directory, 256)
