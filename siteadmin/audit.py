"""The append-only audit log: one JSON object per line for every change siteadmin makes or tries.

Any core service records here (``directory`` for installMethod changes, ``rollout`` for WN
configs). ``record`` opens the file with ``O_APPEND`` (mode 0600 when it creates it), writes
the whole line with one ``write`` call and fsyncs; it never rewrites or truncates. Then it hands
the event to ``syslog_sink.forward`` (one line to the site's syslog, when one is attached for
this log; best effort, never failing the change).
``iter_records`` streams the lines in order (``read`` collects them); a line that is not a valid
UTF-8 JSON object (a torn write, a hand edit) or longer than ``MAX_LINE_BYTES`` comes back as an
unreadable record, never hiding the lines around it, and memory stays bounded whatever the file.

The log is trusted like a config (``siteadmin.trust``: owned by the user or root, not writable
by others, nor its folder) since ``ce disable`` restores the method it finds there; it is never
opened through a symbolic link (a link planted at its path would redirect the appends), and only
a regular file is read.

Every event gets ``id`` (a random hex string, so one record can name others: a switch names
the records of its steps), ``when`` (UTC, ISO 8601) and ``user`` (the local user; ``sudo_user``
when run through sudo) unless the caller sets them. ``watching`` lets a caller see every record
written while it runs (from any thread), to learn the ids of the records its steps wrote. The rest of the fields are the caller's; for
changes they are ``action``, the object (``ce``, ``host``), ``before``, ``after``, ``outcome``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import getpass
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from siteadmin import syslog_sink, trust
from siteadmin.errors import ConfigError

MAX_LINE_BYTES = 64 * 1024
"""An audit line longer than this is reported as unreadable and skipped (records are a few hundred bytes)."""

WHAT = "audit log"

_watchers: list[Callable[[Mapping[str, Any]], None]] = []
_watchers_lock = threading.Lock()


def new_id() -> str:
    """A fresh record id: 16 random hex digits."""
    return secrets.token_hex(8)


@contextlib.contextmanager
def watching(callback: Callable[[Mapping[str, Any]], None]) -> Iterator[None]:
    """Call ``callback`` with every event ``record`` writes while the block runs, from whatever thread writes it.

    A rollout writes its WNs' records from the fan-out's threads, so a thread-local would miss
    them; the caller filters what it sees (by ``run``, ``ce``...). The callback must not raise.
    """
    with _watchers_lock:
        _watchers.append(callback)
    try:
        yield
    finally:
        with _watchers_lock:
            _watchers.remove(callback)


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One line of the audit log: its event, or why it could not be read."""

    line: int
    """1-based line number in the file."""
    event: dict[str, Any] | None
    """The decoded event, None when the line is unreadable."""
    error: str | None = None
    """Why the line could not be read (None when event is set)."""
    raw: str = ""
    """The line as found (undecodable bytes replaced), for showing an unreadable line."""

    @property
    def ok(self) -> bool:
        return self.event is not None


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds and a ``Z``."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def local_user() -> str:
    """The local user running siteadmin (login name, else the numeric uid)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return str(os.getuid())


def _resolve(path: Path) -> Path:
    return Path(path).expanduser()


def _open_log(path: Path, flags: int) -> int:
    """Open the audit log without following a link at its name; the log and its folder must be trusted.

    Raises:
        ConfigError: a symbolic link, not a regular file, untrusted, or any other OSError.
    """
    trust.check_folder_of(path, WHAT)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        if os.path.islink(path):
            raise ConfigError(
                f"audit.path {path}: is a symbolic link; siteadmin does not follow it", "point audit.path at the log file itself"
            ) from None
        raise
    trust.check_opened_file(path, fd, WHAT, "point audit.path at a file", key="audit.path")
    return fd


def check_writable(path: Path) -> None:
    """Make sure the audit log can be appended to, before changing anything.

    Raises:
        ConfigError: the file or its folder cannot be created or opened for appending, the path
            is a symbolic link or not a regular file, or the log or its folder is not trusted.
    """
    path = _resolve(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(_open_log(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT))
    except OSError as exc:
        raise ConfigError(f"audit.path {path}: cannot append: {exc.strerror}", "fix the path or its permissions before changing anything") from None


def record(path: Path, event: Mapping[str, Any]) -> dict[str, Any]:
    """Append one event to the audit log as a JSON line, durably.

    Args:
        path: the audit log (``site.audit.path``); created 0600 with its folder (0700) when missing.
        event: JSON-serialisable fields; ``id``, ``when`` and ``user`` are added unless present.

    Returns:
        The event as written.

    Raises:
        ConfigError: the event is not JSON-serialisable or the file cannot be written.
    """
    path = _resolve(path)
    full: dict[str, Any] = {"id": new_id(), "when": now_iso(), "user": local_user()}
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != full["user"]:
        full["sudo_user"] = sudo_user
    full.update(event)
    try:
        line = json.dumps(full, ensure_ascii=False, sort_keys=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"audit event cannot be written as JSON: {exc}") from None
    # a value that is not valid UTF-8 (argv bytes arrive as surrogates) is kept, escaped
    data = (line + "\n").encode("utf-8", "backslashreplace")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = not os.path.lexists(path)
        fd = _open_log(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        try:
            size = os.fstat(fd).st_size
            # A torn last line (crash mid-write) must not swallow this record: start a new line.
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(0, f"short write ({written} of {len(data)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(f"audit.path {path}: cannot append: {exc.strerror}") from None
    # after the durable append: syslog is a copy for the site's log collection, best effort, never raising
    syslog_sink.forward(path, full)
    with _watchers_lock:
        watchers = list(_watchers)
    for watcher in watchers:
        watcher(full)
    return full


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_line(number: int, raw: bytes) -> AuditRecord:
    """Decode one audit line (without its newline) into an AuditRecord, never raising."""
    text = raw.decode("utf-8", errors="replace")
    try:
        event = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return AuditRecord(number, None, "not UTF-8", text)
    except ValueError as exc:
        return AuditRecord(number, None, f"not JSON ({exc.args[0].split(':')[0]})", text)
    if not isinstance(event, dict):
        return AuditRecord(number, None, f"not a JSON object ({type(event).__name__})", text)
    return AuditRecord(number, event, None, text)


def iter_records(path: Path, max_line: int = MAX_LINE_BYTES) -> Iterator[AuditRecord]:
    """Stream the audit log's lines in order; blank lines are skipped, unreadable ones kept as such.

    Memory stays bounded by ``max_line`` whatever the file holds: a longer line comes back as an
    unreadable record (its first bytes kept for showing) and the rest of it is skipped unread.

    Args:
        path: the audit log.
        max_line: the longest line decoded, in bytes.

    Yields:
        One AuditRecord per non-blank line; nothing when the file does not exist yet.

    Raises:
        ConfigError: the file exists but cannot be read, is a symbolic link or not a regular
            file, or is not trusted (``UntrustedFile``).
    """
    path = _resolve(path)
    try:
        fd = _open_log(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"audit.path {path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        number = 0
        while True:
            try:
                raw = handle.readline(max_line + 1)
            except OSError as exc:
                raise ConfigError(f"audit.path {path}: cannot read line {number + 1}: {exc.strerror}") from None
            if not raw:
                return
            number += 1
            if len(raw) > max_line and not raw.endswith(b"\n"):
                head = raw[:120].decode("utf-8", errors="replace")
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line, a bounded piece at a time
                    raw = handle.readline(max_line)
                yield AuditRecord(number, None, f"longer than {max_line} bytes, skipped", head)
                continue
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            if raw.strip():
                yield parse_line(number, raw)


def read(path: Path) -> list[AuditRecord]:
    """Every line of the audit log in order (``iter_records`` collected).

    Args:
        path: the audit log.

    Returns:
        One AuditRecord per non-blank line; an empty list when the file does not exist yet.

    Raises:
        ConfigError: the file exists but cannot be read or is not trusted.
    """
    return list(iter_records(path))
