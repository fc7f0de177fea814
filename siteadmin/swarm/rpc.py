"""aria2c's JSON-RPC on one WN, over an SSH tunnel kept open between polls, one kept-alive HTTP/1.1 connection in it.

aria2p's client opens a new HTTP connection for every call (measured: 0.85 ms of CPU per call
against 0.08 ms kept alive); a status poll of hundreds of WNs every few seconds pays for that. So
each WN gets one ``direct-tcpip`` channel of its SSH session (the tunnel: aria2c listens on the
WN's loopback only) kept open between polls, and JSON-RPC requests go over it as HTTP/1.1
keep-alive POSTs with aria2p's payloads (its method names, its ``system.multicall`` shape).
The HTTP framing is the few lines aria2c's answers need (a status line, headers, a
Content-Length body): ``http.client`` over a paramiko channel file cost twice the CPU per call,
and a local forwarding port adds a thread hop per request. A connection aria2c closed is retried
once on a fresh channel. The secret goes in the request body only: never in argv, a URL or an
error message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aria2p
import paramiko

from siteadmin.remote import Session
from siteadmin.swarm.model import REFUSED, RPC_ERROR, TIMEOUT, WRONG_SECRET

MAX_ANSWER = 64 * 1024 * 1024
"""Largest answer read (a WN listing thousands of stopped downloads stays far below)."""
MAX_HEADERS = 64 * 1024


class RpcFailure(Exception):
    """A WN's aria2c could not be read; ``reason`` is one of refused, wrong secret, timeout, rpc error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _Closed(Exception):
    """The kept connection was closed by aria2c (or the channel died): worth one retry on a fresh one."""


def _reason_of(text: str) -> str:
    # sshd answers a forward to a port nobody listens on with "Connect failed" (it says no more)
    lowered = text.lower()
    return REFUSED if "refused" in lowered or "connect failed" in lowered else RPC_ERROR


def _refused_detail(text: str, port: int) -> str:
    if _reason_of(text) != REFUSED:
        return text
    return f"connection refused: nothing accepts connections on the WN's 127.0.0.1:{port} (is aria2c running?); {text}"


class WNRpc:
    """The JSON-RPC of one WN's aria2c (``127.0.0.1:port`` as the WN sees it) over ``session``.

    Args:
        session: the WN's SSH session; the channel lives as long as it (or until ``close``).
        port: ``[wns] rpc_port``.
        secret: the RPC secret (``token:`` is added here).
        timeout: seconds for one round trip.
    """

    def __init__(self, session: Session, port: int, secret: str, timeout: float) -> None:
        self.session = session
        self.port = port
        self._token = f"token:{secret}"
        self.timeout = timeout
        self._chan: paramiko.Channel | None = None
        self._buf = b""
        self._id = 0
        self._head = f"POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: "

    def _open(self) -> paramiko.Channel:
        try:
            chan = self.session.transport.open_channel(
                "direct-tcpip", ("127.0.0.1", self.port), ("127.0.0.1", 0), timeout=self.timeout
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            text = exc.text if isinstance(exc, paramiko.ChannelException) else str(exc) or type(exc).__name__
            text = f"cannot forward to 127.0.0.1:{self.port}: {text}"
            raise RpcFailure(_reason_of(text), _refused_detail(text, self.port)) from None
        chan.settimeout(self.timeout)
        self._chan, self._buf = chan, b""
        return chan

    def close(self) -> None:
        """Close the channel (the session stays)."""
        if self._chan is not None:
            self._chan.close()
            self._chan = None
        self._buf = b""

    def _recv(self, chan: paramiko.Channel) -> None:
        chunk = chan.recv(65536)
        if not chunk:
            raise _Closed
        self._buf += chunk

    def _exchange(self, chan: paramiko.Channel, body: bytes) -> bytes:
        chan.sendall(self._head.encode() + str(len(body)).encode() + b"\r\n\r\n" + body)
        while b"\r\n\r\n" not in self._buf:
            if len(self._buf) > MAX_HEADERS:
                raise RpcFailure(RPC_ERROR, f"aria2c on port {self.port} answered with oversized headers")
            self._recv(chan)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = None
        close = False
        for header in lines[1:]:
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None or not 0 <= length <= MAX_ANSWER:
            raise RpcFailure(RPC_ERROR, f"aria2c on port {self.port} answered without a usable Content-Length ({lines[0][:60]!r})")
        while len(self._buf) < length:
            self._recv(chan)
        data, self._buf = self._buf[:length], self._buf[length:]
        if close:
            self.close()
        return data

    def _post(self, body: bytes) -> bytes:
        for attempt in (1, 2):
            chan = self._chan if self._chan is not None else self._open()
            try:
                return self._exchange(chan, body)
            except TimeoutError:
                self.close()
                raise RpcFailure(TIMEOUT, f"no answer from aria2c on port {self.port} within {self.timeout:g} s") from None
            except RpcFailure:
                self.close()
                raise
            except (_Closed, OSError, EOFError, paramiko.SSHException) as exc:
                self.close()
                if attempt == 2:
                    text = f"aria2c on port {self.port} closed the connection" if isinstance(exc, _Closed) else (
                        f"aria2c on port {self.port}: {exc or type(exc).__name__}")
                    raise RpcFailure(RPC_ERROR, text) from None
                # a kept-alive connection aria2c (or the WN) has closed: once more on a fresh channel
        raise AssertionError("unreachable")  # pragma: no cover

    def multicall(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """One round trip: ``system.multicall`` of ``(method, params)`` (the token is added).

        Returns:
            Each call's result, in order.

        Raises:
            RpcFailure: unreachable, wrong secret, timeout, or an error answer.
        """
        self._id += 1
        payload = aria2p.Client.get_payload(
            aria2p.Client.MULTICALL,
            [[{"methodName": method, "params": [self._token, *params]} for method, params in calls]],
            msg_id=self._id,
        )
        raw = self._post(str(payload).encode())
        try:
            answer = json.loads(raw)
        except ValueError:
            raise RpcFailure(RPC_ERROR, f"aria2c on port {self.port} answered something that is not JSON-RPC") from None
        if not isinstance(answer, dict):
            raise RpcFailure(RPC_ERROR, f"aria2c on port {self.port} answered something that is not JSON-RPC")
        if "error" in answer:
            raise _error(answer["error"])
        results = answer.get("result")
        if not isinstance(results, list) or len(results) != len(calls):
            raise RpcFailure(RPC_ERROR, f"aria2c on port {self.port} answered {len(calls)} calls with something else")
        out = []
        for (method, _), result in zip(calls, results, strict=True):
            if isinstance(result, dict) and "code" in result:
                raise _error(result, method)
            out.append(result[0] if isinstance(result, list) and len(result) == 1 else result)
        return out


def _error(error: Any, method: str | None = None) -> RpcFailure:
    message = str(error.get("message", "error")) if isinstance(error, dict) else "error"
    if message == "Unauthorized":
        return RpcFailure(WRONG_SECRET, "aria2c refused the RPC secret (Unauthorized)")
    where = f" to {method}" if method else ""
    return RpcFailure(RPC_ERROR, f"aria2c answered{where}: {message[:200]}")
