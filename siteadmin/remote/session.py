"""SSH sessions to one WN: commands with enforced time limits, SFTP, file upload and port forwards.

A ``Session`` is one authenticated connection, made by ``siteadmin.remote.pool.SessionPool``
(which resolves the target, checks the host key and authenticates). Every failure is a
``siteadmin.remote.errors.SshError`` with one line naming the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import shlex
import threading
import time
from collections.abc import Iterator

import paramiko

from siteadmin.remote.errors import CommandFailed, CommandTimeout, ConnectFailed, SshError, TunnelError
from siteadmin.remote.target import Target
from siteadmin.remote.tunnel import Tunnel

REMOTE_KILL_GRACE = 1.0
"""The remote ``timeout`` wrapper fires this long after our own deadline, so ours always wins."""


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

    @contextlib.contextmanager
    def sftp(self, timeout: float | None = None) -> Iterator[paramiko.SFTPClient]:
        """An SFTP client on its own channel of this session, closed when the block ends.

        Every SFTP request (open, read, write, stat, rename) waits at most ``timeout`` seconds for
        the WN, so a stalled WN fails the step instead of hanging the operation. A request that
        times out closes the whole session (a stalled WN wedges its connection); leave the block.

        Args:
            timeout: seconds per request; ``ssh.command_timeout`` when None.

        Yields:
            A ``paramiko.SFTPClient``; its calls raise ``OSError`` (``TimeoutError`` on a stall),
            ``EOFError`` or ``paramiko.SSHException`` as paramiko's do.

        Raises:
            SshError: SFTP cannot be started (outcome ``sftp failed``); the WN does not answer
                (outcome ``sftp timed out``; the session is closed); a ``TimeoutError`` left the block.
            ConnectFailed: the connection is gone.
        """
        limit = self._command_timeout if timeout is None else timeout
        try:
            chan = self.transport.open_session(timeout=self._connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if "Timeout" not in str(exc):  # paramiko's "Timeout opening channel."
                raise ConnectFailed(self.host, f"cannot open an SSH channel: {exc or type(exc).__name__}", outcome="connection lost") from None
            self.close()
            raise SshError(
                self.host, f"no answer opening an SSH channel within {self._connect_timeout:g} s; the WN or its sshd is stalled", outcome="sftp timed out"
            ) from None
        # invoke_subsystem waits for the WN's reply without any limit; closing the session ends
        # the wait (closing only the channel could block on a connection wedged by the stall)
        fired = threading.Event()

        def stall() -> None:
            fired.set()
            self.close()

        watchdog = threading.Timer(limit, stall)
        watchdog.daemon = True
        try:
            chan.settimeout(limit)
            watchdog.start()
            try:
                chan.invoke_subsystem("sftp")
                client = _SFTPClient(chan)
            finally:
                watchdog.cancel()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if isinstance(exc, TimeoutError) or fired.is_set():
                self.close()
                raise self._sftp_stalled(limit) from None
            chan.close()
            raise SshError(self.host, f"cannot start SFTP: {exc or type(exc).__name__}", outcome="sftp failed") from None
        try:
            yield client
        except TimeoutError:
            raise self._sftp_stalled(limit) from None
        finally:
            # closing sends a message: on a cut connection that raises EOFError, which must not
            # replace the error the block is leaving with (or end a finished block in a traceback)
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                client.close()

    def _sftp_stalled(self, limit: float) -> SshError:
        return SshError(self.host, f"no SFTP answer within {limit:g} s; the WN or its sshd is stalled", outcome="sftp timed out")

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
        """Write a file on the WN by SFTP: private fsynced temp file beside it, ``mode``, atomic rename.

        A shorthand for the file steps of ``siteadmin.remote.files`` without backup, validation or
        keeping the old owner and mode; a config rollout composes those steps itself.

        Args:
            path: absolute path of the file on the WN.
            data: the whole content.
            mode: permission bits of the finished file (the temp file is 0600 until the rename).

        Raises:
            SshError: a ``files.FileStepError`` (bad path, no such directory, permission denied,
                read-only, disk full, write failed, connection lost). The temp file is removed on failure.
        """
        from siteadmin.remote import files  # files builds on Session: imported here, not at the top

        with self.sftp() as sftp:
            temp = files.write_temp(self, path, data, sftp=sftp)
            files.install(self, temp, files.FileState(path, None), mode=mode, sftp=sftp)

    def read_file(self, path: str) -> bytes:
        """Read a whole regular file from the WN by SFTP (``files.read_file`` also gives owner and mode).

        Raises:
            SshError: missing, unreadable or not a regular file.
        """
        from siteadmin.remote import files  # files builds on Session: imported here, not at the top

        state = files.read_file(self, path)
        if state.data is None:
            raise files.FileStepError(self.host, f"cannot read {path}: no such file", outcome="read failed")
        return state.data

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


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's SFTP client that gives the whole connection up when a request times out.

    A WN that stops answering wedges its connection: once the TCP send buffer is full, a thread
    sending to it (paramiko's prefetch thread, a pipelined write) blocks forever holding the
    transport's send lock, and closing a channel waits for that lock. So the first timeout closes
    the transport, which frees such a sender. From then on writes are dropped (no answer could
    come) and every read raises ``TimeoutError``, so no request can seem to succeed, nothing waits
    out the timeout a second time, and no thread ends in a traceback.
    """

    _stalled = False

    def _give_up(self) -> None:
        self._stalled = True
        transport = self.sock.get_transport()  # the session notices: is_active() is False
        if transport is not None:
            transport.close()

    def _write_all(self, out: bytes) -> None:
        if self._stalled:
            return
        limit = self.sock.gettimeout()
        # a send into a full TCP buffer loops in paramiko's packetizer until the transport closes:
        # the channel's own timeout never fires there, so the watch closes it after ``limit``
        if limit is not None:
            _WRITE_WATCH.begin(self, time.monotonic() + limit)
        try:
            super()._write_all(out)  # type: ignore[misc]  # private in paramiko's stubs
        except TimeoutError:
            self._give_up()  # the reader of the answer raises
        except (OSError, EOFError):
            if not self._stalled:
                raise
        finally:
            if limit is not None:
                _WRITE_WATCH.end(self)

    def _read_all(self, n: int) -> bytes:
        if self._stalled:
            raise TimeoutError("the WN stopped answering")
        try:
            return super()._read_all(n)  # type: ignore[misc, no-any-return]  # private in paramiko's stubs
        except TimeoutError:
            self._give_up()
            raise
        except (OSError, EOFError):
            if self._stalled:
                raise TimeoutError("the WN stopped answering") from None
            raise


def _short(command: str, width: int = 60) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[: width - 3] + "..."


class _WriteWatch:
    """One thread for every SFTP client: gives up on a client whose write has hung past its limit.

    Cheaper than a timer per write (a rollout sends thousands): a write registers its deadline and
    removes it when done; the thread, started on first use, looks twice a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writing: dict[int, tuple[float, _SFTPClient]] = {}
        self._thread: threading.Thread | None = None

    def begin(self, client: _SFTPClient, deadline: float) -> None:
        with self._lock:
            self._writing[id(client)] = (deadline, client)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="sftp-write-watch", daemon=True)
                self._thread.start()

    def end(self, client: _SFTPClient) -> None:
        with self._lock:
            self._writing.pop(id(client), None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [client for deadline, client in self._writing.values() if deadline < now]
                for client in late:
                    self._writing.pop(id(client), None)
            for client in late:
                client._give_up()  # noqa: SLF001 - the watch acts for the client's own write


_WRITE_WATCH = _WriteWatch()

