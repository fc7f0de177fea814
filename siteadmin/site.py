"""The site config (``site.toml``): typed, validated, documented field by field.

A site config is a handful of TOML tables, one per concern (``[site]``, ``[ldap]``,
``[central]``, ``[wns]``, ``[ssh]``, ``[aria2c]``, ``[rollout]``, ``[audit]``, ``[syslog]``, ``[status]``,
and ``[ces.<name>]`` for the WNs each CE serves). Every field below
carries its own documentation (``doc``), its default (ALICE values built in) and its check, so
``config init`` can write a commented example and ``config show`` the effective values.

Unknown keys are refused with a close-match suggestion, and every bad value gets one line
naming the key, the value and what is allowed. Relative paths are taken relative to the
directory holding the site.toml, so a lab directory can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
import types
import typing
import unicodedata
from collections.abc import Callable, Container, Mapping, Sequence
from pathlib import Path
from typing import Any

from siteadmin import trust
from siteadmin.errors import ConfigError, printable
from siteadmin.hostlist import DEFAULT_MAX_HOSTS, count_hosts, parse_hostlist
from siteadmin.lint_rules import RULES
from siteadmin.secrets import MASK, mask_userinfo

SITE_ENV = "SITEADMIN_SITE"
"""Environment variable naming the site.toml to use (tests point it at a lab)."""

Validator = Callable[[Any], str | None]
"""A field check returns None when the value is fine, else what is allowed."""


def setting(default: Any, doc: str, check: Validator | None = None, secret: bool = False, options: bool = False) -> Any:
    """Declare one config field with its default, its documentation and its check.

    ``secret`` masks the field's value in displays; ``options`` marks a table of aria2c options,
    whose values are masked name by name.
    """
    meta = {"doc": doc, "check": check, "secret": secret, "options": options}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------- checks (pure, unit tested)

# Every pattern below is applied with fullmatch: ``re.match(...$)`` lets a trailing newline through.
PORT_RANGE_RE = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


def check_port(value: int) -> str | None:
    """A TCP/UDP port number."""
    return None if 1 <= value <= 65535 else "a port number 1-65535"


def parse_port_ranges(text: str, low: int = 1024, high: int = 65535) -> list[tuple[int, int]]:
    """Parse aria2-style port lists ``6881-6999,7000`` into (first, last) pairs.

    Raises:
        ValueError: with what is allowed, when a part is malformed or outside low-high.
    """
    allowed = f"ports or ranges within {low}-{high}, like 6881-6999 or 6881,6890-6899"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(allowed)
    ranges = []
    for part in text.split(","):
        m = PORT_RANGE_RE.fullmatch(part.strip(" "))
        if not m:
            raise ValueError(allowed)
        first = int(m.group(1))
        last = int(m.group(2) or first)
        if not (low <= first <= last <= high):
            raise ValueError(allowed)
        ranges.append((first, last))
    return ranges


def check_port_ranges(value: str) -> str | None:
    """Port ranges within 1024-65535."""
    try:
        parse_port_ranges(value)
    except ValueError as exc:
        return str(exc)
    return None


def check_timeout(value: float) -> str | None:
    """Seconds to wait: more than 0 and at most a day."""
    return None if 0 < value <= 86400 else "seconds greater than 0 and at most 86400"


def check_positive(value: int | float) -> str | None:
    return None if value > 0 else "a number greater than 0"


def check_non_negative(value: int) -> str | None:
    return None if value >= 0 else "a number 0 or greater"


def check_percent(value: int | float) -> str | None:
    return None if 0 <= value <= 100 else "a percentage 0-100"


BATCH_PERCENT_RE = re.compile(r"(\d{1,3}(?:\.\d{1,3})?)%")


def batch_percent(value: object) -> float | None:
    """The percentage of a batch size written as ``"20%"`` (above 0, at most 100); None for anything else."""
    if not isinstance(value, str):
        return None
    found = BATCH_PERCENT_RE.fullmatch(value)
    if found is None:
        return None
    percent = float(found[1])
    return percent if 0 < percent <= 100 else None


def check_batch_size(value: int | str) -> str | None:
    """WNs per batch: a whole number from 1, or a share of the selected WNs like ``"20%"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if value > 0 else 'a number greater than 0, or a percentage like "20%"'
    return None if batch_percent(value) is not None else 'a number greater than 0, or a percentage above 0 and at most 100 like "20%"'


