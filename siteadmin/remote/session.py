"""SSH sessions to WNs: host keys verified, keys from the config or the agent, jump hosts,
commands with enforced time limits, file upload and port forwards.

Everything here is decided by ``[ssh]`` of the site config, per-WN ``[wns.nodes."<host>"]``
entries and, when ``ssh.config_file`` is set, the OpenSSH client config:

- Host keys: the server's key must be in ``ssh.known_hosts`` (or /etc/ssh/ssh_known_hosts, or a
  ``UserKnownHostsFile`` the ssh config names). The entry is looked up under ``HostKeyAlias``,
  then the WN name, then its address, each as ``[name]:port`` off port 22; the first name with an
  entry decides. Unknown and changed keys are refused (paramiko ``RejectPolicy``); nothing is
  ever added to a known_hosts file.
- Keys: ``ssh.key_file`` alone when set (mode 0600 or stricter); else the ssh agent, the ssh
  config's IdentityFile entries and the default ~/.ssh keys.
- Jump host: ``ssh.jump_host`` (``[user@]host[:port]``), else the ssh config's ProxyJump. One
  session to the jump host per pool carries every WN connection as a ``direct-tcpip`` channel.
- Precedence for where to connect: a ``wns.nodes`` address/port, then the ssh config's
  HostName/Port, then the WN name and ``ssh.port``. The ssh config's User wins over ``ssh.user``.

Every failure is a ``siteadmin.remote.errors.SshError`` with one line naming the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import select
import shlex
import socket
import stat
import threading
import time
import uuid
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import paramiko
from paramiko import sftp as sftp_proto
from paramiko.hostkeys import HostKeys

from siteadmin.errors import ConfigError
from siteadmin.inventory import WN, Inventory
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
from siteadmin.remote.tunnel import Tunnel
from siteadmin.site import Site, check_host

GLOBAL_KNOWN_HOSTS: tuple[Path, ...] = (Path("/etc/ssh/ssh_known_hosts"),)
"""System-wide known_hosts read after ``ssh.known_hosts`` (grid sites often manage this one)."""

USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]*$", re.IGNORECASE)
REMOTE_KILL_GRACE = 1.0
"""The remote ``timeout`` wrapper fires this long after our own deadline, so ours always wins."""


# ---------------------------------------------------------------- pure parts


@dataclasses.dataclass(frozen=True)
class JumpHost:
    """A bastion to go through, parsed from ``[user@]host[:port]``."""

    host: str
    port: int | None = None
    user: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port is not None else ''}"


def parse_jump_host(text: str, key: str = "ssh.jump_host") -> JumpHost | None:
    """Parse ``[user@]host[:port]`` (IPv6 as ``[addr]:port``; ``ssh://`` prefix allowed).

    Returns:
        The jump host, or None for "" and "none" (connect directly).

    Raises:
        ConfigError: naming ``key`` and the accepted form.
    """
    raw = text
    text = text.strip()
    if not text or text.lower() == "none":
        return None
    bad = ConfigError(f'{key} = "{raw}": must be [user@]host[:port], like admin@bastion.example.org:2222')
    if "," in text:
        raise ConfigError(f'{key} = "{raw}": only one jump host is supported', "chain hops in ~/.ssh/config on the first bastion instead")
    text = text.removeprefix("ssh://")
    user: str | None = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not USER_RE.match(user):
            raise bad
    port_text: str | None = None
    if text.startswith("["):
        host, close, tail = text[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise bad
        port_text = tail[1:] if tail else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a name, or a bare IPv6 address without port
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise bad
        port = int(port_text)
    if check_host(host):
        raise bad
    return JumpHost(host=host, port=port, user=user)


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and as whom one SSH connection goes, after site config and ssh config are applied."""

    label: str
    """Name used in messages (the WN name, or ``jump host <spec>``)."""
    address: str
    port: int
    user: str
    key_names: tuple[str, ...]
    """Names to look the host key up under, in order."""
    identity_files: tuple[Path, ...] = ()
    known_hosts: tuple[Path, ...] = ()
    """Extra known_hosts files from the ssh config."""
    jump: JumpHost | None = None


def _config_paths(value: str | list[str] | None) -> tuple[Path, ...]:
    if not value:
        return ()
    items = value if isinstance(value, list) else value.split()
    return tuple(Path(v).expanduser() for v in items if v.lower() != "none")


def resolve_target(site: Site, wn: WN, config: paramiko.SSHConfig | None = None) -> Target:
    """Apply site config, per-node entries and the ssh config to one WN.

    Raises:
        ConfigError: a bad jump host in the site or ssh config.
    """
    entry = config.lookup(wn.name) if config is not None else paramiko.SSHConfigDict()
    node = site.wns.nodes.get(wn.name)
    address = node.address if node and node.address else entry.get("hostname", wn.address)
    if node and node.port:
        port = node.port
    elif "port" in entry:
        port = int(entry["port"])
    else:
        port = wn.port
    user = entry.get("user", site.ssh.user)
    jump = parse_jump_host(site.ssh.jump_host)
    if jump is None and "proxyjump" in entry:
        jump = parse_jump_host(entry["proxyjump"], f"ProxyJump for {wn.name} in {site.ssh.config_file}")
    return _target(wn.name, wn.name, address, port, user, entry, jump)


def resolve_jump(site: Site, jump: JumpHost, config: paramiko.SSHConfig | None = None) -> Target:
    """The connection target of a jump host (its own ssh config entry applies)."""
    entry = config.lookup(jump.host) if config is not None else paramiko.SSHConfigDict()
    address = entry.get("hostname", jump.host)
    port = jump.port if jump.port is not None else int(entry.get("port", 22))
    user = jump.user or entry.get("user", site.ssh.user)
    return _target(f"jump host {jump}", jump.host, address, port, user, entry, None)


def _target(
    label: str, name: str, address: str, port: int, user: str, entry: paramiko.SSHConfigDict, jump: JumpHost | None
) -> Target:
    """A Target; its host key may be filed under HostKeyAlias, the name, or the address (first wins)."""
    names = [entry["hostkeyalias"]] if "hostkeyalias" in entry else []
    names += [name, address]
    return Target(
        label=label,
        address=address,
        port=port,
        user=user,
        key_names=tuple(dict.fromkeys(names)),
        identity_files=_config_paths(entry.get("identityfile")),
        known_hosts=_config_paths(entry.get("userknownhostsfile")) + _config_paths(entry.get("globalknownhostsfile")),
        jump=jump,
    )


# ---------------------------------------------------------------- known hosts


@dataclasses.dataclass(frozen=True)
class KnownKey:
    """A host's known keys under one known_hosts name, and the file holding them."""

    name: str
    path: Path
    keys: dict[str, paramiko.PKey]


class KnownHosts:
    """known_hosts files, each read once, asked in order."""

    def __init__(self) -> None:
        self._files: dict[Path, HostKeys | None] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> HostKeys | None:
        with self._lock:
            if path not in self._files:
                keys: HostKeys | None = None
                if path.is_file():
                    keys = HostKeys()
                    try:
                        keys.load(str(path))
                    except (OSError, UnicodeDecodeError) as exc:
                        raise ConfigError(f"{path}: cannot read known_hosts: {exc}") from None
                self._files[path] = keys
            return self._files[path]

    def lookup(self, names: Sequence[str], port: int, files: Sequence[Path]) -> KnownKey | None:
        """The first name (in order) any file knows, with that file's keys for it."""
        for name in names:
            pattern = known_hosts_name(name, port)
            for path in files:
                keys = self._load(path)
                entry = keys.lookup(pattern) if keys is not None else None
                if entry:
                    return KnownKey(pattern, path, {kt: entry[kt] for kt in entry.keys()})
        return None


class _RefuseUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising our one-line error instead of a bare SSHException."""

    def __init__(self, target: Target, files: Sequence[Path]) -> None:
        self.target = target
        self.files = files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        t = self.target
        where = " or ".join(str(p) for p in self.files)
        looked = ", ".join(known_hosts_name(n, t.port) for n in t.key_names)
        port = f"-p {t.port} " if t.port != 22 else ""
        raise HostKeyUnknown(
            t.label,
            f"host key not in known_hosts {where} (looked up {looked}; offered {key.get_name()} {key.fingerprint})",
            f"check the fingerprint out of band, then: ssh-keyscan {port}-t {key.get_name()} {t.address} >> {self.files[0]}",
        )


# ---------------------------------------------------------------- commands


@dataclasses.dataclass(frozen=True)
class CommandResult:
    """What a remote command left: its exit status and its output, decoded as UTF-8."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _stderr_tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


class Session:
    """One authenticated SSH connection to one WN.

    Thread-safe for concurrent ``run``/``open_tunnel`` calls (each uses its own channel).
    """

    def __init__(self, host: str, client: paramiko.SSHClient, target: Target, command_timeout: float, connect_timeout: float) -> None:
        self.host = host
        self.target = target
        self._client = client
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._tunnels: list[Tunnel] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Session {self.host} {self.target.user}@{self.target.address}:{self.target.port}>"

    @property
    def transport(self) -> paramiko.Transport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectFailed(self.host, "the SSH connection is closed", outcome="connection lost")
        return transport

    def is_active(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _channel(self) -> paramiko.Channel:
        try:
            return self.transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectFailed(self.host, f"cannot open an SSH channel: {exc or type(exc).__name__}", outcome="connection lost") from None

    def run(
        self,
        command: str,
        stdin: bytes | None = None,
        timeout: float | None = None,
        *,
        check: bool = False,
        remote_kill: bool = True,
    ) -> CommandResult:
        """Run a command on the WN and wait for it, at most ``timeout`` seconds.

        Args:
            command: a shell command line (the remote user's shell runs it).
            stdin: bytes fed to the command's standard input, then EOF.
            timeout: seconds; ``ssh.command_timeout`` when None.
            check: raise ``CommandFailed`` on a non-zero exit status.
            remote_kill: wrap the command in coreutils ``timeout`` so the WN kills it (and its
                process group) shortly after we give up; closing the channel alone leaves a
                command that never writes running, and sshd refuses "signal" requests for root.

        Raises:
            CommandTimeout: the time limit passed; the channel is closed.
            CommandFailed: ``check`` and a non-zero exit status.
            ConnectFailed: the connection is gone.
        """
        limit = self._command_timeout if timeout is None else timeout
        line = command
        if remote_kill:
            line = f"timeout -k 1 {limit + REMOTE_KILL_GRACE:.3f} sh -c {shlex.quote(command)}"
        chan = self._channel()
        deadline = time.monotonic() + limit
        writer: threading.Thread | None = None
        try:
            try:
                chan.exec_command(line)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise ConnectFailed(self.host, f"cannot start the command: {exc or type(exc).__name__}", outcome="connection lost") from None
            if stdin:
                writer = threading.Thread(target=self._feed, args=(chan, stdin), name=f"stdin-{self.host}", daemon=True)
                writer.start()
            else:
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if chan.closed and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(
                        self.host, f"`{_short(command)}` still running after {limit:g} s; stopped", "raise ssh.command_timeout if it needs longer"
                    )
                if chan.eof_received:
                    # no more output can come (and the channel's pipe stays readable): wait for the status
                    chan.status_event.wait(min(remaining, 0.2))
                else:
                    select.select([chan], [], [], min(remaining, 0.2))
            status = chan.recv_exit_status() if chan.exit_status_ready() else -1
        finally:
            chan.close()
            if writer is not None:
                writer.join(1.0)
        result = CommandResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and not result.ok:
            tail = _stderr_tail(result.stderr)
            raise CommandFailed(
                self.host,
                f"`{_short(command)}` exited with status {status}" + (f": {tail}" if tail else ""),
                outcome=f"command failed (status {status})",
            )
        return result

    @staticmethod
    def _feed(chan: paramiko.Channel, data: bytes) -> None:
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            chan.sendall(data)
            chan.shutdown_write()

    def put_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Write a file on the WN by SFTP: private temp file in the same directory, final mode, atomic rename.

        The temp file is created with mode 0600 in the SFTP open request itself (and set to 0600
        again, and checked, before the first byte is written), so a file holding secrets is never
        readable by others, not even half-written; ``mode`` is applied just before the rename.

        Args:
            path: absolute path of the file on the WN.
            data: the whole content.
            mode: permission bits of the finished file.

        Raises:
            SshError: a path that is not absolute or names no file; SFTP refused (no such
                directory, permission denied, no space). The temp file is removed on failure.
        """
        directory, _, name = path.rpartition("/")
        if not path.startswith("/") or not name or name in (".", ".."):
            raise SshError(self.host, f"cannot write {path!r}: the path must be absolute and name a file, like /etc/aria2/aria2c.conf", outcome="bad path")
        tmp = f"{directory}/.{name}.siteadmin-{uuid.uuid4().hex[:8]}.tmp"
        try:
            sftp = self._client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(self.host, f"cannot start SFTP: {exc}", outcome="sftp failed") from None
        leftover = True  # from here on, a failure removes the temp file (its random name is ours)
        try:
            with _create_private(sftp, tmp) as handle:
                handle.set_pipelined(True)
                handle.write(data)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, path)
            leftover = False
        except (OSError, EOFError, paramiko.SSHException) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise SshError(self.host, f"cannot write {path}: {why}", outcome="write failed") from None
        finally:
            if leftover:
                with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                    sftp.remove(tmp)
            sftp.close()

    def read_file(self, path: str) -> bytes:
        """Read a whole file from the WN by SFTP.

        Raises:
            SshError: missing or unreadable file.
        """
        try:
            sftp = self._client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(self.host, f"cannot start SFTP: {exc}", outcome="sftp failed") from None
        try:
            with sftp.open(path, "rb") as handle:
                return handle.read()
        except (OSError, paramiko.SSHException) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise SshError(self.host, f"cannot read {path}: {why}", outcome="read failed") from None
        finally:
            sftp.close()

    def open_tunnel(self, remote_host: str, remote_port: int, *, local_port: int = 0) -> Tunnel:
        """Forward a local port (127.0.0.1, free unless given) to ``remote_host:remote_port`` seen from the WN.

        The tunnel is closed with the session at the latest.

        Raises:
            TunnelError: the local port cannot be bound, or the WN refuses forwarding.
        """
        transport = self.transport
        tunnel = Tunnel(self.host, transport, remote_host, remote_port, local_port=local_port, open_timeout=self._connect_timeout)
        # one channel up front, so a WN that forbids forwarding or has nothing listening fails here
        try:
            probe = transport.open_channel("direct-tcpip", (remote_host, remote_port), ("127.0.0.1", 0), timeout=self._connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            tunnel.close()
            text = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc) or type(exc).__name__
            raise TunnelError(self.host, f"cannot forward to {remote_host}:{remote_port}: {text}") from None
        probe.close()
        with self._lock:
            self._tunnels.append(tunnel)
        return tunnel

    def close(self) -> None:
        """Close tunnels, then the connection (idempotent)."""
        with self._lock:
            tunnels, self._tunnels = self._tunnels, []
        for tunnel in tunnels:
            tunnel.close()
        self._client.close()


def _create_private(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
    """Create ``path`` for writing with mode 0600 set by the open request itself (O_EXCL).

    ``SFTPClient.open`` sends no attributes, so the server creates the file with its default mode
    (0644 after umask) and a chmod afterwards leaves a window; OpenSSH's sftp-server passes the
    requested permissions to open(2). paramiko has no public call for this, hence ``_request``.
    For a server that ignores them the handle is chmodded to 0600 and checked, still empty.

    Raises:
        OSError: the server refused (exists, no such directory, permission denied), or the file
            cannot be made private.
    """
    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = 0o600
    flags = sftp_proto.SFTP_FLAG_WRITE | sftp_proto.SFTP_FLAG_CREATE | sftp_proto.SFTP_FLAG_EXCL
    kind, msg = sftp._request(sftp_proto.CMD_OPEN, path, flags, attrs)  # type: ignore[attr-defined]  # no public API takes attrs
    if kind != sftp_proto.CMD_HANDLE:
        raise paramiko.SSHException(f"SFTP server answered open with message type {kind}")
    handle = paramiko.SFTPFile(sftp, msg.get_binary(), "wb")
    try:
        handle.chmod(0o600)
        private = not stat.S_IMODE(handle.stat().st_mode or 0) & 0o077
    except BaseException:
        handle.close()
        raise
    if not private:
        handle.close()
        raise OSError(errno.EPERM, "the server does not keep the temp file private (mode 0600)")
    return handle


def _short(command: str, width: int = 60) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[: width - 3] + "..."


# ---------------------------------------------------------------- connecting


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


def _load_config(path: Path | None) -> paramiko.SSHConfig | None:
    if path is None:
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except OSError as exc:
        raise ConfigError(f"ssh.config_file = {path}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - paramiko raises several types on bad configs
        raise ConfigError(f"ssh.config_file = {path}: cannot parse: {exc}") from None


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

    def __init__(self, site: Site, inventory: Inventory | None = None, *, global_known_hosts: Sequence[Path] = GLOBAL_KNOWN_HOSTS) -> None:
        self.site = site
        self.ssh = site.ssh
        self.inventory = inventory if inventory is not None else Inventory(site)
        self._config = _load_config(site.ssh.config_file.expanduser() if site.ssh.config_file else None)
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

    def _handshake(self, target: Target, sock: socket.socket | paramiko.Channel) -> paramiko.SSHClient:
        """SSH handshake, host key check and authentication over a connected socket or channel."""
        files = (*target.known_hosts, *self._known_files)
        known = self._known.lookup(target.key_names, target.port, files)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(_RefuseUnknown(target, files))
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
            )
            ok = True
        except paramiko.BadHostKeyException as exc:
            assert known is not None
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


@contextlib.contextmanager
def open_session(site: Site, host: str) -> Iterator[Session]:
    """One session to one WN, closed on exit (with its pool and any jump host session)."""
    with SessionPool(site) as pool:
        yield pool.session(host)
