"""The one error family of siteadmin and the exit codes it maps to.

Every failure the admin can cause or meet (bad config, refused LDAP write, unreachable
service) is a ``SiteadminError`` carrying a one-line message and an optional hint. The CLI
prints ``siteadmin: <category>: <message>`` and exits with ``exit_code_for(error)``; the
console shows the same message in a notice. Nothing else should reach the admin as a traceback.

It also owns the two other ways text reaches the admin from the core: ``warn`` (a one-line
warning that does not stop the work; the CLI prints it as ``siteadmin: warning: ...``, the
console shows it as a notice) and ``printable`` (what every face applies to text before it
reaches a terminal, so names from LDAP, the audit log or a WN cannot drive the terminal).
"""

from __future__ import annotations

import contextlib
import enum
import sys
import threading
import unicodedata
from collections.abc import Callable, Iterator


class ExitCode(enum.IntEnum):
    """Documented exit statuses of the ``siteadmin`` command."""

    OK = 0
    FAILED = 1
    """Some hosts or checks failed; the run itself completed."""
    USAGE = 2
    """Bad command line or bad site config."""
    UNREACHABLE = 3
    """A service (LDAP, SSH, RPC) could not be reached or refused us."""
    BUSY = 4
    """Another siteadmin run holds the site lock (a scheduled run overlapping the last one); nothing was done."""
    INTERRUPTED = 130


class SiteadminError(Exception):
    """Base of every error meant for the admin's eyes.

    Args:
        message: one line naming the field or host and what is allowed.
        hint: optional second sentence saying what to do about it.
    """

    category = "error"
    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint joined on one line, as printed after the category."""
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(SiteadminError):
    """The command line asks for something that does not make sense."""

    category = "usage"
    exit_code = ExitCode.USAGE


class ConfigError(SiteadminError):
    """The site config is missing, unreadable or holds a bad value."""

    category = "config"
    exit_code = ExitCode.USAGE


class UntrustedFile(ConfigError):
    """A file or folder siteadmin reads is owned by another user or writable by others."""

    category = "untrusted"


class InventoryError(ConfigError):
    """A hostlist pattern or group name that cannot be resolved."""

    category = "hosts"


class ServiceUnreachable(SiteadminError):
    """A service (LDAP, SSH, aria2c RPC) could not be reached or did not answer."""

    category = "unreachable"
    exit_code = ExitCode.UNREACHABLE


class PermissionDenied(SiteadminError):
    """A service was reached but refused the operation (bad credentials, no write access)."""

    category = "denied"
    exit_code = ExitCode.UNREACHABLE


class ConflictError(SiteadminError):
    """Someone else changed the object between our read and our write."""

    category = "conflict"
    exit_code = ExitCode.FAILED


class BusyError(SiteadminError):
    """Another siteadmin run holds the site-wide run lock; this run did nothing."""

    category = "busy"
    exit_code = ExitCode.BUSY


class LabError(SiteadminError):
    """The local lab site could not be started, checked or stopped."""

    category = "lab"
    exit_code = ExitCode.FAILED


def exit_code_for(error: BaseException) -> ExitCode:
    """Map any exception to the exit status the CLI returns for it."""
    if isinstance(error, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(error, SiteadminError):
        return error.exit_code
    return ExitCode.FAILED


# ---------------------------------------------------------------- text shown on a terminal

_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Control (C0, DEL, C1), format (bidi overrides and isolates, zero-width), lone surrogates, line and paragraph separators."""

_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: control and bidi characters written out visibly.

    C0 and C1 controls, DEL, Unicode format characters (bidi embeddings, overrides and isolates
    U+202A-202E and U+2066-2069, the marks U+200E/200F and U+061C, zero-width characters), line
    and paragraph separators and lone surrogates become ``\\x1b``, ``\\u202e``, ``\\n`` and so on.
    Everything else, backslashes included, is kept as it is, so the result is for reading, not
    for parsing: ``--json`` output keeps the exact values.
    """
    if text.isprintable():  # the common case: nothing to do
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _ESCAPED_CATEGORIES else c for c in text)


def printable_lines(text: str) -> str:
    """Several lines of text made printable line by line; newlines and tabs (layout) are kept."""
    if text.isprintable():
        return text
    return "\n".join("\t".join(printable(cell) for cell in line.split("\t")) for line in text.split("\n"))


# ---------------------------------------------------------------- warnings

WarningHandler = Callable[[str], None]
"""Receives one warning line (without the ``siteadmin: warning:`` prefix)."""

_handlers: list[WarningHandler] = []
_handlers_lock = threading.Lock()


def warn(message: str) -> None:
    """Tell the admin something that does not stop the work but must not go unseen (one line).

    The message goes to the handler the face installed with ``warnings_to`` (the CLI prints it on
    stderr, the console shows a notice); with none installed, to stderr as the CLI would print it.
    Safe to call from any thread.
    """
    with _handlers_lock:
        handler = _handlers[-1] if _handlers else None
    if handler is not None:
        handler(message)
    else:
        sys.stderr.write(f"siteadmin: warning: {printable(message)}\n")


@contextlib.contextmanager
def warnings_to(handler: WarningHandler) -> Iterator[None]:
    """Send ``warn`` messages to ``handler`` while the block runs (the innermost handler wins)."""
    with _handlers_lock:
        _handlers.append(handler)
    try:
        yield
    finally:
        with _handlers_lock:
            _handlers.remove(handler)
