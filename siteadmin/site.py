"""The site config (``site.toml``): typed, validated, documented field by field.

A site config is a handful of TOML tables, one per concern (``[site]``, ``[ldap]``,
``[central]``, ``[wns]``, ``[ssh]``, ``[aria2c]``, ``[rollout]``, ``[audit]``). Every field below
carries its own documentation (``doc``), its default (ALICE values built in) and its check, so
``config init`` can write a commented example and ``config show`` the effective values.

Unknown keys are refused with a close-match suggestion, and every bad value gets one line
naming the key, the value and what is allowed. Relative paths are taken relative to the
directory holding the site.toml, so a lab directory can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from siteadmin import trust
from siteadmin.errors import ConfigError
from siteadmin.secrets import MASK, mask_userinfo

SITE_ENV = "SITEADMIN_SITE"
"""Environment variable naming the site.toml to use (tests point it at a lab)."""

Check = Callable[[Any], str | None]
"""A field check returns None when the value is fine, else what is allowed."""


def setting(default: Any, doc: str, check: Check | None = None, secret: bool = False) -> Any:
    """Declare one config field with its default, its documentation and its check."""
    meta = {"doc": doc, "check": check, "secret": secret}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------- checks (pure, unit tested)

PORT_RANGE_RE = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?$")


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
        m = PORT_RANGE_RE.match(part.strip())
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


HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def check_host(value: str) -> str | None:
    """A DNS name or an IPv4/IPv6 address."""
    import ipaddress

    if not value:
        return "a host name or IP address"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    return None if HOSTNAME_RE.match(value) else "a host name or IP address"


def check_optional_host(value: str) -> str | None:
    return None if value == "" else check_host(value)


def check_ldap_url(value: str) -> str | None:
    return None if re.match(r"^ldaps?://[^/\s]+/?$", value) else "an ldap:// or ldaps:// URL like ldaps://host:636"


def check_http_url(value: str) -> str | None:
    return None if re.match(r"^https?://[^/\s]+(/\S*)?$", value) else "an http:// or https:// URL"


def check_site_name(value: str) -> str | None:
    if value == "" or re.match(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", value):
        return None
    return "an ALICE site name of letters, digits, _ . : - (at most 64)"


def check_dn(value: str) -> str | None:
    if value == "":
        return None
    from ldap3.utils.dn import parse_dn

    try:
        parse_dn(value)
    except Exception:  # noqa: BLE001 - ldap3 raises several types for bad DNs
        return "an LDAP DN like cn=admin,o=alice,dc=cern,dc=ch"
    return None


def check_install_methods(value: list[str]) -> str | None:
    if not value or any(not re.match(r"^[A-Za-z][A-Za-z0-9_-]*$", v) for v in value):
        return "a non-empty list of install method names like [\"Torrent\", \"CVMFS\"]"
    return None


def check_hostlists(value: list[str]) -> str | None:
    from siteadmin.inventory import parse_hostlist

    for pattern in value:
        try:
            parse_hostlist(pattern)
        except ValueError as exc:
            return str(exc)
    return None


def check_lint_rules(value: list[str]) -> str | None:
    from siteadmin.aria2conf.lint import RULES  # the lint owns its rule ids

    for rule in value:
        if rule not in RULES:
            close = difflib.get_close_matches(rule, list(RULES), n=1)
            return f"lint rule ids ({'did you mean ' + close[0] + '?' if close else ', '.join(RULES)}), not {rule!r}"
    return None


def check_absolute_path(value: str) -> str | None:
    return None if value.startswith("/") and not any(c in value for c in "\n\r\0") else "an absolute path"


def check_mode_free_text(value: str) -> str | None:
    return None if "\n" not in value and "\0" not in value else "one line of text"


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
    default_method: str = setting("CVMFS", "Method `ce disable` restores when the audit log has no earlier one.")


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
    aria2c: dict[str, Any] = setting({}, "aria2c options overriding the site profile for this group.")


@dataclasses.dataclass(frozen=True)
class NodeSection:
    """[wns.nodes."<host>"] — how to reach one WN when it differs from the defaults."""

    address: str = setting("", "Address to connect to instead of the host name.", check_optional_host)
    port: int = setting(0, "SSH port of this WN; 0 uses ssh.port.", lambda v: None if v == 0 else check_port(v))
    aria2c: dict[str, Any] = setting({}, "aria2c options overriding site and group profile for this host.")


@dataclasses.dataclass(frozen=True)
class WnsSection:
    """[wns] — the site's worker nodes."""

    hosts: list[str] = setting([], "Hostlist patterns of all WNs, e.g. [\"wn[001-120].example.org\"].", check_hostlists)
    exclude: list[str] = setting([], "Hostlist patterns of WNs to leave out (retired, broken).", check_hostlists)
    ports: str = setting("6881-6999", "WN<->WN BitTorrent port range the site firewall opens (TCP and UDP).", check_port_ranges)
    rpc_port: int = setting(6800, "Port of each WN's aria2c JSON-RPC on the WN's localhost.", check_port)
    groups: dict[str, GroupSection] = setting({}, "Named groups of WNs with their overrides.")
    nodes: dict[str, NodeSection] = setting({}, "Per-WN connection details and overrides.")


