"""A real slapd from siteadmin.lab.slapd on 127.0.0.1 for the directory tests, and site.toml files for it."""

from __future__ import annotations

import select
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ldap3
import pytest

from siteadmin.directory import ce_container
from siteadmin.lab.netns import free_port
from siteadmin.lab.slapd import DEFAULT_CES, SlapdSpec, prepare_slapd, start_slapd, stop_slapd
from siteadmin.secrets import read_secret_file

SITE = "LAB"
SPECIAL_CES: list[tuple[str, str | None, str]] = [
    ("ce", "CVMFS", "ce.lab.example"),
    ("ce+special", "CVMFS", "special.lab.example"),
    ("ALICE::Site, comma", "CVMFS", "comma.lab.example"),
    ("ALICE::Site", "CVMFS", "nocomma.lab.example"),
    ("star", "Parrot", "star.lab.example"),
    ("star*", "CVMFS", "starstar.lab.example"),
    ("par(en)", "CVMFS", "paren.lab.example"),
    ("back\\slash=eq;semi#", "CVMFS", "back.lab.example"),
    ("#hash <angle> \"quote\"", "CVMFS", "hash.lab.example"),
]
ALL_CES = DEFAULT_CES + SPECIAL_CES


# ------------------------------------------------ a proxy that loses the modify response
# The modify reaches slapd and is applied; the client never sees the answer: the "outcome
# unknown" case (connection died after the modify was sent), made deterministic. Plain LDAP only.

MODIFY_REQUEST = 0x66  # [APPLICATION 6] constructed


def _ber_len(data: bytes, i: int) -> tuple[int, int]:
    first = data[i]
    if first < 0x80:
        return first, i + 1
    n = first & 0x7F
    return int.from_bytes(data[i + 1 : i + 1 + n], "big"), i + 1 + n


def ops_in(data: bytes) -> list[int]:
    """protocolOp tags of the complete LDAPMessages in data (plain LDAP, one chunk)."""
    ops = []
    i = 0
    while i < len(data) and data[i] == 0x30:
        length, body = _ber_len(data, i + 1)
        if data[body] != 0x02:  # messageID INTEGER
            break
        id_len, id_start = _ber_len(data, body + 1)
        ops.append(data[id_start + id_len])
        i = body + length
    return ops


class CutProxy:
    """Forward 127.0.0.1:port to target; after a modify is answered, drop it (and maybe stop listening)."""

    def __init__(self, target_port: int, stop_listening_after_cut: bool = False) -> None:
        self.target_port = target_port
        self.stop_after = stop_listening_after_cut
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port: int = self.listener.getsockname()[1]
        self.cuts = 0
        self.armed = True
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._pipe, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _pipe(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.target_port))
        modify_sent = False
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 5)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.armed and MODIFY_REQUEST in ops_in(data):
                            modify_sent = True
                        server.sendall(data)
                    else:
                        if modify_sent:
                            # slapd answered the modify: it is applied; the client never learns it.
                            self.cuts += 1
                            self.armed = False
                            if self.stop_after:
                                self.close_listener()
                            return
                        client.sendall(data)
        finally:
            client.close()
            server.close()

    def close_listener(self) -> None:
        self._closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def close(self) -> None:
        self.close_listener()
        self._accept.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def cut_proxy() -> Iterator[Callable[..., CutProxy]]:
    made: list[CutProxy] = []

    def make(target_port: int, stop_listening_after_cut: bool = False) -> CutProxy:
        proxy = CutProxy(target_port, stop_listening_after_cut)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


