"""The site's WNs and groups, from hostlist patterns.

``wn[001-120].example.org`` style ranges are expanded (never past ``[wns] max_hosts``) and folded
by ``siteadmin.hostlist``.
A pattern may name a group of the site config as ``@name``, and exclude hosts with ``!``:
``@bigdisk,wn[001-010].example.org!wn005.example.org``.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ClusterShell.NodeSet import NodeSet

from siteadmin.errors import InventoryError
from siteadmin.hostlist import fold, parse_hostlist
from siteadmin.site import Site

GROUP_RE = re.compile(r"@([A-Za-z0-9_.-]+)")
CONFIG_PATH_PLACEHOLDER = "{config_path}"
"""Where ``[rollout] restart_command`` takes the WN's config path (shell-quoted)."""

__all__ = ["CONFIG_PATH_PLACEHOLDER", "WN", "Inventory", "config_path_for", "fold", "parse_hostlist", "restart_command_for"]


@dataclasses.dataclass(frozen=True)
class WN:
    """One worker node and how to reach it."""

    name: str
    address: str
    """Where SSH connects (the name unless the config gives an address)."""
    port: int
    """SSH port."""
    groups: tuple[str, ...]


class Inventory:
    """WNs of a site, with groups, exclusions and per-node connection details."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._groups: dict[str, NodeSet] = {}
        for name, group in site.wns.groups.items():
            nodes = NodeSet()
            for pattern in group.hosts:
                nodes.update(_parse(pattern, f"wns.groups.{name}.hosts", site.wns.max_hosts))
            self._groups[name] = nodes
        everything = NodeSet()
        for pattern in site.wns.hosts:
            everything.update(_parse(pattern, "wns.hosts", site.wns.max_hosts))
        for nodes in self._groups.values():
            everything.update(nodes)
        for pattern in site.wns.exclude:
            everything.difference_update(_parse(pattern, "wns.exclude", site.wns.max_hosts))
        self._all = everything

    @property
    def group_names(self) -> list[str]:
        return sorted(self._groups)

    def select(self, pattern: str | None = None) -> list[str]:
        """Host names a pattern selects, in natural order; all WNs for None or "all".

        Raises:
            InventoryError: a malformed pattern, an unknown @group, or hosts not in the site.
        """
        if pattern is None or pattern.strip() in ("", "all", "@all"):
            return list(self._all)
        selected = NodeSet()
        for term in _split_terms(pattern):
            include, _, exclude = term.partition("!")
            selected.update(self._expand(include, pattern))
            if exclude:
                selected.difference_update(self._expand(exclude, pattern))
        unknown = NodeSet(selected)
        unknown.difference_update(self._all)
        if len(unknown):
            raise InventoryError(f"{unknown}: not a WN of this site", "see `siteadmin hosts` for the site's WNs")
        return list(selected)

    def _expand(self, term: str, whole: str) -> NodeSet:
        group = GROUP_RE.fullmatch(term.strip())
        if group:
            name = group.group(1)
            if name not in self._groups:
                known = ", ".join("@" + g for g in self.group_names) or "none configured"
                raise InventoryError(f"@{name}: no such WN group", f"groups: {known}")
            return NodeSet(self._groups[name])
        try:
            return parse_hostlist(term, self.site.wns.max_hosts)
        except ValueError as exc:
            raise InventoryError(f"hosts pattern: must be {exc}") from None

    def groups_of(self, host: str) -> tuple[str, ...]:
        return tuple(name for name in self.group_names if host in self._groups[name])

    def wn(self, host: str) -> WN:
        """Connection details of one WN."""
        node = self.site.wns.nodes.get(host)
        address = node.address if node and node.address else host
        port = node.port if node and node.port else self.site.ssh.port
        return WN(name=host, address=address, port=port, groups=self.groups_of(host))

    def overrides_for(self, host: str) -> list[tuple[str, Mapping[str, Any]]]:
        """aria2c option layers for a host, lowest first: site, each group, the host."""
        layers: list[tuple[str, Mapping[str, Any]]] = [("site", self.site.aria2c.options)]
        for name in self.groups_of(host):
            layers.append((f"group {name}", self.site.wns.groups[name].aria2c))
        node = self.site.wns.nodes.get(host)
        if node is not None:
            layers.append((f"host {host}", node.aria2c))
        return layers


def config_path_for(site: Site, host: str) -> str:
    """Where a WN's aria2c config lives: its own ``[wns.nodes."<host>"] config_path``, else ``[rollout] config_path``.

    Args:
        site: the site config.
        host: the WN's name.

    Returns:
        An absolute path on the WN.
    """
    node = site.wns.nodes.get(host)
    return node.config_path if node is not None and node.config_path else site.rollout.config_path


def restart_command_for(site: Site, host: str) -> str:
    """``[rollout] restart_command`` for one WN: ``{config_path}`` replaced by its config path, shell-quoted.

    Only that one placeholder is replaced, so other braces (``${HOME}``) reach the shell as written.

    Args:
        site: the site config.
        host: the WN's name.

    Returns:
        The command line to run on the WN.
    """
    return site.rollout.restart_command.replace(CONFIG_PATH_PLACEHOLDER, shlex.quote(config_path_for(site, host)))


def _split_terms(pattern: str) -> list[str]:
    """Split on commas outside brackets: ``wn[1,2].x,@g`` -> [``wn[1,2].x``, ``@g``]."""
    terms, depth, current = [], 0, ""
    for char in pattern:
        depth += char == "["
        depth -= char == "]"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _parse(pattern: str, key: str, max_hosts: int) -> NodeSet:
    try:
        return parse_hostlist(pattern, max_hosts)
    except ValueError as exc:
        raise InventoryError(f"{key}: must be {exc}") from None
