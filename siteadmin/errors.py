"""The one error family of siteadmin and the exit codes it maps to.

Every failure the admin can cause or meet (bad config, refused LDAP write, unreachable
service) is a ``SiteadminError`` carrying a one-line message and an optional hint. The CLI
prints ``siteadmin: <category>: <message>`` and exits with ``exit_code_for(error)``; the
console shows the same message in a notice. Nothing else should reach the admin as a traceback.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented exit statuses of the ``siteadmin`` command."""

    OK = 0
    FAILED = 1
    """Some hosts or checks failed; the run itself completed."""
    USAGE = 2
    """Bad command line or bad site config."""
    UNREACHABLE = 3
    """A service (LDAP, SSH, RPC) could not be reached or refused us."""
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
