"""`siteadmin status` refusals and edges that need no WN: each is one line, the right exit code, nothing contacted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from siteadmin.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "TEST"\n\n[audit]\npath = "{tmp_path / "audit.jsonl"}"\n\n[status]\nmemory_file = "{tmp_path / "memory.json"}"\n')
    return path


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--watch", "0", "--accounting", "on"], "--accounting changes the WNs"),
        (["--accounting", "off", "--package", "x"], "--accounting changes the WNs"),
        (["--yes"], "--yes: only with --accounting"),
        (["--watch", "-1"], "--watch -1: must be a number of seconds greater than 0"),
        (["--watch", "nan"], "--watch nan: must be a number of seconds greater than 0"),
        (["--parallel", "0"], "--parallel 0: must be 1 or more"),
        (["--nagios", "--watch"], "--nagios prints one line"),
        (["--nagios", "--json"], "--nagios prints one line"),
        (["--accounting", "maybe"], "invalid choice"),
        (["--prometheus", "/nonexistent-folder/x.prom"], "--prometheus /nonexistent-folder/x.prom: /nonexistent-folder is not a folder"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(site: Path, argv: list[str], words: str) -> None:
    code, out, err = run("--site", str(site), "status", *argv)
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and words in err and err.startswith("siteadmin: usage: "), err
    assert "Traceback" not in err


def test_a_bad_status_setting_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[status]\nmin_aria2c_version = "new"\n')
    code, out, err = run("--site", str(path), "status")
    assert code == 2 and out == ""
    assert "status.min_aria2c_version" in err and 'a version like "1.35.0"' in err and err.count("\n") == 1


def test_nagios_says_unknown_in_one_line_when_status_cannot_run(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[status]\nstall_window = -5\n")
    code, out, err = run("--site", str(path), "status", "--nagios")
    assert code == 3, err
    assert out.startswith("SWARM UNKNOWN - ") and "status.stall_window" in out and out.count("\n") == 1


def test_no_wns_selected(site: Path) -> None:
    assert run("--site", str(site), "status") == (0, "", "siteadmin: no WNs selected\n")
    code, out, _ = run("--site", str(site), "status", "--nagios")
    assert (code, out) == (3, "SWARM UNKNOWN - no WNs selected\n")
