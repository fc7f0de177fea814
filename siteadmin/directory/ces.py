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

The connection, TLS, escaping, LDIF lines and what result codes mean are the LDAP layer's
(``siteadmin.directory.ldap``); this module owns what they mean for a CE.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ldap3
from ldap3.utils.dn import parse_dn

from siteadmin import audit
from siteadmin.directory.ldap import (
    ASSERTION_CONTROL,
    BUSY,
    CONFLICT_CODES,
    DENIED_CODES,
    NO_SUCH_OBJECT,
    SUCCESS,
    UNAVAILABLE,
    ConnectionLost,
    LdapClient,
    absent_assertion,
    busy_or_unavailable,
    ce_container,
    ce_dn,
    ce_filter,
    check_ce_name,
    ldif_assertion_control,
    ldif_line,
)
from siteadmin.errors import ConfigError, ConflictError, PermissionDenied, ServiceUnreachable, SiteadminError, UsageError
from siteadmin.site import Site

ATTR = "installMethod"
TORRENT = "Torrent"
CACHE_SECONDS = 600
CACHE_NOTE = f"AliEn caches CE settings for up to {CACHE_SECONDS} s: jobs may see the old installMethod for up to 10 minutes"


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


def modify_ldif(dn: str, before: Sequence[str], after: str, attr: str = ATTR) -> str:
    """The compare-and-set modify as LDIF (RFC 2849), as ``ldapmodify -f`` takes it.

    Deletes exactly the values in before and adds after, in one modify. When before is empty
    the change carries the assertion control ``(!(attr=*))`` so it fails if a value appeared.
    """
    lines = [ldif_line("dn", dn)]
    if not before:
        lines.append(ldif_assertion_control(attr))
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


# ---------------------------------------------------------------- the service


class Directory:
    """The site's CEs in LDAP. One instance holds one connection, opened on first use.

    Args:
        site: the site config (``site.name``, ``[ldap]``, ``[audit]``).
        password: bind password; default from ``ldap.password_file`` or ``$SITEADMIN_LDAP_PASSWORD``.

    Raises:
        ConfigError: no site.name, bad ldap.url, plain LDAP without ``ldap.insecure``, missing ca_file.

    Use as a context manager, or call close(). Methods may be called from one worker thread
    at a time; a lock serialises them anyway.
    """

    def __init__(self, site: Site, *, password: str | None = None) -> None:
        self.site = site
        self.site_name = site.require_name()
        self.cfg = site.ldap
        self.ldap = LdapClient(site.ldap, password=password, source=site.source)
        self.container = ce_container(self.site_name, self.cfg.base)
        self.audit_path = site.audit.path
        self._lock = threading.RLock()

    # ------------------------------------------------ connection

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bind_dn(self) -> str:
        return self.ldap.bind_dn

    @property
    def endpoint(self) -> str:
        return self.ldap.endpoint

    def close(self) -> None:
        """Unbind and drop the connection (safe to call twice)."""
        with self._lock:
            self.ldap.close()

    # ------------------------------------------------ reading

    def list_ces(self) -> list[CE]:
        """The site's CEs, sorted by name.

        Returns:
            One CE per entry under ``ou=CE,ou=Services,ou=<SITE>,ou=Sites,<base>``.

        Raises:
            ConfigError: the site has no CE container in LDAP (wrong site.name).
            ServiceUnreachable, PermissionDenied: connection or bind problems.
        """
        with self._lock:
            code, entries, result = self.ldap.search(self.container, ldap3.LEVEL, "(objectClass=*)", ["name", ATTR, "host"])
            if code == NO_SUCH_OBJECT:
                raise ConfigError(
                    f"site {self.site_name!r} has no CEs in LDAP ({self.container} not found)",
                    "check site.name (it is case-insensitive but must exist) and ldap.base",
                )
            self.ldap.check(code, result, f"listing the CEs of {self.site_name}")
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
        code, entries, result = self.ldap.search(dn, ldap3.BASE, ce_filter(name), ldap3.ALL_ATTRIBUTES if full else ["name", ATTR, "host"])
        if code == NO_SUCH_OBJECT or (code == SUCCESS and not entries):
            known = [c.name for c in self.list_ces()]
            listing = ", ".join(known) if known else "none"
            raise UsageError(f"no CE {name!r} at site {self.site_name}; the site's CEs: {listing}")
        self.ldap.check(code, result, f"reading CE {name!r}")
        return _ce_from_entry(entries[0], full=full)

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
            controls = [(ASSERTION_CONTROL, True, absent_assertion(ATTR))]
        try:
            result, _ = self.ldap.call("modify", ce.dn, changes, controls=controls)
        except ConnectionLost as lost:
            # The modify may or may not have reached the server: never resend, look.
            return self._outcome_unknown(ce, before, method, action, ldif, attempt, lost.cause)
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
                         attempt: dict[str, Any], cause: str) -> Change:
        lost = f"connection to {self.endpoint} lost after the modify of CE {ce.name} was sent ({cause})"
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
            return busy_or_unavailable(self.endpoint, result, f"changing CE {ce.name}", nothing_written=True)
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