@dataclasses.dataclass(frozen=True)
class SshSection:
    """[ssh] — how the VoBox reaches the WNs."""

    user: str = setting("root", "Remote user on the WNs.", lambda v: None if re.match(r"^[a-z_][a-z0-9_.-]*$", v) else "a Unix user name")
    key_file: Path | None = setting(None, "Private key to authenticate with; empty uses the ssh agent and ~/.ssh keys.")
    known_hosts: Path = setting(Path("~/.ssh/known_hosts").expanduser(), "known_hosts file; unknown or changed host keys are refused.")
    port: int = setting(22, "SSH port of the WNs.", check_port)
    jump_host: str = setting("", "Bastion to go through, as [user@]host[:port]; empty connects directly.", check_mode_free_text)
    config_file: Path | None = setting(None, "OpenSSH client config to read host aliases from (e.g. ~/.ssh/config).")
    connect_timeout: float = setting(10.0, "Seconds to wait for the TCP connection.", check_timeout)
    auth_timeout: float = setting(15.0, "Seconds to wait for authentication.", check_timeout)
    command_timeout: float = setting(60.0, "Seconds a remote command may run.", check_timeout)
    parallelism: int = setting(32, "WNs worked on at once.", lambda v: None if 1 <= v <= 1024 else "a number 1-1024")


@dataclasses.dataclass(frozen=True)
class Aria2cSection:
    """[aria2c] — the aria2c profile every WN runs (site defaults)."""

    template: str = setting("aria2c.conf.j2", "Template rendering the config, looked up in template_path then the built-in templates.", check_mode_free_text)
    template_path: list[Path] = setting([], "Folders searched for templates before the built-in ones.")
    rpc_secret_file: Path | None = setting(None, "File (0600) holding the RPC secret; generated per site when missing.")
    allow: list[str] = setting([], "Lint rules this site allows (downgraded from error/warning), e.g. [\"rpc-listen-all\"].", check_lint_rules)
    options: dict[str, Any] = setting({}, "Site-wide aria2c options (name = value, aria2c's own names).")


@dataclasses.dataclass(frozen=True)
class RolloutSection:
    """[rollout] — how a new profile reaches the WNs."""

    config_path: str = setting("/etc/aria2/aria2c.conf", "Path of the aria2c config on each WN.", check_absolute_path)
    batch_size: int = setting(10, "WNs changed per batch.", check_positive)
    max_fail_percent: float = setting(10.0, "Abort the rollout when more than this share of a batch fails.", check_percent)
    backups_kept: int = setting(3, "Earlier configs kept on each WN for rollback.", check_non_negative)
    restart_command: str = setting("systemctl restart aria2c", "Command run on a WN when a changed option needs a restart.", check_mode_free_text)


@dataclasses.dataclass(frozen=True)
class AuditSection:
    """[audit] — the append-only record of every change."""

    path: Path = setting(Path("~/.local/state/siteadmin/audit.jsonl").expanduser(), "JSON-lines audit log file.")


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
    audit: AuditSection = dataclasses.field(default_factory=AuditSection)
    source: Path | None = dataclasses.field(default=None, metadata={"internal": True})
    """Where this config was read from; None for the built-in defaults."""

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

    text = json.dumps(value, default=str) if isinstance(value, (str, list, dict)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _convert(key: str, tp: Any, value: Any, base: Path | None) -> Any:
    """Coerce one TOML value to the field type, or raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
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
    site: Site = _build(Site, dict(data), "", base)
    for name in site.wns.nodes:
        if check_host(name):
            raise ConfigError(f"wns.nodes.\"{name}\": must be a host name")
    return dataclasses.replace(site, source=source)


def find_site_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The site.toml to use: --site, then $SITEADMIN_SITE, ./site.toml, user, system; None for defaults.

    Raises:
        ConfigError: when an explicitly named file (argument or environment) does not exist.
    """
    named = explicit if explicit is not None else os.environ.get(SITE_ENV) or None
    if named is not None:
        path = Path(named).expanduser()
        if not path.is_file():
            origin = "--site" if explicit is not None else f"${SITE_ENV}"
            raise ConfigError(f"{origin}: no such file {path}", "run `siteadmin config init` to write an example")
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
        raise ConfigError(f"{path}: cannot read: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return site_from_mapping(data, source=path.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc.message}", exc.hint) from None


# ---------------------------------------------------------------- showing


SECRET_OPTION_RE = re.compile(r"(secret|passwd|password)$")


def _plain(value: Any, secret: bool = False) -> Any:
    if secret and value not in (None, ""):
        return MASK
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name), bool(f.metadata.get("secret"))) for f in dataclasses.fields(value) if not f.metadata.get("internal")}
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and SECRET_OPTION_RE.search(k) else _plain(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_userinfo(value)
    return value


def site_as_dict(site: Site) -> dict[str, Any]:
    """The effective config as plain data, secrets masked (for `config show`)."""
    data: dict[str, Any] = _plain(site)
    return data


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
    return "\n".join(lines)
