"""siteadmin.runlock: one changing run per site at a time; the second names the holder and exits 4."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from siteadmin import runlock
from siteadmin.cli import main
from siteadmin.errors import BusyError, ConfigError, ExitCode
from siteadmin.site import Site, load_site


def write_site(path: Path, name: str = "LAB", extra: str = "") -> Path:
    path.write_text(
        textwrap.dedent(
            f"""\
            [site]
            name = "{name}"

            [wns]
            hosts = ["wn[1-3].invalid"]

            [audit]
            path = "audit.jsonl"
            {extra}
            """
        ),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return load_site(write_site(tmp_path / "site.toml"))


def test_state_dir_env_root_and_user() -> None:
    assert runlock.state_dir({"SITEADMIN_STATE_DIR": "/srv/state"}, uid=0) == Path("/srv/state")
    assert runlock.state_dir({}, uid=0) == Path("/run/siteadmin")
    assert runlock.state_dir({"XDG_STATE_HOME": "/home/a/.state"}, uid=1000) == Path("/home/a/.state/siteadmin")
    assert runlock.state_dir({"XDG_STATE_HOME": "relative"}, uid=1000) == Path("~/.local/state/siteadmin").expanduser()
    assert runlock.state_dir({}, uid=1000) == Path("~/.local/state/siteadmin").expanduser()


def test_one_lock_per_site_config(tmp_path: Path) -> None:
    a = load_site(write_site(tmp_path / "a.toml", name="CERN"))
    same = load_site(tmp_path / "a.toml")
    b = load_site(write_site(tmp_path / "b.toml", name="CERN"))
    odd = load_site(write_site(tmp_path / "c.toml", name="ALICE::Site"))
    assert runlock.lock_name(a) == runlock.lock_name(same)
    assert runlock.lock_name(a) != runlock.lock_name(b)
    assert runlock.lock_name(a).startswith("CERN-") and runlock.lock_name(a).endswith(".lock")
    assert runlock.lock_name(odd).startswith("ALICE__Site-")
    assert runlock.lock_name(Site()).startswith("site-")


def test_second_holder_is_refused_naming_the_first_then_free_again(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with runlock.hold(site, "siteadmin apply @bigdisk", state) as path:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "siteadmin apply @bigdisk"
        with pytest.raises(BusyError) as caught, runlock.hold(site, "siteadmin apply", state):
            pytest.fail("a second holder got the lock")
        message = caught.value.one_line()
        assert f"pid {os.getpid()}" in message and "`siteadmin apply @bigdisk`" in message and str(path) in message
        assert caught.value.exit_code == ExitCode.BUSY and int(ExitCode.BUSY) == 4
        assert runlock.holder_of(site, state) is not None
    assert path.read_text() == ""  # a finished run leaves no name behind
    assert runlock.holder_of(site, state) is None
    with runlock.hold(site, "siteadmin rollback", state):
        pass


def test_a_killed_holder_leaves_no_stale_lock(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state"
    script = textwrap.dedent(f"""\
        import pathlib, time
        from siteadmin import runlock
        from siteadmin.site import load_site
        with runlock.hold(load_site({str(site.source)!r}), "siteadmin apply", pathlib.Path({str(state)!r})):
            print("held", flush=True)
            time.sleep(60)
        """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "held\n"
            with pytest.raises(BusyError, match=f"pid {child.pid} "), runlock.hold(site, "siteadmin apply", state):
                pass
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    with runlock.hold(site, "siteadmin apply", state):  # the kernel released it with the process
        pass


def test_a_link_or_an_open_folder_is_refused(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    (state / runlock.lock_name(site)).symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"), runlock.hold(site, "siteadmin apply", state):
        pass
    assert not target.exists()
    open_state = tmp_path / "open"
    open_state.mkdir()
    open_state.chmod(0o777)
    with pytest.raises(ConfigError, match="writable by group or others"), runlock.hold(site, "siteadmin apply", open_state):
        pass


def test_a_garbled_lock_file_still_gives_one_line(site: Site, tmp_path: Path) -> None:
    assert runlock.parse_holder("") is None and runlock.parse_holder("[1]") is None
    holder = runlock.parse_holder('{"pid": "x", "command": "siteadmin apply\\u001b[2J"}')
    assert holder is not None and holder.pid is None and "\\x1b[2J" in holder.describe()


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_changing_commands_exit_4_before_doing_anything(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv(runlock.STATE_ENV, str(state))
    assert site.source is not None
    with runlock.hold(site, "siteadmin --quiet apply", state):
        for argv in (["apply"], ["rollback"], ["--quiet", "apply"], ["ce", "enable", "CE1"], ["ce", "set", "CE1", "Torrent"]):
            code, out, err = run_cli("--site", str(site.source), *argv)
            assert code == 4, (argv, err)
            assert out == ""
            assert err.startswith("siteadmin: busy: site lock ") and f"pid {os.getpid()} " in err and "`siteadmin --quiet apply`" in err, err
            assert len(err.splitlines()) == 1
        assert not (tmp_path / "audit.jsonl").exists()
        # what changes nothing takes no lock: a dry run goes on (and fails later, on the invalid WNs' names)
        code, _, err = run_cli("--site", str(site.source), "apply", "--dry-run", "--parallel", "1")
        assert code != 4 and "busy" not in err


def test_quiet_is_global_before_or_after_the_command(site: Site) -> None:
    from siteadmin.cli import build_parser

    parser = build_parser()
    for argv in (["--quiet", "hosts"], ["hosts", "--quiet"], ["-q", "hosts"], ["hosts", "-q"]):
        assert parser.parse_args(argv).quiet is True, argv
    assert not hasattr(parser.parse_args(["hosts"]), "quiet")  # suppressed default: main fills it in
    assert site.source is not None
    assert run_cli("--site", str(site.source), "--quiet", "hosts") == (0, "", "")
    code, out, _ = run_cli("--site", str(site.source), "hosts")
    assert code == 0 and out == "wn[1-3].invalid (3 WNs)\n"
    code, out, _ = run_cli("--site", str(site.source), "hosts", "-q", "--json")
    assert code == 0 and json.loads(out)  # --json prints the data asked for, quiet or not
    code, out, err = run_cli("--site", str(site.source), "-q", "hosts", "@nosuchgroup")
    assert code == 2 and out == "" and "nosuchgroup" in err  # failures still show


def test_busy_is_in_the_documented_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    # every exit-code list names 4 beside 130
    documented = re.compile(r"(\b4\b|`4`)\W{0,4}busy")
    for doc in ("README.md", "docs/README.md", "docs/rollout.md", "docs/scheduling.md"):
        text = (root / doc).read_text(encoding="utf-8")
        assert "130" in text and documented.search(text), doc
    code, _, _ = run_cli("--help")
    assert code == 0 and "4 busy" in " ".join(capsys.readouterr().out.split())  # argparse prints help on sys.stdout
