"""aria2c's JSON-RPC on one WN, over an SSH tunnel kept open between polls, on one kept-alive HTTP connection.

aria2p's client opens a new HTTP connection for every call; a status poll of hundreds of WNs
every few seconds pays for that in CPU, so this transport keeps one ``http.client`` connection
per WN through the WN session's tunnel and sends aria2p's payloads (its method names, its
``system.multicall`` shape) over it. A connection aria2c closed is retried once on a fresh one;
a broken tunnel is reopened. The secret goes in the request body only: never in argv, a URL or
an error message.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Sequence
from typing import Any

import aria2p

from siteadmin.remote import Session, TunnelError
from siteadmin.swarm.model import REFUSED, RPC_ERROR, TIMEOUT, WRONG_SECRET

HEADERS = {"Content-Type": "application/json", "Connection": "keep-alive"}


class RpcFailure(Exception):
    """A WN's aria2c could not be read; ``reason`` is one of refused, wrong secret, timeout, rpc error."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


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
        session: the WN's SSH session; the tunnel lives as long as it (or until ``close``).
        port: ``[wns] rpc_port``.
        secret: the RPC secret (``token:`` is added here).
        timeout: seconds for one round trip.
    """

    def __init__(self, session: Session, port: int, secret: str, timeout: float) -> None:
        self.session = session
        self.port = port
        self._token = f"token:{secret}"
        self.timeout = timeout
        self._tunnel: Any = None
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def _open(self) -> http.client.HTTPConnection:
        if self._tunnel is None:
            try:
                self._tunnel = self.session.open_tunnel("127.0.0.1", self.port)
            except TunnelError as exc:
                text = exc.one_line().removeprefix(f"{self.session.host}: ")
                raise RpcFailure(_reason_of(text), _refused_detail(text, self.port)) from None
        host, port = self._tunnel.address
        self._conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the HTTP connection and the tunnel (the session stays)."""
        self._drop_connection()
        if self._tunnel is not None:
            self._tunnel.close()
            self._tunnel = None

    def _post(self, body: bytes) -> bytes:
        for attempt in (1, 2):
            conn = self._conn if self._conn is not None else self._open()
            try:
                conn.request("POST", "/jsonrpc", body, HEADERS)
                response = conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                return data
            except TimeoutError:
                self._drop_connection()
                raise RpcFailure(TIMEOUT, f"no answer from aria2c on port {self.port} within {self.timeout:g} s") from None
            except (http.client.HTTPException, OSError) as exc:
                self._drop_connection()
                tunnel_error = self._tunnel.last_error if self._tunnel is not None else None
                if tunnel_error is not None or attempt == 2:
                    # the tunnel could not reach aria2c: reopen it (its probe says why) next time
                    if self._tunnel is not None:
                        self._tunnel.close()
                        self._tunnel = None
                if attempt == 2:
                    text = tunnel_error.removeprefix(f"{self.session.host}: ") if tunnel_error else f"aria2c on port {self.port}: {exc or type(exc).__name__}"
                    raise RpcFailure(_reason_of(text), _refused_detail(text, self.port)) from None
                # a kept-alive connection aria2c has closed: once more on a fresh one
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
