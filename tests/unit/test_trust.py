"""siteadmin.trust (StrictModes-like owner and mode checks) and the text and warning helpers of errors."""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import pytest

from siteadmin import trust
from siteadmin.cli import Context, main
from siteadmin.errors import UntrustedFile, printable, warn, warnings_to
from siteadmin.remote.knownhosts import KnownHosts
from siteadmin.remote.target import load_ssh_config

NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def _file(path: Path, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x = 1\n")
    path.chmod(mode)
    return path


def test_a_private_file_in_a_private_folder_is_trusted(tmp_path: Path) -> None:
    trust.check_path(_file(tmp_path / "conf" / "site.toml"), "site config")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620])
def test_a_file_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _file(tmp_path / "site.toml", mode)
    with pytest.raises(UntrustedFile) as info:
        trust.check_path(path, "site config")
    assert info.value.message == f"{path}: site config is writable by group or others (mode {mode:04o}); siteadmin does not trust it"
    assert info.value.hint == f"check its content, then `chmod go-w {path}`"
    assert info.value.category == "untrusted" and info.value.exit_code == 2


@needs_root
def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = _file(tmp_path / "site.toml")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UntrustedFile, match=f"^{path}: site config is owned by nobody, not by root;"):
        trust.check_path(path, "site config")


def test_a_folder_others_can_write_is_refused_unless_sticky(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    path = _file(folder / "known_hosts")
    folder.chmod(0o775)
    with pytest.raises(UntrustedFile) as info:
        trust.check_path(path, "known_hosts")
    assert info.value.message.startswith(f"{folder}: folder holding the known_hosts {path} is writable by group or others (mode 0775)")
    folder.chmod(0o1777)  # like /tmp: others cannot replace a file they do not own
    trust.check_path(path, "known_hosts")


@needs_root
def test_a_folder_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "theirs"
    path = _file(folder / "site.toml")
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(UntrustedFile, match=f"^{folder}: folder holding the site config {path} is owned by nobody"):
        trust.check_path(path, "site config")


def test_a_link_is_checked_where_it_points_and_where_it_lies(tmp_path: Path) -> None:
    target = _file(tmp_path / "real" / "site.toml", 0o666)
    link = tmp_path / "site.toml"
    link.symlink_to(target)
    with pytest.raises(UntrustedFile, match="mode 0666"):
        trust.check_path(link, "site config")
    target.chmod(0o644)
    trust.check_path(link, "site config")
    (tmp_path / "real").chmod(0o777)
    with pytest.raises(UntrustedFile, match=f"^{tmp_path / 'real'}: folder holding"):
        trust.check_path(link, "site config")


def test_a_missing_file_checks_its_folder_only_when_allowed(tmp_path: Path) -> None:
    missing = tmp_path / "audit.jsonl"
    with pytest.raises(UntrustedFile, match="no such audit log"):
        trust.check_path(missing, "audit log")
    trust.check_path(missing, "audit log", missing_ok=True)
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(UntrustedFile, match="folder holding the audit log"):
            trust.check_path(missing, "audit log", missing_ok=True)
    finally:
        tmp_path.chmod(0o700)


def test_a_template_folder_is_checked_file_by_file(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    inner = _file(folder / "parts" / "header.j2")
    trust.check_folder_tree(folder, "template folder")
    inner.chmod(0o666)
    with pytest.raises(UntrustedFile, match=f"^{inner}: file in the template folder is writable"):
        trust.check_folder_tree(folder, "template folder")
    trust.check_folder_tree(tmp_path / "not-made-yet", "template folder")


def test_a_config_in_the_current_directory_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path / "site.toml")
    seen: list[str] = []
    with warnings_to(seen.append):
        trust.note_cwd_config(path, "an LDAP bind to ldap.example.org:389")
        monkeypatch.chdir(tmp_path)
        assert trust.config_in_cwd(Path("site.toml"))
        trust.note_cwd_config(path, "an LDAP bind to ldap.example.org:389")
        trust.note_cwd_config(None, "an LDAP bind")
    assert seen == [f"using {path} from the current directory for an LDAP bind to ldap.example.org:389"]


def test_an_untrusted_site_config_is_refused_by_the_command_line(tmp_path: Path) -> None:
    site = _file(tmp_path / "site.toml", 0o666)
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(site), "hosts"], out=out, err=err) == 2
    assert out.getvalue() == ""
    assert err.getvalue() == (
        f"siteadmin: untrusted: {site}: site config is writable by group or others (mode 0666); siteadmin does not trust it"
        f" (check its content, then `chmod go-w {site}`)\n"
    )


