"""Bad input to `siteadmin lab`: one line on stderr, non-zero exit, no traceback."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest

from siteadmin.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("wns", ["0", "10000", "-3", "four"])
def test_bad_wn_count_is_a_usage_error(tmp_path: Path, wns: str) -> None:
    code, out, err = run("lab", "up", "--wns", wns, "--dir", str(tmp_path / "lab"))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("siteadmin: usage: ") and "--wns" in err
    assert "Traceback" not in err
    assert not (tmp_path / "lab").exists()


def test_unwritable_dir_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, out, err = run("lab", "up", "--wns", "2", "--dir", str(blocker / "lab"))
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("siteadmin: lab: --dir ") and "not a writable directory" in err
    assert "Traceback" not in err


def test_status_of_a_dir_without_a_lab(tmp_path: Path) -> None:
    code, out, err = run("lab", "status", "--dir", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"siteadmin: lab: no lab in {tmp_path}")


def test_down_of_a_dir_without_a_lab_is_fine(tmp_path: Path) -> None:
    code, out, err = run("lab", "down", "--dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert "cleaned" in out


def test_lab_needs_an_action() -> None:
    code, _, err = run("lab")
    assert code == 2 and err.startswith("siteadmin: usage: ") and err.count("\n") == 1