HOSTNAME_RE = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
SITE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
USER_RE = re.compile(r"[a-z_][a-z0-9_.-]*")
METHOD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
GROUP_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A WN group name: what ``@name`` selects on the command line, safe in a rendered header."""


def check_host(value: str) -> str | None:
    """A DNS name or an IPv4/IPv6 address."""
    if not value:
        return "a host name or IP address"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    return None if HOSTNAME_RE.fullmatch(value) else "a host name or IP address"


def check_optional_host(value: str) -> str | None:
    return None if value == "" else check_host(value)


def check_ldap_url(value: str) -> str | None:
    return None if re.fullmatch(r"ldaps?://[^/\s]+/?", value) else "an ldap:// or ldaps:// URL like ldaps://host:636"


def check_http_url(value: str) -> str | None:
    return None if re.fullmatch(r"https?://[^/\s]+(/\S*)?", value) else "an http:// or https:// URL"


def check_site_name(value: str) -> str | None:
    if value == "" or SITE_NAME_RE.fullmatch(value):
        return None
    return "an ALICE site name of letters, digits, _ . : - (at most 64)"


def check_dn(value: str) -> str | None:
    if value == "":
        return None
    if has_control(value):
        return "an LDAP DN like cn=admin,o=alice,dc=cern,dc=ch (one line, no control characters)"
    from ldap3.utils.dn import parse_dn

    try:
        parse_dn(value)
    except Exception:  # noqa: BLE001 - ldap3 raises several types for bad DNs
        return "an LDAP DN like cn=admin,o=alice,dc=cern,dc=ch"
    return None


def check_install_methods(value: list[str]) -> str | None:
    if not value or any(not METHOD_RE.fullmatch(v) for v in value):
        return "a non-empty list of install method names like [\"Torrent\", \"CVMFS\"]"
    return None


def check_hostlists(value: list[str]) -> str | None:
    """Hostlist syntax only: the patterns are expanded (bounded by ``wns.max_hosts``) once the whole config is read."""
    for pattern in value:
        if not pattern.strip() or "@" in pattern:
            return f'a hostlist like "wn[001-120].example.org" (got {pattern!r})'
        try:
            count_hosts(pattern)
        except ValueError as exc:
            return str(exc)
    return None


def check_ce_wns(value: list[str]) -> str | None:
    """Hostlist patterns or ``@group`` names (groups are looked up once the whole config is read)."""
    for pattern in value:
        if not pattern.strip():
            return 'hostlist patterns or @group names, like ["wn[001-040].example.org", "@bigdisk"]'
        for term in pattern.split(","):
            term = term.strip()
            if term.startswith("@"):
                if not GROUP_NAME_RE.fullmatch(term[1:]):
                    return f"a group name after @ (letters, digits, _ . -), got {term!r}"
                continue
            if "@" in term:
                return f'a hostlist like "wn[001-120].example.org" or an @group (got {term!r})'
    return None


def check_lint_rules(value: list[str]) -> str | None:
    for rule in value:
        if rule not in RULES:
            close = difflib.get_close_matches(rule, list(RULES), n=1)
            return f"lint rule ids ({'did you mean ' + close[0] + '?' if close else ', '.join(RULES)}), not {rule!r}"
    return None


def check_absolute_path(value: str) -> str | None:
    return None if value.startswith("/") and not has_control(value) else "an absolute path"


def check_absolute_paths(value: list[str]) -> str | None:
    return None if all(isinstance(v, str) and check_absolute_path(v) is None for v in value) else "a list of absolute paths"


def check_mode_free_text(value: str) -> str | None:
    return None if not has_control(value) else "one line of text"


def check_user(value: str) -> str | None:
    return None if USER_RE.fullmatch(value) else "a Unix user name"


JUMP_HOST_FORM = "[user@]host[:port], like admin@bastion.example.org:2222"


def split_jump_host(text: str) -> tuple[str | None, str, int | None] | None:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``, ``ssh://`` prefix allowed) as (user, host, port).

    The one parser of a jump host: the config check below and the SSH layer both use it.

    Returns:
        None for "" and "none" (connect directly).

    Raises:
        ValueError: with what is allowed, when ``text`` is not of that form.
    """
    text = text.strip()
    if not text or text.lower() == "none":
        return None
    if has_control(text):
        raise ValueError("one line of text, " + JUMP_HOST_FORM)
    if "," in text:
        raise ValueError("one jump host, " + JUMP_HOST_FORM + " (chain hops in ~/.ssh/config on the first bastion)")
    text = text.removeprefix("ssh://")
    user: str | None = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not re.fullmatch(r"[a-z_][a-z0-9_.-]*", user, re.IGNORECASE):
            raise ValueError(JUMP_HOST_FORM)
    port_text: str | None = None
    if text.startswith("["):
        host, close, tail = text[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ValueError(JUMP_HOST_FORM)
        port_text = tail[1:] if tail else None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a name, or a bare IPv6 address without port
    port: int | None = None
    if port_text is not None:
        if not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise ValueError(JUMP_HOST_FORM)
        port = int(port_text)
    if check_host(host):
        raise ValueError(JUMP_HOST_FORM)
    return user, host, port


def check_jump_host(value: str) -> str | None:
    """A jump host the SSH layer accepts, or empty.

    Checked here so that a bad bastion (``-oProxyCommand=...``) stops the load with exit 2 instead of
    failing every WN later.
    """
    try:
        split_jump_host(value)
    except ValueError as exc:
        return f"{exc}, or empty"
    return None


def check_interpreter(value: str) -> str | None:
    """A program name or absolute path: no spaces, quotes or shell characters (it is run by the WN's shell)."""
    if not value or not all(c.isalnum() or c in "._-+/" for c in value):
        return "a program name or absolute path like python3 or /usr/libexec/platform-python"
    return None


def check_max_hosts(value: int) -> str | None:
    return None if 1 <= value <= 10_000_000 else "a number 1-10000000"


def has_control(text: str) -> bool:
    """Whether text holds a control, format or line-separator character (newline, NUL, ESC, U+202E...)."""
    return any(unicodedata.category(c)[0] in "CZ" and c != " " for c in text)


# ---------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class SiteSection:
    """[site] — who this site is."""

    name: str = setting("", "ALICE site name as in LDAP (ou=<name>,ou=Sites,...), e.g. \"CERN\".", check_site_name)


@dataclasses.dataclass(frozen=True)
class LdapSection:
    """[ldap] — the ALICE LDAP holding the CE entries."""

    url: str = setting("ldap://alice-ldap.cern.ch:8389", "LDAP server URL, ldaps:// or ldap:// (then StartTLS).", check_ldap_url)
    base: str = setting("o=alice,dc=cern,dc=ch", "Base DN of the ALICE tree.", check_dn)
    bind_dn: str = setting("", "DN to bind as; empty binds anonymously (read only).", check_dn)
    password_file: Path | None = setting(None, "File (mode 0600) holding the bind password; else $SITEADMIN_LDAP_PASSWORD.")
    ca_file: Path | None = setting(None, "CA bundle to verify the server certificate; empty uses the system CAs.")
    starttls: bool = setting(True, "Upgrade ldap:// connections with StartTLS before binding.")
    insecure: bool = setting(False, "Allow plain ldap:// without TLS (lab or debugging only).")
    timeout: float = setting(10.0, "Seconds to wait for connect and for each LDAP operation.", check_timeout)
    install_methods: list[str] = setting(
        ["Torrent", "TorrentPerHost", "CVMFS", "Parrot", "Local"],
        "installMethod values AliEn knows, in their exact (case-sensitive) spelling.",
        check_install_methods,
    )
    default_method: str = setting("CVMFS", "Method `ce disable` restores when the audit log has no earlier one; one of install_methods.")


@dataclasses.dataclass(frozen=True)
class CentralSection:
    """[central] — the central torrent services at CERN."""

    tracker_host: str = setting("alitorrent.cern.ch", "Host of the central BitTorrent tracker.", check_host)
    tracker_port: int = setting(8088, "TCP port of the tracker.", check_port)
    seeder_host: str = setting("alitorrent.cern.ch", "Host of the central seeder.", check_host)
    seeder_port: int = setting(8092, "TCP port of the seeder.", check_port)
    http_fallback: str = setting(
        "http://alitorrent.cern.ch:8092/", "Base URL of plain HTTP downloads used when the torrent path fails.", check_http_url
    )


@dataclasses.dataclass(frozen=True)
class GroupSection:
    """[wns.groups.<name>] — a named set of WNs with its own overrides."""

    hosts: list[str] = setting([], "Hostlist patterns of this group's WNs, e.g. [\"wn[001-040].example.org\"].", check_hostlists)
    aria2c: dict[str, Any] = setting({}, "aria2c options overriding the site profile for this group.", options=True)


@dataclasses.dataclass(frozen=True)
class NodeSection:
    """[wns.nodes."<host>"] — how to reach one WN when it differs from the defaults."""

    address: str = setting("", "Address to connect to instead of the host name.", check_optional_host)
    port: int = setting(0, "SSH port of this WN; 0 uses ssh.port.", lambda v: None if v == 0 else check_port(v))
    config_path: str = setting(
        "", "Path of the aria2c config on this WN when it differs from rollout.config_path; empty uses rollout.config_path.",
        lambda v: None if v == "" else check_absolute_path(v),
    )
    aria2c: dict[str, Any] = setting({}, "aria2c options overriding site and group profile for this host.", options=True)


@dataclasses.dataclass(frozen=True)
class WnsSection:
    """[wns] — the site's worker nodes."""

    hosts: list[str] = setting([], "Hostlist patterns of all WNs, e.g. [\"wn[001-120].example.org\"].", check_hostlists)
    exclude: list[str] = setting([], "Hostlist patterns of WNs to leave out (retired, broken).", check_hostlists)
    max_hosts: int = setting(
        DEFAULT_MAX_HOSTS,
        "Most WNs a hostlist pattern (in this file or on the command line) may name; a bigger one is refused before it is expanded.",
        check_max_hosts,
    )
    ports: str = setting("6881-6999", "WN<->WN BitTorrent port range the site firewall opens (TCP and UDP).", check_port_ranges)
    rpc_port: int = setting(6800, "Port of each WN's aria2c JSON-RPC on the WN's localhost.", check_port)
    groups: dict[str, GroupSection] = setting({}, "Named groups of WNs with their overrides.")
    nodes: dict[str, NodeSection] = setting({}, "Per-WN connection details and overrides.")


@dataclasses.dataclass(frozen=True)
class SshSection:
    """[ssh] — how the VoBox reaches the WNs."""

    user: str = setting("root", "Remote user on the WNs.", check_user)
    key_file: Path | None = setting(None, "Private key to authenticate with; empty uses the ssh agent and ~/.ssh keys.")
    known_hosts: Path = setting(Path("~/.ssh/known_hosts").expanduser(), "known_hosts file; unknown or changed host keys are refused.")
    port: int = setting(22, "SSH port of the WNs.", check_port)
    jump_host: str = setting("", "Bastion to go through, as [user@]host[:port]; empty connects directly.", check_jump_host)
    config_file: Path | None = setting(None, "OpenSSH client config to read host aliases from (e.g. ~/.ssh/config).")
    connect_timeout: float = setting(10.0, "Seconds to wait for the TCP connection.", check_timeout)
    auth_timeout: float = setting(15.0, "Seconds to wait for authentication.", check_timeout)
    command_timeout: float = setting(60.0, "Seconds a remote command may run.", check_timeout)
    parallelism: int = setting(32, "WNs worked on at once.", lambda v: None if 1 <= v <= 1024 else "a number 1-1024")
    python: str = setting(
        "python3",
        "Python 3.6+ interpreter on the WNs that runs siteadmin's preflight probe (a name on PATH or an absolute path, "
        "e.g. /usr/libexec/platform-python).",
        check_interpreter,
    )


@dataclasses.dataclass(frozen=True)
class Aria2cSection:
    """[aria2c] — the aria2c profile every WN runs (site defaults)."""

    template: str = setting("aria2c.conf.j2", "Template rendering the config, looked up in template_path then the built-in templates.", check_mode_free_text)
    template_path: list[Path] = setting([], "Folders searched for templates before the built-in ones.")
    rpc_secret_file: Path | None = setting(None, "File (0600) holding the RPC secret; generated per site when missing.")
    allow: list[str] = setting([], "Lint rules this site allows (downgraded from error/warning), e.g. [\"rpc-listen-all\"].", check_lint_rules)
    state_dirs: list[str] = setting(
        ["/var/lib/aria2", "/var/log/aria2"],
        "Folders on the WNs where aria2c may keep its log, session and DHT files besides the profile's dir "
        "(lint rule file-outside-state-dirs).",
        check_absolute_paths,
    )
    options: dict[str, Any] = setting({}, "Site-wide aria2c options (name = value, aria2c's own names).", options=True)


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    """[rollout] — how a new profile reaches the WNs."""

    config_path: str = setting("/etc/aria2/aria2c.conf", "Path of the aria2c config on each WN.", check_absolute_path)
    batch_size: int | str = setting(
        10, 'WNs changed per batch: a number, or a share of the selected WNs like "20%" (rounded up).', check_batch_size
    )
    max_fail_percent: float = setting(10.0, "Abort the rollout when more than this share of a batch fails.", check_percent)
    backups_kept: int = setting(
        3, "Earlier configs kept on each WN for rollback (0 keeps one all the same: a failed apply restores it).", check_non_negative
    )
    lock_stale_after: float = setting(
        3600.0,
        "Seconds after which a WN's rollout lock is reported as stale (it is never taken over: remove it by hand "
        "once no run holds it).",
        check_timeout,
    )
    drain_timeout: float = setting(
        300.0,
        "Seconds to wait for a WN's aria2c to finish its downloads in flight before a restart; then the WN is "
        "busy and keeps the new file for its next restart (apply --restart-now restarts at once).",
        check_timeout,
    )
    restart_command: str = setting(
        "systemctl restart aria2c",
        "Command run on a WN when a changed option needs a restart; {config_path} in it becomes that WN's config path, shell-quoted.",
        check_mode_free_text,
    )


def check_version(value: str) -> str | None:
    return None if re.fullmatch(r"\d+(\.\d+){0,3}", value) else "a version like \"1.35.0\""


@dataclasses.dataclass(frozen=True)
class StatusSection:
    """[status] — how `siteadmin status` reads the swarm and when it raises a flag."""

    interval: float = setting(10.0, "Seconds between polls of `status --watch` (`--watch SECONDS` overrides it).", check_timeout)
    rpc_timeout: float = setting(10.0, "Seconds a WN's aria2c has to answer one RPC round trip before it is flagged (timeout).", check_timeout)
    stall_window: float = setting(
        300.0, "Seconds a download may go without progress before it is flagged (stalled).", check_timeout
    )
    no_peers_after: float = setting(
        120.0, "Seconds a download may have no peer, while other WNs hold its package, before it is flagged (no-peers).", check_timeout
    )
    seed_grace: float = setting(
        120.0, "Seconds of seeding allowed beyond the WN's aria2c seed-time before it is flagged (seeding-too-long).", check_timeout
    )
    min_aria2c_version: str = setting("1.35.0", "Oldest aria2c version the site accepts; older ones are flagged (old-aria2c).", check_version)
    memory_file: Path = setting(
        Path("~/.local/state/siteadmin/status-memory.json").expanduser(),
        "Where status keeps what it saw between runs (when each download was first seen complete, when it last made "
        "progress), so single runs from cron or Nagios can flag stalled downloads and seeding past the seed time.",
    )
    nagios_warning_percent: float = setting(
        0.0, "`status --nagios` is WARNING when more than this share (%) of the selected WNs has a problem (0: any problem).", check_percent
    )
    nagios_critical_percent: float = setting(
        10.0,
        "`status --nagios` is CRITICAL when more than this share (%) of the selected WNs cannot be read (RPC unreachable or wrong secret).",
        check_percent,
    )
    nagios_min_site_share: float = setting(
        0.0, "`status --nagios` is WARNING when the site-wide share (%) of bytes from site WNs is below this (0: never).", check_percent
    )


@dataclasses.dataclass(frozen=True)
class CheckSection:
    """[check] — the firewall preflight (`siteadmin check`)."""

    all_pairs_up_to: int = setting(
        32, "Probe every ordered pair of WNs up to this many WNs; above, a covering sample (every WN, every subnet pair).", check_positive
    )
    probe_rate: float = setting(
        500.0, "Probe packets per second each WN sends (TCP connects and UDP probes): a rate a site network does not notice.", check_positive
    )
    probe_timeout: float = setting(1.0, "Seconds a probe waits for an answer before calling a port filtered.", check_timeout)
    lpd_announces: int = setting(3, "LPD announces each WN sends during the multicast check.", check_positive)


@dataclasses.dataclass(frozen=True)
class AuditSection:
    """[audit] — the append-only record of every change."""

    path: Path = setting(Path("~/.local/state/siteadmin/audit.jsonl").expanduser(), "JSON-lines audit log file.")


SYSLOG_FACILITIES = (
    "user", "daemon", "auth", "authpriv", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
)
"""Facilities a site may send siteadmin's lines with (the ones meant for programs like it)."""

SYSLOG_PORT = 514
SYSLOG_URL_RE = re.compile(r"(udp|tcp)://(\[[0-9A-Fa-f:.]+\]|[^:/\[\]\s]+)(?::(\d{1,5}))?/?")
SYSLOG_TAG_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def parse_syslog_address(value: str) -> tuple[str, str | tuple[str, int]]:
    """``[syslog] address`` as (``unix``|``udp``|``tcp``, socket path or (host, port)).

    Raises:
        ValueError: with what is allowed.
    """
    allowed = "an absolute socket path like /dev/log, or udp://HOST[:PORT] or tcp://HOST[:PORT] (port 514 by default)"
    if value.startswith("/"):
        if has_control(value):
            raise ValueError(allowed)
        return "unix", value
    m = SYSLOG_URL_RE.fullmatch(value)
    if not m:
        raise ValueError(allowed)
    host = m.group(2).strip("[]")
    port = int(m.group(3)) if m.group(3) else SYSLOG_PORT
    if (check_host(host) is not None and not _is_ip(host)) or check_port(port) is not None:
        raise ValueError(allowed)
    return m.group(1), (host, port)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_syslog_address(value: str) -> str | None:
    try:
        parse_syslog_address(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclasses.dataclass(frozen=True)
class SyslogSection:
    """[syslog] — a line for every change, for the site's central log collection (the audit log stays the full record)."""

    enabled: bool = setting(
        True,
        "Send one line per change siteadmin makes (CE installMethod in LDAP, WN aria2c configs by apply and rollback, "
        "accepted host keys) to syslog; false sends nothing.",
    )
    address: str = setting(
        "/dev/log",
        "Where the lines go: the local syslog socket (/dev/log: journald or rsyslog forwards them), or a collector as "
        "udp://HOST[:PORT] or tcp://HOST[:PORT] (port 514 by default). Unreachable: one warning per run, the change stands.",
        check_syslog_address,
    )
    facility: str = setting(
        "user", f"Syslog facility of the lines: {', '.join(SYSLOG_FACILITIES)}.",
        lambda v: None if v in SYSLOG_FACILITIES else f"one of {', '.join(SYSLOG_FACILITIES)}",
    )
    tag: str = setting(
        "siteadmin", "Tag (program name) the lines carry, for filters like rsyslog's `:programname, isequal, \"siteadmin\"`.",
        lambda v: None if SYSLOG_TAG_RE.fullmatch(v) else "1-32 letters, digits, '_', '.' or '-'",
    )


@dataclasses.dataclass(frozen=True)
class CeSection:
    """[ces.<name>] — which WNs a CE serves (``siteadmin switch`` prepares exactly these)."""

    wns: list[str] = setting(
        [], "Hostlist patterns and @group names of the WNs this CE's jobs run on; empty (or no table) means all WNs.", check_ce_wns
    )


@dataclasses.dataclass(frozen=True)
class Site:
    """The whole effective site config."""

    site: SiteSection = dataclasses.field(default_factory=SiteSection)
    ldap: LdapSection = dataclasses.field(default_factory=LdapSection)
    central: CentralSection = dataclasses.field(default_factory=CentralSection)
    wns: WnsSection = dataclasses.field(default_factory=WnsSection)
    ssh: SshSection = dataclasses.field(default_factory=SshSection)
    aria2c: Aria2cSection = dataclasses.field(default_factory=Aria2cSection)
    rollout: RolloutSection = dataclasses.field(default_factory=RolloutSection)
    check: CheckSection = dataclasses.field(default_factory=CheckSection)
    audit: AuditSection = dataclasses.field(default_factory=AuditSection)
    syslog: SyslogSection = dataclasses.field(default_factory=SyslogSection)
    status: StatusSection = dataclasses.field(default_factory=StatusSection)
    ces: dict[str, CeSection] = setting({}, "Per-CE settings, by CE name as in LDAP ([ces.<name>]).")
    source: Path | None = dataclasses.field(default=None, metadata={"internal": True})
    """Where this config was read from; None for the built-in defaults."""

    def ce_section(self, name: str) -> CeSection | None:
        """The ``[ces.<name>]`` table of a CE (CE names match case-insensitively, as in LDAP); None when absent."""
        for key, section in self.ces.items():
            if key.casefold() == name.casefold():
                return section
        return None

    def require_name(self) -> str:
        """The site name, or a ConfigError when the config does not set one."""
        if not self.site.name:
            raise ConfigError("site.name is not set", "put name = \"<YOUR SITE>\" under [site] in site.toml")
        return self.site.name


SECTIONS: dict[str, type] = {
    name: tp for name, tp in typing.get_type_hints(Site).items() if isinstance(tp, type) and dataclasses.is_dataclass(tp)
}
"""Top-level tables of site.toml and the section class each one builds."""


# ---------------------------------------------------------------- building from TOML


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", Path: "a path (string)"}
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(inner[0])
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a table"
    return names.get(tp, str(tp))


def _show(value: Any) -> str:
    import json

    if isinstance(value, str):
        value = mask_userinfo(value)
    text = json.dumps(value, default=str) if isinstance(value, (str, list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(key: str, tp: Any, value: Any, base: Path | None) -> Any:
    """Coerce one TOML value to the field type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union) and type(None) not in typing.get_args(tp):
        # a choice of types (batch_size: a number or a percentage): the first that takes the value
        for choice in typing.get_args(tp):
            try:
                return _convert(key, choice, value, base)
            except ConfigError:
                continue
        raise ConfigError(f"{key} = {_show(value)}: must be " + " or ".join(_type_name(a) for a in typing.get_args(tp)))
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        if value == "":
            return None
        return _convert(key, inner, value, base)
    bad = ConfigError(f"{key} = {_show(value)}: must be {_type_name(tp)}")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key} = {_show(value)}: must be a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if tp is Path:
        if not isinstance(value, str) or not value or "\0" in value:
            raise bad
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise ConfigError(f"{key} = {_show(value)}: no such user's home directory") from None
        if base is not None and not path.is_absolute():
            path = base / path
        return path
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            raise bad
        return [_convert(f"{key}[{i}]", item_tp, v, base) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        _, item_tp = typing.get_args(tp)
        if dataclasses.is_dataclass(item_tp):
            return {name: _build(item_tp, sub, f"{key}.{name}", base) for name, sub in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, base)
    raise bad  # pragma: no cover - a field type this loader does not know


def _build(cls: Any, table: Any, prefix: str, base: Path | None) -> Any:
    """Build one section dataclass from a TOML table, checking keys and values."""
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix} = {_show(table)}: must be a table ([{prefix}])")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {prefix + '.' if prefix else ''}{close[0]}?" if close else f"known keys: {', '.join(fields)}"
            raise ConfigError(f"{dotted}: unknown key", hint)
        if fields[key].metadata.get("options") and not isinstance(raw, dict):
            # the value may be a secret written the wrong way (options = "rpc-secret=..."): not repeated
            raise ConfigError(f"{dotted}: must be a table of aria2c options, like {{ max-concurrent-downloads = \"5\" }}")
        value = _convert(dotted, hints[key], raw, base)
        check = fields[key].metadata.get("check")
        if check is not None and value is not None:
            allowed = check(value)
            if allowed:
                raise ConfigError(f"{dotted} = {_show(raw)}: must be {allowed}")
        values[key] = value
    return cls(**values)


def site_from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Site:
    """Build and validate a Site from parsed TOML.

    Raises:
        ConfigError: naming the first bad key or value.
    """
    base = source.parent if source is not None else None
    try:
        site: Site = _build(Site, dict(data), "", base)
        _check_across(site)
    except ConfigError as exc:
        # keys and values come from the file: a newline or escape in them must not break the one line
        raise ConfigError(printable(exc.message), printable(exc.hint) if exc.hint else None) from None
    return dataclasses.replace(site, source=source)


def _check_across(site: Site) -> None:
    """Checks of names and of fields that depend on other fields (run once the whole config is built)."""
    for name in site.wns.nodes:
        if check_host(name):
            raise ConfigError(f"wns.nodes.{_show(name)}: must be a host name")
    for name in site.wns.groups:
        if not GROUP_NAME_RE.fullmatch(name):
            raise ConfigError(f"wns.groups.{_show(name)}: must be a group name of letters, digits, _ . - (at most 64)")
    seen_ces: dict[str, str] = {}
    for name, ce in site.ces.items():
        if not name or has_control(name) or len(name) > 256:
            raise ConfigError(f"ces.{_show(name)}: must be a CE name as in LDAP (printable, at most 256 characters)")
        if name.casefold() in seen_ces:
            raise ConfigError(f"ces.{_show(name)}: the same CE as ces.{_show(seen_ces[name.casefold()])} (CE names are case-insensitive)")
        seen_ces[name.casefold()] = name
        for pattern in ce.wns:
            for term in pattern.split(","):
                group = term.strip()[1:] if term.strip().startswith("@") else None
                if group is not None and group != "all" and group not in site.wns.groups:
                    known = ", ".join("@" + g for g in site.wns.groups) or "none configured"
                    raise ConfigError(f"ces.{_show(name)}.wns: @{group}: no such WN group", f"groups: {known}")
    if site.ldap.default_method not in site.ldap.install_methods:
        raise ConfigError(
            f"ldap.default_method = {_show(site.ldap.default_method)}: must be one of ldap.install_methods",
            f"install_methods: {', '.join(site.ldap.install_methods)}",
        )
    # every pattern is counted before any is expanded, so a typo cannot eat the VoBox's memory
    limit = site.wns.max_hosts
    patterns = [("wns.hosts", p) for p in site.wns.hosts] + [("wns.exclude", p) for p in site.wns.exclude]
    patterns += [(f"wns.groups.{name}.hosts", p) for name, group in site.wns.groups.items() for p in group.hosts]
    total = 0
    for key, pattern in patterns:
        total += count_hosts(pattern)
        if total > limit:
            raise ConfigError(
                f"{key} = {_show(pattern)}: the site's patterns name more than wns.max_hosts = {limit} hosts",
                "fix the range, or raise [wns] max_hosts if the site is that big",
            )
    for key, pattern in patterns:
        try:
            parse_hostlist(pattern, limit)
        except ValueError as exc:
            raise ConfigError(f"{key} = {_show(pattern)}: must be {exc}") from None


def find_site_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The site.toml to use: --site, then $SITEADMIN_SITE, ./site.toml, user, system; None for defaults.

    Raises:
        ConfigError: when an explicitly named file (argument or environment) does not exist.
    """
    named = explicit if explicit is not None else os.environ.get(SITE_ENV) or None
    if named is not None:
        origin = "--site" if explicit is not None else f"${SITE_ENV}"
        try:
            path = Path(named).expanduser()
        except RuntimeError:  # ~user of a user that does not exist
            raise ConfigError(f"{origin}: {printable(os.fspath(named))}: no such user's home directory", "name the file by its path") from None
        if not path.is_file():
            raise ConfigError(f"{origin}: no such file {printable(str(path))}", "run `siteadmin config init` to write an example")
        return path
    for candidate in (Path("site.toml"), Path("~/.config/siteadmin/site.toml").expanduser(), Path("/etc/siteadmin/site.toml")):
        if candidate.is_file():
            return candidate
    return None


def load_site(explicit: str | os.PathLike[str] | None = None) -> Site:
    """Find, read and validate the site config; built-in ALICE defaults when there is none.

    Raises:
        ConfigError: file unreadable, not TOML, or holding a bad key or value.
    """
    path = find_site_file(explicit)
    if path is None:
        return Site()
    trust.check_path(path, "site config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{printable(str(path))}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{printable(str(path))}: not valid TOML: {printable(str(exc))}") from None
    try:
        site = site_from_mapping(data, source=path.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{printable(path.name)}: {exc.message}", exc.hint) from None
    _refuse_open_secrets(path, site)
    return site


def _refuse_open_secrets(path: Path, site: Site) -> None:
    """A config holding a secret value is readable by its owner only, like a secret file."""
    held = secrets_held(site)
    if not held:
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigError(
            f"{printable(str(path))}: holds a secret ({held[0]}) but is open to group or others (mode {mode:04o})",
            f"chmod 600 {printable(str(path))}, or move the secret to a 0600 file",
        )


# ---------------------------------------------------------------- showing


SECRET_KEY_RE = re.compile(r"secret|pass|pwd|token|credential", re.IGNORECASE)
"""Parts of an option name that make its value a secret, or likely one (a misspelt ``rpc-secrets``)."""


def resembles_secret(key: str) -> bool:
    """Whether an option name is, or looks like, one that holds a secret (``rpc-secret``, ``all-proxy-pass``)."""
    return bool(SECRET_KEY_RE.search(key))


def _plain(value: Any, secret: bool = False, known: Container[str] | None = None) -> Any:
    if secret and value not in (None, ""):
        return MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("internal"):
                continue
            if f.metadata.get("options"):
                out[f.name] = {k: _plain(v, _hidden(k, known)) for k, v in item.items()}
            else:
                out[f.name] = _plain(item, bool(f.metadata.get("secret")), known)
        return out
    if isinstance(value, dict):
        return {k: _plain(v, known=known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, known=known) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_userinfo(value)
    return value


def _hidden(key: object, known: Container[str] | None) -> bool:
    if not isinstance(key, str):
        return True
    return resembles_secret(key) or (known is not None and key not in known)


def site_as_dict(site: Site, known_options: Container[str] | None = None) -> dict[str, Any]:
    """The effective config as plain data, secrets masked (for `config show`).

    Args:
        site: the config to show.
        known_options: aria2c option names; the value of any other name in an options table is
            masked too (a misspelt secret is still a secret). None masks by name only.

    Returns:
        Plain data (dicts, lists, strings, numbers) ready for TOML-like text or JSON.
    """
    data: dict[str, Any] = _plain(site, known=known_options)
    return data


def secrets_held(site: Site) -> list[str]:
    """Keys of the config whose values are (or look like) secrets: inline aria2c secrets, proxy passwords.

    Returns:
        The dotted keys, empty when the config holds no secret value.
    """
    tables: list[tuple[str, Mapping[str, Any]]] = [("aria2c.options", site.aria2c.options)]
    tables += [(f"wns.groups.{name}.aria2c", group.aria2c) for name, group in site.wns.groups.items()]
    tables += [(f"wns.nodes.{_show(name)}.aria2c", node.aria2c) for name, node in site.wns.nodes.items()]
    held = []
    for prefix, table in tables:
        for key, value in table.items():
            text = str(value)
            if (resembles_secret(key) and text) or mask_userinfo(text) != text:
                held.append(f"{prefix}.{key}")
    if mask_userinfo(site.ssh.jump_host) != site.ssh.jump_host:
        held.append("ssh.jump_host")
    return held


def field_docs(cls: type) -> list[tuple[str, Any, str]]:
    """(name, default, doc) for every documented field of a section, in order."""
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        out.append((f.name, default, str(f.metadata.get("doc", ""))))
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return _toml_value("~" + text[len(home):] if text.startswith(home + "/") else text)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return _toml_value(str(value))


def example_site_toml() -> str:
    """A commented site.toml listing every field with its default (for `config init`)."""
    lines = ["# siteadmin site config. Every key is optional; shown values are the built-in defaults.", ""]
    for section, cls in SECTIONS.items():
        lines.append(f"# {cls.__doc__}")
        lines.append(f"[{section}]")
        for name, default, doc in field_docs(cls):
            lines.append(f"# {doc}")
            if default is None or isinstance(default, dict):
                lines.append(f"# {name} = " + ("\"\"" if default is None else "{}"))
            else:
                lines.append(f"{name} = {_toml_value(default)}")
        lines.append("")
    lines += [
        "# A group of WNs with its own aria2c overrides:",
        "# [wns.groups.bigdisk]",
        "# hosts = [\"wn[001-040].example.org\"]",
        "# aria2c = { max-overall-upload-limit = \"100M\" }",
        "# The WNs one CE's jobs run on (siteadmin switch prepares these; all WNs when absent):",
        "# [ces.\"CE1\"]",
        "# wns = [\"@bigdisk\", \"wn[041-080].example.org\"]",
        "# One WN reached on another address or port:",
        "# [wns.nodes.\"wn001.example.org\"]",
        "# address = \"192.0.2.10\"",
        "# port = 2222",
        "",
    ]
    return "\n".join(lines)


def _reference_table(cls: type, lines: list[str]) -> None:
    lines += [(cls.__doc__ or "").split("— ", 1)[-1].strip().capitalize(), "", "| key | default | meaning |", "|---|---|---|"]
    for name, default, doc in field_docs(cls):
        empty = default is None or (not isinstance(default, bool) and default in ({}, [], "", 0))
        shown = "" if empty else f"`{_toml_value(default)}`"
        cell = doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {shown} | {cell} |")
    lines.append("")


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the field docs above."""
    lines = [
        "# site.toml reference",
        "",
        "Generated by `siteadmin config reference` from the field docs in `siteadmin/site.py`; do not edit.",
        "Relative paths are relative to the directory holding site.toml. Every key is optional.",
        "",
    ]
    for section, cls in SECTIONS.items():
        lines += [f"## [{section}]", ""]
        _reference_table(cls, lines)
    lines += ["## [wns.groups.NAME]", ""]
    _reference_table(GroupSection, lines)
    lines += ['## [wns.nodes."HOST"]', ""]
    _reference_table(NodeSection, lines)
    lines += ['## [ces."NAME"]', ""]
    _reference_table(CeSection, lines)
    return "\n".join(lines)
