"""The site config: defaults, search order, and one-line errors for bad values of every field."""

from __future__ import annotations

import dataclasses
import io
import tomllib
from pathlib import Path

import pytest

from siteadmin.cli import main
from siteadmin.errors import ConfigError
from siteadmin.site import SECTIONS, Site, example_site_toml, load_site, parse_port_ranges, site_from_mapping


def test_builtin_defaults_are_alice_values() -> None:
    site = Site()
    assert site.central.tracker_host == "alitorrent.cern.ch"
    assert site.central.tracker_port == 8088
    assert site.central.seeder_port == 8092
    assert site.wns.ports == "6881-6999"
    assert site.ldap.base == "o=alice,dc=cern,dc=ch"
    assert site.ldap.install_methods == ["Torrent", "TorrentPerHost", "CVMFS", "Parrot", "Local"]


def test_every_field_is_documented() -> None:
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert field.metadata.get("doc"), f"{section}.{field.name} has no doc"


def test_example_config_round_trips_to_defaults() -> None:
    data = tomllib.loads(example_site_toml())
    assert site_from_mapping(data) == Site()


def test_relative_paths_are_relative_to_the_site_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[ldap]\nca_file = "ca.pem"\n[ssh]\nknown_hosts = "/etc/ssh/kh"\n')
    site = load_site(path)
    assert site.ldap.ca_file == tmp_path / "ca.pem"
    assert site.ssh.known_hosts == Path("/etc/ssh/kh")
    assert site.source == path.resolve()


GOOD = [
    {"site": {"name": "CERN"}},
    {"site": {"name": "ALICE::Torino"}},
    {"ldap": {"url": "ldaps://ldap.example.org:636", "bind_dn": "cn=admin,o=alice,dc=cern,dc=ch", "timeout": 3}},
    {"central": {"tracker_host": "10.1.2.3", "tracker_port": 1, "http_fallback": "https://x.example.org/pkgs/"}},
    {"wns": {"hosts": "wn[001-120].example.org", "exclude": ["wn005.example.org"], "ports": "6881-6999,7000"}},
    {"wns": {"groups": {"big": {"hosts": ["wn[1-4].x"], "aria2c": {"max-overall-upload-limit": "10M"}}}}},
    {"wns": {"nodes": {"wn001.x": {"address": "192.0.2.7", "port": 2222}}}},
    {"ssh": {"user": "alicesgm", "port": 2222, "parallelism": 200, "jump_host": "admin@bastion:2222"}},
    {"rollout": {"batch_size": 1, "max_fail_percent": 0, "backups_kept": 0}},
    {"audit": {"path": "/var/log/siteadmin/audit.jsonl"}},
]


@pytest.mark.parametrize("data", GOOD, ids=lambda d: next(iter(d)))
def test_good_values_load(data: dict[str, object]) -> None:
    site_from_mapping(data)


