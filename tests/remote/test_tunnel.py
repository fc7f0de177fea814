"""Tunnels through real sshd to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from siteadmin.remote import SessionPool, TunnelError

pytestmark = pytest.mark.lab


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = f"path={self.path} via={self.client_address[0]}\n".encode() * 2000  # ~60 kB: several channel packets
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        data = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[::-1])

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_tunnel_reaches_a_port_on_the_wn(ssh_lab: Any, http_server: http.server.ThreadingHTTPServer) -> None:
    http_port = http_server.server_address[1]
    with SessionPool(ssh_lab.site()) as pool:
        with pool.session("wn002.lab").open_tunnel("127.0.0.1", int(http_port)) as tunnel:
            assert tunnel.local_host == "127.0.0.1"
            assert tunnel.local_port != http_port
            status, body = _get(tunnel.local_port, "/jsonrpc")
            assert status == 200
            assert body == b"path=/jsonrpc via=127.0.0.1\n" * 2000
            # several clients at once, each on its own channel
            results: dict[int, tuple[int, bytes]] = {}
            threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _get(tunnel.local_port, f"/n{i}"))) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert {i: results[i] for i in range(6)} == {i: (200, f"path=/n{i} via=127.0.0.1\n".encode() * 2000) for i in range(6)}
            # a request body goes the other way
            conn = http.client.HTTPConnection("127.0.0.1", tunnel.local_port, timeout=5)
            try:
                conn.request("POST", "/", body=b"0123456789" * 10000)
                assert conn.getresponse().read() == (b"0123456789" * 10000)[::-1]
            finally:
                conn.close()
            port = tunnel.local_port
        # closed: the local port no longer accepts
        with pytest.raises(ConnectionRefusedError):
            _get(port, "/")


def test_tunnel_to_a_closed_port_fails_at_once(ssh_lab: Any) -> None:
    port = ssh_lab.free_port()
    with SessionPool(ssh_lab.site()) as pool, pytest.raises(TunnelError) as info:
        pool.session("wn001.lab").open_tunnel("127.0.0.1", port)
    assert info.value.message == f"wn001.lab: cannot forward to 127.0.0.1:{port}: Connect failed"


def test_session_close_closes_its_tunnels(ssh_lab: Any, http_server: http.server.ThreadingHTTPServer) -> None:
    with SessionPool(ssh_lab.site()) as pool:
        tunnel = pool.session("wn003.lab").open_tunnel("127.0.0.1", int(http_server.server_address[1]))
        assert _get(tunnel.local_port, "/")[0] == 200
    with pytest.raises(ConnectionRefusedError):
        _get(tunnel.local_port, "/")


def test_close_ends_connections_in_flight_and_records_failures(ssh_lab: Any) -> None:
    # a raw TCP server on the "WN" that accepts and keeps the connection open without answering
    with socket.socket() as backend:
        backend.bind(("127.0.0.1", 0))
        backend.listen(4)
        backend_port = backend.getsockname()[1]
        with SessionPool(ssh_lab.site()) as pool:
            tunnel = pool.session("wn001.lab").open_tunnel("127.0.0.1", backend_port)
            client = socket.create_connection(tunnel.address, timeout=5)
            try:
                probe, _ = backend.accept()  # open_tunnel's own check that something listens
                probe.close()
                accepted, _ = backend.accept()
                with accepted:
                    client.sendall(b"ping")
                    assert accepted.recv(4) == b"ping"
                    accepted.sendall(b"pong")
                    assert client.recv(4) == b"pong"
                    start = time.monotonic()
                    tunnel.close()
                    assert time.monotonic() - start < 2
                    assert client.recv(1) == b""  # the forwarded connection was ended, not left hanging
            finally:
                client.close()
    # the backend is gone now: a tunnel opened before keeps accepting locally but records why it cannot forward
    with SessionPool(ssh_lab.site()) as pool, socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        gone.listen(1)
        port = gone.getsockname()[1]
        tunnel = pool.session("wn002.lab").open_tunnel("127.0.0.1", port)
        gone.close()
        with socket.create_connection(tunnel.address, timeout=5) as client:
            assert client.recv(1) == b""
        assert tunnel.last_error == f"wn002.lab: cannot open a channel to 127.0.0.1:{port}: Connect failed"
