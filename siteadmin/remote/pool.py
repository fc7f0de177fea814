"""The session pool: connections to the WNs of one site for one operation.

Owns dialling (directly, or as a ``direct-tcpip`` channel through one shared jump host session),
the SSH handshake with the host key checked against known_hosts, authentication, and closing
everything (including connections still being dialled) at once.

- Keys: ``ssh.key_file`` alone when set (mode 0600 or stricter); else the ssh agent, the ssh
  config's IdentityFile entries and the default ~/.ssh keys.
- Jump host: one session to the jump host per pool carries every WN connection.

Every failure is a ``siteadmin.remote.errors.SshError`` with one line naming the host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from siteadmin.errors import ConfigError
from siteadmin.inventory import WN, Inventory
from siteadmin.remote.errors import AuthFailed, ConnectFailed, HostKeyChanged, SshError
from siteadmin.remote.knownhosts import GLOBAL_KNOWN_HOSTS, AcceptedKey, AcceptNew, KnownHosts, RefuseUnknown, known_hosts_name
from siteadmin.remote.session import Session
from siteadmin.remote.target import JumpHost, Target, load_ssh_config, resolve_jump, resolve_target
from siteadmin.site import Site

AEAD_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Asked for first (paramiko's own order puts them last): an AEAD cipher authenticates each packet
itself, where aes-ctr needs an HMAC per packet that paramiko compares byte by byte in Python. On
a rollout's many small SFTP packets that compare was ~8% of the VoBox's CPU. A WN without them
gets paramiko's usual order."""

KEEPALIVE_INTERVAL = 15
"""Seconds of silence after which a session sends an SSH keepalive, so firewalls and NAT between
the VoBox and a WN keep an idle connection (a rollout waiting on other batches). A stalled WN is
caught by the time limits of commands and SFTP requests, not by this."""


def _load_key(path: Path) -> paramiko.PKey:
    """Load ``ssh.key_file``, refusing keys others can read (as OpenSSH does)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"ssh.key_file = {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and info.st_uid == os.geteuid():
        raise ConfigError(f"ssh.key_file = {path}: readable by others (mode {stat.S_IMODE(info.st_mode):04o})", f"chmod 600 {path}")
    try:
        return paramiko.PKey.from_path(path)
    except (paramiko.PasswordRequiredException, TypeError) as exc:
        # paramiko 4+ lets cryptography's TypeError ("Key is password-protected...") through
        if isinstance(exc, TypeError) and "password" not in str(exc):
            raise ConfigError(f"ssh.key_file = {path}: not a private key paramiko can read ({exc})") from None
        raise ConfigError(
            f"ssh.key_file = {path}: protected by a passphrase", f"load it into ssh-agent (ssh-add {path}) and leave ssh.key_file empty"
        ) from None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(f"ssh.key_file = {path}: not a private key paramiko can read ({exc})") from None



def _transport(sock: Any, /, **options: Any) -> paramiko.Transport:
    """paramiko's Transport, asking for ``AEAD_CIPHERS`` before the others (``SSHClient.connect``'s ``transport_factory``)."""
    transport = paramiko.Transport(sock, **options)
    security = transport.get_security_options()
    offered = tuple(security.ciphers)
    first = tuple(c for c in AEAD_CIPHERS if c in offered)
    security.ciphers = (*first, *(c for c in offered if c not in first))
    return transport


_Sock = TypeVar("_Sock", socket.socket, paramiko.Channel)


def _abort(sock: socket.socket | paramiko.Channel) -> None:
    """Make a socket that another thread is connecting or handshaking on fail now.

    ``shutdown`` wakes a thread blocked in ``connect`` (Linux disconnects a SYN_SENT socket) and
    makes paramiko's reader see EOF; ``close`` alone would do neither.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sock.close()


def _connect_error(label: str, where: str, exc: OSError, timeout: float) -> ConnectFailed:
    if isinstance(exc, ConnectionRefusedError):
        return ConnectFailed(label, f"connection refused by {where}", "is sshd running there, on that port?", outcome="connection refused")
    if isinstance(exc, TimeoutError):
        return ConnectFailed(label, f"no answer from {where} within {timeout:g} s", "is the host up? a firewall dropping port 22?", outcome="connect timed out")
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return ConnectFailed(label, f"no route to {where}", outcome="no route to host")
    return ConnectFailed(label, f"cannot connect to {where}: {exc.strerror or exc}", outcome="unreachable")


