"""Shared fixtures: the session-wide lab site every test folder may use.

``lab`` brings a real local site up once per test session (network namespaces when root,
loopback otherwise) with a small package, and takes it down at the end. It yields a
``siteadmin.lab.Lab``: ``.dir``, ``.site_path``, ``.site`` (the loaded Site), ``.wn_names``,
``.namespaces``, ``.router_ns``/``.cern_ns``/``.wn_ns(name)``, ``.rpc(name, method)``,
``.apply_nft(ns, rules)``/``.flush_nft(ns)``, ``.exec_in(ns, argv)``, ``.status()``.
Tests must leave the lab as they found it (flush the rules they add).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteadmin.lab import Lab

LAB_WNS = 4
LAB_PACKAGE_MB = 8
LAB_TOOLS = ("slapd", "opentracker", "aria2c", "mktorrent", "ssh", "ip")


def lab_tools_missing() -> list[str]:
    return [tool for tool in LAB_TOOLS if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


@pytest.fixture(scope="session")
def lab_cache_dir(pytestconfig: pytest.Config) -> Path:
    """Package cache kept across test sessions (.pytest_cache/d/siteadmin-lab)."""
    cache = getattr(pytestconfig, "cache", None)
    if cache is None:  # pragma: no cover - cacheprovider disabled
        return Path(pytestconfig.rootpath, ".lab-cache")
    return Path(cache.mkdir("siteadmin-lab"))


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, lab_cache_dir: Path) -> Iterator[Lab]:
    """A running lab site for the whole session (see the module docstring)."""
    missing = lab_tools_missing()
    if missing:
        # never a silent skip: the README's test command installs these
        pytest.fail(f"lab tools missing: {', '.join(missing)} (run `bash .ci/setup.sh`)")
    handle = Lab(tmp_path_factory.mktemp("lab"), cache_dir=lab_cache_dir)
    try:
        handle.up(LAB_WNS, package_mb=LAB_PACKAGE_MB)
        yield handle
    finally:
        handle.down()