class Lab:
    """A running lab slapd and what the tests need to reach it."""

    def __init__(self, spec: SlapdSpec, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.spec = spec
        self._proc = proc

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "lab not started"
        return self._proc

    def start(self) -> None:
        self._proc = start_slapd(self.spec)

    def stop(self) -> None:
        if self._proc is not None:
            stop_slapd(self._proc)

    def admin(self) -> ldap3.Connection:
        """A raw ldap3 connection as the lab admin over ldaps (test set-up and checks only)."""
        tls = ldap3.Tls(validate=0, ca_certs_file=str(self.spec.ca_file))
        server = ldap3.Server("127.0.0.1", port=self.spec.ldaps_port, use_ssl=True, tls=tls, get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(server, self.spec.admin_dn, read_secret_file(self.spec.admin_password_file), raise_exceptions=True, receive_timeout=5)
        conn.bind()
        return conn

    def methods(self) -> dict[str, tuple[str, ...]]:
        """installMethod of every CE of the site, by CE name, read with a raw connection."""
        conn = self.admin()
        try:
            base = ce_container(SITE, self.spec.base)
            conn.search(base, "(objectClass=*)", search_scope=ldap3.LEVEL, attributes=["name", "installMethod"])
            out = {}
            for entry in conn.response:
                raw = entry["raw_attributes"]
                out[raw["name"][0].decode()] = tuple(v.decode() for v in raw.get("installMethod", []))
            return out
        finally:
            conn.unbind()

    def reset(self) -> None:
        """Put every CE back to its initial installMethod."""
        conn = self.admin()
        try:
            for name, method, _host in self.spec.ces:
                conn.modify(self.spec.ce_dn(name), {"installMethod": [(ldap3.MODIFY_REPLACE, [method] if method else [])]})
        finally:
            conn.unbind()


def start_lab(
    workdir: Path, ces: list[tuple[str, str | None, str]] | None = None, require_tls: bool = True, defer_start: bool = False, **conf: Any
) -> Lab:
    spec = prepare_slapd(
        workdir, site_name=SITE, listen_host="127.0.0.1", ldap_port=free_port(), ldaps_port=free_port(),
        server_names=["localhost"], ces=ces, require_tls=require_tls, **conf,
    )
    lab = Lab(spec)
    if not defer_start:
        lab.start()
    return lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    started = start_lab(tmp_path_factory.mktemp("slapd"), ALL_CES)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def own_lab(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """own_lab(ces, require_tls=True, defer_start=False, **conf) -> a private slapd for tests that kill or break it.

    conf goes to prepare_slapd (extra_global, extra_conf: a slapd that refuses in its own way).
    """
    made: list[Lab] = []

    def make(ces: list[tuple[str, str | None, str]], require_tls: bool = True, defer_start: bool = False, **conf: Any) -> Lab:
        lab = start_lab(tmp_path / f"lab{len(made)}", ces, require_tls=require_tls, defer_start=defer_start, **conf)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        lab.stop()


@pytest.fixture
def site_for(tmp_path: Path) -> Callable[..., Path]:
    """site_for(lab, account="admin", name="site.toml", **ldap) -> a site.toml for a lab of own_lab."""

    def make(lab: Lab, account: str = "admin", name: str = "site.toml", **ldap: Any) -> Path:
        return write_site(tmp_path / name, lab.spec, account, **ldap)

    return make


@pytest.fixture(autouse=True)
def _fresh_ces(request: pytest.FixtureRequest) -> None:
    if "lab" in request.fixturenames:
        request.getfixturevalue("lab").reset()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_site(path: Path, spec: SlapdSpec, account: str = "admin", **ldap: Any) -> Path:
    """A site.toml for the lab: ldaps://localhost with the lab CA, audit log next to it."""
    settings: dict[str, Any] = {"url": f"ldaps://localhost:{spec.ldaps_port}", "base": spec.base, "ca_file": str(spec.ca_file), "timeout": 3.0}
    if account == "admin":
        settings.update(bind_dn=spec.admin_dn, password_file=str(spec.admin_password_file))
    elif account == "reader":
        settings.update(bind_dn=spec.reader_dn, password_file=str(spec.reader_password_file))
    settings.update(ldap)
    lines = ["[site]", f'name = "{SITE}"', "", "[ldap]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in settings.items() if v is not None]
    lines += ["", "[audit]", f"path = {toml_value(path.parent / 'audit.jsonl')}", ""]
    lines += ["[syslog]", "enabled = false  # a test site: the machine's syslog must not see its changes", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def make_site(tmp_path: Path, lab: Lab) -> Callable[..., Path]:
    """make_site(account="admin", name="site.toml", **ldap_overrides) -> path of a site.toml for the lab."""

    def make(account: str = "admin", name: str = "site.toml", **ldap: Any) -> Path:
        return write_site(tmp_path / name, lab.spec, account, **ldap)

    return make
