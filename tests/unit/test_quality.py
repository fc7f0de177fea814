"""Quality gates run with the tests: ruff, mypy strict, and the import contract of the layers."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import siteadmin

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

CORE_PACKAGES = {"errors", "site", "inventory", "secrets", "audit", "directory", "aria2conf", "remote", "rollout", "preflight", "swarm", "lab"}


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


def test_mypy_strict() -> None:
    env = dict(os.environ, MYPY_CACHE_DIR=str(ROOT / ".mypy_cache"))
    # the files in pyproject: siteadmin, tests and benchmarks, all strict
    result = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def offenders(module: str) -> str:
    """Modules of the console, the CLI or textual that importing ``module`` pulls in (comma-separated)."""
    code = (
        f"import sys, {module}\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'siteadmin.cli', 'siteadmin.tui')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("module", core_modules())
def test_core_imports_without_console_or_cli(module: str) -> None:
    found = offenders(module)
    assert found == "", f"{module} pulls in {found}"


def test_the_contract_check_sees_an_offending_import() -> None:
    # the same check on a module that does import the console must report it
    found = offenders("siteadmin.tui.app").split(",")
    assert "textual" in found and "siteadmin.tui.app" in found


def test_import_linter_contracts() -> None:
    result = subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
