"""SSH to the WNs: sessions with verified host keys, jump hosts and tunnels, and parallel fan-out.

``session`` opens and pools connections (``SessionPool``, ``Session.run``/``put_file``/
``open_tunnel``); ``fanout`` runs work on many hosts and folds the results; ``errors`` holds the
one-line, host-naming errors. Core: never imports the CLI or the console.
"""

from __future__ import annotations

from siteadmin.remote.errors import (
    AuthFailed,
    CommandFailed,
    CommandTimeout,
    ConnectFailed,
    HostKeyChanged,
    HostKeyUnknown,
    SshError,
    TunnelError,
)
from siteadmin.remote.fanout import HostResult, run_on_hosts, summarise
from siteadmin.remote.session import CommandResult, JumpHost, Session, SessionPool, open_session, parse_jump_host
from siteadmin.remote.tunnel import Tunnel

__all__ = [
    "AuthFailed",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectFailed",
    "HostKeyChanged",
    "HostKeyUnknown",
    "HostResult",
    "JumpHost",
    "Session",
    "SessionPool",
    "SshError",
    "Tunnel",
    "TunnelError",
    "open_session",
    "parse_jump_host",
    "run_on_hosts",
    "summarise",
]
