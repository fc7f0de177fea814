"""``siteadmin completion bash|zsh``: scripts generated from the parser, loaded and run by the real shells.

bash: the script is sourced by ``bash --norc`` and its completion function is called with
``COMP_WORDS`` as bash's programmable completion would set them; what it puts in ``COMPREPLY``
is what Tab would offer. zsh: the script is loaded by ``compinit`` from a folder in ``fpath``
(and by ``eval``), as docs/install.md says to install it, and must load without a word on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from siteadmin.cli import build_parser, main
from siteadmin.lint_rules import RULES

SITEADMIN = Path(sys.executable).parent / "siteadmin"
"""The installed console script: the bash script calls it back for @group names."""

SITE = """\
[wns]
hosts = ["wn[001-010].example.org"]

[wns.groups.bigdisk]
hosts = ["wn[001-004].example.org"]

[wns.groups.gpu]
hosts = ["wn[005-006].example.org"]
"""


def generated(shell: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert main(["completion", shell], out=out, err=err) == 0, err.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "siteadmin.bash"
    path.write_text(generated("bash"))
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    return path


def complete(script: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the command line ``siteadmin WORDS...`` with the cursor at the end of the last word."""
    program = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
_shtab_siteadmin
printf '%s\n' "${COMPREPLY[@]}"
"""
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program, "complete", str(script), str(SITEADMIN), *words],
        capture_output=True, text=True, timeout=60, cwd=cwd, env={**os.environ, "SITEADMIN_SITE": "/nonexistent/site.toml"},
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return sorted(line for line in result.stdout.splitlines() if line)


def commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_bash_completes_every_command_and_subcommand(bash_script: Path) -> None:
    assert complete(bash_script, "") == commands(build_parser())
    assert complete(bash_script, "ap") == ["apply"]
    assert complete(bash_script, "ro") == ["rollback"]
    assert complete(bash_script, "ce", "") == ["disable", "enable", "list", "set", "show"]
    assert complete(bash_script, "config", "re") == ["reference"]


def test_bash_completes_options_and_global_ones_after_the_command(bash_script: Path) -> None:
    assert complete(bash_script, "apply", "--dr") == ["--dry-run"]
    assert complete(bash_script, "rollback", "--li") == ["--list"]
    assert complete(bash_script, "apply", "--qu") == ["--quiet"]  # global: before or after the command
    assert complete(bash_script, "--qu") == ["--quiet"]
    assert "--site" in complete(bash_script, "status", "--")


def test_bash_completes_choices(bash_script: Path) -> None:
    assert complete(bash_script, "check", "--format", "") == ["firewalld", "iptables", "nftables"]
    assert complete(bash_script, "completion", "") == ["bash", "zsh"]
    assert complete(bash_script, "lint", "--allow", "rpc-") == sorted(r for r in RULES if r.startswith("rpc-"))


def test_bash_completes_files_and_folders(bash_script: Path, tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(SITE)
    (tmp_path / "sites.d").mkdir()
    assert complete(bash_script, "--site", f"{tmp_path}/si") == [f"{tmp_path}/site.toml", f"{tmp_path}/sites.d"]
    assert complete(bash_script, "ce", "enable", "--ldif-request", f"{tmp_path}/site.t") == [f"{tmp_path}/site.toml"]
    assert complete(bash_script, "lab", "up", "--dir", f"{tmp_path}/si") == [f"{tmp_path}/sites.d"]  # folders only


def test_bash_completes_hostlist_groups_from_the_site_config(bash_script: Path, site: Path) -> None:
    assert complete(bash_script, "--site", str(site), "apply", "@") == ["@bigdisk", "@gpu"]
    assert complete(bash_script, "apply", "--site", str(site), "@g") == ["@gpu"]
    assert complete(bash_script, f"--site={site}", "hosts", "@b") == ["@bigdisk"]
    assert complete(bash_script, "render", "--site", str(site), "--host", "@") == ["@bigdisk", "@gpu"]
    # no --site: the config siteadmin itself would use ($SITEADMIN_SITE names a missing file here, and wins over ./site.toml)
    assert complete(bash_script, "check", "@", cwd=site.parent) == []
    assert complete(bash_script, "--site", str(site.parent / "missing.toml"), "apply", "@") == []  # a bad config offers nothing


def test_groups_helper(site: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(site), "completion", "--groups"], out=out, err=err) == 0
    assert out.getvalue() == "@bigdisk\n@gpu\n" and err.getvalue() == ""
    out = io.StringIO()
    assert main(["--site", str(site), "completion", "--groups", "--json"], out=out, err=err) == 0
    assert json.loads(out.getvalue()) == ["@bigdisk", "@gpu"]


@pytest.mark.parametrize(("argv", "words"), [(["completion"], "needs a shell"), (["completion", "fish"], "invalid choice"),
                                             (["completion", "bash", "--groups"], "takes no shell")])
def test_bad_requests_are_one_line(argv: list[str], words: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, out=out, err=err) == 2
    assert out.getvalue() == "" and len(err.getvalue().splitlines()) == 1 and words in err.getvalue()


def test_zsh_loads_the_script_from_fpath_and_by_eval(tmp_path: Path) -> None:
    zsh = shutil.which("zsh")
    assert zsh is not None, "zsh missing (run `bash .ci/setup.sh`)"
    folder = tmp_path / "zsh-completions"
    folder.mkdir()
    (folder / "_siteadmin").write_text(generated("zsh"))
    env = {**os.environ, "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path)}
    checks = "print -r -- ${_comps[siteadmin]}; (( $+functions[_siteadmin_hostlist] + $+functions[_shtab_siteadmin] ))"
    from_fpath = subprocess.run(
        [zsh, "-fc", f"fpath=({folder} $fpath); autoload -U compinit; compinit -u -d {tmp_path}/.zcompdump; autoload -Uz _siteadmin; "
                          f"print -r -- ${{_comps[siteadmin]}}"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert from_fpath.returncode == 0 and from_fpath.stderr == "", from_fpath.stderr
    assert from_fpath.stdout == "_siteadmin\n"
    by_eval = subprocess.run(
        [zsh, "-fc", f'autoload -U compinit; compinit -u -d {tmp_path}/.zcompdump; eval "$(<{folder}/_siteadmin)"; {checks}'],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert by_eval.returncode == 0 and by_eval.stderr == "", by_eval.stderr
    assert by_eval.stdout == "_shtab_siteadmin\n"
    syntax = subprocess.run([zsh, "-n", str(folder / "_siteadmin")], capture_output=True, text=True, timeout=60)
    assert syntax.returncode == 0 and syntax.stderr == "", syntax.stderr


def test_groups_at_a_tab_press_import_no_command_module(site: Path) -> None:
    # every Tab on a hostlist runs this: it must not pay for importing the rollout, the swarm, LDAP...
    program = (
        "import sys\nfrom siteadmin.cli import main\n"
        f"code = main(['--site', {str(site)!r}, 'completion', '--groups'])\n"
        "heavy = sorted(m for m in ('siteadmin.rollout', 'siteadmin.swarm', 'siteadmin.directory', 'paramiko', 'ldap3', 'textual') if m in sys.modules)\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "@bigdisk\n@gpu\n0 []\n"
