"""The aria2c option catalogue: every option a siteadmin profile may set, and aria2's rules for it.

Each entry knows the option's value syntax and range (as aria2 1.36's own option handlers
check them, sometimes stricter where aria2 accepts nonsense silently, e.g. ``seed-time=abc``),
whether ``aria2.changeGlobalOption`` can change it on a running daemon, whether it is a secret,
and the form aria2 reports it back in over RPC (sizes come back in bytes, proxies with a
trailing ``/``). The liveness flags were measured on aria2 1.36 by changing every option over
RPC and reading it back, globally and on downloads added before and after the change
(``tests/aria2conf/test_daemon.py`` keeps them honest): aria2 answers ``OK`` to a change it
ignores, so the flag cannot be learnt from the answer.

Nothing here touches the site config; ``render`` and ``validate`` do.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import math
import re
from collections.abc import Callable

from siteadmin.secrets import MASK, mask_userinfo


class Kind(enum.Enum):
    """Value syntax of an option, as written in the conf file."""

    BOOL = "true|false"
    INT = "integer"
    FLOAT = "number"
    SIZE = "size"
    PORTS = "port list"
    PORT = "port"
    ENUM = "one of"
    PATH = "absolute path"
    STRING = "text"
    HOSTPORT = "HOST:PORT"
    IP = "IP address"
    INTERFACE = "interface or IP"
    PROXY = "proxy URL"
    URIS = "URI list"
    HOSTS = "host list"


class Applies(enum.Enum):
    """How a changed value reaches a running aria2c."""

    LIVE = "live"
    """aria2.changeGlobalOption applies it to the whole daemon at once."""
    NEW_DOWNLOADS = "new-downloads"
    """aria2.changeGlobalOption sets it for downloads added afterwards; running downloads keep theirs."""
    RESTART = "restart"
    """Read at start only: aria2c must be restarted (changeGlobalOption silently ignores it)."""


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One aria2c option siteadmin knows."""

    name: str
    kind: Kind
    section: str
    doc: str
    applies: Applies
    default: str | None = None
    """aria2's built-in default, as text; None when aria2 has none."""
    secret: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    allow_empty: bool = False
    """An empty value is meaningful to aria2 (e.g. ``all-proxy=`` clears a proxy)."""
    allow_dash: bool = False
    """``-`` (stdin or stdout) is accepted as well as a path."""
    per_download: bool = False
    """aria2.changeOption can also change it on a running download."""

    def allowed(self) -> str:
        """What values are allowed, in words (used in every error message)."""
        k = self.kind
        if k is Kind.BOOL:
            text = "true or false"
        elif k is Kind.ENUM:
            text = "one of " + ", ".join(self.choices)
        elif k in (Kind.INT, Kind.FLOAT):
            what = "an integer" if k is Kind.INT else "a decimal number"
            if self.high is not None:
                text = f"{what} {_num(self.low)}-{_num(self.high)}"
            else:
                text = f"{what} >= {_num(self.low)}"
            if k is Kind.FLOAT:
                text += ", like 1.0"
        elif k is Kind.SIZE:
            text = "a size in bytes >= 0, optionally with K or M (1K = 1024), like 512K or 16M"
        elif k is Kind.PORTS:
            text = "ports or ranges within 1024-65535, like 6881-6999 or 6881,6890-6899"
        elif k is Kind.PORT:
            text = "a port number 1024-65535"
        elif k is Kind.PATH:
            text = "an absolute path" + (" or -" if self.allow_dash else "")
        elif k is Kind.HOSTPORT:
            text = "HOST:PORT with a host name or IPv4 address and a port 1-65535"
        elif k is Kind.IP:
            text = "a numeric IPv4 or IPv6 address"
        elif k is Kind.INTERFACE:
            text = "a network interface name (like eth0) or an IP address"
        elif k is Kind.PROXY:
            text = "[http://]HOST[:PORT] (aria2 speaks plain HTTP to every proxy, https:// only means port 443; credentials belong in -user/-passwd)"
        elif k is Kind.URIS:
            text = "comma-separated http://, https:// or udp:// announce URIs" + (" or *" if "*" in self.choices else "")
        elif k is Kind.HOSTS:
            text = "comma-separated host names, domains (.example.org) or networks (10.0.0.0/8)"
        else:
            text = "one line of text without leading or trailing spaces"
        if self.allow_empty and k is not Kind.STRING:
            text += " (or empty)"
        return text

    def check(self, value: str) -> str | None:
        """None when ``value`` (aria2 conf text) is allowed, else what is allowed."""
        if value == "" and self.allow_empty:
            return None
        if value == "-" and self.allow_dash:
            return None
        ok = _CHECKS[self.kind](self, value)
        return None if ok else self.allowed()


