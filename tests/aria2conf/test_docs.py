"""The committed option reference is the generated one; the profile guide names every rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from siteadmin.aria2conf import CATALOGUE, RULES
from siteadmin.aria2conf.docgen import reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_equals_the_generated_one() -> None:
    committed = (ROOT / "docs" / "aria2c-options.md").read_text(encoding="utf-8")
    assert committed == reference_markdown(), "run: python -m siteadmin.aria2conf.docgen > docs/aria2c-options.md"


def test_docgen_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "siteadmin.aria2conf.docgen"], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout == reference_markdown()
    assert all(f"`{name}`" in result.stdout for name in CATALOGUE)


def test_profile_guide_names_every_lint_rule() -> None:
    guide = (ROOT / "docs" / "profiles.md").read_text(encoding="utf-8")
    assert all(f"`{rule}`" in guide for rule in RULES)