class SessionPool:
    """Connections to the WNs of one site for one operation, one cached session per WN.

    ``session(host)`` reuses a live session (repeated commands in one operation share it; every
    cached session stays open until ``close()``, so prefer ``connect`` for one command per WN on
    hundreds of WNs); ``connect(host)`` always opens a new one that the caller closes. ``close()`` ends them all,
    and the jump host session last. Safe to use from many threads.

    Raises (constructor):
        ConfigError: unreadable key file or ssh config.
    """

    def __init__(
        self,
        site: Site,
        inventory: Inventory | None = None,
        *,
        global_known_hosts: Sequence[Path] = GLOBAL_KNOWN_HOSTS,
        accept_new: bool = False,
        on_accept: AcceptedKey | None = None,
    ) -> None:
        self.site = site
        self._accept_new = accept_new
        """Accept the key of a host no known_hosts file knows, writing it to ssh.known_hosts (``AcceptNew``)."""
        self._on_accept = on_accept
        self.ssh = site.ssh
        self.inventory = inventory if inventory is not None else Inventory(site)
        self._config = load_ssh_config(site.ssh.config_file.expanduser() if site.ssh.config_file else None)
        self._pkey = _load_key(site.ssh.key_file.expanduser()) if site.ssh.key_file else None
        self._known_files = (site.ssh.known_hosts.expanduser(), *global_known_hosts)
        self._known = KnownHosts()
        self._sessions: dict[str, Session] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._jumps: dict[JumpHost, paramiko.SSHClient | SshError] = {}
        self._opened: weakref.WeakSet[Session] = weakref.WeakSet()
        """Every session ``connect`` handed out, closed with the pool."""
        self._dialling: set[socket.socket | paramiko.Channel] = set()
        """Sockets being connected or handshaken on; ``close`` shuts them down so no worker waits out a timeout."""
        self._lock = threading.Lock()
        self._jump_lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> SessionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def target(self, host: str) -> Target:
        """Where a WN's connection goes (site config + ssh config applied)."""
        return resolve_target(self.site, self.inventory.wn(host), self._config)

    # ------------------------------------------------------------ public

    def session(self, host: str) -> Session:
        """The cached live session to ``host``, connecting when there is none.

        Raises:
            SshError: naming the host (see ``siteadmin.remote.errors``).
        """
        with self._lock:
            if self._closed:
                raise SshError(host, "the session pool is closed")
            lock = self._host_locks.setdefault(host, threading.Lock())
        with lock:
            with self._lock:
                cached = self._sessions.get(host)
            if cached is not None and cached.is_active():
                return cached
            if cached is not None:
                cached.close()
            fresh = self.connect(host)
            with self._lock:
                if self._closed:
                    fresh.close()
                    raise SshError(host, "the session pool is closed")
                self._sessions[host] = fresh
            return fresh

    def connect(self, host: str | WN) -> Session:
        """A new session to ``host`` (not cached; close it yourself, the pool's ``close`` does at the latest).

        Args:
            host: a WN name (looked up in the inventory) or a ``WN`` with its own address and port.

        Raises:
            SshError: naming the host.
            ConfigError: a bad jump host setting.
        """
        wn = host if isinstance(host, WN) else self.inventory.wn(host)
        with self._lock:
            if self._closed:
                raise SshError(wn.name, "the session pool is closed")
        target = resolve_target(self.site, wn, self._config)
        host = wn.name
        if target.proxy_command is not None:
            raise self._no_proxy_command(host)
        sock: socket.socket | paramiko.Channel
        try:
            if target.jump is not None:
                sock = self._track(host, self._via_jump(target))
            else:
                sock = self._dial(target)
            try:
                client = self._handshake(target, sock)
            finally:
                self._untrack(sock)
        except SshError as exc:
            if self._closed:  # the pool was closed under us (Ctrl-C): say so, not "handshake failed"
                raise SshError(host, "the session pool was closed while connecting", outcome="cancelled") from None
            raise exc from None
        session = Session(host, client, target, self.ssh.command_timeout, self.ssh.connect_timeout)
        with self._lock:
            if not self._closed:
                self._opened.add(session)
                return session
        session.close()
        raise SshError(host, "the session pool was closed while connecting", outcome="cancelled")

    def close(self) -> None:
        """Close every session (cached or from ``connect``), then the jump host sessions (idempotent).

        Connections still being dialled or handshaken on are shut down first, so threads waiting
        in ``connect`` return at once (with ``cancelled``) instead of at ``ssh.connect_timeout``.
        """
        with self._lock:
            self._closed = True
            dialling, self._dialling = list(self._dialling), set()
            sessions, self._sessions = [*self._sessions.values(), *self._opened], {}
            self._opened = weakref.WeakSet()
        for sock in dialling:
            _abort(sock)
        for session in dict.fromkeys(sessions):
            session.close()
        with self._jump_lock:
            jumps, self._jumps = list(self._jumps.values()), {}
        for jump in jumps:
            if isinstance(jump, paramiko.SSHClient):
                jump.close()

    # ------------------------------------------------------------ internals

    def _dial(self, target: Target) -> socket.socket:
        timeout = self.ssh.connect_timeout
        where = f"{target.address}:{target.port}"
        try:
            infos = socket.getaddrinfo(target.address, target.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConnectFailed(
                target.label,
                f"cannot resolve {target.address}: {exc.strerror}",
                "check the name, or set its address under [wns.nodes]",
                outcome="name not resolved",
            ) from None
        last: OSError = OSError(f"no address for {target.address}")
        for family, kind, proto, _, addr in infos:
            sock = self._track(target.label, socket.socket(family, kind, proto))
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
                # SFTP is request and answer: without it Nagle holds a small request back until the
                # previous one's segment is acknowledged, and the WN's delayed ACK makes that ~40 ms
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock  # still tracked: the caller untracks it after the handshake
            except OSError as exc:
                self._untrack(sock)
                sock.close()
                last = exc
            if self._closed:
                break
        raise _connect_error(target.label, where, last, timeout)

    def _track(self, label: str, sock: _Sock) -> _Sock:
        """Remember a socket being connected, so ``close`` can abort it; refused once closed."""
        with self._lock:
            if not self._closed:
                self._dialling.add(sock)
                return sock
        sock.close()
        raise SshError(label, "the session pool is closed", outcome="cancelled")

    def _untrack(self, sock: socket.socket | paramiko.Channel) -> None:
        with self._lock:
            self._dialling.discard(sock)

    def _via_jump(self, target: Target) -> paramiko.Channel:
        assert target.jump is not None
        jump = self._jump_client(target.jump)
        if isinstance(jump, SshError):
            raise type(jump)(target.label, f"via {jump.message}", jump.hint, outcome=f"jump host: {jump.outcome}")
        where = f"{target.address}:{target.port}"
        transport = jump.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectFailed(target.label, f"the connection to jump host {target.jump} is closed", outcome="jump host: connection lost")
        try:
            return transport.open_channel("direct-tcpip", (target.address, target.port), ("127.0.0.1", 0), timeout=self.ssh.connect_timeout)
        except paramiko.ChannelException as exc:
            raise ConnectFailed(
                target.label,
                f"jump host {target.jump} cannot reach {where}: {exc.text}",
                "is sshd running there? can the jump host resolve and reach it?",
                outcome="unreachable from jump host",
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectFailed(
                target.label, f"jump host {target.jump} did not open a channel to {where}: {exc}", outcome="unreachable from jump host"
            ) from None

    def _jump_client(self, jump: JumpHost) -> paramiko.SSHClient | SshError:
        """The shared session to a jump host; a failure is remembered for the pool's lifetime."""
        with self._jump_lock:
            known = self._jumps.get(jump)
            if isinstance(known, paramiko.SSHClient):
                transport = known.get_transport()
                if transport is not None and transport.is_active():
                    return known
                known.close()
            elif known is not None:
                return known
            target = resolve_jump(self.site, jump, self._config)
            if target.proxy_command is not None:
                self._jumps[jump] = self._no_proxy_command(target.label)
                return self._jumps[jump]
            sock: socket.socket | None = None
            try:
                sock = self._dial(target)
                client = self._handshake(target, sock)
            except SshError as exc:
                self._jumps[jump] = exc
                return exc
            finally:
                if sock is not None:
                    self._untrack(sock)
            self._jumps[jump] = client
            return client

    def _no_proxy_command(self, label: str) -> SshError:
        # paramiko's ProxyCommand runs the line without a shell and one process per WN; a bastion
        # is better served by ProxyJump (one shared session), and connecting straight to a host the
        # admin reaches through a proxy could reach another host: refuse, in one line
        return SshError(
            label,
            f"ProxyCommand in {self.ssh.config_file} is not supported, and connecting directly could reach another host; refusing",
            "use ProxyJump or [ssh] jump_host for a bastion, or 'ProxyCommand none' in a Host block for these WNs",
            outcome="ProxyCommand not supported",
        )

    def _handshake(self, target: Target, sock: socket.socket | paramiko.Channel) -> paramiko.SSHClient:
        """SSH handshake, host key check and authentication over a connected socket or channel."""
        files = (*target.known_hosts, *self._known_files)
        known = self._known.lookup(target.key_names, target.port, files)
        revoked = self._known.revoked(target.key_names, target.port, files)
        authorities = self._known.cert_authorities(target.key_names, target.port, files)
        policy = (
            AcceptNew(target, files, revoked, authorities, write_to=self._known_files[0], known=self._known, on_accept=self._on_accept)
            if self._accept_new
            else RefuseUnknown(target, files, revoked=revoked, authorities=authorities)
        )
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(policy)
        lookup_name = target.key_names[0]
        if known is not None:
            lookup_name = target.key_names[[known_hosts_name(n, target.port) for n in target.key_names].index(known.name)]
            for keytype, key in known.keys.items():
                client.get_host_keys().add(known.name, keytype, key)
        where = f"{target.user}@{target.address}:{target.port}"
        timeout = self.ssh.connect_timeout
        identities = [str(p) for p in target.identity_files if p.is_file()] if self._pkey is None else []
        ok = False
        try:
            client.connect(
                hostname=lookup_name,
                port=target.port,
                username=target.user,
                pkey=self._pkey,
                key_filename=identities or None,  # type: ignore[arg-type]  # paramiko takes a list too
                allow_agent=self._pkey is None,
                look_for_keys=self._pkey is None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=self.ssh.auth_timeout,
                channel_timeout=timeout,
                sock=sock,
                transport_factory=_transport,
            )
            ok = True
            transport = client.get_transport()
            if transport is not None:
                transport.set_keepalive(KEEPALIVE_INTERVAL)
        except paramiko.BadHostKeyException as exc:
            assert known is not None
            policy.refuse_revoked(exc.key)
            raise HostKeyChanged(
                target.label,
                f"HOST KEY CHANGED for {known.name}: it offers {exc.key.get_name()} {exc.key.fingerprint}, "
                f"{known.path} holds {exc.expected_key.get_name()} {exc.expected_key.fingerprint}; refusing to connect",
                "someone may be intercepting; if the WN was reinstalled, verify its new key out of band and replace the line "
                f"(ssh-keygen -R '{known.name}' -f {known.path})",
            ) from None
        except paramiko.AuthenticationException as exc:
            how = f"key {self.ssh.key_file}" if self._pkey is not None else "ssh agent and default keys"
            raise AuthFailed(
                target.label,
                f"authentication failed as {where} ({how}): {exc}",
                "is the admin's public key in the WN's authorized_keys, for that user?",
            ) from None
        except SshError:
            raise
        except paramiko.SSHException as exc:
            if "No authentication methods available" not in str(exc):
                raise ConnectFailed(target.label, f"SSH handshake with {where} failed: {exc or type(exc).__name__}", outcome="ssh handshake failed") from None
            raise AuthFailed(
                target.label,
                f"authentication failed as {where}: no key to offer (ssh.key_file is empty, and the ssh agent and default keys hold none)",
                "set ssh.key_file, or ssh-add the admin key",
            ) from None
        except TimeoutError:
            raise ConnectFailed(target.label, f"no SSH handshake with {where} within {timeout:g} s", outcome="handshake timed out") from None
        except (EOFError, OSError) as exc:
            raise ConnectFailed(target.label, f"SSH handshake with {where} failed: {exc or type(exc).__name__}", outcome="ssh handshake failed") from None
        finally:
            if not ok:
                client.close()
                sock.close()
        return client

