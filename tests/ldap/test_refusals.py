"""An LDAP server that is busy, unavailable or wants SASL: one line saying what to do.

Real slapd where it can say it: a back-ldap database whose own upstream is gone answers 52
(unavailable); ``disallow bind_simple`` refuses every simple bind (53, "unwilling to perform
simple authentication"), as a SASL-only server does. slapd has no setting that makes it answer a
bind with 51 (busy), 48 (inappropriateAuthentication) or 8 (strongerAuthRequired), so for those
a minimal LDAP responder on 127.0.0.1 answers the one BindRequest with that code.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ldap3.protocol.rfc4511 import LDAPDN, BindResponse, LDAPMessage, LDAPString, MessageID, ProtocolOp, ResultCode
from pyasn1.codec.ber import decoder, encoder

from siteadmin.cli import main
from siteadmin.directory import Directory
from siteadmin.errors import PermissionDenied, ServiceUnreachable, SiteadminError
from siteadmin.lab.netns import free_port
from siteadmin.secrets import write_secret_file
from siteadmin.site import load_site

from .conftest import SITE, toml_value

pytestmark = pytest.mark.lab

BIND_DN = "cn=siteadmin,ou=People,o=alice,dc=cern,dc=ch"


class BindResponder:
    """Answers every BindRequest on 127.0.0.1 with one result code; nothing else (plain LDAP)."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        self.message = message
        self.binds: list[str] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with client:
                client.settimeout(5)
                self._answer(client)

    def _answer(self, client: socket.socket) -> None:
        data = b""
        while True:
            try:
                chunk = client.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            data += chunk
            while data:
                try:
                    request, data = decoder.decode(data, asn1Spec=LDAPMessage())
                except Exception:  # noqa: BLE001 - an incomplete message: read on
                    break
                op = request["protocolOp"]
                if op.getName() != "bindRequest":
                    return  # unbind (or anything else): hang up, as a server does after unbind
                self.binds.append(str(op["bindRequest"]["name"]))
                client.sendall(self._response(int(request["messageID"])))

    def _response(self, message_id: int) -> bytes:
        result = BindResponse()
        result["resultCode"] = ResultCode(self.code)
        result["matchedDN"] = LDAPDN("")
        result["diagnosticMessage"] = LDAPString(self.message)
        op = ProtocolOp()
        op["bindResponse"] = result
        message = LDAPMessage()
        message["messageID"] = MessageID(message_id)
        message["protocolOp"] = op
        return bytes(encoder.encode(message))

    def close(self) -> None:
        self.listener.close()
        self._thread.join(5)


@pytest.fixture
def responder() -> Iterator[Callable[..., BindResponder]]:
    made: list[BindResponder] = []

    def make(code: int, message: str = "") -> BindResponder:
        made.append(BindResponder(code, message))
        return made[-1]

    yield make
    for one in made:
        one.close()


def plain_site(tmp_path: Path, port: int, bind_dn: str = BIND_DN) -> Path:
    """A site.toml for a plain ldap:// server on 127.0.0.1:port (the responder speaks no TLS)."""
    password = tmp_path / "ldap.password"
    write_secret_file(password, "not-the-real-one")
    ldap = {"url": f"ldap://127.0.0.1:{port}", "starttls": False, "insecure": True, "bind_dn": bind_dn, "password_file": str(password), "timeout": 3.0}
    lines = ["[site]", f'name = "{SITE}"', "", "[ldap]", *(f"{k} = {toml_value(v)}" for k, v in ldap.items()), ""]
    lines += ["[audit]", f"path = {toml_value(tmp_path / 'audit.jsonl')}", ""]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def refused(site_file: Path) -> SiteadminError:
    with Directory(load_site(site_file)) as d, pytest.raises(SiteadminError) as err:
        d.list_ces()
    line = err.value.one_line()
    assert "\n" not in line and "Traceback" not in line
    return err.value


def run_cli(site: Path, *argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), *argv], out=out, err=err)
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), err.getvalue()
    return code, err.getvalue()


# ------------------------------------------------ busy, unavailable


def test_busy_server_says_try_again_later(tmp_path: Path, responder: Callable[..., BindResponder]) -> None:
    server = responder(51, "too many connections")
    error = refused(plain_site(tmp_path, server.port))
    assert server.binds == [BIND_DN]
    assert isinstance(error, ServiceUnreachable)
    assert f"127.0.0.1:{server.port}" in error.message and "busy" in error.message and "51" in error.message
    assert error.hint is not None and "try again" in error.hint


def test_unavailable_server_from_a_real_slapd_names_the_server_and_what_to_do(own_lab: Callable[..., Any], site_for: Callable[..., Path]) -> None:
    # A back-ldap database whose upstream is gone: slapd answers a bind under it with 52.
    gone = "o=gone"
    lab = own_lab([("CE1", "CVMFS", "ce1.lab.example")], extra_global=["moduleload back_ldap"],
                  extra_conf=["database ldap", f'suffix "{gone}"', f'uri "ldap://127.0.0.1:{free_port()}/"'])
    site = site_for(lab, bind_dn=f"cn=siteadmin,{gone}")
    error = refused(site)
    assert isinstance(error, ServiceUnreachable)
    assert f"localhost:{lab.spec.ldaps_port}" in error.message and "unavailable" in error.message and "52" in error.message
    assert error.hint is not None and "try again later" in error.hint and "ldap.url" in error.hint
    code, err = run_cli(site, "ce", "list")
    assert code == 3
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("siteadmin: ") and "try again later" in lines[0], err


# ------------------------------------------------ a server that wants SASL


@pytest.mark.parametrize(("code", "message"), [(48, ""), (8, "SASL required"), (7, "")])
def test_server_refusing_simple_bind_says_siteadmin_does_simple_bind_only(
    tmp_path: Path, responder: Callable[..., BindResponder], code: int, message: str
) -> None:
    server = responder(code, message)
    error = refused(plain_site(tmp_path, server.port))
    _says_simple_bind_only(error, f"127.0.0.1:{server.port}", code)


def test_sasl_only_slapd_says_siteadmin_does_simple_bind_only(own_lab: Callable[..., Any], site_for: Callable[..., Path]) -> None:
    lab = own_lab([("CE1", "CVMFS", "ce1.lab.example")], extra_global=["disallow bind_simple"])
    site = site_for(lab)
    error = refused(site)
    _says_simple_bind_only(error, f"localhost:{lab.spec.ldaps_port}", 53)
    code, err = run_cli(site, "ce", "list")
    assert code != 0
    lines = err.splitlines()
    assert len(lines) == 1 and "SASL" in lines[0] and "simple bind" in lines[0], err


def _says_simple_bind_only(error: SiteadminError, endpoint: str, code: int) -> None:
    assert isinstance(error, PermissionDenied)
    assert endpoint in error.message and f"{code}" in error.message
    assert "SASL" in error.message and "not supported" in error.message
    assert error.hint is not None
    assert "simple bind over TLS" in error.hint and "service account" in error.hint and "ldap.bind_dn" in error.hint
