"""The append-only audit log: one JSON object per line for every change siteadmin makes or tries.

Any core service records here (``directory`` for installMethod changes, ``rollout`` for WN
configs). ``record`` opens the file with ``O_APPEND`` (mode 0600 when it creates it), writes
the whole line with one ``write`` call and fsyncs; it never rewrites or truncates. ``read``
returns every line in order; a line that is not valid UTF-8 JSON object (a torn write, a
hand edit) comes back as an unreadable record, never hiding the lines around it.

Every event gets ``when`` (UTC, ISO 8601) and ``user`` (the local user; ``sudo_user`` when run
through sudo) unless the caller sets them. The rest of the fields are the caller's; for
changes they are ``action``, the object (``ce``, ``host``), ``before``, ``after``, ``outcome``.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siteadmin.errors import ConfigError


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


def check_writable(path: Path) -> None:
    """Make sure the audit log can be appended to, before changing anything.

    Raises:
        ConfigError: the file or its folder cannot be created or opened for appending.
    """
    path = _resolve(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
    except OSError as exc:
        raise ConfigError(f"audit.path {path}: cannot append: {exc.strerror}", "fix the path or its permissions before changing anything") from None


def record(path: Path, event: Mapping[str, Any]) -> dict[str, Any]:
    """Append one event to the audit log as a JSON line, durably.

    Args:
        path: the audit log (``site.audit.path``); created 0600 with its folder (0700) when missing.
        event: JSON-serialisable fields; ``when`` and ``user`` are added unless present.

    Returns:
        The event as written.

    Raises:
        ConfigError: the event is not JSON-serialisable or the file cannot be written.
    """
    path = _resolve(path)
    full: dict[str, Any] = {"when": now_iso(), "user": local_user()}
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
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
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


def read(path: Path) -> list[AuditRecord]:
    """Every line of the audit log in order; blank lines are skipped, unreadable ones kept as such.

    Args:
        path: the audit log.

    Returns:
        One AuditRecord per non-blank line; an empty list when the file does not exist yet.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    path = _resolve(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"audit.path {path}: cannot read: {exc.strerror}") from None
    records = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            records.append(parse_line(number, raw.rstrip(b"\r")))
    return records
