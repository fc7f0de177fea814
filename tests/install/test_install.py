"""Installing siteadmin as docs/install.md says: the wheel and every dependency from wheels, no compiler.

The wheel is built from this tree, installed with ``pip install --only-binary :all:`` into a fresh
venv (dependencies come from the package index the machine's pip uses: a dependency without a
wheel for this platform fails the test, as it would need a compiler on a VoBox), and the installed
command is run from another folder, with another HOME, so nothing of the source tree or the
developer's config is used. Marked ``network`` (it needs the package index and takes ~30 s):
part of the full suite, not of the fast tier (``-m "not lab"``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import siteadmin

pytestmark = [pytest.mark.network, pytest.mark.lab]  # slow tier: not in `-m "not lab"`

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def test_the_wheel_installs_from_wheels_only_and_runs_from_another_folder(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = dist.glob("siteadmin-*-py3-none-any.whl")  # pure Python: one wheel for every platform

    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)])
    assert made.returncode == 0, made.stderr[-2000:]
    python = venv / "bin" / "python"
    started = time.monotonic()
    installed = run([str(python), "-m", "pip", "install", "-q", "--only-binary", ":all:", str(wheel)])
    elapsed = time.monotonic() - started
    assert installed.returncode == 0, installed.stdout[-2000:] + installed.stderr[-2000:]
    print(f"pip install --only-binary :all: of the wheel and its dependencies: {elapsed:.1f} s")
    consistent = run([str(python), "-m", "pip", "check"])
    assert consistent.returncode == 0, consistent.stdout

    elsewhere = tmp_path / "elsewhere"
    home = tmp_path / "home"
    elsewhere.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SITEADMIN_"))}
    env.update(HOME=str(home), PATH=f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", XDG_STATE_HOME=str(home / "state"))

    def siteadmin_cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return run(["siteadmin", *argv], cwd=elsewhere, env=env)

    version = siteadmin_cli("--version")
    assert (version.returncode, version.stdout, version.stderr) == (0, f"siteadmin {siteadmin.__version__}\n", "")
    where = run([str(python), "-c", "import siteadmin; print(siteadmin.__file__)"], cwd=elsewhere, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not this tree

    defaults = siteadmin_cli("config", "show", "--json")
    assert defaults.returncode == 0, defaults.stderr
    shown = json.loads(defaults.stdout)
    assert shown["central"]["tracker_host"] == "alitorrent.cern.ch" and shown["syslog"]["address"] == "/dev/log"

    (elsewhere / "site.toml").write_text('[site]\nname = "TEST"\n\n[wns]\nhosts = ["wn[01-02].example.org"]\n')
    found = siteadmin_cli("config", "show")  # ./site.toml is found from the current folder
    assert found.returncode == 0 and f"# source: {elsewhere / 'site.toml'}\nsite.name = TEST\n" in found.stdout, found.stdout + found.stderr
    rendered = siteadmin_cli("render", "--host", "wn01.example.org", "--no-aria2c-check")  # the templates inside the wheel
    assert rendered.returncode == 0, rendered.stderr
    assert "listen-port=" in rendered.stdout and "bt-tracker=" in rendered.stdout
    completion = siteadmin_cli("completion", "bash")
    assert completion.returncode == 0 and "complete -o bashdefault -F _shtab_siteadmin siteadmin" in completion.stdout
