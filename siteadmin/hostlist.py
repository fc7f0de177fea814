"""Hostlist patterns (``wn[001-120].example.org``): bounded parsing and folding.

Below both the site config (which checks its patterns when it loads) and the inventory (which
selects WNs with them). ClusterShell's NodeSet expands and folds; before it expands anything, a
pattern's size is counted from its text, so a typo like ``wn[1-100000000]`` is refused in
microseconds instead of filling memory for minutes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ClusterShell.NodeSet import NodeSet, NodeSetException

DEFAULT_MAX_HOSTS = 100_000
"""Most hosts one pattern may expand to unless the site says otherwise (``[wns] max_hosts``)."""

NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
RANGE_ITEM_RE = re.compile(r"(\d{1,18})(?:-(\d{1,18})(?:/(\d{1,18}))?)?")
OPERATORS = ",!&^"
"""NodeSet's set operators: union, difference, intersection, symmetric difference."""


class TooManyHosts(ValueError):
    """A pattern that would expand past the bound; ``count`` is its size counted from the text."""

    def __init__(self, pattern: str, count: int, limit: int) -> None:
        super().__init__(f"a hostlist of at most {limit} hosts ([wns] max_hosts), not {count} ({pattern!r})")
        self.count = count
        self.limit = limit


def _allowed(pattern: object) -> str:
    return f"a hostlist like \"wn[001-120].example.org\" (got {pattern!r})"


def _terms(pattern: str) -> list[str]:
    """Split on NodeSet's operators outside brackets; refuse unbalanced brackets."""
    terms, depth, current = [], 0, ""
    for char in pattern:
        depth += char == "["
        depth -= char == "]"
        if depth not in (0, 1):
            raise ValueError(_allowed(pattern))
        if char in OPERATORS and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if depth != 0:
        raise ValueError(_allowed(pattern))
    terms.append(current)
    return terms


def _range_size(body: str, pattern: str) -> int:
    size = 0
    for item in body.split(","):
        m = RANGE_ITEM_RE.fullmatch(item.strip())
        if not m:
            raise ValueError(_allowed(pattern))
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3)) if m.group(3) is not None else 1
        if last < first or step < 1:
            raise ValueError(_allowed(pattern))
        size += (last - first) // step + 1
    return size


def count_hosts(pattern: str) -> int:
    """How many hosts a pattern names at most, counted from its text without expanding it.

    Every term of ``a,b!c&d`` counts (an upper bound: NodeSet builds each term before combining),
    and ``r[1-4]n[1-10]`` counts the product of its ranges.

    Returns:
        The upper bound (1 for a plain host name).

    Raises:
        ValueError: a bracket or range the pattern syntax does not allow.
    """
    total = 0
    for term in _terms(pattern):
        size = 1
        for body in re.findall(r"\[([^\[\]]*)\]", term):
            size *= _range_size(body, pattern)
        total += size
    return total


def parse_hostlist(pattern: str, max_hosts: int = DEFAULT_MAX_HOSTS) -> NodeSet:
    """Expand one plain hostlist pattern (no @groups) into a NodeSet, refusing one that is too big.

    Args:
        pattern: ``wn[001-120].example.org``, several joined by ``,``, ``!``, ``&`` or ``^``.
        max_hosts: most hosts the pattern may name; counted before anything is expanded.

    Returns:
        The hosts, in ClusterShell's natural order.

    Raises:
        TooManyHosts: the pattern names more than ``max_hosts`` hosts (a ValueError).
        ValueError: naming the pattern and what is allowed.
    """
    if not isinstance(pattern, str) or not pattern.strip() or "@" in pattern:
        raise ValueError(_allowed(pattern))
    count = count_hosts(pattern)
    if count > max_hosts:
        raise TooManyHosts(pattern, count, max_hosts)
    try:
        nodes = NodeSet(pattern)
    except (NodeSetException, ValueError, TypeError, IndexError):
        raise ValueError(_allowed(pattern)) from None
    if len(nodes) == 0 or any(not NODE_NAME_RE.fullmatch(node) for node in nodes):
        raise ValueError(_allowed(pattern))
    return nodes


def fold(hosts: Iterable[str]) -> str:
    """Fold host names into the shortest hostlist text, ``wn[001-004].lab``."""
    names = list(hosts)
    return str(NodeSet.fromlist(names)) if names else ""
