"""The site-wide run lock: two runs of a changing command never overlap on one site.

A scheduled ``apply`` that is still rolling out when the next one starts (cron, a systemd
timer, an admin at the console) must not start a second rollout over the first. A changing
command holds this lock for its whole run; the second run finds it held, names the holder and
exits with ``ExitCode.BUSY`` (4) having done nothing.

The lock is an ``fcntl.flock`` on a file in siteadmin's state directory for the user running
it (``state_dir``): ``$SITEADMIN_STATE_DIR`` when set, else ``/run/siteadmin`` for root and
``$XDG_STATE_HOME/siteadmin`` (``~/.local/state/siteadmin``) for anyone else. The kernel
releases a flock when its holder exits, however it exits, so a lock is never stale and never
taken over. The file holds one JSON line naming the holder (pid, user, command, start time,
host) for the message the second run prints; it is rewritten by each holder and never trusted
for anything else.

One lock per site config: the file is named after ``[site] name`` and the config file's path
(``CERN-3f2a9c1b7d.lock``), so two scheduled jobs reading the same site.toml share it, while a
test lab elsewhere on the machine has its own. Runs as different users have different state
directories: schedule changing commands as the user who runs them by hand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from siteadmin import trust
from siteadmin.audit import local_user, now_iso
from siteadmin.errors import BusyError, ConfigError, printable
from siteadmin.site import Site

STATE_ENV = "SITEADMIN_STATE_DIR"
"""Environment variable naming another state directory (for the lock)."""

ROOT_STATE_DIR = Path("/run/siteadmin")
"""Where root's run lock lives (a tmpfs, emptied at boot: a lock file needs no history)."""

WHAT = "run lock"

_HOLDER_WAIT = 0.5
"""Seconds a second run waits for a just-started holder to write its name into the lock file."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds the run lock, as the holder wrote it."""

    pid: int | None
    user: str
    command: str
    since: str
    host: str = ""

    def describe(self) -> str:
        """``pid 4242 (root on vobox01) running `siteadmin apply`, since 2026-12-01T03:00:00Z``."""
        where = f" on {self.host}" if self.host else ""
        pid = f"pid {self.pid}" if self.pid is not None else "a process"
        return printable(f"{pid} ({self.user}{where}) running `{self.command}`, since {self.since}")


def state_dir(environ: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """siteadmin's state directory for the user running it.

    Args:
        environ: the environment to read (default ``os.environ``).
        uid: the effective uid to decide for (default the current one).

    Returns:
        ``$SITEADMIN_STATE_DIR``; else ``/run/siteadmin`` for root; else ``$XDG_STATE_HOME/siteadmin``
        or ``~/.local/state/siteadmin``.
    """
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV]).expanduser()
    if (os.geteuid() if uid is None else uid) == 0:
        return ROOT_STATE_DIR
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg.startswith("/") else Path("~/.local/state").expanduser()
    return base / "siteadmin"


def lock_name(site: Site) -> str:
    """The lock file's name for a site: its name (or ``site``) and a hash of its config file's path."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", site.site.name) or "site"
    source = str(site.source.resolve()) if site.source is not None else "(built-in defaults)"
    digest = hashlib.sha256(source.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    return f"{name}-{digest}.lock"


def lock_path(site: Site, directory: Path | None = None) -> Path:
    """Where the run lock of ``site`` lives (``directory`` default: ``state_dir()``)."""
    return (directory if directory is not None else state_dir()) / lock_name(site)


def parse_holder(text: str) -> Holder | None:
    """The holder written in a lock file, None when it is empty or not siteadmin's JSON line."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return Holder(
        pid=pid if isinstance(pid, int) else None,
        user=str(data.get("user", "?")),
        command=str(data.get("command", "?")),
        since=str(data.get("since", "?")),
        host=str(data.get("host", "")),
    )


def _read_holder(fd: int) -> Holder | None:
    deadline = time.monotonic() + _HOLDER_WAIT
    while True:
        # the holder truncates and rewrites the file just after locking it: give it a moment
        holder = parse_holder(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)


def _open(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        trust.check_folder_of(path, WHAT)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{WHAT} {path}: is a symbolic link; siteadmin does not follow it", "remove the link") from None
        raise ConfigError(
            f"{WHAT} {path}: cannot open: {exc.strerror}", f"set ${STATE_ENV} to a folder this user may write to"
        ) from None
    trust.check_opened_file(path, fd, WHAT, "remove it; siteadmin creates the lock file itself")
    return fd


def _who(command: str) -> bytes:
    holder = {"pid": os.getpid(), "user": local_user(), "command": command, "since": now_iso()[:19] + "Z", "host": socket.gethostname()}
    return (json.dumps(holder, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


@contextlib.contextmanager
def hold(site: Site, command: str, directory: Path | None = None) -> Iterator[Path]:
    """Hold the site-wide run lock while the block runs; refuse at once when another run holds it.

    Args:
        site: the site whose lock to take (named by ``lock_path``).
        command: what this run is, for the message a second run prints (``siteadmin apply``).
        directory: the state directory (default ``state_dir()``).

    Yields:
        The lock file's path.

    Raises:
        BusyError: another run holds the lock; the message names it (pid, user, command, since).
        ConfigError: the lock file cannot be created or opened, is a link, not a regular file,
            or it or its folder is not trusted.
    """
    path = lock_path(site, directory)
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = holder.describe() if holder is not None else "another siteadmin run"
            raise BusyError(
                f"site lock {path} is held by {who}", "this run did nothing; it can run again once that one has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _who(command), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # a finished run leaves no name behind
    finally:
        os.close(fd)  # closing the only descriptor releases the flock


def holder_of(site: Site, directory: Path | None = None) -> Holder | None:
    """Who holds the run lock of ``site`` right now, None when nobody does.

    Raises:
        ConfigError: as ``hold``.
    """
    path = lock_path(site, directory)
    if not path.exists():
        return None
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or Holder(None, "?", "?", "?")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
