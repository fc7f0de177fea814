"""Where an SSH connection to a WN (or its jump host) goes: address, port, user, keys, jump host.

Owns the pure resolution of ``[ssh]`` of the site config, per-WN ``[wns.nodes."<host>"]`` entries
and, when ``ssh.config_file`` is set, the OpenSSH client config:

- Precedence for where to connect: a ``wns.nodes`` address/port, then the ssh config's
  HostName/Port, then the WN name and ``ssh.port``. The ssh config's User wins over ``ssh.user``.
- Jump host: ``ssh.jump_host`` (``[user@]host[:port]``), else the ssh config's ProxyJump.
- ProxyCommand is not supported (see ``Target.proxy_command``); ``ssh.jump_host`` overrides it.
- Host key names: ``HostKeyAlias``, then the WN name, then its address; extra known_hosts files
  from ``UserKnownHostsFile``/``GlobalKnownHostsFile``; ``IdentityFile`` entries.

Nothing here opens a connection.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import paramiko

from siteadmin import trust
from siteadmin.errors import ConfigError, printable
from siteadmin.inventory import WN
from siteadmin.site import Site, split_jump_host


@dataclasses.dataclass(frozen=True)
class JumpHost:
    """A bastion to go through, parsed from ``[user@]host[:port]``."""

    host: str
    port: int | None = None
    user: str | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        return f"{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port is not None else ''}"


def parse_jump_host(text: str, key: str = "ssh.jump_host") -> JumpHost | None:
    """Parse ``[user@]host[:port]`` (IPv6 as ``[addr]:port``; ``ssh://`` prefix allowed).

    Returns:
        The jump host, or None for "" and "none" (connect directly).

    Raises:
        ConfigError: naming ``key`` and the accepted form.
    """
    if "," in text:
        raise ConfigError(f'{key} = "{printable(text)}": only one jump host is supported', "chain hops in ~/.ssh/config on the first bastion instead")
    try:
        parts = split_jump_host(text)
    except ValueError as exc:
        raise ConfigError(f'{key} = "{printable(text)}": must be {exc}') from None
    if parts is None:
        return None
    user, host, port = parts
    return JumpHost(host=host, port=port, user=user)



@dataclasses.dataclass(frozen=True)
class Target:
    """Where and as whom one SSH connection goes, after site config and ssh config are applied."""

    label: str
    """Name used in messages (the WN name, or ``jump host <spec>``)."""
    address: str
    port: int
    user: str
    key_names: tuple[str, ...]
    """Names to look the host key up under, in order."""
    identity_files: tuple[Path, ...] = ()
    known_hosts: tuple[Path, ...] = ()
    """Extra known_hosts files from the ssh config."""
    jump: JumpHost | None = None
    proxy_command: str | None = None
    """The ssh config's ProxyCommand for this host (not ``none``), unless ``ssh.jump_host``
    overrides it; the pool refuses such a host rather than connect around the proxy."""


def _config_paths(value: str | list[str] | None) -> tuple[Path, ...]:
    if not value:
        return ()
    items = value if isinstance(value, list) else value.split()
    return tuple(Path(v).expanduser() for v in items if v.lower() != "none")


def resolve_target(site: Site, wn: WN, config: paramiko.SSHConfig | None = None) -> Target:
    """Apply site config, per-node entries and the ssh config to one WN.

    Raises:
        ConfigError: a bad jump host in the site or ssh config.
    """
    entry = config.lookup(wn.name) if config is not None else paramiko.SSHConfigDict()
    node = site.wns.nodes.get(wn.name)
    address = node.address if node and node.address else entry.get("hostname", wn.address)
    if node and node.port:
        port = node.port
    elif "port" in entry:
        port = int(entry["port"])
    else:
        port = wn.port
    user = entry.get("user", site.ssh.user)
    jump = parse_jump_host(site.ssh.jump_host)
    if jump is None and "proxyjump" in entry:
        jump = parse_jump_host(entry["proxyjump"], f"ProxyJump for {wn.name} in {site.ssh.config_file}")
    # ssh.jump_host overrides the ssh config's ProxyCommand, as `ssh -J` does
    proxy = entry.get("proxycommand") if not site.ssh.jump_host.strip() else None
    return _target(wn.name, wn.name, address, port, user, entry, jump, proxy)


def resolve_jump(site: Site, jump: JumpHost, config: paramiko.SSHConfig | None = None) -> Target:
    """The connection target of a jump host (its own ssh config entry applies)."""
    entry = config.lookup(jump.host) if config is not None else paramiko.SSHConfigDict()
    address = entry.get("hostname", jump.host)
    port = jump.port if jump.port is not None else int(entry.get("port", 22))
    user = jump.user or entry.get("user", site.ssh.user)
    return _target(f"jump host {jump}", jump.host, address, port, user, entry, None, entry.get("proxycommand"))


def _target(
    label: str, name: str, address: str, port: int, user: str, entry: paramiko.SSHConfigDict, jump: JumpHost | None, proxy: str | None = None
) -> Target:
    """A Target; its host key may be filed under HostKeyAlias, the name, or the address (first wins)."""
    names = [entry["hostkeyalias"]] if "hostkeyalias" in entry else []
    names += [name, address]
    return Target(
        label=label,
        address=address,
        port=port,
        user=user,
        key_names=tuple(dict.fromkeys(names)),
        identity_files=_config_paths(entry.get("identityfile")),
        known_hosts=_config_paths(entry.get("userknownhostsfile")) + _config_paths(entry.get("globalknownhostsfile")),
        jump=jump,
        proxy_command=proxy or None,
    )



def load_ssh_config(path: Path | None) -> paramiko.SSHConfig | None:
    """Read the OpenSSH client config named by ``ssh.config_file`` (None: no ssh config).

    Raises:
        ConfigError: the file cannot be read or parsed.
        UntrustedFile: the file or its folder is owned by another user or writable by others
            (it decides where connections go and which keys and known_hosts files are used).
    """
    if path is None:
        return None
    trust.check_path(path, "ssh client config", missing_ok=True)
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except OSError as exc:
        raise ConfigError(f"ssh.config_file = {path}: {exc.strerror}") from None
    except Exception as exc:  # noqa: BLE001 - paramiko raises several types on bad configs
        raise ConfigError(f"ssh.config_file = {path}: cannot parse: {exc}") from None