def test_a_site_template_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    folder.chmod(0o777)
    site = tmp_path / "site.toml"
    site.write_text(f'[site]\nname = "T"\n[wns]\nhosts = ["wn1.t"]\n[aria2c]\ntemplate_path = ["{folder}"]\nrpc_secret_file = "{tmp_path}/s"\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(site), "render", "--host", "wn1.t"], out=out, err=err) == 2
    assert err.getvalue().startswith(f"siteadmin: untrusted: {folder}: aria2c template folder is writable by group or others")


@needs_root
def test_a_known_hosts_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("[wn001.lab]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    assert KnownHosts().lookup(["wn001.lab"], 2201, [path]) is not None
    path.chmod(0o666)
    with pytest.raises(UntrustedFile, match=f"^{path}: known_hosts is writable by group or others"):
        KnownHosts().lookup(["wn001.lab"], 2201, [path])
    path.chmod(0o644)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(UntrustedFile, match=f"^{path}: known_hosts is owned by nobody"):
        KnownHosts().lookup(["wn001.lab"], 2201, [path])


def test_an_ssh_client_config_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ssh_config"
    path.write_text("Host wn*\n  ProxyJump bastion.example.org\n")
    assert load_ssh_config(path) is not None
    path.chmod(0o664)
    with pytest.raises(UntrustedFile, match=f"^{path}: ssh client config is writable by group or others"):
        load_ssh_config(path)


# ---------------------------------------------------------------- printable and warn


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("CE1", "CE1"),
        ("ALICE::Site, comma", "ALICE::Site, comma"),
        ("ou=ce\\2Bspecial", "ou=ce\\2Bspecial"),
        ("Zürich ČE", "Zürich ČE"),
        ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
        ("a\nb\tc\rd\0", "a\\nb\\tc\\rd\\x00"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("\u202eevil\u202c \u2066x\u2069 \u200e\u200f\u061c", "\\u202eevil\\u202c \\u2066x\\u2069 \\u200e\\u200f\\u061c"),
        ("zero\u200bwidth line\u2028sep", "zero\\u200bwidth line\\u2028sep"),
        ("bad\udcffbyte", "bad\\udcffbyte"),
    ],
)
def test_printable_escapes_control_and_bidi_characters(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert printable(text).isprintable() or " " in printable(text)


def test_warnings_go_to_the_innermost_handler_else_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    outer: list[str] = []
    inner: list[str] = []
    with warnings_to(outer.append):
        with warnings_to(inner.append):
            warn("one")
        warn("two")
    warn("three\x1b[2J")
    assert (outer, inner) == (["two"], ["one"])
    assert capsys.readouterr().err == "siteadmin: warning: three\\x1b[2J\n"


def test_error_lines_show_a_hostile_file_name_written_out(tmp_path: Path) -> None:
    site = _file(tmp_path / "site\x1b[2J\u202e.toml", 0o666)
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(site), "hosts"], out=out, err=err) == 2
    line = err.getvalue()
    assert line.count("\n") == 1 and "\x1b" not in line and "\u202e" not in line
    assert f"{tmp_path}/site\\x1b[2J\\u202e.toml: site config is writable" in line


def test_text_output_and_notes_are_printable_json_is_exact() -> None:
    out, err = io.StringIO(), io.StringIO()
    ctx = Context(argparse.Namespace(json=False), out, err)
    ctx.emit({"host": "wn1\x1b[2J"}, lambda d: f"{d['host']}: ok\tcolumn\nwn2\u202e: failed")
    ctx.note("wn1\x1b]0;title\x07: auth failed\nforged line")
    assert out.getvalue() == "wn1\\x1b[2J: ok\tcolumn\nwn2\\u202e: failed\n"
    assert err.getvalue() == "siteadmin: wn1\\x1b]0;title\\x07: auth failed\\nforged line\n"
    out = io.StringIO()
    Context(argparse.Namespace(json=True), out, err).emit({"host": "wn1\x1b[2J"})
    assert json.loads(out.getvalue()) == {"host": "wn1\x1b[2J"} and "\x1b" not in out.getvalue()


def test_rpc_calls_name_a_config_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from siteadmin.secrets import write_secret_file
    from siteadmin.site import load_site
    from siteadmin.swarm.service import SwarmMonitor

    write_secret_file(tmp_path / "aria2c-rpc-secret", "s3cret")
    (tmp_path / "site.toml").write_text('[site]\nname = "T"\n[wns]\nhosts = ["wn1.t"]\n')
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    with warnings_to(seen.append):
        site = load_site()
        assert seen == []  # reading it says nothing: it is named before something is sent
        with SwarmMonitor(site, keep_memory=False):
            pass
    assert seen == [f"using {tmp_path / 'site.toml'} from the current directory for RPC calls to the WNs' aria2c"]
