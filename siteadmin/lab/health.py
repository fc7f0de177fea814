"""Real health checks of a running lab: every component is asked to do its job.

* ldap: bind as the reader over LDAPS, verifying the lab CA and the server name, and search.
* ssh: run a command on each WN over SSH with the admin key and the lab's known_hosts.
* rpc: ``aria2.getVersion`` on each WN's aria2c, authenticated with the RPC secret.
* tracker: an announce from each WN answered without "failure reason".
* seeder: the tracker counts a complete peer (the seeder) for the package.
* http: the package fetched over the HTTP fallback, with its size and SHA1 as published.

In netns mode the WN-side checks open their sockets inside the WN's namespace, so a rule in
the router that cuts WNs off from cern makes exactly those checks fail.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import secrets
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siteadmin.lab import bencode, netns


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """The outcome of one check against one target."""

    component: str
    target: str
    ok: bool
    detail: str


class _NsHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket is opened inside a network namespace."""

    def __init__(self, ns: str | None, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ns = ns

    def connect(self) -> None:
        self.sock = netns.connect(self._ns, self.host, self.port, self.timeout or 5.0)


def http_request(ns: str | None, host: str, port: int, path: str, *, body: bytes | None = None, timeout: float = 5.0,
                 sink: Callable[[bytes], None] | None = None) -> tuple[int, bytes]:
    """GET (or POST with ``body``) ``path`` from inside ``ns``; the body goes to ``sink`` when given.

    Raises:
        OSError: on connection failures; http.client.HTTPException on protocol errors.
    """
    conn = _NsHTTPConnection(ns, host, port, timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        response = conn.getresponse()
        if sink is None:
            return response.status, response.read()
        while block := response.read(1 << 16):
            sink(block)
        return response.status, b""
    finally:
        conn.close()


def quote(raw: bytes) -> str:
    return urllib.parse.quote_from_bytes(raw, safe="")


def announce(ns: str | None, host: str, port: int, infohash_hex: str, peer_port: int, left: int, timeout: float = 5.0) -> dict[bytes, Any]:
    """One HTTP tracker announce; returns the decoded answer.

    Raises:
        OSError, ValueError: no answer or not a bencoded dictionary.
    """
    peer_id = b"-SL0001-" + secrets.token_bytes(6).hex().encode()
    query = (f"info_hash={quote(bytes.fromhex(infohash_hex))}&peer_id={quote(peer_id)}&port={peer_port}"
             f"&uploaded=0&downloaded=0&left={left}&compact=1&numwant=0")
    status, data = http_request(ns, host, port, f"/announce?{query}", timeout=timeout)
    answer = bencode.decode(data)
    if not isinstance(answer, dict):
        raise ValueError(f"HTTP {status}: not a bencoded dictionary")  # noqa: TRY004 - a bad answer, not a bad argument
    return answer


def scrape(ns: str | None, host: str, port: int, infohash_hex: str, timeout: float = 5.0) -> dict[bytes, Any]:
    """The tracker's counts for one torrent (complete, incomplete, downloaded).

    Raises:
        OSError, ValueError, KeyError: no answer or the torrent unknown.
    """
    raw = bytes.fromhex(infohash_hex)
    _, data = http_request(ns, host, port, f"/scrape?info_hash={quote(raw)}", timeout=timeout)
    answer = bencode.decode(data)
    files = answer[b"files"]
    counts: dict[bytes, Any] = files[raw]
    return counts


def rpc_call(ns: str | None, port: int, secret: str, method: str, params: list[Any] | None = None, timeout: float = 5.0) -> Any:
    """Call an aria2c JSON-RPC method on 127.0.0.1:port (inside ``ns``).

    Raises:
        OSError, ValueError: unreachable, or aria2c answered with an error.
    """
    payload = json.dumps({"jsonrpc": "2.0", "id": "lab", "method": method, "params": [f"token:{secret}", *(params or [])]})
    status, data = http_request(ns, "127.0.0.1", port, "/jsonrpc", body=payload.encode(), timeout=timeout)
    answer = json.loads(data)
    if "error" in answer:
        raise ValueError(f"aria2c: {answer['error'].get('message', 'error')} (HTTP {status})")
    return answer["result"]


# ---------------------------------------------------------------- the checks


def check_ldap(url: str, ca_file: Path, bind_dn: str, password_file: Path, base: str, timeout: float = 5.0) -> HealthCheck:
    """Bind over LDAPS verifying the lab CA and the server's name or address, then search the base."""
    import ldap3
    from ldap3.core.exceptions import LDAPException

    from siteadmin.directory import VerifiedTls
    from siteadmin.secrets import read_secret_file

    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    try:
        password = read_secret_file(password_file, "LDAP password")
    except Exception as exc:  # noqa: BLE001 - a config error is a failed check, not a crash
        return HealthCheck("ldap", url, False, str(exc)[:200])
    # the core's TLS: chain and name (DNS or IP SAN) verified by the standard library in the handshake
    server = ldap3.Server(host, port=parsed.port or 636, use_ssl=True, tls=VerifiedTls(host, ca_file), get_info=ldap3.NONE,
                          connect_timeout=int(timeout))
    conn = ldap3.Connection(server, user=bind_dn, password=password, receive_timeout=int(timeout), raise_exceptions=True)
    try:
        conn.open()
        conn.bind()
        conn.search(base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["o"])
        if not conn.entries:
            return HealthCheck("ldap", url, False, f"search of {base} found nothing")
        return HealthCheck("ldap", url, True, f"bind as {bind_dn.split(',')[0]} over TLS, {base} found")
    except (LDAPException, OSError) as exc:
        return HealthCheck("ldap", url, False, f"{type(exc).__name__}: {exc}"[:200])
    finally:
        with contextlib.suppress(Exception):
            conn.unbind()
        # ldap3 keeps a socket whose connect failed in conn.socket without closing it
        if conn.socket is not None:
            conn.socket.close()


def check_wns_over_ssh(site: Any, wn_list: list[Any], secret: str, parallelism: int = 32) -> list[HealthCheck]:
    """For each WN: run a command over SSH, then ``aria2.getVersion`` through an SSH tunnel to its RPC port.

    This is the path siteadmin itself takes (the WN service of ``siteadmin.remote``): the site's
    key, user and known_hosts, strict host key checking, the RPC reached on the WN's own localhost.
    """
    import aria2p

    from siteadmin.remote import Session, WNService

    token = secrets.token_hex(4)
    ports = {wn.name: wn.rpc_port for wn in wn_list}

    def work(session: Session) -> tuple[HealthCheck, HealthCheck]:
        host = session.host
        result = session.run(f"echo lab-{token}", timeout=10.0)
        if result.exit_status != 0 or result.stdout.strip() != f"lab-{token}":
            ssh = HealthCheck("ssh", host, False, f"`echo` gave status {result.exit_status}: {result.stderr.strip()[:100]}")
        else:
            ssh = HealthCheck("ssh", host, True, "command ran")
        try:
            with session.open_tunnel("127.0.0.1", ports[host]) as tunnel:
                # aria2p, as siteadmin talks to WN daemons; the secret travels in the request body
                client = aria2p.Client(host="http://127.0.0.1", port=tunnel.address[1], secret=secret, timeout=10.0)
                version: Any = client.get_version()  # annotated str in aria2p; aria2 answers a dict
            rpc = HealthCheck("rpc", host, True, f"aria2 {version.get('version', '?') if isinstance(version, dict) else version}")
        except Exception as exc:  # noqa: BLE001 - a refused tunnel or an RPC error is a failed check
            rpc = HealthCheck("rpc", host, False, f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:200])
        return ssh, rpc

    checks: list[HealthCheck] = []
    with WNService(site, parallelism=parallelism) as service:
        for result in service.run([wn.name for wn in wn_list], work):
            if result.value is not None:
                checks += list(result.value)
            else:
                why = result.error or "failed"
                checks += [HealthCheck("ssh", result.host, False, why), HealthCheck("rpc", result.host, False, "no SSH session for the tunnel")]
    return checks


def check_announce(name: str, ns: str | None, host: str, port: int, infohash_hex: str, peer_port: int, size: int) -> HealthCheck:
    try:
        answer = announce(ns, host, port, infohash_hex, peer_port, left=size, timeout=3.0)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return HealthCheck("tracker", name, False, f"announce to {host}:{port}: {type(exc).__name__}: {exc}"[:200])
    if b"failure reason" in answer:
        return HealthCheck("tracker", name, False, "tracker says: " + answer[b"failure reason"].decode(errors="replace"))
    if b"interval" not in answer:
        return HealthCheck("tracker", name, False, "announce answer without interval")
    return HealthCheck("tracker", name, True, f"announce answered (interval {answer[b'interval']} s)")


def check_seeder(ns: str | None, host: str, port: int, infohash_hex: str) -> HealthCheck:
    target = f"{host}:{port}"
    try:
        counts = scrape(ns, host, port, infohash_hex, timeout=3.0)
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException) as exc:
        return HealthCheck("seeder", target, False, f"scrape: {type(exc).__name__}: {exc}"[:200])
    complete = int(counts.get(b"complete", 0))
    if complete < 1:
        return HealthCheck("seeder", target, False, "the tracker knows no complete peer (seeder) for the package")
    return HealthCheck("seeder", target, True, f"{complete} complete peer(s) on the tracker")


def check_http(ns: str | None, host: str, port: int, name: str, size: int, sha1: str, where: str) -> HealthCheck:
    target = f"http://{host}:{port}/{name}"
    digest = hashlib.sha1(usedforsecurity=False)
    got = 0

    def sink(block: bytes) -> None:
        nonlocal got
        digest.update(block)
        got += len(block)

    try:
        status, _ = http_request(ns, host, port, "/" + urllib.parse.quote(name), timeout=10.0, sink=sink)
    except (OSError, http.client.HTTPException) as exc:
        return HealthCheck("http", target, False, f"{type(exc).__name__}: {exc}"[:200])
    if status != 200:
        return HealthCheck("http", target, False, f"HTTP {status}")
    if got != size or digest.hexdigest() != sha1:
        return HealthCheck("http", target, False, f"got {got} bytes sha1 {digest.hexdigest()[:12]}, published {size} bytes sha1 {sha1[:12]}")
    return HealthCheck("http", target, True, f"{size} bytes, sha1 matches (from {where})")


def is_root() -> bool:
    return os.geteuid() == 0