def _num(value: float | None) -> str:
    if value is None:
        return "0"
    return str(int(value)) if float(value).is_integer() else str(value)


# ---------------------------------------------------------------- value checks (pure)

INT_RE = re.compile(r"^[0-9]{1,19}$")
FLOAT_RE = re.compile(r"^[0-9]{1,10}(\.[0-9]{1,10})?$")
SIZE_RE = re.compile(r"^([0-9]{1,19})([KkMm]?)$")
PORTS_RE = re.compile(r"^([0-9]{1,5})(?:-([0-9]{1,5}))?$")
HOST_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
PROXY_RE = re.compile(r"^(?:(http)://)?(?:([^/@\s]+)@)?([^/@:\s]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?/?$")
URI_RE = re.compile(r"^(https?|udp)://([^/@:\s?#]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?(/[^\s,]*)?$")
INT64_MAX = 2**63 - 1


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    return _is_ip(text) or bool(HOST_RE.match(text)) and not text.replace(".", "").isdigit()


def _in_range(spec: OptionSpec, number: float) -> bool:
    if spec.low is not None and number < spec.low:
        return False
    return spec.high is None or number <= spec.high


def _check_bool(spec: OptionSpec, v: str) -> bool:
    return v in ("true", "false")


def _check_int(spec: OptionSpec, v: str) -> bool:
    return bool(INT_RE.match(v)) and int(v) <= INT64_MAX and _in_range(spec, int(v))


def _check_float(spec: OptionSpec, v: str) -> bool:
    return bool(FLOAT_RE.match(v)) and math.isfinite(float(v)) and _in_range(spec, float(v))


def size_in_bytes(text: str) -> int:
    """aria2's K/M size text in bytes (``16M`` -> 16777216).

    Raises:
        ValueError: when the text is not a size aria2 accepts.
    """
    m = SIZE_RE.match(text)
    if not m:
        raise ValueError(text)
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    value = int(m.group(1)) * factor
    if value > INT64_MAX:
        raise ValueError(text)
    return value


def _check_size(spec: OptionSpec, v: str) -> bool:
    try:
        return _in_range(spec, size_in_bytes(v))
    except ValueError:
        return False


def port_ranges(text: str) -> list[tuple[int, int]]:
    """``6881-6999,7000`` as (first, last) pairs within 1024-65535.

    Raises:
        ValueError: when malformed, out of range, or a range runs backwards.
    """
    out = []
    for part in text.split(","):
        m = PORTS_RE.match(part)
        if not m:
            raise ValueError(text)
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1024 <= first <= last <= 65535:
            raise ValueError(text)
        out.append((first, last))
    return out


def _check_ports(spec: OptionSpec, v: str) -> bool:
    try:
        port_ranges(v)
    except ValueError:
        return False
    return True


def _check_port(spec: OptionSpec, v: str) -> bool:
    return bool(INT_RE.match(v)) and 1024 <= int(v) <= 65535


def _check_enum(spec: OptionSpec, v: str) -> bool:
    return v in spec.choices


def _check_path(spec: OptionSpec, v: str) -> bool:
    return v.startswith("/") and v == v.strip() and "\t" not in v


def _check_string(spec: OptionSpec, v: str) -> bool:
    return v != "" and v == v.strip() and v.isprintable()


def _check_hostport(spec: OptionSpec, v: str) -> bool:
    host, sep, port = v.rpartition(":")
    return bool(sep) and _is_host(host) and ":" not in host and INT_RE.match(port) is not None and 1 <= int(port) <= 65535


def _check_ip(spec: OptionSpec, v: str) -> bool:
    return _is_ip(v)


def _check_interface(spec: OptionSpec, v: str) -> bool:
    return _is_ip(v) or bool(IFNAME_RE.match(v)) and v not in (".", "..")


def _port_ok(port: str | None) -> bool:
    return port is None or 1 <= int(port) <= 65535


def _check_proxy(spec: OptionSpec, v: str) -> bool:
    m = PROXY_RE.match(v)
    if not m:
        return False
    host = m.group(3).strip("[]")
    return (_is_host(host) or _is_ip(host)) and _port_ok(m.group(4))


