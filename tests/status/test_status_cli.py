"""`siteadmin status` refusals and edges that need no WN: each is one line, the right exit code, nothing contacted."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
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


def test_accounting_asks_on_a_terminal_and_no_changes_nothing(tmp_path: Path) -> None:
    """The question comes after what it will do; 'n' ends the run before any WN is contacted (none exists here)."""
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nname = "TEST"\n\n[central]\nseeder_host = "192.0.2.10"\nhttp_fallback = "http://192.0.2.10:8080/"\n\n'
        '[wns]\nhosts = ["wn[001-002].example.org"]\n\n'
        '[wns.nodes."wn001.example.org"]\naddress = "192.0.2.1"\n\n[wns.nodes."wn002.example.org"]\naddress = "192.0.2.2"\n\n'
        f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n'
    )
    primary, secondary = pty.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "siteadmin", "--site", str(path), "status", "--accounting", "on"],
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SITEADMIN_STATE_DIR": str(tmp_path / "state")},
        )
        os.write(primary, b"n\n")
        out, err = child.communicate(timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert child.returncode == 1, err
    assert out == ""
    lines = err.splitlines()
    assert "wn[001-002].example.org: on 2 WN(s): load nft table inet siteadmin_accounting" in lines[0]
    assert "2 site WN address(es), 1 central address(es) (192.0.2.10)" in lines[0]
    assert lines[1].startswith("siteadmin: turn accounting on on 2 WN(s)? [y/N] ") and lines[1].endswith("siteadmin: nothing changed")
    assert not (tmp_path / "audit.jsonl").exists(), "nothing was done, so nothing was audited"
