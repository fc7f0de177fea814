"""SSH to the WNs: sessions with verified host keys, jump hosts and tunnels, and parallel fan-out.

``session`` opens and pools connections (``SessionPool``, ``Session.run``/``put_file``/
``open_tunnel``); ``fanout`` runs work on many hosts and folds the results; ``errors`` holds the
one-line, host-naming errors. Core: never imports the CLI or the console.
"""

from __future__ import annotations

import logging

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

# paramiko's transport threads log every failed handshake (a WN that accepts TCP but sends no SSH
# banner) at ERROR with a traceback; with no handler configured, Python's last-resort handler
# prints those on stderr. Our errors already say what happened, one line per host.
_paramiko_log = logging.getLogger("paramiko")
if not any(isinstance(h, logging.NullHandler) for h in _paramiko_log.handlers):
    _paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False

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
