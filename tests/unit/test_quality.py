"""Quality gates run with the tests: ruff, mypy strict, and the import contract of the layers."""

from __future__ import annotations

import functools
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import siteadmin

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CORE_PACKAGES = {
    "errors", "site", "inventory", "secrets", "audit", "directory", "aria2conf", "remote", "rollout", "preflight", "swarm", "lab",
    "runlock", "syslog_sink", "siteedit", "switch",
}


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(siteadmin.__path__, "siteadmin."):
        top = info.name.split(".")[1]
        if top in CORE_PACKAGES:
            names.append(info.name)
    return sorted(names)


def test_ruff() -> None:
    result = subprocess.run([str(BIN / "ruff"), "check", "siteadmin", "tests", "benchmarks", "screenshots"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@functools.cache
def mypy_started() -> subprocess.Popen[str]:
    """mypy over the files in pyproject (siteadmin, tests, benchmarks, screenshots, all strict).

    A cold cache costs seconds: tests/conftest.py starts this as soon as the tests are collected
    (START_EARLY), so it runs beside the other tests and the gate only waits for its verdict.
    """
    env = dict(os.environ, MYPY_CACHE_DIR=str(ROOT / ".mypy_cache"))
    return subprocess.Popen([str(BIN / "mypy")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


START_EARLY = {"test_mypy_strict": mypy_started}


def test_mypy_strict() -> None:
    mypy = mypy_started()
    out, err = mypy.communicate()
    assert mypy.returncode == 0, out + err


FORBIDDEN = ("textual", "siteadmin.cli", "siteadmin.tui")

# The fast check: one interpreter imports every core module and then looks for FORBIDDEN in its
# sys.modules. Whatever any core module pulls in at import time is there, so a clean result
# means every module is clean; only when it is not does the forked check below name the offender.
ONE_INTERPRETER_CHECK = """
import importlib, json, sys

FORBIDDEN = tuple(sys.argv[1].split(","))
failed = {}
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        failed[module] = repr(exc)
bad = sorted(m for m in sys.modules if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN)))
print(json.dumps({"bad": bad, "failed": failed}))
"""

# The attributing check: one interpreter for all modules, forked once per module (one child per core
# at a time) so each import starts from the same clean sys.modules (as a fresh interpreter would);
# third-party libraries the core uses are imported before the forks so the children do not import
# them again. That cannot hide an offender: the parent holds none of FORBIDDEN, and whatever a child
# imports shows in its own sys.modules.
FORKED_CHECK = """
import importlib, json, os, sys

PRELOAD = ("paramiko", "ldap3", "jinja2", "cryptography", "aria2p")
FORBIDDEN = tuple(sys.argv[1].split(","))


def bad():
    return sorted(m for m in sys.modules if m in FORBIDDEN or m.startswith(tuple(f + "." for f in FORBIDDEN)))


for name in PRELOAD:
    try:
        importlib.import_module(name)
    except ImportError:
        pass
assert not bad(), bad()
found = {}
pending = sys.argv[2:]
running = {}  # pid: (module, read end of its pipe)
while pending or running:
    while pending and len(running) < (os.cpu_count() or 1):
        module = pending.pop(0)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                importlib.import_module(module)
                text = ",".join(bad())
            except BaseException as exc:
                text = f"(import failed: {exc!r})"
            os.write(write_end, text.encode()[:60000])  # fits a pipe (64 KiB): the parent reads after the exit
            os._exit(0)
        os.close(write_end)
        running[pid] = (module, read_end)
    pid, _ = os.wait()
    module, read_end = running.pop(pid)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    found[module] = b"".join(chunks).decode()
print(json.dumps(found))
"""


def offenders(*modules: str) -> dict[str, str]:
    """For each module: the modules of the console, the CLI or textual importing it pulls in (comma-separated)."""
    result = subprocess.run([sys.executable, "-c", FORKED_CHECK, ",".join(FORBIDDEN), *modules], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    found: dict[str, str] = json.loads(result.stdout)
    return found


def all_at_once_started(*modules: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", ONE_INTERPRETER_CHECK, ",".join(FORBIDDEN), *modules],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def all_at_once_result(check: subprocess.Popen[str]) -> dict[str, Any]:
    """What FORBIDDEN modules importing all the modules together pulled in, and which imports failed."""
    out, err = check.communicate()
    assert check.returncode == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


CORE_MODULES = core_modules()


@functools.cache
def core_check_started() -> subprocess.Popen[str]:
    """The one-interpreter check of the core, started early (START_EARLY) so it runs beside the other tests."""
    return all_at_once_started(*CORE_MODULES)  # the modules the tests were made for, even if files came since


@functools.cache
def core_offenders() -> dict[str, str]:
    together = all_at_once_result(core_check_started())
    if not together["bad"] and not together["failed"]:
        return dict.fromkeys(CORE_MODULES, "")
    return offenders(*CORE_MODULES)  # something is wrong: name the module(s) that pull it in


START_EARLY["test_core_imports_without_console_or_cli"] = core_check_started


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_imports_without_console_or_cli(module: str) -> None:
    found = core_offenders()[module]
    assert found == "", f"{module} pulls in {found}"


def test_the_contract_check_sees_an_offending_import() -> None:
    # the one-interpreter check sees an offender among clean modules, so it is not passed over
    together = all_at_once_result(all_at_once_started("siteadmin.errors", "siteadmin.tui.app", "siteadmin.site"))
    assert "textual" in together["bad"] and "siteadmin.tui.app" in together["bad"] and together["failed"] == {}
    # the attributing check on a module that does import the console must report it, and the
    # console it pulled in must not leak into the check of the next module
    found = offenders("siteadmin.tui.app", "siteadmin.errors")
    assert "textual" in found["siteadmin.tui.app"].split(",") and "siteadmin.tui.app" in found["siteadmin.tui.app"].split(",")
    assert found["siteadmin.errors"] == ""


def test_import_linter_contracts() -> None:
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