def proxy_userinfo(value: str) -> str | None:
    """The ``user:password`` part of a proxy URL, or None when it has none."""
    m = PROXY_RE.match(value)
    return m.group(2) if m else None


def _check_uris(spec: OptionSpec, v: str) -> bool:
    if v == "*" and "*" in spec.choices:
        return True
    for uri in v.split(","):
        m = URI_RE.match(uri)
        if not m or not (_is_host(m.group(2).strip("[]")) or _is_ip(m.group(2).strip("[]"))) or not _port_ok(m.group(3)):
            return False
    return True


def _check_hosts(spec: OptionSpec, v: str) -> bool:
    for item in v.split(","):
        if not item:
            return False
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                return False
        elif not _is_host(item.removeprefix(".")):
            return False
    return True


_CHECKS: dict[Kind, Callable[[OptionSpec, str], bool]] = {
    Kind.BOOL: _check_bool,
    Kind.INT: _check_int,
    Kind.FLOAT: _check_float,
    Kind.SIZE: _check_size,
    Kind.PORTS: _check_ports,
    Kind.PORT: _check_port,
    Kind.ENUM: _check_enum,
    Kind.PATH: _check_path,
    Kind.STRING: _check_string,
    Kind.HOSTPORT: _check_hostport,
    Kind.IP: _check_ip,
    Kind.INTERFACE: _check_interface,
    Kind.PROXY: _check_proxy,
    Kind.URIS: _check_uris,
    Kind.HOSTS: _check_hosts,
}


# ---------------------------------------------------------------- the catalogue

LEVELS = ("debug", "info", "notice", "warn", "error")
L, N, R = Applies.LIVE, Applies.NEW_DOWNLOADS, Applies.RESTART
BT, DHT, LIM, PRX, RPC, FILES, LOG, PROC = (
    "BitTorrent", "DHT and peer discovery", "Speed limits", "Proxy", "RPC", "Files and sessions", "Logging", "Process",
)


def _o(name: str, kind: Kind, section: str, applies: Applies, doc: str, **kw: object) -> OptionSpec:
    return OptionSpec(name=name, kind=kind, section=section, applies=applies, doc=doc, **kw)  # type: ignore[arg-type]


def _proxy(prefix: str, what: str) -> list[OptionSpec]:
    return [
        _o(f"{prefix}-proxy", Kind.PROXY, PRX, N, f"Proxy for {what}; empty clears an inherited one.", allow_empty=True),
        _o(f"{prefix}-proxy-user", Kind.STRING, PRX, N, f"User for --{prefix}-proxy."),
        _o(f"{prefix}-proxy-passwd", Kind.STRING, PRX, N, f"Password for --{prefix}-proxy (secret; aria2 shows it over RPC).", secret=True),
    ]