# (toml text, words the one-line error must contain)
BAD = [
    ("[site]\nname = 42", ["site.name", "42", "string"]),
    ('[site]\nname = "has space"', ["site.name", "site name"]),
    ('[site]\nnmae = "X"', ["site.nmae", "unknown key", "site.name"]),
    ('[sit]\nname = "X"', ["sit", "unknown key", "site"]),
    ('[ldap]\nurl = "http://x"', ["ldap.url", "ldaps://"]),
    ('[ldap]\nurl = 5', ["ldap.url", "string"]),
    ('[ldap]\nbase = "not a dn"', ["ldap.base", "DN"]),
    ('[ldap]\nbind_dn = "=,="', ["ldap.bind_dn", "DN"]),
    ("[ldap]\nstarttls = 1", ["ldap.starttls", "true or false"]),
    ('[ldap]\ninsecure = "yes"', ["ldap.insecure", "true or false"]),
    ("[ldap]\ntimeout = 0", ["ldap.timeout", "greater than 0"]),
    ("[ldap]\ntimeout = -1.5", ["ldap.timeout", "greater than 0"]),
    ("[ldap]\ntimeout = inf", ["ldap.timeout", "finite number"]),
    ("[ldap]\ntimeout = nan", ["ldap.timeout", "finite number"]),
    ("[ldap]\ntimeout = 1e300", ["ldap.timeout", "at most 86400"]),
    ('[ldap]\nca_file = "~nosuchuser-xyz/ca.pem"', ["ldap.ca_file", "no such user"]),
    ("[ssh]\nconnect_timeout = inf", ["ssh.connect_timeout", "finite number"]),
    ("[ldap]\ninstall_methods = []", ["ldap.install_methods", "non-empty"]),
    ('[ldap]\ninstall_methods = ["Tor rent"]', ["ldap.install_methods"]),
    ("[ldap]\npassword_file = 3", ["ldap.password_file", "path"]),
    ('[ldap]\nca_file = ["a"]', ["ldap.ca_file", "path"]),
    ('[central]\ntracker_host = "bad host!"', ["central.tracker_host", "host name"]),
    ("[central]\ntracker_port = 70000", ["central.tracker_port", "1-65535"]),
    ("[central]\ntracker_port = 0", ["central.tracker_port", "1-65535"]),
    ('[central]\nseeder_port = "8092"', ["central.seeder_port", "integer"]),
    ("[central]\nseeder_port = true", ["central.seeder_port", "integer"]),
    ('[central]\nhttp_fallback = "ftp://x"', ["central.http_fallback", "http"]),
    ('[wns]\nports = "6881-70000"', ["wns.ports", "6881-70000", "1024-65535"]),
    ('[wns]\nports = "6999-6881"', ["wns.ports", "1024-65535"]),
    ('[wns]\nports = "80"', ["wns.ports", "1024-65535"]),
    ('[wns]\nports = "a-b"', ["wns.ports"]),
    ('[wns]\nports = ""', ["wns.ports"]),
    ('[wns]\nhosts = ["wn[001-"]', ["wns.hosts", "hostlist", "wn[001-"]),
    ('[wns]\nhosts = ["wn[a-c]"]', ["wns.hosts", "hostlist"]),
    ('[wns]\nhosts = [""]', ["wns.hosts", "hostlist"]),
    ("[wns]\nhosts = 3", ["wns.hosts", "list"]),
    ('[wns]\nexclude = ["x]["]', ["wns.exclude", "hostlist"]),
    ("[wns]\nrpc_port = 99999", ["wns.rpc_port", "1-65535"]),
    ('[wns.groups.big]\nhosts = ["wn[1-"]', ["wns.groups.big.hosts", "hostlist"]),
    ('[wns.groups.big]\nhostz = ["wn1"]', ["wns.groups.big.hostz", "unknown key", "hosts"]),
    ("[wns.groups.big]\naria2c = 5", ["wns.groups.big.aria2c", "table"]),
    ('[wns]\ngroups = "x"', ["wns.groups", "table"]),
    ('[wns.nodes."wn1.x"]\nport = 65536', ["wns.nodes.wn1.x.port", "1-65535"]),
    ('[wns.nodes."wn1.x"]\naddress = "not an address!"', ["wns.nodes.wn1.x.address", "host name"]),
    ('[wns.nodes."bad host"]\nport = 22', ["bad host", "host name"]),
    ('[ssh]\nuser = "Root User"', ["ssh.user", "Unix user"]),
    ("[ssh]\nport = -22", ["ssh.port", "1-65535"]),
    ("[ssh]\nconnect_timeout = 0", ["ssh.connect_timeout", "greater than 0"]),
    ("[ssh]\nauth_timeout = -1", ["ssh.auth_timeout", "greater than 0"]),
    ("[ssh]\ncommand_timeout = 0", ["ssh.command_timeout", "greater than 0"]),
    ("[ssh]\nparallelism = 0", ["ssh.parallelism", "1-1024"]),
    ("[ssh]\nparallelism = 5000", ["ssh.parallelism", "1-1024"]),
    ('[ssh]\njump_host = "a\\nb"', ["ssh.jump_host", "one line"]),
    ("[ssh]\nknown_hosts = 1", ["ssh.known_hosts", "path"]),
    ("[aria2c]\noptions = 1", ["aria2c.options", "table"]),
    ('[aria2c]\ntemplate = "a\\nb"', ["aria2c.template", "one line"]),
    ("[aria2c]\ntemplate_path = 1", ["aria2c.template_path", "list"]),
    ('[rollout]\nconfig_path = "relative/aria2c.conf"', ["rollout.config_path", "absolute path"]),
    ("[rollout]\nbatch_size = -5", ["rollout.batch_size", "-5", "greater than 0"]),
    ("[rollout]\nbatch_size = 0", ["rollout.batch_size", "greater than 0"]),
    ("[rollout]\nmax_fail_percent = 101", ["rollout.max_fail_percent", "0-100"]),
    ("[rollout]\nbackups_kept = -1", ["rollout.backups_kept", "0 or greater"]),
    ('[rollout]\nrestart_command = "a\\nb"', ["rollout.restart_command", "one line"]),
    ("[audit]\npath = 7", ["audit.path", "path"]),
    ('[audit]\npaht = "x"', ["audit.paht", "unknown key", "audit.path"]),
    ('[aria2c]\nallow = ["rpc-listen-al"]', ["aria2c.allow", "rpc-listen-al", "did you mean rpc-listen-all?"]),
    ('[aria2c]\nallow = "rpc-listen-all,x"', ["aria2c.allow", "lint rule ids"]),
    ("site = 3", ["site", "table"]),
]


