"""Shared fixtures: the session-wide lab site every test folder may use.

``lab`` brings a real local site up once per test session (network namespaces when root,
loopback otherwise) with a small package, and takes it down at the end. It yields a
``siteadmin.lab.Lab``: ``.dir``, ``.site_path``, ``.site`` (the loaded Site), ``.wn_names``,
``.namespaces``, ``.router_ns``/``.cern_ns``/``.wn_ns(name)``, ``.rpc(name, method)``,
``.apply_nft(ns, rules)``/``.flush_nft(ns)``, ``.exec_in(ns, argv)``, ``.status()``.
Tests must leave the lab as they found it (flush the rules they add).

Test tiers: a test that starts a lab or any daemon (slapd, sshd, aria2c, opentracker) is marked
``lab``, so ``pytest -m "not lab"`` (quality gates and pure tests) starts nothing; the console's
tests (tests/console) are marked ``console`` and ``lab`` here, being app-sized too. Two guards keep
it so: a test not marked ``lab`` that asks for a daemon fixture (``DAEMON_FIXTURES``, directly or
through another fixture) fails before its fixtures run, and one that starts a daemon program
(``DAEMON_PROGRAMS``) in this interpreter any other way fails at that start; both messages say
which marker line to add. aria2c reading a profile and exiting (``check_with_aria2c``) is no daemon.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- test tiers

DAEMON_FIXTURES = frozenset({"lab", "own_lab", "ssh_lab"})
"""Fixtures that start daemons: the lab site here and the ldap/ folder's slapd (both ``lab``),
ldap/'s ``own_lab`` and remote/'s ``ssh_lab``. A fixture built on one of them counts too."""

DAEMON_PROGRAMS = frozenset({"slapd", "sshd", "aria2c", "opentracker"})

ARIA2C_CHECK_ARGS = ("--enable-rpc=false", "--daemon=false")
"""With these aria2c serves nothing and stays in the foreground: it reads the profile and exits
(siteadmin.aria2conf's ``NO_START_ARGS``, which the fast tier's aria2c checks use)."""

MARKER_HINT = (
    "add `@pytest.mark.lab` above the test, or `pytestmark = pytest.mark.lab` after the imports "
    "of its module when every test there needs daemons"
)

_running: list[pytest.Item] = []
"""The test whose setup, call or teardown runs now (set by pytest_runtest_protocol)."""


def needs_marker(item: pytest.Item) -> bool:
    return item.get_closest_marker("lab") is None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail an unmarked test that asks for a daemon fixture before any fixture starts one."""
    wanted = sorted(DAEMON_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if wanted and needs_marker(item):
        pytest.fail(f"{item.nodeid} uses {', '.join(wanted)}, which starts daemons, but is not marked lab: {MARKER_HINT}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    _running.append(item)
    try:
        yield
    finally:
        _running.remove(item)


def daemon_started(args: Any) -> str | None:
    """What daemon a Popen ``args`` would start (through ``ip netns exec`` too), or None.

    ``siteadmin lab up`` and ``siteadmin lab console`` in a child process count: they start a lab.
    """
    if isinstance(args, (str, bytes, os.PathLike)):
        argv = shlex.split(os.fsdecode(args))
    else:
        argv = [os.fsdecode(arg) for arg in args]
    if argv[:3] == ["ip", "netns", "exec"]:
        argv = argv[4:]
    program = os.path.basename(argv[0]) if argv else ""
    runs_siteadmin = program == "siteadmin" or any(a == "-m" and b.split(".")[0] == "siteadmin" for a, b in zip(argv, argv[1:], strict=False))
    for action in ("up", "console"):
        if runs_siteadmin and any(pair == ("lab", action) for pair in zip(argv, argv[1:], strict=False)):
            return f"a lab (siteadmin lab {action})"
    if program not in DAEMON_PROGRAMS:
        return None
    if program == "aria2c" and all(arg in argv for arg in ARIA2C_CHECK_ARGS):
        return None
    return program


_popen_init = subprocess.Popen.__init__
_refused = pytest.StashKey[list[str]]()


def _guarded_popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    item = _running[-1] if _running else None
    started = daemon_started(args) if item is not None and needs_marker(item) else None
    if item is not None and started is not None:
        message = f"{item.nodeid} starts {started} but is not marked lab: {MARKER_HINT}"
        item.stash.setdefault(_refused, []).append(message)  # seen even if a worker thread swallows the failure
        pytest.fail(message, pytrace=False)
    _popen_init(self, args, *rest, **kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    refused = item.stash.get(_refused, [])
    if refused and report.passed:
        report.outcome = "failed"
        report.longrepr = "\n".join(dict.fromkeys(refused))
    refused.clear()


CONSOLE_TESTS = Path(__file__).parent / "console"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The console's tests (Textual's Pilot and SVG snapshots) start no daemon, but each starts the
    # whole app: some 25 s of CPU together. They belong to the slow tier with the real-part tests,
    # so the fast tier is what issue 8 asks of it: the quality gates and the pure tests.
    for item in items:
        if CONSOLE_TESTS in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.console)
            item.add_marker(pytest.mark.lab)


def pytest_configure(config: pytest.Config) -> None:
    # Popen is patched for the whole session, so a daemon started by a module- or session-wide
    # fixture is caught too: it starts during the setup of the first test that needs it.
    subprocess.Popen.__init__ = _guarded_popen_init  # type: ignore[method-assign]
    # A run started in the background by a non-interactive shell (`.ci/run &`) inherits SIGINT
    # ignored, and so would every siteadmin it starts: the Ctrl-C tests would then test nothing.
    # With Python's handler here, the children exec with the default disposition again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _popen_init  # type: ignore[method-assign]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the slow quality gates a test module names in ``START_EARLY`` now, in their own processes.

    They then run beside the other tests (two cores: a cold mypy no longer adds its seconds to the
    run); the test itself only waits for the verdict, so the gate is the same.
    """
    if session.config.option.collectonly:
        return
    for item in session.items:
        start = getattr(getattr(item, "module", None), "START_EARLY", {}).get(getattr(item, "originalname", item.name))
        if start is not None:
            start()
