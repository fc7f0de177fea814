"""The LDAP layer under the CE service: connection, TLS, names, LDIF, result codes.

It owns everything that is LDAP rather than CE: the ``ldap://``/``ldaps://`` URL, a verified
TLS connection (ldaps, or StartTLS before the bind) and its simple bind, the DNs and filters of
the ALICE tree with every name escaped, LDIF lines (RFC 2849), the assertion control
(RFC 4528), and what each result code means for the admin (one ``SiteadminError`` per code,
each saying what to do). The CE service (``ces.py``) and the lab build on it.

Connections verify the server certificate against ``ldap.ca_file`` and the host name (IP SANs
included); plain LDAP only with ``ldap.insecure``. siteadmin binds with a simple bind only
(over TLS); a server that wants SASL (GSSAPI/Kerberos) is told apart and named. The bind
password comes from ``ldap.password_file`` (0600) or ``$SITEADMIN_LDAP_PASSWORD`` and is never
printed, logged or audited.
"""

from __future__ import annotations

import base64
import math
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from siteadmin import trust
from siteadmin.errors import ConfigError, PermissionDenied, ServiceUnreachable, SiteadminError, UsageError, warn
from siteadmin.secrets import read_secret_file
from siteadmin.site import LdapSection

PASSWORD_ENV = "SITEADMIN_LDAP_PASSWORD"  # noqa: S105 - the variable name, not a password
ASSERTION_CONTROL = "1.3.6.1.1.12"
"""LDAP assertion control (RFC 4528): the server applies the operation only when the filter holds."""

# Result codes of RFC 4511 that get their own message.
SUCCESS = 0
AUTH_METHOD_NOT_SUPPORTED = 7
STRONGER_AUTH_REQUIRED = 8
CONFIDENTIALITY_REQUIRED = 13
NO_SUCH_ATTRIBUTE = 16
ATTRIBUTE_OR_VALUE_EXISTS = 20
NO_SUCH_OBJECT = 32
INAPPROPRIATE_AUTHENTICATION = 48
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS = 50
BUSY = 51
UNAVAILABLE = 52
UNWILLING_TO_PERFORM = 53
ASSERTION_FAILED = 122
CONFLICT_CODES = (NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS, ASSERTION_FAILED)
"""What a compare-and-set modify gets when the value changed since it was read."""
DENIED_CODES = (STRONGER_AUTH_REQUIRED, INAPPROPRIATE_AUTHENTICATION, INSUFFICIENT_ACCESS)
"""50 for a bound DN without write access; slapd answers an anonymous write with 8."""
WANTS_SASL_CODES = (AUTH_METHOD_NOT_SUPPORTED, STRONGER_AUTH_REQUIRED, INAPPROPRIATE_AUTHENTICATION)
"""Answers to a simple bind that mean: this server wants another way to authenticate."""
SIMPLE_BIND_ONLY = (
    "siteadmin does only a simple bind over TLS: ask the LDAP team for a service account that may "
    "simple-bind and set ldap.bind_dn and ldap.password_file to it"
)


# ---------------------------------------------------------------- names in the ALICE tree