_SPECS: list[OptionSpec] = [
    # BitTorrent
    _o("listen-port", Kind.PORTS, BT, R, "TCP ports for incoming BitTorrent connections.", default="6881-6999"),
    _o("bt-tracker", Kind.URIS, BT, N, "Extra announce URIs added to every torrent (the site's tracker).", allow_empty=True),
    _o("bt-exclude-tracker", Kind.URIS, BT, N, "Announce URIs removed from torrents; * removes all.", choices=("*",), allow_empty=True),
    _o("bt-tracker-interval", Kind.INT, BT, N, "Seconds between tracker announces; 0 lets the tracker decide.", default="0", low=0),
    _o("bt-external-ip", Kind.IP, BT, N, "Address reported to the tracker and DHT (needed for DHT on a private network)."),
    _o("bt-max-peers", Kind.INT, BT, N, "Peers per torrent; 0 is unlimited.", default="55", low=0, per_download=True),
    _o("bt-request-peer-speed-limit", Kind.SIZE, BT, N, "Below this total download speed aria2 asks for more peers.", default="50K", low=0, per_download=True),
    _o("bt-max-open-files", Kind.INT, BT, L, "Files kept open across all BitTorrent downloads.", default="100", low=1),
    _o("seed-ratio", Kind.FLOAT, BT, N, "Seed until this share ratio; 0.0 seeds regardless of ratio.", default="1.0", low=0),
    _o("seed-time", Kind.FLOAT, BT, N, "Seed for this many (fractional) minutes; with seed-ratio, the first reached ends seeding.", low=0),
    _o("bt-stop-timeout", Kind.INT, BT, N, "Stop a torrent after this many seconds at zero download speed; 0 never.", default="0", low=0),
    _o("bt-seed-unverified", Kind.BOOL, BT, N, "Seed existing files without hash-checking them first.", default="false"),
    _o("bt-hash-check-seed", Kind.BOOL, BT, N, "Keep seeding after a check-integrity hash check finds the file complete.", default="true"),
    _o("bt-detach-seed-only", Kind.BOOL, BT, R, "Do not count seeding downloads against max-concurrent-downloads.", default="false"),
    _o("bt-require-crypto", Kind.BOOL, BT, N, "Refuse peers using the plain (non-obfuscated) handshake.", default="false"),
    _o("bt-min-crypto-level", Kind.ENUM, BT, N, "Lowest accepted encryption method.", default="plain", choices=("plain", "arc4")),
    _o("follow-torrent", Kind.ENUM, BT, N, "Download the content of a downloaded .torrent (mem: keep it in memory only).",
       default="true", choices=("true", "mem", "false")),
    # DHT and peer discovery
    _o("enable-dht", Kind.BOOL, DHT, R, "IPv4 DHT (and UDP trackers).", default="true"),
    _o("enable-dht6", Kind.BOOL, DHT, R, "IPv6 DHT.", default="false"),
    _o("dht-listen-port", Kind.PORTS, DHT, R, "UDP ports for DHT and UDP trackers.", default="6881-6999"),
    _o("dht-entry-point", Kind.HOSTPORT, DHT, R, "A node to join the IPv4 DHT through (e.g. another WN)."),
    _o("dht-file-path", Kind.PATH, DHT, R, "IPv4 DHT routing table file (written on exit).", default="$HOME/.cache/aria2/dht.dat"),
    _o("dht-file-path6", Kind.PATH, DHT, R, "IPv6 DHT routing table file.", default="$HOME/.cache/aria2/dht6.dat"),
    _o("enable-peer-exchange", Kind.BOOL, DHT, N, "Peer Exchange (PEX) between peers.", default="true"),
    _o("bt-enable-lpd", Kind.BOOL, DHT, N, "Local Peer Discovery (multicast 239.192.152.143:6771 on the site LAN).", default="false"),
    _o("bt-lpd-interface", Kind.INTERFACE, DHT, R, "Interface (or its address) LPD announces on; needed on multi-homed WNs."),
    # Speed limits
    _o("max-overall-upload-limit", Kind.SIZE, LIM, L, "Upload limit of the whole daemon, bytes/s (K, M); 0 unlimited.", default="0", low=0),
    _o("max-overall-download-limit", Kind.SIZE, LIM, L, "Download limit of the whole daemon, bytes/s (K, M); 0 unlimited.", default="0", low=0),
    _o("max-upload-limit", Kind.SIZE, LIM, N, "Upload limit per torrent, bytes/s (K, M); 0 unlimited.", default="0", low=0, per_download=True),
    _o("max-download-limit", Kind.SIZE, LIM, N, "Download limit per download, bytes/s (K, M); 0 unlimited.", default="0", low=0, per_download=True),
    _o("max-concurrent-downloads", Kind.INT, LIM, L, "Downloads active at once.", default="5", low=1),
    # Proxy
    *_proxy("all", "all protocols"),
    *_proxy("http", "HTTP"),
    *_proxy("https", "HTTPS"),
    _o("no-proxy", Kind.HOSTS, PRX, N, "Hosts, domains and networks reached without the proxy.", allow_empty=True),
    # RPC
    _o("enable-rpc", Kind.BOOL, RPC, R, "JSON-RPC server (siteadmin reaches it through an SSH tunnel).", default="false"),
    _o("rpc-listen-port", Kind.PORT, RPC, R, "Port of the RPC server.", default="6800"),
    _o("rpc-listen-all", Kind.BOOL, RPC, R, "Listen for RPC on all interfaces instead of loopback only.", default="false"),
    _o("rpc-secret", Kind.STRING, RPC, R, "RPC authorization token (secret; generated per site when not set).", secret=True),
    _o("rpc-allow-origin-all", Kind.BOOL, RPC, R, "Send Access-Control-Allow-Origin: * (lets any web page drive the daemon).", default="false"),
    _o("rpc-max-request-size", Kind.SIZE, RPC, R, "Largest accepted RPC request (K, M).", default="2M", low=0),
    # Files and sessions
    _o("dir", Kind.PATH, FILES, N, "Directory downloads are stored in.", default="the daemon's working directory"),
    _o("input-file", Kind.PATH, FILES, R, "Downloads to add at start (usually the saved session).", allow_dash=True),
    _o("save-session", Kind.PATH, FILES, L, "File the unfinished (and with force-save all) downloads are saved to on exit."),
    _o("save-session-interval", Kind.INT, FILES, R, "Also save the session every this many seconds; 0 only on exit.", default="0", low=0),
    _o("force-save", Kind.BOOL, FILES, N, "Save completed (seeding) downloads in the session too.", default="false", per_download=True),
    _o("auto-save-interval", Kind.INT, FILES, R, "Seconds between control-file (.aria2) saves; 0 only on stop.", default="60", low=0, high=600),
    _o("continue", Kind.BOOL, FILES, N, "Resume partially downloaded files.", default="false"),
    _o("check-integrity", Kind.BOOL, FILES, N, "Hash-check pieces of existing files before downloading or seeding.", default="false"),
    _o("file-allocation", Kind.ENUM, FILES, N, "How file space is reserved.", default="prealloc", choices=("none", "prealloc", "trunc", "falloc")),
    _o("disk-cache", Kind.SIZE, FILES, R, "Memory cache for written data (K, M); 0 disables it.", default="16M", low=0),
    _o("enable-mmap", Kind.BOOL, FILES, N, "Map files into memory.", default="false"),
    # Logging
    _o("log", Kind.PATH, LOG, L, "Log file; - logs to stdout; unset writes no log.", allow_dash=True),
    _o("log-level", Kind.ENUM, LOG, L, "Log file level. aria2's default is debug (huge logs).", default="debug", choices=LEVELS),
    _o("console-log-level", Kind.ENUM, LOG, R, "Console (journal) log level.", default="notice", choices=LEVELS),
    _o("summary-interval", Kind.INT, LOG, R, "Seconds between progress summaries on the console; 0 none.", default="60", low=0, high=2147483647),
    _o("quiet", Kind.BOOL, LOG, R, "No console output at all.", default="false"),
    _o("show-console-readout", Kind.BOOL, LOG, R, "Show the progress readout on the console (off under a service manager).", default="true"),
    # Process
    _o("daemon", Kind.BOOL, PROC, R, "Fork into the background (leave false under systemd Type=simple).", default="false"),
    _o("interface", Kind.INTERFACE, PROC, R, "Bind every socket (BitTorrent, DHT, HTTP) to this interface or address."),
    _o("disable-ipv6", Kind.BOOL, PROC, R, "Do not use IPv6 (for WNs whose IPv6 routes lead nowhere).", default="false"),
    _o("timeout", Kind.INT, PROC, N, "Seconds an HTTP or FTP transfer (a .torrent, the HTTP fallback) may stay silent before it is retried.",
       default="60", low=1, high=600),
]

CATALOGUE: dict[str, OptionSpec] = {spec.name: spec for spec in _SPECS}
"""Every option a profile may set, by aria2's own name, in display order."""

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(spec.section for spec in _SPECS))

SECRET_OPTIONS: frozenset[str] = frozenset(name for name, spec in CATALOGUE.items() if spec.secret)

HIDDEN_OVER_RPC: frozenset[str] = frozenset({"rpc-secret", "input-file"})
"""Options aria2.getGlobalOption never reports (measured on 1.36); it does report proxy passwords."""


def aria2_form(name: str, value: str) -> str:
    """The text aria2 reports over RPC for a value it accepted from a conf file.

    aria2 stores sizes in bytes and proxies as a normalised URI with a trailing slash;
    everything else as written. Used to compare a daemon's live options with a profile.
    """
    spec = CATALOGUE.get(name)
    if spec is None or value == "":
        return value
    if spec.kind is Kind.SIZE:
        return str(size_in_bytes(value))
    if spec.kind is Kind.PROXY:
        text = value if "://" in value else "http://" + value
        return text if text.endswith("/") else text + "/"
    return value


def mask_value(name: str, value: str, mask: str = "********") -> str:
    """A value as displays may show it: secrets masked, and a password inside a proxy URL too."""
    spec = CATALOGUE.get(name)
    if spec is None or not value:
        return value
    if spec.secret:
        return mask
    if spec.kind is Kind.PROXY:
        # whether or not the value parses: a malformed proxy URL still holds a password
        return mask_userinfo(value).replace(MASK, mask)
    return value
