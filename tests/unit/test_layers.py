"""The layers contract covers the whole core and catches an import that goes up a layer.

import-linter's layers contract (pyproject.toml) only checks the modules it names: a new
top-level module left out of it would escape. So every top-level module must be in a layer, and
a copy of the package with one offending import must make ``lint-imports`` fail naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def layer_contract() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    assert len(contracts) == 1
    contract: dict[str, object] = contracts[0]
    return contract


def layered_modules() -> set[str]:
    layers = layer_contract()["layers"]
    assert isinstance(layers, list)
    return {name.strip() for layer in layers for name in str(layer).split("|")}


def test_every_top_level_module_is_in_a_layer() -> None:
    package = ROOT / "siteadmin"
    top = {
        f"siteadmin.{p.stem}" for p in package.iterdir()
        if (p.suffix == ".py" and p.stem not in ("__init__", "__main__")) or (p.is_dir() and (p / "__init__.py").exists())
    }
    assert top - layered_modules() == set()
    assert layered_modules() - top == set()  # no layer names a module that is gone


def test_no_import_is_ignored_without_alerting() -> None:
    contract = layer_contract()
    assert contract.get("unmatched_ignore_imports_alerting") == "error"
    assert contract.get("ignore_imports", []) == []


def lint_copy(tmp_path: Path, offender: tuple[str, str] | None) -> subprocess.CompletedProcess[str]:
    shutil.copytree(ROOT / "siteadmin", tmp_path / "siteadmin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if offender is not None:
        module, line = offender
        path = tmp_path / "siteadmin" / module
        path.write_text(path.read_text() + f"\n{line}  # an import going up a layer\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_the_layers_contract_catches_an_offender(tmp_path: Path) -> None:
    # the site config must not know the inventory above it (the circle issue 8 broke)
    result = lint_copy(tmp_path, ("site.py", "import siteadmin.inventory"))
    assert result.returncode != 0
    assert "Layers: faces over the lab" in result.stdout and "BROKEN" in result.stdout
    assert "siteadmin.site -> siteadmin.inventory" in result.stdout


def test_the_untouched_copy_passes(tmp_path: Path) -> None:
    # the copy itself is sound: the failure above is the offender's, not the copy's
    result = lint_copy(tmp_path, None)
    assert result.returncode == 0, result.stdout[-2000:]
