"""The site's CEs in the ALICE LDAP and their ``installMethod``: list, show, change, audit.

A CE entry is ``name=<CE>,ou=CE,ou=Services,ou=<SITE>,ou=Sites,<ldap.base>``; its
``installMethod`` value ``Torrent`` switches AliEn to torrent installs. AliEn reads the value
case-sensitively while LDAP matches it case-insensitively, so only the exact spellings of
``ldap.install_methods`` are accepted.

Every change is a compare-and-set: one modify that deletes the value(s) read (or shown to the
admin) and adds the new one; for an absent value the modify carries the LDAP assertion control
(RFC 4528) with ``(!(installMethod=*))``. Of two racing admins exactly one wins, the other gets
a ConflictError saying what the entry holds now. The entry is read back after the change. When
the connection dies after the modify was sent, the outcome is unknown: it is read back on a new
connection and never retried blindly. Every change and every refused or failed attempt is
recorded in the audit log; ``disable`` restores the method the audit log says the CE had before
torrent, else ``ldap.default_method``.

Connections use TLS (ldaps, or StartTLS before the bind) with the server certificate verified
against ``ldap.ca_file`` and the host name (IP SANs included); plain LDAP only with
``ldap.insecure``. Names are escaped for DNs and filters, so a CE name never reaches another
entry. The bind password comes from ``ldap.password_file`` (0600) or ``$SITEADMIN_LDAP_PASSWORD``
and is never printed, logged or audited.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import re
import ssl
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn

from siteadmin import audit
from siteadmin.errors import ConfigError, ConflictError, PermissionDenied, ServiceUnreachable, SiteadminError, UsageError
from siteadmin.secrets import read_secret_file
from siteadmin.site import Site

ATTR = "installMethod"
TORRENT = "Torrent"
PASSWORD_ENV = "SITEADMIN_LDAP_PASSWORD"  # noqa: S105 - the variable name, not a password
ASSERTION_CONTROL = "1.3.6.1.1.12"
"""LDAP assertion control (RFC 4528): the server applies the operation only when the filter holds."""
CACHE_SECONDS = 600
CACHE_NOTE = f"AliEn caches CE settings for up to {CACHE_SECONDS} s: jobs may see the old installMethod for up to 10 minutes"

# Result codes of RFC 4511 that get their own message.
SUCCESS = 0
STRONGER_AUTH_REQUIRED = 8
CONFIDENTIALITY_REQUIRED = 13
NO_SUCH_ATTRIBUTE = 16
ATTRIBUTE_OR_VALUE_EXISTS = 20
NO_SUCH_OBJECT = 32
INVALID_CREDENTIALS = 49
INSUFFICIENT_ACCESS = 50
BUSY = 51
UNAVAILABLE = 52
INAPPROPRIATE_AUTHENTICATION = 48
ASSERTION_FAILED = 122
CONFLICT_CODES = (NO_SUCH_ATTRIBUTE, ATTRIBUTE_OR_VALUE_EXISTS, ASSERTION_FAILED)
DENIED_CODES = (STRONGER_AUTH_REQUIRED, INAPPROPRIATE_AUTHENTICATION, INSUFFICIENT_ACCESS)
"""50 for a bound DN without write access; slapd answers an anonymous write with 8."""


# ---------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class CE:
    """A CE entry as read from LDAP."""

    name: str
    dn: str
    install_methods: tuple[str, ...]
    """installMethod values as stored (normally one; empty when absent)."""
    host: str | None = None
    attributes: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Every attribute of the entry (``show``)."""

    @property
    def install_method(self) -> str | None:
        """The value for display: the single value, several joined by ``|``, None when absent."""
        return "|".join(self.install_methods) if self.install_methods else None

    @property
    def torrent(self) -> bool:
        """True when AliEn would install by torrent: exactly one value spelled ``Torrent``."""
        return self.install_methods == (TORRENT,)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dn": self.dn,
            "installMethod": self.install_method,
            "installMethods": list(self.install_methods),
            "torrent": self.torrent,
            "host": self.host,
            "attributes": {k: list(v) for k, v in self.attributes.items()},
        }


