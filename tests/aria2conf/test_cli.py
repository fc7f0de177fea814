"""``siteadmin render`` and ``siteadmin lint`` through main([...]) with captured output."""

from __future__ import annotations

import io
import json
import stat
import textwrap
from pathlib import Path

import pytest

from siteadmin.aria2conf import PLACEHOLDER_HOST, render, rpc_secret_path
from siteadmin.cli import main
from siteadmin.secrets import MASK
from siteadmin.site import load_site

SITE = """
    [site]
    name = "CLI"
    [wns]
    hosts = ["wn[001-003].example.org"]
    [wns.groups.big]
    hosts = ["wn003.example.org"]
    aria2c = { max-overall-upload-limit = "50M" }
    [aria2c.options]
    all-proxy = "http://proxy.example.org:3128"
    all-proxy-user = "alice"
    all-proxy-passwd = "proxy-password-77"
    bt-lpd-interface = "eth0"
    """


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.touch(mode=0o600)  # it holds a proxy password: a site.toml with a secret must be 0600
    path.write_text(textwrap.dedent(SITE))
    return path


def _secret(site_file: Path) -> str:
    return rpc_secret_path(load_site(site_file)).read_text().strip()


def test_render_prints_masked_profiles_of_the_selected_hosts(site_file: Path) -> None:
    code, out, err = run("render", "--site", str(site_file), "--host", "wn[002-003].example.org")
    assert code == 0, err
    assert out.count("# host: ") == 2 and "# host: wn003.example.org" in out and "wn001" not in out
    assert "max-overall-upload-limit=50M" in out
    assert f"rpc-secret={MASK}" in out and f"all-proxy-passwd={MASK}" in out
    secret = _secret(site_file)
    for text in (out, err):
        assert secret not in text and "proxy-password-77" not in text


def test_render_out_writes_0600_files_with_real_secrets(site_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    code, out, err = run("render", "--site", str(site_file), "--out", str(target))
    assert code == 0, err
    files = sorted(p.name for p in target.iterdir())
    assert files == ["wn001.example.org.conf", "wn002.example.org.conf", "wn003.example.org.conf"]
    site = load_site(site_file)
    for name in files:
        path = target / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == render(site, name.removesuffix(".conf")).text
    assert "proxy-password-77" in (target / files[0]).read_text()
    assert _secret(site_file) not in out + err
    assert out.splitlines()[0].startswith("wn001.example.org: ")


def test_render_with_no_wns_renders_the_site_profile(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "EMPTY"\n')
    code, out, err = run("render", "--site", str(path))
    assert code == 0, err
    assert f"# host: {PLACEHOLDER_HOST}" in out


def test_render_json(site_file: Path) -> None:
    code, out, _ = run("render", "--site", str(site_file), "--host", "wn001.example.org", "--json")
    assert code == 0
    (item,) = json.loads(out)
    assert item["host"] == "wn001.example.org" and item["hash"].startswith("hmac-sha256:")
    assert _secret(site_file) not in out and item["origin"]["rpc-secret"] == "generated"


def test_lint_clean_site_exits_0(site_file: Path) -> None:
    code, out, err = run("lint", "--site", str(site_file))
    assert code == 0, err
    assert out == "wn[001-003].example.org: no findings\n"


def test_lint_errors_exit_1_and_fold_hosts(site_file: Path) -> None:
    site_file.write_text(site_file.read_text().replace('max-overall-upload-limit = "50M"', "rpc-listen-all = true"))
    code, out, _ = run("lint", "--site", str(site_file))
    assert code == 1
    assert "wn003.example.org: error: rpc-listen-all:" in out and "[rpc-listen-all]" in out
    code, out, _ = run("lint", "--site", str(site_file), "--allow", "rpc-listen-all")
    assert code == 0
    assert "wn003.example.org: allowed: rpc-listen-all" in out


def test_lint_warnings_only_exit_0(site_file: Path) -> None:
    site_file.write_text(site_file.read_text() + 'listen-port = "7000-7010"\n')
    code, out, _ = run("lint", "--site", str(site_file))
    assert code == 0
    assert "wn[001-003].example.org: warning: listen-port:" in out


def test_lint_json(site_file: Path) -> None:
    site_file.write_text(site_file.read_text() + "rpc-allow-origin-all = true\n")
    code, out, _ = run("lint", "--site", str(site_file), "--json")
    data = json.loads(out)
    assert code == 1 and data["errors"] == 1
    assert data["findings"][0]["rule"] == "rpc-allow-origin-all" and data["findings"][0]["hosts"] == "wn[001-003].example.org"


def test_render_out_refuses_to_write_on_lint_errors(site_file: Path, tmp_path: Path) -> None:
    site_file.write_text(site_file.read_text() + "rpc-allow-origin-all = true\n")
    code, out, err = run("render", "--site", str(site_file), "--out", str(tmp_path / "out"))
    assert code == 1
    assert not (tmp_path / "out").exists()
    assert "nothing written" in err and "rpc-allow-origin-all" in err


@pytest.mark.parametrize(
    ("extra", "argv_tail", "expected"),
    [
        ('rpc-secrt = "leaky-secret-value"\n', [], "siteadmin: config: wn001.example.org: [aria2c.options]: rpc-secrt: not an aria2c option"),
        ('bt-max-peers = "many"\n', [], 'bt-max-peers = "many": must be an integer >= 0'),
        ('all-proxy-passwd = "a\\nrpc-listen-all=true"\n', [], "all-proxy-passwd = ********: must not hold a newline"),
        ("", ["--host", "wn[001-"], "siteadmin: hosts: hosts pattern"),
        ("", ["--host", "other.example.org"], "not a WN of this site"),
        ("", ["--allow", "no-such-rule"], "siteadmin: usage: --allow no-such-rule: no such lint rule"),
    ],
)
@pytest.mark.parametrize("command", ["render", "lint"])
def test_bad_input_is_one_line_without_traceback(site_file: Path, command: str, extra: str, argv_tail: list[str], expected: str) -> None:
    text = site_file.read_text().replace('all-proxy-passwd = "proxy-password-77"\n', "") + extra
    site_file.write_text(text)
    code, out, err = run(command, "--site", str(site_file), *argv_tail)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert expected in err
    assert "Traceback" not in err and "leaky-secret-value" not in err and "rpc-listen-all=true" not in err


@pytest.mark.parametrize(
    "proxy",
    ["http://user:p@ss/Secret-Value@proxy:3128", "user:Secret-Value@proxy.example.org:3128/x", "http://u:Secret-Value@@bad host"],
)
def test_a_malformed_proxy_url_never_shows_its_password(tmp_path: Path, proxy: str) -> None:
    site = tmp_path / "site.toml"
    site.write_text(f'[site]\nname = "X"\n[aria2c.options]\nall-proxy = "{proxy}"\n')
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), "render"], out=out, err=err)
    assert code == 2
    assert len(err.getvalue().splitlines()) == 1
    assert "all-proxy" in err.getvalue()
    assert "Secret-Value" not in out.getvalue() + err.getvalue()
