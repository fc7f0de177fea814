"""Security lint of aria2c profiles: what a valid profile can still get wrong.

Each rule has an id, a level and a reason. Errors stop a render or rollout unless the site
allows the rule (``allow``: a list of rule ids); an allowed finding is still reported, with
level ``allowed``. Warnings never stop anything.

| rule | level | what |
|---|---|---|
| rpc-no-secret | error | RPC on without rpc-secret: anyone reaching the port drives the daemon |
| rpc-weak-secret | error | rpc-secret with an estimated strength under 128 bits |
| rpc-listen-all | error | RPC listening on every interface instead of loopback |
| rpc-allow-origin-all | error | any web page a WN user opens can drive the daemon |
| proxy-credentials-in-url | error | user:password inside a proxy URL (shown by ps, logs, RPC) |
| log-level-debug | error | debug logging (aria2's default level) fills the WN's disk |
| rpc-disabled | warning | siteadmin cannot see or steer the daemon |
| ports-outside-firewall | warning | listen/DHT ports outside the site's firewall range (wns.ports) |
| lpd-no-interface | warning | LPD on a multi-homed WN without bt-lpd-interface |
| file-outside-state-dirs | warning | log, session or DHT file outside ``dir`` and ``aria2c.state_dirs`` |
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from siteadmin.aria2conf.catalogue import CATALOGUE, Kind, port_ranges, proxy_userinfo
from siteadmin.lint_rules import RULES as RULES  # the ids live below the site config, which checks [aria2c] allow
from siteadmin.site import Site, parse_port_ranges

ERROR, WARNING, ALLOWED = "error", "warning", "allowed"


MIN_SECRET_BITS = 128


@dataclasses.dataclass(frozen=True)
class Finding:
    """One lint result."""

    level: str
    """error, warning, or allowed (an error or warning the site allows)."""
    option: str
    message: str
    rule: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.level}: {self.option}: {self.message} [{self.rule}]"


def allowed_rules(site: Site) -> tuple[str, ...]:
    """Rule ids the site allows: ``[aria2c] allow = [...]`` (checked against RULES when the config loads)."""
    return tuple(site.aria2c.allow)


def secret_bits(secret: str) -> float:
    """A conservative strength estimate: length times log2 of the character classes used.

    A secret of few distinct characters (``aaaa...``) is counted by its distinct characters.
    ``generate_secret(256)`` (43 URL-safe characters) scores about 256.
    """
    if not secret:
        return 0.0
    pool = 0
    for chars in (string.ascii_lowercase, string.ascii_uppercase, string.digits):
        if any(c in chars for c in secret):
            pool += len(chars)
    others = {c for c in secret if c not in string.ascii_letters + string.digits}
    if others:
        pool += 2 if others <= {"-", "_"} else 32
    cases = any(c.islower() for c in secret) and any(c.isupper() for c in secret)
    if cases and others <= {"-", "_"}:
        # base64url (token_urlsafe, openssl rand -base64): a random string of that alphabet need not
        # show a digit or a dash, yet each character still carries 6 bits
        pool = max(pool, 64)
    length = len(secret)
    distinct = len(set(secret))
    if distinct < 8 or distinct * 4 < length:
        length = distinct
    return length * math.log2(max(pool, 2))


def local_interfaces(candidates: Iterable[str] | None = None) -> list[str]:
    """Non-loopback interfaces of this machine that have an IPv4 or IPv6 address (netifaces).

    Args:
        candidates: interface names to look at; all of this machine's when None. One that is
            gone by the time it is read (a container or lab link deleted meanwhile) is skipped.
    """
    import netifaces

    names = []
    for name in netifaces.interfaces() if candidates is None else candidates:
        try:
            addrs = netifaces.ifaddresses(name)
        except ValueError:  # the interface went away between listing and reading it
            continue
        families = [f for f in (netifaces.AF_INET, netifaces.AF_INET6) if addrs.get(f)]
        if not families or name == "lo" or name.startswith("lo:"):
            continue
        if all(str(a.get("addr", "")).startswith(("127.", "::1")) for f in families for a in addrs[f]):
            continue
        names.append(name)
    return names


def lint(
    site: Site,
    options: Mapping[str, str],
    host: str | None = None,
    allow: Iterable[str] | None = None,
    interfaces: Sequence[str] | None = None,
) -> list[Finding]:
    """Security findings for one host's options.

    Args:
        site: the site config (its firewall port ranges and allowed rules).
        options: name -> conf text, e.g. ``profile_for(site, host)`` or ``parse_conf`` of a WN's file.
        host: only for messages.
        allow: rule ids to downgrade to ``allowed``; default ``allowed_rules(site)``.
        interfaces: the WN's non-loopback interfaces (from a preflight probe); None uses this
            machine's (``local_interfaces()``), right when linting on the WN itself.

    Returns:
        Findings in rule order; errors block, warnings and allowed findings do not.
    """
    allowed = set(allowed_rules(site) if allow is None else allow)
    found: list[Finding] = []

    def add(rule: str, option: str, detail: str = "") -> None:
        level, reason = RULES[rule]
        message = reason + (f" ({detail})" if detail else "")
        if host:
            message = f"{host}: {message}"
        found.append(Finding(ALLOWED if rule in allowed else level, option, message, rule))

    rpc_on = options.get("enable-rpc") == "true"
    secret = options.get("rpc-secret", "")
    if rpc_on and not secret:
        add("rpc-no-secret", "rpc-secret")
    if secret:
        bits = secret_bits(secret)
        if bits < MIN_SECRET_BITS:
            add("rpc-weak-secret", "rpc-secret", f"about {bits:.0f} bits; leave it unset and siteadmin generates a 256-bit one")
    if options.get("rpc-listen-all") == "true":
        add("rpc-listen-all", "rpc-listen-all", "set rpc-listen-all = false")
    if options.get("rpc-allow-origin-all") == "true":
        add("rpc-allow-origin-all", "rpc-allow-origin-all", "set rpc-allow-origin-all = false")
    for name, value in options.items():
        spec = CATALOGUE.get(name)
        if spec is not None and spec.kind is Kind.PROXY and value and proxy_userinfo(value):
            add("proxy-credentials-in-url", name, f"move them to {name}-user and {name}-passwd")
    level = options.get("log-level", CATALOGUE["log-level"].default)
    if level == "debug" and ("log-level" in options or options.get("log")):
        add("log-level-debug", "log-level", "set log-level = \"notice\"" + ("" if "log-level" in options else "; unset means debug"))
    if not rpc_on:
        add("rpc-disabled", "enable-rpc")
    _lint_ports(site, options, add)
    if options.get("bt-enable-lpd") == "true" and not options.get("bt-lpd-interface"):
        present = list(local_interfaces() if interfaces is None else interfaces)
        if len(present) > 1:
            add("lpd-no-interface", "bt-lpd-interface", f"interfaces {', '.join(present)}; LPD may announce on the wrong one")
    _lint_state_files(site, options, add)
    order = list(RULES)
    return sorted(found, key=lambda f: order.index(f.rule))


def _lint_ports(site: Site, options: Mapping[str, str], add: Any) -> None:
    try:
        firewall = parse_port_ranges(site.wns.ports)
    except ValueError:  # pragma: no cover - site.py validates wns.ports
        return
    for name in ("listen-port", "dht-listen-port"):
        value = options.get(name)
        if not value:
            continue
        try:
            wanted = port_ranges(value)
        except ValueError:
            continue
        outside = [(a, b) for a, b in wanted if not any(lo <= a and b <= hi for lo, hi in firewall)]
        if outside:
            shown = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in outside)
            add("ports-outside-firewall", name, f"{shown} not within wns.ports = {site.wns.ports}")


STATE_FILES: tuple[str, ...] = tuple(name for name, spec in CATALOGUE.items() if spec.kind is Kind.PATH and name != "dir")
"""Path options naming a file aria2c writes or reads besides downloads: log, session, DHT tables."""


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _lint_state_files(site: Site, options: Mapping[str, str], add: Any) -> None:
    """aria2c on a WN usually runs as root: ``log=/etc/passwd`` would append to the password file."""
    folders = [posixpath.normpath(d) for d in (options.get("dir"), *site.aria2c.state_dirs) if d]
    for name in STATE_FILES:
        value = options.get(name)
        if not value or value == "-":
            continue
        # normalised so that /var/lib/aria2/../../../etc/passwd counts where it lands
        path = posixpath.normpath(value)
        if not any(_inside(path, folder) for folder in folders):
            where = ", ".join(dict.fromkeys(folders)) or "none"
            add("file-outside-state-dirs", name, f"{value} is not within {where}")