def check_ce_name(name: str) -> str:
    """Return name when it can be a CE name (one non-empty line).

    Raises:
        UsageError: empty, or holding control characters.
    """
    if not name or not name.strip():
        raise UsageError("a CE name must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise UsageError(f"CE name {name!r} holds control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # bytes that are not UTF-8 reach us from argv as surrogates; LDAP names are UTF-8
        shown = name.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise UsageError(f"CE name '{shown}' is not valid UTF-8 text") from None
    return name


def site_dn(site: str, base: str) -> str:
    """DN of a site's entry, ``ou=<SITE>,ou=Sites,<base>``, the site name escaped."""
    return f"ou={escape_rdn(site)},ou=Sites,{base}"


def ce_container(site: str, base: str) -> str:
    """DN of a site's CE container, ``ou=CE,ou=Services,ou=<SITE>,ou=Sites,<base>``, the site name escaped."""
    return f"ou=CE,ou=Services,{site_dn(site, base)}"


def ce_dn(name: str, site: str, base: str) -> str:
    """DN of a CE entry, the CE name escaped so that no name can point at another entry.

    Raises:
        UsageError: the name is empty or holds control characters.
    """
    return f"name={escape_rdn(check_ce_name(name))},{ce_container(site, base)}"


def ce_filter(name: str) -> str:
    """An equality filter for a CE name, with ``* ( ) \\ NUL`` escaped."""
    return f"(name={escape_filter_chars(check_ce_name(name))})"


# ---------------------------------------------------------------- BER and LDIF


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def absent_assertion(attr: str) -> bytes:
    """BER of the filter ``(!(attr=*))`` as the assertion control value (RFC 4528, RFC 4511 Filter)."""
    present = b"\x87" + _ber_length(len(attr.encode())) + attr.encode()  # [7] present
    return b"\xa2" + _ber_length(len(present)) + present  # [2] not


def ldif_line(attr: str, value: str) -> str:
    """One LDIF attribute line, base64 (``attr:: ...``) when the value is not a SAFE-STRING (RFC 2849).

    Values with a trailing space are base64 too: the RFC allows them plain, but tools strip them.
    """
    safe = (
        value.isascii()
        and not value.startswith((" ", ":", "<"))
        and not value.endswith(" ")
        and not any(c in value for c in "\r\n\0")
    )
    if safe:
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def ldif_assertion_control(attr: str) -> str:
    """The LDIF ``control:`` line of the assertion ``(!(attr=*))``, critical, as ldapmodify takes it."""
    value = base64.b64encode(absent_assertion(attr)).decode("ascii")
    return f"control: {ASSERTION_CONTROL} true:: {value}"


# ---------------------------------------------------------------- URL and messages


def parse_url(url: str) -> tuple[str, int, bool]:
    """(host, port, ldaps?) of an ldap:// or ldaps:// URL.

    Raises:
        ConfigError: not an LDAP URL.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"ldap.url = {url!r}: not an LDAP URL") from None
    if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
        raise ConfigError(f"ldap.url = {url!r}: must be ldap://host[:port] or ldaps://host[:port]")
    ldaps = parts.scheme == "ldaps"
    return parts.hostname, port or (636 if ldaps else 389), ldaps


def one_line(text: object, limit: int = 200) -> str:
    """text as one line of at most limit characters, control characters dropped (server text is untrusted)."""
    line = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def tls_reason(exc: BaseException) -> str | None:
    """The certificate problem inside an ldap3 socket/StartTLS error, if that is what it is.

    ldap3 re-raises ssl errors as classes derived from both its own and the ssl type, with
    only the text kept, so the text is what is read here.
    """
    text = " ".join(str(exc).split()).replace("\\'", "'")
    match = re.search(r"certificate verify failed: (.+?)(?: \(_ssl\.c:\d+\))?['\",)]*$", text)
    if match:
        reason = match.group(1).rstrip(" .,'\"")
        if reason.count("'") % 2:  # the closing quote of a name went with the stripped tail
            reason += "'"
        return "certificate verify failed: " + reason
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed"
    if isinstance(exc, ssl.SSLError | ldap_exc.LDAPStartTLSError) or "ssl" in text.lower() or "tls" in text.lower():
        return f"TLS handshake failed ({one_line(text, 100)})"
    return None


def _said(result: Mapping[str, Any]) -> str:
    """``description, code`` plus the server's own message when it gave one."""
    desc = one_line(result.get("description") or "error", 60)
    message = one_line(result.get("message") or "", 120)
    return f"{desc}, {result.get('result')}" + (f": {message}" if message else "")


def busy_or_unavailable(endpoint: str, result: Mapping[str, Any], doing: str = "", *, nothing_written: bool = False) -> ServiceUnreachable:
    """The error for result 51 (busy) or 52 (unavailable): the server, and what to do.

    Args:
        endpoint: ``host:port`` of the server.
        result: ldap3's result dict.
        doing: what siteadmin was doing, for the message (empty for the bind).
        nothing_written: say so (a refused modify).
    """
    prefix = f"{doing}: " if doing else ""
    suffix = "; nothing written" if nothing_written else ""
    if result.get("result") == BUSY:
        return ServiceUnreachable(
            f"{prefix}LDAP server {endpoint} is busy ({_said(result)}){suffix}",
            "it is overloaded for now: try again in a few minutes; if it stays busy, tell the site's LDAP team",
        )
    return ServiceUnreachable(
        f"{prefix}LDAP server {endpoint} is unavailable ({_said(result)}){suffix}",
        "it is shutting down or cannot reach its own data: try again later, or set ldap.url to another server of the ALICE LDAP",
    )


def wants_sasl(result: Mapping[str, Any]) -> bool:
    """True when the answer to a simple bind says the server wants SASL (or another strong bind).

    7, 8 and 48 say so by their code; slapd's ``disallow bind_simple`` says it with 53 and the
    text "unwilling to perform simple authentication".
    """
    code = result.get("result")
    if code in WANTS_SASL_CODES:
        return True
    return code == UNWILLING_TO_PERFORM and "simple" in str(result.get("message") or "").lower()


# ---------------------------------------------------------------- TLS


class VerifiedTls(ldap3.Tls):  # type: ignore[misc]
    """ldap3's Tls with the standard library doing the host name check.

    ldap3 2.9.1 switches the context's check off and calls ``ssl.match_hostname``, which warns
    on Python 3.11 and is gone from 3.12 (IP SANs then never match). Here the context verifies
    the chain against the CA file and the name (DNS or IP SAN) during the handshake itself.
    """

    def __init__(self, host: str, ca_file: Path | None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.check_hostname = True
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._host = host

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket, server_side=False, do_handshake_on_connect=do_handshake, server_hostname=self._host
        )


# ---------------------------------------------------------------- the connection


class ConnectionLost(ServiceUnreachable):
    """The connection failed during an operation: the server may or may not have applied it."""

    def __init__(self, message: str, hint: str | None = None, *, cause: str = "") -> None:
        super().__init__(message, hint)
        self.cause = cause
        """ldap3's own words, one line."""


class LdapClient:
    """One bound LDAP connection to the server of ``[ldap]``, opened on first use, reopened after a loss.

    Args:
        cfg: the ``[ldap]`` settings (url, ca_file, starttls, insecure, timeout, bind_dn, password_file).
        password: bind password; default from ``ldap.password_file`` or ``$SITEADMIN_LDAP_PASSWORD``.
        source: the site config these settings come from; named on the warning channel before
            each bind when it was found in the current directory.

    Raises:
        ConfigError: bad ldap.url, plain LDAP without ``ldap.insecure``, or a missing ca_file.

    Every bind warns (``siteadmin.errors.warn``) while ``ldap.insecure`` is set and when it goes
    out in clear text. Not thread-safe: the caller serialises its calls.
    """

    def __init__(self, cfg: LdapSection, *, password: str | None = None, source: Path | None = None) -> None:
        self.cfg = cfg
        self.source = source
        self.host, self.port, self.ldaps = parse_url(cfg.url)
        self._password = password
        self._conn: ldap3.Connection | None = None
        if not self.ldaps and not cfg.starttls and not cfg.insecure:
            raise ConfigError(
                f"ldap.url = {cfg.url!r} without StartTLS would send the password in clear",
                "use ldaps://, set ldap.starttls = true, or ldap.insecure = true for a lab",
            )
        if cfg.ca_file is not None and not cfg.ca_file.is_file():
            raise ConfigError(f"ldap.ca_file = {str(cfg.ca_file)!r}: no such file")

    @property
    def bind_dn(self) -> str:
        """The DN bound as, or ``anonymous``."""
        return self.cfg.bind_dn or "anonymous"

    @property
    def endpoint(self) -> str:
        """``host:port`` of the server, for messages."""
        return f"{self.host}:{self.port}"

    @property
    def uses_tls(self) -> bool:
        return self.ldaps or self.cfg.starttls

    def close(self) -> None:
        """Unbind and drop the connection (safe to call twice)."""
        conn, self._conn = self._conn, None
        close_connection(conn)

    def _secret(self) -> str | None:
        if not self.cfg.bind_dn:
            return None
        if self._password is not None:
            return self._password
        if self.cfg.password_file is not None:
            return read_secret_file(self.cfg.password_file, "LDAP password")
        from_env = os.environ.get(PASSWORD_ENV)
        if from_env:
            return from_env
        raise ConfigError(
            "ldap.bind_dn is set but there is no password for it",
            f"set ldap.password_file (mode 0600) or ${PASSWORD_ENV}",
        )

    def _open(self) -> ldap3.Connection:
        """A new bound connection.

        Raises:
            ServiceUnreachable: cannot connect, TLS verification failed, the server went away,
                is busy or unavailable.
            PermissionDenied: the bind was refused (including a server that wants SASL).
            ConfigError: no password for the bind DN.
        """
        password = self._secret()
        self._warn_before_bind()
        tls = VerifiedTls(self.host, self.cfg.ca_file) if self.uses_tls else None
        server = ldap3.Server(self.host, port=self.port, use_ssl=self.ldaps, tls=tls, get_info=ldap3.NONE, connect_timeout=self.cfg.timeout)
        conn = ldap3.Connection(
            server,
            user=self.cfg.bind_dn or None,
            password=password,
            authentication=ldap3.SIMPLE if self.cfg.bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            raise_exceptions=False,
            receive_timeout=max(1, math.ceil(self.cfg.timeout)),  # ldap3 packs it as a C long
            read_only=False,
        )
        try:
            conn.open()
            if not self.ldaps and self.cfg.starttls and not conn.start_tls():
                raise ldap_exc.LDAPStartTLSError(f"StartTLS refused: {conn.result.get('description') if conn.result else 'no answer'}")
            if not conn.bind():
                raise self.bind_error(conn.result or {})
            return conn
        except SiteadminError:
            close_connection(conn)
            raise
        except ldap_exc.LDAPException as exc:
            close_connection(conn)
            raise self.unreachable(exc) from None

    def _warn_before_bind(self) -> None:
        trust.note_cwd_config(self.source, f"an LDAP bind to {self.endpoint}")
        if self.cfg.insecure:
            warn(f"ldap.insecure = true: plain LDAP to {self.endpoint} is allowed (for a lab or debugging only)")
        if not self.uses_tls:
            if self.cfg.bind_dn:
                warn(f"LDAP bind as {self.cfg.bind_dn} to {self.endpoint} in clear text (ldap:// without StartTLS): "
                     "the password crosses the network unencrypted")
            else:
                warn(f"LDAP to {self.endpoint} in clear text (ldap:// without StartTLS): CE entries cross the network unencrypted")

    def bind_error(self, result: Mapping[str, Any]) -> SiteadminError:
        """What a refused bind means for the admin, with what to do."""
        code = result.get("result")
        if code == INVALID_CREDENTIALS:
            return PermissionDenied(
                f"LDAP bind as {self.bind_dn} refused: invalid credentials",
                f"check ldap.password_file or ${PASSWORD_ENV}",
            )
        if code == CONFIDENTIALITY_REQUIRED:
            return PermissionDenied(f"LDAP server {self.endpoint} requires TLS for binds", "use ldaps:// or ldap.starttls = true")
        if code in (BUSY, UNAVAILABLE):
            return busy_or_unavailable(self.endpoint, result)
        if wants_sasl(result):
            who = f"a simple bind as {self.bind_dn}" if self.cfg.bind_dn else "an anonymous bind"
            return PermissionDenied(
                f"LDAP server {self.endpoint} refuses {who} ({_said(result)}): it wants a SASL bind (such as GSSAPI/Kerberos), "
                "and SASL binds are not supported by siteadmin",
                SIMPLE_BIND_ONLY,
            )
        return PermissionDenied(f"LDAP bind as {self.bind_dn} refused: {_said(result)}")

    def unreachable(self, exc: BaseException) -> ServiceUnreachable:
        """The error for a connection that failed (refused, TLS, timed out, closed)."""
        reason = tls_reason(exc) if self.uses_tls else None
        if reason is not None:
            return ServiceUnreachable(
                f"TLS to LDAP server {self.endpoint} refused: {one_line(reason)}",
                "check ldap.ca_file and that ldap.url names a host the server certificate is issued for",
            )
        if isinstance(exc, ldap_exc.LDAPSessionTerminatedByServerError | ldap_exc.LDAPSocketReceiveError | ldap_exc.LDAPSocketSendError):
            return ServiceUnreachable(f"LDAP server {self.endpoint} closed the connection ({one_line(exc, 80)})")
        return ServiceUnreachable(f"LDAP server {self.endpoint} unreachable ({one_line(exc, 120)})", "check ldap.url and the network")

    def connection(self) -> ldap3.Connection:
        """The bound connection, opened now when there is none (or it closed).

        Raises:
            as _open.
        """
        if self._conn is None or self._conn.closed:
            close_connection(self._conn)
            self._conn = self._open()
        return self._conn

    def call(self, op: str, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one LDAP operation (an ldap3 Connection method name) on the bound connection.

        Returns:
            (ldap3's result dict, its response list).

        Raises:
            ConnectionLost: the connection failed during the operation (it is dropped; the next
                call opens a new one). Its ``cause`` holds ldap3's words.
            ServiceUnreachable, PermissionDenied, ConfigError: opening the connection failed.
        """
        conn = self.connection()
        try:
            getattr(conn, op)(*args, **kwargs)
        except ldap_exc.LDAPException as exc:
            self._conn = None
            close_connection(conn)
            error = self.unreachable(exc)
            raise ConnectionLost(error.message, error.hint, cause=one_line(exc, 80)) from None
        return dict(conn.result or {}), list(conn.response or [])

    def search(self, base: str, scope: str, filter_: str, attributes: Any) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        """One search.

        Returns:
            (result code, the searchResEntry responses, ldap3's result dict).

        Raises:
            as call.
        """
        result, response = self.call("search", base, filter_, search_scope=scope, attributes=attributes)
        entries = [r for r in response if r.get("type") == "searchResEntry"]
        return int(result.get("result", -1)), entries, result

    def check(self, code: int, result: Mapping[str, Any], doing: str) -> None:
        """Raise the admin's error for a result code that is not success.

        Raises:
            PermissionDenied: no access (8, 48, 50).
            ServiceUnreachable: busy or unavailable (51, 52).
            SiteadminError: any other code, with the server's words.
        """
        if code == SUCCESS:
            return
        if code in (BUSY, UNAVAILABLE):
            raise busy_or_unavailable(self.endpoint, result, doing)
        if code in DENIED_CODES:
            raise PermissionDenied(f"{doing}: {self.bind_dn} has no access ({_said(result)})")
        raise SiteadminError(f"{doing}: LDAP error {_said(result)}")


def close_connection(conn: ldap3.Connection | None) -> None:
    """Unbind and close an ldap3 connection, whatever state it is in."""
    if conn is None:
        return
    try:
        conn.unbind()
    except Exception:  # noqa: BLE001, S110 - closing a dead connection may fail in many ways; nothing to do
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass
