"""Profiles: the options one WN's aria2c runs with, merged from the layers, rendered to text.

Layers, lowest first: siteadmin's built-in ALICE baseline (RPC on loopback at
``wns.rpc_port``, BitTorrent and DHT ports from ``wns.ports``, the central tracker, log level
notice), ``[aria2c.options]``, each ``[wns.groups.<g>] aria2c`` the host belongs to, then
``[wns.nodes."<host>"] aria2c``. A later layer replaces an option of an earlier one. When RPC
is on and no layer sets ``rpc-secret``, the site's generated secret is used.

Rendering goes through a jinja2 template (``aria2c.conf.j2``: the site's template_path first,
then the built-in templates) and the result is parsed back: it must set exactly the profile's
options, so no template, value or secret can add, drop or change one. A template is data, not
code: it runs in jinja2's immutable sandbox, so it can neither reach Python internals
(``cycler.__init__.__globals__.os``) nor change what it is given.

Rendering is safe from many threads at once (the rollout renders every WN in parallel): the
one piece of shared state, the site's Inventory, is built once per site under a lock.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.sandbox

from siteadmin import trust
from siteadmin.aria2conf.catalogue import CATALOGUE, SECTIONS, Kind, mask_value, proxy_userinfo
from siteadmin.aria2conf.conffile import FORBIDDEN, format_line, parse_conf
from siteadmin.aria2conf.validate import check_options
from siteadmin.errors import ConfigError
from siteadmin.inventory import Inventory
from siteadmin.secrets import MASK, create_secret_file, generate_secret, read_secret_file
from siteadmin.site import Site

PLACEHOLDER_HOST = "wn.example.org"
"""Host rendered when the site lists no WNs (the site profile alone)."""

SECRET_BITS = 256


# ---------------------------------------------------------------- layers


def builtin_options(site: Site) -> dict[str, Any]:
    """The baseline every site starts from, derived from the site config."""
    central = site.central
    return {
        "enable-rpc": True,
        "rpc-listen-all": False,
        "rpc-allow-origin-all": False,
        "rpc-listen-port": site.wns.rpc_port,
        "listen-port": site.wns.ports,
        "dht-listen-port": site.wns.ports,
        "enable-dht": True,
        "enable-peer-exchange": True,
        "bt-enable-lpd": True,
        "bt-tracker": f"http://{central.tracker_host}:{central.tracker_port}/announce",
        "log-level": "notice",
        # what the AliEn torrent installer ran with (docs/profiles.md says why each one)
        "bt-max-peers": 100,
        "bt-request-peer-speed-limit": "1M",
        "file-allocation": "none",
        "follow-torrent": "mem",
        "bt-stop-timeout": 300,
        "timeout": 300,
        "seed-time": 10,
        "seed-ratio": 0.0,
    }


_INVENTORIES_KEPT = 4
_inventories: dict[int, tuple[Site, Inventory]] = {}
"""id(site) -> (site, its Inventory); the Site is kept so that its id cannot be reused."""
_inventories_lock = threading.Lock()


def _inventory(site: Site) -> Inventory:
    """The site's Inventory, built once per site (expanding hostlists is most of a render's cost).

    Threads rendering the same site wait for one build instead of each expanding the hostlists;
    threads rendering different sites each get their own site's Inventory.
    """
    with _inventories_lock:
        kept = _inventories.get(id(site))
        if kept is not None and kept[0] is site:
            return kept[1]
        # built under the lock: a second thread would only repeat the same expansion
        inventory = Inventory(site)
        if len(_inventories) >= _INVENTORIES_KEPT:
            del _inventories[next(iter(_inventories))]
        _inventories[id(site)] = (site, inventory)
        return inventory


def layers_for(site: Site, host: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(layer name, raw options) for a host, lowest first, built-in layer included."""
    return [("built-in", builtin_options(site)), *_inventory(site).overrides_for(host)]


def _layer_where(layer: str, host: str) -> str:
    if layer == "site":
        return f"{host}: [aria2c.options]"
    if layer.startswith("group "):
        return f"{host}: [wns.groups.{layer.removeprefix('group ')}] aria2c"
    if layer.startswith("host "):
        return f'{host}: [wns.nodes."{host}"] aria2c'
    return f"{host}: {layer} defaults"


# ---------------------------------------------------------------- the site's RPC secret


def rpc_secret_path(site: Site) -> Path:
    """Where the site's generated RPC secret lives.

    ``aria2c.rpc_secret_file`` when set; else ``aria2c-rpc-secret`` next to site.toml; else
    ``~/.config/siteadmin/<site>.rpc-secret``.
    """
    if site.aria2c.rpc_secret_file is not None:
        return site.aria2c.rpc_secret_file.expanduser()
    if site.source is not None:
        return site.source.parent / "aria2c-rpc-secret"
    return Path("~/.config/siteadmin").expanduser() / f"{site.site.name or 'default'}.rpc-secret"


def site_rpc_secret(site: Site, create: bool = True) -> str | None:
    """The site's RPC secret, generated (256 bits, file 0600) on first use when ``create``.

    Raises:
        ConfigError: the file exists but is unreadable, too open or malformed.
    """
    path = rpc_secret_path(site)
    if path.exists():
        return read_secret_file(path, "aria2c RPC secret")
    if not create:
        return None
    return create_secret_file(path, generate_secret(SECRET_BITS))


# ---------------------------------------------------------------- profiles


@dataclasses.dataclass(frozen=True)
class Profile:
    """A host's merged, validated options and where each came from."""

    host: str
    options: dict[str, str]
    """name -> conf text, in catalogue order."""
    origin: dict[str, str]
    """name -> layer that set it (built-in, site, group G, host H, generated)."""
    layers: tuple[str, ...]


def ordered(options: Mapping[str, str]) -> dict[str, str]:
    """Options in catalogue order (the order of the rendered file)."""
    order = {name: i for i, name in enumerate(CATALOGUE)}
    return {name: options[name] for name in sorted(options, key=lambda n: order.get(n, len(order)))}


def build_profile(site: Site, host: str, create_secret: bool = True) -> Profile:
    """Merge and validate a host's layers.

    Raises:
        ConfigError: naming host, layer, option, value and what is allowed.
    """
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    names = []
    for layer, raw in layers_for(site, host):
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{_layer_where(layer, host)}: must be a table of aria2c options")
        checked = check_options(raw, _layer_where(layer, host))
        names.append(layer)
        for name, text in checked.items():
            merged[name] = text
            origin[name] = layer
    if merged.get("enable-rpc") == "true" and "rpc-secret" not in merged:
        secret = site_rpc_secret(site, create=create_secret)
        if secret is not None:
            if any(c in secret for c in FORBIDDEN):  # pragma: no cover - read_secret_file refuses these
                raise ConfigError(f"{rpc_secret_path(site)}: the RPC secret holds a control character")
            merged["rpc-secret"] = secret
            origin["rpc-secret"] = "generated"
    return Profile(host=host, options=ordered(merged), origin=origin, layers=tuple(names))


def profile_for(site: Site, host: str, create_secret: bool = True) -> dict[str, str]:
    """The merged, validated options of one host (name -> aria2 conf text).

    Args:
        site: the site config.
        host: a WN name (need not be in the inventory: only the site layer then applies).
        create_secret: generate the site's RPC secret file when RPC needs one and it is missing.

    Raises:
        ConfigError: a bad layer, option or value, one line naming host and layer.
    """
    return build_profile(site, host, create_secret).options


def masked(options: Mapping[str, str]) -> dict[str, str]:
    """The options with every secret value replaced by ``********``."""
    return {k: mask_value(k, v, MASK) for k, v in options.items()}


def options_hash(options: Mapping[str, str], key: str | None = None) -> str:
    """Content hash of a set of options, independent of order, comments and template.

    HMAC-SHA256 keyed with ``key`` (the site's RPC secret; the profile's own rpc-secret when no
    key is given), so the hash shown in masked displays cannot be used to guess a weak proxy
    password offline. With no key at all the hash is plain SHA-256 over the options with every
    secret masked: it then says nothing about secrets, and does not change when only a secret does.
    """
    key = key or options.get("rpc-secret") or None
    if key:
        import hmac

        canonical = "".join(f"{k}={options[k]}\n" for k in sorted(options)).encode()
        return "hmac-sha256:" + hmac.new(key.encode(), canonical, hashlib.sha256).hexdigest()
    canonical = "".join(f"{k}={mask_value(k, options[k])}\n" for k in sorted(options)).encode()
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


# ---------------------------------------------------------------- templates


def builtin_template_dir() -> Path:
    """The built-in templates: ``siteadmin/_templates`` in a wheel, ``<repo>/templates`` in a checkout.

    Raises:
        ConfigError: neither exists (a broken installation).
    """
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_templates", package.parent / "templates"):
        if (candidate / "aria2c.conf.j2").is_file():
            return candidate
    raise ConfigError(f"built-in templates not found in {package / '_templates'} or {package.parent / 'templates'}", "reinstall siteadmin")


def template_environment(site: Site) -> jinja2.Environment:
    """jinja2's immutable sandbox with StrictUndefined, no autoescape, the site's template_path first.

    The sandbox refuses attributes that lead out of the template (``__globals__``, ``__class__``,
    ``mro``, ...) and methods that change a list or dict it was given. One environment per search path, so a template is compiled once, not once per WN (jinja2
    still notices an edited template by its mtime).
    """
    for folder in site.aria2c.template_path:  # the built-in templates come with the package: trusted as installed
        trust.check_folder_tree(folder.expanduser(), "aria2c template folder")
    return _environment((*(str(p.expanduser()) for p in site.aria2c.template_path), str(builtin_template_dir())))


@functools.lru_cache(maxsize=16)
def _environment(search: tuple[str, ...]) -> jinja2.Environment:
    return jinja2.sandbox.ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(list(search)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - a conf file, not HTML; values are validated one-liners
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclasses.dataclass(frozen=True)
class Rendered:
    """A rendered profile: the real text for the WN and the masked text for eyes."""

    host: str
    text: str
    """The file for the WN, real secrets included (write it 0600)."""
    masked_text: str
    """The same file with every secret as ********: for screens, diffs and logs."""
    options: dict[str, str]
    """The options the text sets (real values)."""
    hash: str
    """options_hash(options), also written in the file's header."""
    origin: dict[str, str]
    """Which layer set each option."""

    @property
    def secrets(self) -> list[str]:
        """The secret values in this profile (to mask in anything shown), proxy URL passwords included."""
        out = [v for k, v in self.options.items() if CATALOGUE[k].secret and v]
        for k, v in self.options.items():
            info = proxy_userinfo(v) if CATALOGUE[k].kind is Kind.PROXY else None
            if info and ":" in info:
                out.append(info.split(":", 1)[1])
        return out


def _groups(options: Mapping[str, str]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (section, [(k, v) for k, v in options.items() if CATALOGUE[k].section == section])
        for section in SECTIONS
        if any(CATALOGUE[k].section == section for k in options)
    ]


def _render_text(env: jinja2.Environment, site: Site, profile: Profile, options: Mapping[str, str], digest: str) -> str:
    for name, value in options.items():
        format_line(name, value)  # refuses control characters once more, whatever the template does
    template: jinja2.Template | None = None
    try:
        template = env.get_template(site.aria2c.template)
        return template.render(
            site=site.site.name or "(unnamed site)",
            host=profile.host,
            profile=" < ".join(profile.layers),
            hash=digest,
            options=list(options.items()),
            groups=_groups(options),
            origin=profile.origin,
        )
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"aria2c.template = \"{site.aria2c.template}\": template not found", f"looked in {exc.name} on the template path") from None
    except jinja2.TemplateSyntaxError as exc:
        where = _template_where(site, exc.filename, exc.lineno)
        raise ConfigError(f"{where}: {type(exc).__name__}: {_one_line(exc.message)}") from None
    except jinja2.exceptions.SecurityError as exc:
        where = _template_where(site, template.filename if template else None, _template_line(exc.__traceback__, template))
        raise ConfigError(
            f"{where}: not allowed in a template: {_one_line(exc.message)}",
            "a template may only lay out the variables siteadmin gives it; see docs/profiles.md",
        ) from None
    except jinja2.TemplateError as exc:
        where = _template_where(site, template.filename if template else None, _template_line(exc.__traceback__, template))
        raise ConfigError(f"{where}: {type(exc).__name__}: {_one_line(exc.message)}") from None


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _template_where(site: Site, filename: str | None, line: int | None) -> str:
    """``aria2c.template = "x.j2" (/path/x.j2, line 3)``: which template, which file, which line."""
    parts = [p for p in (filename, f"line {line}" if line else None) if p]
    return f"aria2c.template = \"{site.aria2c.template}\"" + (f" ({', '.join(parts)})" if parts else "")


def _template_line(tb: types.TracebackType | None, template: jinja2.Template | None) -> int | None:
    """The template line an error was raised on: jinja2 rewrites its frames to the template's file and line."""
    line = None
    while tb is not None:
        if template is not None and tb.tb_frame.f_code.co_filename == template.filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(site: Site, host: str, create_secret: bool = True) -> Rendered:
    """Render one host's profile and prove the text says exactly that.

    Raises:
        ConfigError: a bad option or value, a template error, or rendered text that parses
        to anything but the profile's options.
    """
    profile = build_profile(site, host, create_secret)
    # keyed even when RPC is off, so the hash on screen never helps guess a proxy password
    digest = options_hash(profile.options, profile.options.get("rpc-secret") or site_rpc_secret(site, create=create_secret))
    env = template_environment(site)
    text = _render_text(env, site, profile, profile.options, digest)
    hidden = masked(profile.options)
    masked_text = _render_text(env, site, profile, hidden, digest)
    try:
        parsed = parse_conf(text, strict=True, source=f"{host}: rendered profile")
    except ConfigError as exc:
        raise ConfigError(f"{exc.message} (template {site.aria2c.template})", exc.hint) from None
    if parsed != profile.options:
        wrong = sorted(set(parsed) ^ set(profile.options) | {k for k in parsed if parsed[k] != profile.options.get(k)})
        raise ConfigError(
            f"{host}: rendered profile does not set exactly the intended options (differs in: {', '.join(wrong)})",
            f"check the template {site.aria2c.template}",
        )
    if parse_conf(masked_text, strict=True, source=f"{host}: masked profile") != hidden:  # pragma: no cover - same template
        raise ConfigError(f"{host}: the masked rendering differs from the real one", f"check the template {site.aria2c.template}")
    return Rendered(host=host, text=text, masked_text=masked_text, options=profile.options, hash=digest, origin=profile.origin)