@pytest.mark.parametrize(("text", "words"), BAD, ids=[b[0].replace("\n", " ") for b in BAD])
def test_bad_value_gets_one_line_naming_key(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_site(path)
    line = f"{info.value.message} {info.value.hint or ''}"
    assert "\n" not in line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def test_cli_bad_config_is_one_line_exit_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[wns]\nports = "6881-70000"\n')
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "config", "show"], out=out, err=err) == 2
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("siteadmin: config: site.toml: wns.ports")
    assert "Traceback" not in err.getvalue()


def test_not_toml_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[site\nname=")
    err = io.StringIO()
    assert main(["--site", str(path), "config", "show"], out=io.StringIO(), err=err) == 2
    assert len(err.getvalue().splitlines()) == 1
    assert "not valid TOML" in err.getvalue()


def test_missing_site_file_named_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    assert main(["--site", str(tmp_path / "nope.toml"), "config", "show"], out=io.StringIO(), err=err) == 2
    assert "--site: no such file" in err.getvalue()
    monkeypatch.setenv("SITEADMIN_SITE", str(tmp_path / "gone.toml"))
    err = io.StringIO()
    assert main(["config", "show"], out=io.StringIO(), err=err) == 2
    assert "$SITEADMIN_SITE: no such file" in err.getvalue()


def test_search_order_env_then_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SITEADMIN_SITE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "site.toml").write_text('[site]\nname = "CWD"\n')
    assert load_site().site.name == "CWD"
    other = tmp_path / "other.toml"
    other.write_text('[site]\nname = "ENV"\n')
    monkeypatch.setenv("SITEADMIN_SITE", str(other))
    assert load_site().site.name == "ENV"
    assert load_site(tmp_path / "site.toml").site.name == "CWD"


def test_config_show_json_on_defaults_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.delenv("SITEADMIN_SITE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert main(["config", "show", "--json"], out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["source"] == "built-in defaults"
    assert data["central"]["tracker_port"] == 8088

    path = tmp_path / "site.toml"
    path.write_text(
        '[aria2c.options]\nrpc-secret = "s3cr3t-value"\nhttp-proxy-passwd = "pw-value"\n'
        'all-proxy = "http://alice:url-pw-value@proxy.example.org:3128"\n'
        'http-proxy = "bob:noscheme-pw-value@proxy.example.org:3128"\n'
        'https-proxy = "http://carol:odd/pw@value@proxy.example.org:3128"\n'
    )
    out = io.StringIO()
    assert main(["--site", str(path), "config", "show", "--json"], out=out, err=io.StringIO()) == 0
    assert "s3cr3t-value" not in out.getvalue()
    assert "pw-value" not in out.getvalue()
    assert "url-pw-value" not in out.getvalue()
    assert "noscheme-pw-value" not in out.getvalue()
    assert "odd/pw" not in out.getvalue() and "pw@value" not in out.getvalue()
    assert json.loads(out.getvalue())["aria2c"]["options"]["all-proxy"] == "http://alice:********@proxy.example.org:3128"
    assert json.loads(out.getvalue())["aria2c"]["options"]["rpc-secret"] == "********"


def test_config_init_creates_the_directory_or_says_why_not_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "siteadmin" / "site.toml"
    assert main(["config", "init", str(target)], out=io.StringIO(), err=io.StringIO()) == 0
    assert load_site(target).site.name == ""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    err = io.StringIO()
    assert main(["config", "init", str(blocker / "site.toml")], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith(f"siteadmin: config: {blocker / 'site.toml'}: cannot write: ")
    assert len(err.getvalue().splitlines()) == 1
    assert blocker.read_text() == "x"


def test_config_init_writes_loadable_file_and_keeps_existing(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    assert main(["config", "init", str(path)], out=io.StringIO(), err=io.StringIO()) == 0
    assert load_site(path) == dataclasses.replace(Site(), source=path.resolve())
    path.write_text('[site]\nname = "KEEP"\n')
    err = io.StringIO()
    assert main(["config", "init", str(path)], out=io.StringIO(), err=err) == 2
    assert "already exists" in err.getvalue()
    assert path.read_text() == '[site]\nname = "KEEP"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6881-6999", [(6881, 6999)]), ("6881", [(6881, 6881)]), ("6881-6889, 7000", [(6881, 6889), (7000, 7000)])],
)
def test_parse_port_ranges(text: str, expected: list[tuple[int, int]]) -> None:
    assert parse_port_ranges(text) == expected


@pytest.mark.parametrize("text", ["", "1023", "6881-70000", "x", "6881-", "-6881", "6881--6882", "1,,2", "65536"])
def test_parse_port_ranges_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="1024-65535"):
        parse_port_ranges(text)


def test_config_reference_in_docs_is_current() -> None:
    from siteadmin.site import reference_markdown

    committed = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    assert committed == reference_markdown(), "regenerate: siteadmin config reference > docs/config.md"
