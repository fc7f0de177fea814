"""The wheel carries the package and the top-level templates, so a plain `pip install .` works anywhere."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_holds_templates_and_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("siteadmin-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = [p.relative_to(ROOT / "templates").as_posix() for p in (ROOT / "templates").rglob("*") if p.is_file()]
    assert templates, "templates/ is empty"
    for name in templates:
        assert f"siteadmin/_templates/{name}" in names
    assert "siteadmin/cli/__init__.py" in names
    assert "siteadmin/py.typed" in names
    assert "siteadmin/tui/layout.tcss" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "siteadmin = siteadmin.cli:run" in zipfile.ZipFile(wheel).read(entry_points).decode()
