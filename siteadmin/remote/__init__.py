"""SSH to the WNs: sessions with verified host keys, jump hosts and tunnels, and parallel fan-out.

One module per layer, each importing only those above it in this list:
``errors`` (the one-line, host-naming errors), ``target`` (where a connection goes: site config,
ssh config, jump host), ``knownhosts`` (reading known_hosts, refusing unknown keys), ``tunnel``
(local port forwards), ``session`` (one connection: ``Session.run``/``sftp``/``put_file``/
``read_file``/``open_tunnel``), ``pool`` (``SessionPool``: dialling, handshakes, closing),
``fanout`` (work on many hosts, results folded), ``service`` (``WNService``: the one way to work
on many WNs: pool lifetime, cancel, progress, batches). On one session, needing no pool: ``files``
(the file steps on a WN) and ``wnlock`` (the WN lock beside a WN's config, taken by a rollout
and by ``status --accounting``). Core: never imports the CLI or the console.
"""

from __future__ import annotations

import logging

from siteadmin.remote.errors import (
    AuthFailed,
    CommandFailed,
    CommandTimeout,
    ConnectFailed,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    SshError,
    TunnelError,
)
from siteadmin.remote.fanout import Batches, HostResult, Progress, fold_failures, run_on_hosts, summarise
from siteadmin.remote.pool import SessionPool
from siteadmin.remote.service import HostWork, WNService
from siteadmin.remote.session import CommandResult, Session
from siteadmin.remote.target import JumpHost, parse_jump_host
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
    "Batches",
    "CommandFailed",
    "CommandResult",
    "CommandTimeout",
    "ConnectFailed",
    "HostKeyChanged",
    "HostKeyRevoked",
    "HostKeyUnknown",
    "HostResult",
    "HostWork",
    "JumpHost",
    "Progress",
    "Session",
    "SessionPool",
    "SshError",
    "Tunnel",
    "TunnelError",
    "WNService",
    "fold_failures",
    "parse_jump_host",
    "run_on_hosts",
    "summarise",
]
