"""Local port forwards over an SSH session: a local listening port whose connections reach a
port on the WN (its 127.0.0.1 by default) through ``direct-tcpip`` channels.

This is how the VoBox talks to each WN's aria2c JSON-RPC, which listens on the WN's loopback
only. A ``Tunnel`` is a small threaded forwarder: one thread accepts, one thread per accepted
connection pumps bytes both ways (half-closes included). ``close()`` wakes every thread
through one socketpair, closes every socket and channel and joins the threads, so nothing is
left behind for the garbage collector to warn about.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any

import paramiko

from siteadmin.remote.errors import TunnelError

CHUNK = 65536


class Tunnel:
    """A local port forwarded to ``remote_host:remote_port`` as seen from the WN.

    Use as a context manager, or call ``close()``. ``last_error`` keeps the last reason a
    forwarded connection could not be opened (the local client just sees its connection closed).
    """

    def __init__(
        self,
        host: str,
        transport: paramiko.Transport,
        remote_host: str,
        remote_port: int,
        *,
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        open_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.last_error: str | None = None
        self._transport = transport
        self._open_timeout = open_timeout
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conns: list[tuple[socket.socket, paramiko.Channel]] = []
        self._listener = socket.socket(socket.AF_INET6 if ":" in local_host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((local_host, local_port))
            self._listener.listen(64)
        except OSError as exc:
            self._listener.close()
            raise TunnelError(host, f"cannot listen on {local_host}:{local_port} for a tunnel: {exc.strerror}") from None
        self.local_host, self.local_port = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        accept = threading.Thread(target=self._accept_loop, name=f"tunnel-{host}-{self.local_port}", daemon=True)
        self._threads.append(accept)
        accept.start()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to connect to locally."""
        return self.local_host, self.local_port

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Tunnel {self.local_host}:{self.local_port} -> {self.host}:{self.remote_host}:{self.remote_port}>"

    # ------------------------------------------------------------ threads

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._closed.is_set() or self._wake_r in ready:
                return
            try:
                conn, peer = self._listener.accept()
            except OSError:
                continue
            try:
                chan = self._transport.open_channel(
                    "direct-tcpip", (self.remote_host, self.remote_port), (str(peer[0]), int(peer[1])), timeout=self._open_timeout
                )
            except (paramiko.SSHException, OSError, EOFError) as exc:
                text = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc) or type(exc).__name__
                self.last_error = f"{self.host}: cannot open a channel to {self.remote_host}:{self.remote_port}: {text}"
                conn.close()
                continue
            with self._lock:
                if self._closed.is_set():
                    conn.close()
                    chan.close()
                    return
                self._conns.append((conn, chan))
                pump = threading.Thread(target=self._pump, args=(conn, chan), name=f"tunnel-pump-{self.local_port}", daemon=True)
                self._threads.append(pump)
                pump.start()

    def _pump(self, conn: socket.socket, chan: paramiko.Channel) -> None:
        local_open, remote_open = True, True
        try:
            while (local_open or remote_open) and not self._closed.is_set():
                watch: list[Any] = [self._wake_r]
                if local_open:
                    watch.append(conn)
                if remote_open:
                    watch.append(chan)
                ready, _, _ = select.select(watch, [], [])
                if self._wake_r in ready:
                    return
                if conn in ready:
                    data = conn.recv(CHUNK)
                    if data:
                        chan.sendall(data)
                    else:
                        local_open = False
                        chan.shutdown_write()
                if chan in ready:
                    data = chan.recv(CHUNK)
                    if data:
                        conn.sendall(data)
                    else:
                        remote_open = False
                        with contextlib.suppress(OSError):
                            conn.shutdown(socket.SHUT_WR)
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            chan.close()
            conn.close()
            with self._lock:
                with contextlib.suppress(ValueError):
                    self._conns.remove((conn, chan))

    # ------------------------------------------------------------ closing

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end every forwarded connection and join the threads (idempotent)."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        with self._lock:
            threads = list(self._threads)
        me = threading.current_thread()
        for thread in threads:
            if thread is not me:
                thread.join(timeout)
        with self._lock:
            for conn, chan in self._conns:
                chan.close()
                conn.close()
            self._conns.clear()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()