@dataclasses.dataclass(frozen=True)
class Change:
    """What a change of installMethod did or would do."""

    ce: str
    dn: str
    action: str
    """``set``, ``enable`` or ``disable``."""
    before: tuple[str, ...]
    after: str
    outcome: str
    """``ok``, ``unchanged``, ``dry-run`` or ``requested`` (LDIF request written)."""
    ldif: str = ""
    """The LDIF of the modify (or of the request file)."""
    read_back: tuple[str, ...] | None = None
    """installMethod read back after the change."""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ce": self.ce,
            "dn": self.dn,
            "action": self.action,
            "before": audit_value(self.before),
            "after": self.after,
            "outcome": self.outcome,
            "read_back": None if self.read_back is None else audit_value(self.read_back),
            "note": self.note,
            "ldif": self.ldif,
        }


# ---------------------------------------------------------------- pure helpers (unit tested)


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


def validate_method(value: str, allowed: Sequence[str]) -> str:
    """Return value when it is one of allowed in its exact spelling.

    Args:
        value: the installMethod asked for.
        allowed: ``ldap.install_methods``.

    Returns:
        value, unchanged.

    Raises:
        UsageError: naming the right spelling when only the case differs (AliEn is case-sensitive),
            else listing the allowed values.
    """
    if value in allowed:
        return value
    for candidate in allowed:
        if candidate.casefold() == value.casefold():
            raise UsageError(
                f"installMethod {value!r} is spelled wrong: AliEn reads it case-sensitively",
                f"use {candidate!r}",
            )
    raise UsageError(f"unknown installMethod {value!r}", f"allowed: {', '.join(allowed)} (ldap.install_methods)")


def is_torrent_value(value: str) -> bool:
    """True for any spelling of a torrent method (Torrent, TorrentPerHost, torrent ...)."""
    return value.casefold().startswith("torrent")


def ce_container(site: str, base: str) -> str:
    """DN of a site's CE container, the site name escaped."""
    return f"ou=CE,ou=Services,ou={escape_rdn(site)},ou=Sites,{base}"


def ce_dn(name: str, site: str, base: str) -> str:
    """DN of a CE entry, the CE name escaped so that no name can point at another entry.

    Raises:
        UsageError: the name is empty or holds control characters.
    """
    return f"name={escape_rdn(check_ce_name(name))},{ce_container(site, base)}"


def ce_filter(name: str) -> str:
    """An equality filter for a CE name, with ``* ( ) \\ NUL`` escaped."""
    return f"(name={escape_filter_chars(check_ce_name(name))})"


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def absent_assertion(attr: str = ATTR) -> bytes:
    """BER of the filter ``(!(attr=*))`` as the assertion control value (RFC 4528, RFC 4511 Filter)."""
    present = b"\x87" + _ber_length(len(attr.encode())) + attr.encode()  # [7] present
    return b"\xa2" + _ber_length(len(present)) + present  # [2] not


def ldif_line(attr: str, value: str) -> str:
    """One LDIF attribute line, base64 (``attr:: ...``) when the value is not a SAFE-STRING (RFC 2849)."""
    safe = (
        value.isascii()
        and not value.startswith((" ", ":", "<"))
        and not value.endswith(" ")
        and not any(c in value for c in "\r\n\0")
    )
    if safe:
        return f"{attr}: {value}"
    return f"{attr}:: {base64.b64encode(value.encode('utf-8')).decode('ascii')}"


def modify_ldif(dn: str, before: Sequence[str], after: str, attr: str = ATTR) -> str:
    """The compare-and-set modify as LDIF (RFC 2849), as ``ldapmodify -f`` takes it.

    Deletes exactly the values in before and adds after, in one modify. When before is empty
    the change carries the assertion control ``(!(attr=*))`` so it fails if a value appeared.
    """
    lines = [ldif_line("dn", dn)]
    if not before:
        value = base64.b64encode(absent_assertion(attr)).decode("ascii")
        lines.append(f"control: {ASSERTION_CONTROL} true:: {value}")
    lines.append("changetype: modify")
    if before:
        lines.append(f"delete: {attr}")
        lines += [ldif_line(attr, v) for v in before]
        lines.append("-")
    lines.append(f"add: {attr}")
    lines.append(ldif_line(attr, after))
    lines.append("-")
    return "\n".join(lines) + "\n"


