"""The WN-side validation command, run here by ``sh`` with the real aria2c reading a file (it starts nothing);
how a WN whose file waited for a restart is labelled.

What aria2c checks only at start (``changes.start_checks``) is judged together with aria2c's own
reading, exactly as on a WN: the command is the one the rollout sends, ``{path}`` filled in.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from siteadmin.remote.session import CommandResult
from siteadmin.rollout import changes
from siteadmin.rollout.service import VALIDATE_COMMAND, HostReport, _validate_judge, validate_command

needs_aria2c = pytest.mark.skipif(shutil.which("aria2c") is None, reason="aria2c is not installed (bash .ci/setup.sh installs it)")


def judged(tmp_path: Path, options: dict[str, str]) -> str | None:
    conf = tmp_path / "aria2c.conf"
    conf.write_text("".join(f"{k}={v}\n" for k, v in options.items()))
    conf.chmod(0o600)
    command = validate_command(options).replace("{path}", shlex.quote(str(conf)))
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)
    return _validate_judge([])(CommandResult(done.returncode, done.stdout, done.stderr))


def test_options_aria2c_reads_only_at_start_add_no_test_when_unset() -> None:
    assert changes.start_checks({"dir": "/data", "log": "-", "input-file": "-"}) == []
    assert validate_command({"dir": "/data"}) == VALIDATE_COMMAND


@needs_aria2c
def test_a_missing_log_folder_and_input_file_are_refused_with_aria2c_exit_status_kept(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    why = judged(tmp_path, {
        "log": str(tmp_path / "no-such" / "aria2c.log"),
        "save-session": str(tmp_path / "state" / "session"),
        "input-file": str(tmp_path / "state" / "missing.session"),
    })
    assert why is not None
    assert f"log: folder {tmp_path / 'no-such'} does not exist on the WN" in why
    assert "input-file: " in why and "missing.session is not a readable file" in why
    assert "save-session" not in why
    assert "unexpected exit status" not in why, "the shell tests changed aria2c's exit status"


@needs_aria2c
def test_a_good_file_passes_and_a_bad_value_is_still_aria2c_own_finding(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "in.session").write_text("")
    good = {"log": str(tmp_path / "logs" / "aria2c.log"), "input-file": str(tmp_path / "in.session"), "save-session": str(tmp_path / "s")}
    assert judged(tmp_path, good) is None
    why = judged(tmp_path, {**good, "listen-port": "80"})
    assert why is not None and "listen-port" in why and "does not exist" not in why


def test_split_checks_keeps_aria2c_output_apart() -> None:
    found, rest = changes.split_checks(f"{changes.CHECK_MARK}log: folder /x does not exist on the WN; ...\nException: boom\n")
    assert found == ["log: folder /x does not exist on the WN; ..."]
    assert rest == "Exception: boom"


def test_a_file_left_busy_then_restarted_is_labelled_unchanged_restarted() -> None:
    waiting = HostReport("wn001.lab", "/etc/aria2/aria2c.conf", changes.UNCHANGED, "a", "a", reload=changes.RELOAD_RESTART)
    assert waiting.label == "unchanged"  # nothing was done (reload turned off)
    assert HostReport("wn001.lab", "/p", changes.UNCHANGED, "a", "a", reload=changes.RELOAD_RESTART, dry_run=True).label == "unchanged (restart)"
    assert HostReport("wn001.lab", "/p", changes.UNCHANGED, "a", "a", reload=changes.RELOAD_RESTART, reloaded="restarted").label == "unchanged (restarted)"
    assert HostReport("wn001.lab", "/p", changes.UNCHANGED, "a", "a").label == "unchanged"
    assert HostReport("wn001.lab", "/p", changes.CHANGED, "a", "b", reload=changes.RELOAD_RPC, reloaded="rpc").label == "changed (live)"
