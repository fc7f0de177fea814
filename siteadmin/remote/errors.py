"""Errors of the SSH layer, each naming the host and carrying a short, host-free outcome.

The message is the one line the admin reads (``wn003.lab: connection refused by 10.0.0.3:22``);
``outcome`` is what fan-out summaries fold hosts by (``connection refused``), so forty hosts
with the same problem print as one line.
"""

from __future__ import annotations

from siteadmin.errors import ExitCode, ServiceUnreachable


class SshError(ServiceUnreachable):
    """A WN (or the jump host) could not be reached, refused us, or a command on it failed.

    Args:
        host: the WN name the error is about.
        message: what happened, without the host (it is prefixed here).
        hint: what to do about it.
        outcome: short host-free label for summaries; the class default when None.
    """

    category = "ssh"
    outcome = "ssh failed"

    def __init__(self, host: str, message: str, hint: str | None = None, *, outcome: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint)
        self.host = host
        if outcome is not None:
            self.outcome = outcome


class ConnectFailed(SshError):
    """No SSH connection: DNS, refused, unreachable, timed out, no SSH banner."""

    category = "unreachable"
    outcome = "unreachable"


class HostKeyUnknown(SshError):
    """The host's key is in no known_hosts file we read; we refuse to guess."""

    category = "hostkey"
    outcome = "host key unknown"


class HostKeyChanged(SshError):
    """The host offered a key different from known_hosts: a reinstall, or someone in the middle."""

    category = "hostkey"
    outcome = "HOST KEY CHANGED"


class AuthFailed(SshError):
    """The host did not accept any of our keys."""

    category = "denied"
    outcome = "auth failed"


class CommandTimeout(SshError):
    """A remote command ran past its time limit and was stopped."""

    category = "timeout"
    outcome = "command timed out"
    exit_code = ExitCode.FAILED


class CommandFailed(SshError):
    """A remote command exited with a non-zero status where success was required."""

    category = "failed"
    outcome = "command failed"
    exit_code = ExitCode.FAILED


class TunnelError(SshError):
    """A port forward could not be opened through the host's sshd."""

    category = "tunnel"
    outcome = "tunnel failed"


class HostKeyRevoked(SshError):
    """The host offered a key that a known_hosts ``@revoked`` line names: compromised or retired."""

    category = "hostkey"
    outcome = "HOST KEY REVOKED"