def audit_value(values: Sequence[str]) -> str | list[str] | None:
    """How installMethod values go into the audit log and JSON: None, one string, or a list."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return list(values)


def restore_method(
    records: Iterable[audit.AuditRecord], site: str, ce: str, allowed: Sequence[str], default: str
) -> tuple[str, str]:
    """The method ``disable`` restores: what the CE had before torrent was switched on.

    Looks through the audit log from the newest line for a successful change of this CE at this
    site whose ``after`` was a torrent method; its ``before`` is the answer when it is a single
    allowed non-torrent method. A torrent ``before`` (TorrentPerHost -> Torrent) continues to
    older lines; an absent one, or none found, gives default.

    Returns:
        (method, where it came from) for the admin.
    """
    for rec in reversed(list(records)):
        event = rec.event
        if event is None or event.get("outcome") != "ok":
            continue
        if str(event.get("site", "")).casefold() != site.casefold() or str(event.get("ce", "")).casefold() != ce.casefold():
            continue
        after = event.get("after")
        if not isinstance(after, str) or not is_torrent_value(after):
            continue
        before = event.get("before")
        if isinstance(before, str) and before in allowed and not is_torrent_value(before):
            return before, f"audit log line {rec.line} ({event.get('when', '?')})"
        if before is None or before == []:
            return default, "ldap.default_method (the CE had no installMethod before torrent)"
    return default, "ldap.default_method (no earlier method in the audit log)"


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


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _tls_reason(exc: BaseException) -> str | None:
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
        return f"TLS handshake failed ({_one_line(text, 100)})"
    return None


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


# ---------------------------------------------------------------- the service


class Directory:
    """The site's CEs in LDAP. One instance holds one connection, opened on first use.

    Args:
        site: the site config (``site.name``, ``[ldap]``, ``[audit]``).
        password: bind password; default from ``ldap.password_file`` or ``$SITEADMIN_LDAP_PASSWORD``.

    Use as a context manager, or call close(). Methods may be called from one worker thread
    at a time; a lock serialises them anyway.
    """

    def __init__(self, site: Site, *, password: str | None = None) -> None:
        self.site = site
        self.site_name = site.require_name()
        self.cfg = site.ldap
        self.host, self.port, self.ldaps = parse_url(self.cfg.url)
        self.container = ce_container(self.site_name, self.cfg.base)
        self.audit_path = site.audit.path
        self._password = password
        self._conn: ldap3.Connection | None = None
        self._lock = threading.RLock()
        if not self.ldaps and not self.cfg.starttls and not self.cfg.insecure:
            raise ConfigError(
                f"ldap.url = {self.cfg.url!r} without StartTLS would send the password in clear",
                "use ldaps://, set ldap.starttls = true, or ldap.insecure = true for a lab",
            )
        if self.cfg.ca_file is not None and not self.cfg.ca_file.is_file():
            raise ConfigError(f"ldap.ca_file = {str(self.cfg.ca_file)!r}: no such file")

    # ------------------------------------------------ connection

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bind_dn(self) -> str:
        return self.cfg.bind_dn or "anonymous"

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Unbind and drop the connection (safe to call twice)."""
        with self._lock:
            conn, self._conn = self._conn, None
            _close(conn)

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

    def _use_tls(self) -> bool:
        return self.ldaps or self.cfg.starttls

    def _open(self) -> ldap3.Connection:
        """A new bound connection.

        Raises:
            ServiceUnreachable: cannot connect, TLS verification failed, or the server went away.
            PermissionDenied: the bind was refused.
            ConfigError: no password for the bind DN.
        """
        password = self._secret()
        tls = VerifiedTls(self.host, self.cfg.ca_file) if self._use_tls() else None
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
                raise self._bind_error(conn.result or {})
            return conn
        except SiteadminError:
            _close(conn)
            raise
        except ldap_exc.LDAPException as exc:
            _close(conn)
            raise self._unreachable(exc) from None

    def _bind_error(self, result: Mapping[str, Any]) -> SiteadminError:
        code = result.get("result")
        if code == INVALID_CREDENTIALS:
            return PermissionDenied(
                f"LDAP bind as {self.bind_dn} refused: invalid credentials",
                f"check ldap.password_file or ${PASSWORD_ENV}",
            )
        if code == CONFIDENTIALITY_REQUIRED:
            return PermissionDenied(f"LDAP server {self.endpoint} requires TLS for binds", "use ldaps:// or ldap.starttls = true")
        if code in (BUSY, UNAVAILABLE):
            return ServiceUnreachable(f"LDAP server {self.endpoint} is {result.get('description')}")
        return PermissionDenied(f"LDAP bind as {self.bind_dn} refused: {result.get('description')} ({code})")

    def _unreachable(self, exc: BaseException) -> ServiceUnreachable:
        reason = _tls_reason(exc) if self._use_tls() else None
        if reason is not None:
            return ServiceUnreachable(
                f"TLS to LDAP server {self.endpoint} refused: {_one_line(reason)}",
                "check ldap.ca_file and that ldap.url names a host the server certificate is issued for",
            )
        if isinstance(exc, ldap_exc.LDAPSessionTerminatedByServerError | ldap_exc.LDAPSocketReceiveError | ldap_exc.LDAPSocketSendError):
            return ServiceUnreachable(f"LDAP server {self.endpoint} closed the connection ({_one_line(exc, 80)})")
        return ServiceUnreachable(f"LDAP server {self.endpoint} unreachable ({_one_line(exc, 120)})", "check ldap.url and the network")

    def _connection(self) -> ldap3.Connection:
        if self._conn is None or self._conn.closed:
            _close(self._conn)
            self._conn = self._open()
        return self._conn

    def _call(self, op: str, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run one LDAP operation; (result, response). Communication failures drop the connection and raise."""
        conn = self._connection()
        try:
            getattr(conn, op)(*args, **kwargs)
        except ldap_exc.LDAPException as exc:
            self._conn = None
            _close(conn)
            raise self._unreachable(exc) from None
        return dict(conn.result or {}), list(conn.response or [])

    # ------------------------------------------------ reading

    def _search(self, base: str, scope: str, filter_: str, attributes: Any) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        result, response = self._call("search", base, filter_, search_scope=scope, attributes=attributes)
        entries = [r for r in response if r.get("type") == "searchResEntry"]
        return int(result.get("result", -1)), entries, result

    def list_ces(self) -> list[CE]:
        """The site's CEs, sorted by name.

        Returns:
            One CE per entry under ``ou=CE,ou=Services,ou=<SITE>,ou=Sites,<base>``.

        Raises:
            ConfigError: the site has no CE container in LDAP (wrong site.name).
            ServiceUnreachable, PermissionDenied: connection or bind problems.
        """
        with self._lock:
            code, entries, result = self._search(self.container, ldap3.LEVEL, "(objectClass=*)", ["name", ATTR, "host"])
            if code == NO_SUCH_OBJECT:
                raise ConfigError(
                    f"site {self.site_name!r} has no CEs in LDAP ({self.container} not found)",
                    "check site.name (it is case-insensitive but must exist) and ldap.base",
                )
            self._check(code, result, f"listing the CEs of {self.site_name}")
            ces = [_ce_from_entry(e, full=False) for e in entries]
            return sorted(ces, key=lambda c: c.name.casefold())

    def show(self, name: str) -> CE:
        """One CE with all its attributes.

        Raises:
            UsageError: no such CE at this site (the message lists the site's CEs).
            ServiceUnreachable, PermissionDenied, ConfigError: as list_ces.
        """
        with self._lock:
            return self._read(name, full=True)

    def _read(self, name: str, full: bool) -> CE:
        # Both escapings on purpose: the DN names exactly one entry, the filter makes sure its
        # name attribute is the CE asked for (no wildcard, no other entry).
        dn = ce_dn(name, self.site_name, self.cfg.base)
        code, entries, result = self._search(dn, ldap3.BASE, ce_filter(name), ldap3.ALL_ATTRIBUTES if full else ["name", ATTR, "host"])
        if code == NO_SUCH_OBJECT or (code == SUCCESS and not entries):
            known = [c.name for c in self.list_ces()]
            listing = ", ".join(known) if known else "none"
            raise UsageError(f"no CE {name!r} at site {self.site_name}; the site's CEs: {listing}")
        self._check(code, result, f"reading CE {name!r}")
        return _ce_from_entry(entries[0], full=full)

    def _check(self, code: int, result: Mapping[str, Any], doing: str) -> None:
        if code == SUCCESS:
            return
        desc = result.get("description", "error")
        if code in DENIED_CODES:
            raise PermissionDenied(f"{doing}: {self.bind_dn} has no access ({desc}, {code})")
        if code in (BUSY, UNAVAILABLE):
            raise ServiceUnreachable(f"{doing}: LDAP server {self.endpoint} is {desc} ({code})")
        raise SiteadminError(f"{doing}: LDAP error {desc} ({code})")

    # ------------------------------------------------ changing

    def enable(self, name: str, *, dry_run: bool = False, expected: Sequence[str] | None = None, request_file: Path | None = None) -> Change:
        """Switch a CE to torrent installs (installMethod ``Torrent``).

        Args and Raises: as set_method.
        """
        return self.set_method(name, TORRENT, dry_run=dry_run, expected=expected, request_file=request_file, action="enable")

    def disable(self, name: str, *, dry_run: bool = False, expected: Sequence[str] | None = None, request_file: Path | None = None) -> Change:
        """Switch a CE back from torrent to what it had before (audit log), else ``ldap.default_method``.

        A CE that is not on a torrent method is left alone (outcome ``unchanged``).

        Args and Raises: as set_method.
        """
        with self._lock:
            current = self._read(name, full=False) if expected is None else None
            values = tuple(expected) if expected is not None else (current.install_methods if current else ())
            if not any(is_torrent_value(v) for v in values):
                ce = current or self._read(name, full=False)
                return Change(ce.name, ce.dn, "disable", values, "|".join(values), "unchanged", read_back=ce.install_methods, note="not on torrent")
            method, source = restore_method(audit.read(self.audit_path), self.site_name, current.name if current else name,
                                            self.cfg.install_methods, self.cfg.default_method)
            change = self.set_method(name, method, dry_run=dry_run, expected=expected, request_file=request_file, action="disable")
            return dataclasses.replace(change, note=f"restored from {source}" if not change.note else f"{change.note}; restored from {source}")

    def ldif_request(self, name: str, method: str, path: Path, *, action: str = "set", expected: Sequence[str] | None = None) -> Change:
        """Write an LDIF change request for the central LDAP team instead of changing LDAP.

        Raises:
            UsageError: bad method, unknown CE, or the file exists.
            ServiceUnreachable, PermissionDenied: the current value cannot be read.
        """
        return self.set_method(name, method, expected=expected, request_file=path, action=action)

    def set_method(
        self,
        name: str,
        method: str,
        *,
        dry_run: bool = False,
        expected: Sequence[str] | None = None,
        request_file: Path | None = None,
        action: str = "set",
    ) -> Change:
        """Set a CE's installMethod with compare-and-set, read it back and audit the attempt.

        Args:
            name: the CE name (any characters; escaped for DN and filter).
            method: one of ``ldap.install_methods``, exact spelling.
            dry_run: only compute the change and its LDIF; nothing written, nothing audited.
            expected: the values the admin saw (the console passes what it shows); the change
                fails with ConflictError if LDAP holds something else. Default: read now.
            request_file: write an LDIF change request there instead of modifying LDAP.
            action: ``set``, ``enable`` or ``disable``, for the audit log.

        Returns:
            The Change, with outcome ``ok`` (read back), ``unchanged``, ``dry-run`` or ``requested``.

        Raises:
            UsageError: bad CE name or method, unknown CE (listing the site's CEs), request file exists.
            ConflictError: the value changed between read and write; nothing was written.
            PermissionDenied: bind refused or no write access (result 50).
            ServiceUnreachable: LDAP unreachable; or the connection died after the modify was
                sent and the read-back on a new connection failed too (outcome unknown).
            ConfigError: no password, or the audit log cannot be appended to.
        """
        with self._lock:
            attempt: dict[str, Any] = {"action": action, "site": self.site_name, "ce": name, "after": method}
            if not dry_run:
                audit.check_writable(self.audit_path)
            try:
                check_ce_name(name)
                validate_method(method, self.cfg.install_methods)
                if request_file is not None and request_file.exists():
                    raise UsageError(f"{request_file}: already exists", "choose another --ldif-request file")
                ce = self._read(name, full=False)
            except SiteadminError as exc:
                if not dry_run:
                    self._record(attempt, _outcome_of(exc), error=exc)
                raise
            before = tuple(expected) if expected is not None else ce.install_methods
            attempt.update(ce=ce.name, dn=ce.dn, before=audit_value(before))
            if before == (method,):
                return Change(ce.name, ce.dn, action, before, method, "unchanged", read_back=ce.install_methods)
            ldif = modify_ldif(ce.dn, before, method)
            if dry_run:
                return Change(ce.name, ce.dn, action, before, method, "dry-run", ldif=ldif)
            if request_file is not None:
                text = self._request_text(ce, before, method, action, ldif)
                try:
                    _write_new(request_file, text)
                except SiteadminError as exc:
                    self._record(attempt, "failed", error=exc)
                    raise
                self._record(attempt, "requested", request_file=str(request_file))
                return Change(ce.name, ce.dn, action, before, method, "requested", ldif=text, note=f"LDIF request written to {request_file}")
            return self._compare_and_set(ce, before, method, action, ldif, attempt)

    def _compare_and_set(self, ce: CE, before: tuple[str, ...], method: str, action: str, ldif: str, attempt: dict[str, Any]) -> Change:
        if before:
            changes = {ATTR: [(ldap3.MODIFY_DELETE, list(before)), (ldap3.MODIFY_ADD, [method])]}
            controls = None
        else:
            changes = {ATTR: [(ldap3.MODIFY_ADD, [method])]}
            controls = [(ASSERTION_CONTROL, True, absent_assertion())]
        conn = self._connection()
        try:
            conn.modify(ce.dn, changes, controls=controls)
            result = dict(conn.result or {})
        except ldap_exc.LDAPException as exc:
            # The modify may or may not have reached the server: never resend, look.
            self._conn = None
            _close(conn)
            return self._outcome_unknown(ce, before, method, action, ldif, attempt, exc)
        code = int(result.get("result", -1))
        if code == SUCCESS:
            try:
                now = self._read(ce.name, full=False).install_methods
            except SiteadminError as exc:
                self._record(attempt, "ok", read_back_error=exc.one_line())
                return Change(ce.name, ce.dn, action, before, method, "ok", ldif, None, f"written; read-back failed: {exc.one_line()}")
            return self._verified(ce, before, method, action, ldif, attempt, now, "")
        error = self._modify_error(ce, before, method, code, result)
        self._record(attempt, _outcome_of(error), error=error, result=code)
        raise error

    def _verified(self, ce: CE, before: tuple[str, ...], method: str, action: str, ldif: str,
                  attempt: dict[str, Any], now: tuple[str, ...], note: str) -> Change:
        if now != (method,):
            error = ConflictError(
                f"CE {ce.name}: installMethod reads back as {_show(now)} after setting {method!r}: someone else changed it",
                f"look with `siteadmin ce show '{ce.name}'`",
            )
            self._record(attempt, "conflict", error=error, read_back=audit_value(now))
            raise error
        if note:
            self._record(attempt, "ok", read_back=audit_value(now), note=note)
        else:
            self._record(attempt, "ok", read_back=audit_value(now))
        return Change(ce.name, ce.dn, action, before, method, "ok", ldif, now, note)

    def _outcome_unknown(self, ce: CE, before: tuple[str, ...], method: str, action: str, ldif: str,
                         attempt: dict[str, Any], exc: BaseException) -> Change:
        lost = f"connection to {self.endpoint} lost after the modify of CE {ce.name} was sent ({_one_line(exc, 80)})"
        try:
            now = self._read(ce.name, full=False).install_methods  # on a new connection
        except SiteadminError as again:
            error = ServiceUnreachable(
                f"{lost}: outcome unknown, read-back failed too ({again.message})",
                f"check with `siteadmin ce show '{ce.name}'` once LDAP answers; do not repeat the change blindly",
            )
            self._record(attempt, "unknown", error=error)
            raise error from None
        if now == (method,):
            note = "connection lost after the modify; confirmed by read-back on a new connection"
            return self._verified(ce, before, method, action, ldif, attempt, now, note)
        if now == before:
            error = ServiceUnreachable(f"{lost}: read-back shows it unchanged ({_show(now)})", "nothing was written; run the command again")
            self._record(attempt, "failed", error=error, read_back=audit_value(now))
            raise error
        conflict = ConflictError(f"{lost}: read-back shows {_show(now)}, neither the old nor the new value", f"look with `siteadmin ce show '{ce.name}'`")
        self._record(attempt, "conflict", error=conflict, read_back=audit_value(now))
        raise conflict

    def _modify_error(self, ce: CE, before: tuple[str, ...], method: str, code: int, result: Mapping[str, Any]) -> SiteadminError:
        desc = result.get("description", "error")
        if code in CONFLICT_CODES:
            try:
                now = _show(self._read(ce.name, full=False).install_methods)
            except SiteadminError:
                now = "unknown"
            return ConflictError(
                f"CE {ce.name}: installMethod changed meanwhile (expected {_show(before)}, now {now}); nothing written ({desc}, {code})",
                f"look again with `siteadmin ce show '{ce.name}'` and decide",
            )
        if code in DENIED_CODES:
            return PermissionDenied(
                f"{self.bind_dn} may not change installMethod of CE {ce.name} ({desc}, {code}); nothing written",
                "bind as the site's LDAP admin, or use --ldif-request FILE and send it to the central LDAP team",
            )
        if code == NO_SUCH_OBJECT:
            return ConflictError(f"CE {ce.name} disappeared from LDAP before the change ({desc}, {code})")
        if code in (BUSY, UNAVAILABLE):
            return ServiceUnreachable(f"changing CE {ce.name}: LDAP server {self.endpoint} is {desc} ({code}); nothing written")
        return SiteadminError(f"changing CE {ce.name}: LDAP refused the modify: {desc} ({code})")

    def _request_text(self, ce: CE, before: tuple[str, ...], method: str, action: str, ldif: str) -> str:
        lines = [
            "# installMethod change request from siteadmin",
            f"# site: {self.site_name}",
            f"# CE: {ce.name}",
            f"# action: {action}: {_show(before)} -> {method!r}",
            f"# requested by: {audit.local_user()} ({self.bind_dn}) at {audit.now_iso()}",
            "# This is a compare-and-set: it fails (16 noSuchAttribute / 122 assertionFailed)",
            "# if the value changed since; then read the entry again before retrying.",
            "# Apply with: ldapmodify -H <ldap url> -D <admin DN> -W -f <this file>",
            "",
        ]
        return "\n".join(lines) + ldif

    def _record(self, attempt: Mapping[str, Any], outcome: str, error: SiteadminError | None = None, **extra: Any) -> None:
        event = {
            **attempt,
            "bind_dn": self.bind_dn,
            "server": self.cfg.url,
            "outcome": outcome,
            **extra,
        }
        if error is not None:
            event["error"] = error.one_line()
        try:
            audit.record(self.audit_path, event)
        except ConfigError as exc:
            # Checked writable before the change; if it fails now, say what happened in LDAP anyway.
            raise ConfigError(
                f"{attempt.get('action')} of CE {attempt.get('ce')} ended {outcome!r} but was not audited: {exc.message}",
                "add the change to the audit log by hand",
            ) from None


# ---------------------------------------------------------------- module helpers


def _close(conn: ldap3.Connection | None) -> None:
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


def _show(values: Sequence[str]) -> str:
    if not values:
        return "absent"
    return "|".join(repr(v) for v in values)


def _outcome_of(error: SiteadminError) -> str:
    if isinstance(error, ConflictError):
        return "conflict"
    if isinstance(error, PermissionDenied):
        return "denied"
    if isinstance(error, ServiceUnreachable):
        return "unreachable"
    if isinstance(error, UsageError | ConfigError):
        return "refused"
    return "failed"


def _decode(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _ce_from_entry(entry: Mapping[str, Any], full: bool) -> CE:
    raw: Mapping[str, list[bytes]] = entry.get("raw_attributes") or {}
    attrs = {key: tuple(_decode(v) for v in values) for key, values in raw.items()}
    lower = {key.casefold(): values for key, values in attrs.items()}
    dn = str(entry.get("dn", ""))
    names = lower.get("name", ())
    if names:
        name = names[0]
    else:
        from ldap3.utils.dn import parse_dn

        name = parse_dn(dn)[0][1] if dn else ""
    hosts = lower.get("host", ())
    return CE(
        name=name,
        dn=dn,
        install_methods=lower.get(ATTR.casefold(), ()),
        host=hosts[0] if hosts else None,
        attributes=attrs if full else {},
    )


def _write_new(path: Path, text: str) -> None:
    """Create path (never overwrite) and write text to it.

    Raises:
        UsageError: the file exists. ConfigError: it cannot be written.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise UsageError(f"{path}: already exists", "choose another --ldif-request file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the LDIF request: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
