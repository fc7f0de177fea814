"""The site config: defaults, search order, and one-line errors for bad values of every field."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time
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
    {"ssh": {"jump_host": "ssh://[2001:db8::1]:2222"}},
    {"ssh": {"jump_host": "none"}},
    {"wns": {"groups": {"big-disk_2.a": {"hosts": ["wn1"]}}}},
    {"ldap": {"install_methods": ["Torrent"], "default_method": "Torrent"}},
    {"wns": {"max_hosts": 5, "hosts": ["wn[1-3]", "x[1-2]"]}},
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
    # a trailing newline slipped through ``re.match(...$)``
    ('[site]\nname = "CERN\\n"', ["site.name", "site name"]),
    ('[ssh]\nuser = "root\\n"', ["ssh.user", "Unix user"]),
    ('[central]\ntracker_host = "alitorrent.cern.ch\\n"', ["central.tracker_host", "host name"]),
    ('[central]\nhttp_fallback = "http://x.example.org/\\n"', ["central.http_fallback", "http"]),
    ('[ldap]\nurl = "ldaps://x.example.org\\n"', ["ldap.url", "ldaps://"]),
    ('[wns]\nports = "6881-6999\\n"', ["wns.ports", "1024-65535"]),
    ('[ldap]\ninstall_methods = ["Torrent\\n", "CVMFS"]', ["ldap.install_methods"]),
    ('[wns.nodes."wn1.x\\n"]\nport = 22', ["wns.nodes", "host name"]),
    ('[wns]\nhosts = ["wn[1-3]\\nx"]', ["wns.hosts", "hostlist"]),
    # names that reach a rendered file, an LDAP DN or a command
    ('[wns.groups."g\\nrpc-listen-all=true"]\nhosts = ["wn1"]', ["wns.groups", "group name"]),
    ('[wns.groups."a b"]\nhosts = ["wn1"]', ["wns.groups", "a b", "group name"]),
    ('[ldap]\nbase = "o=alice,dc=cern,dc=ch\\n"', ["ldap.base", "DN"]),
    ('[ldap]\nbase = "o=alice\\n,dc=cern,dc=ch"', ["ldap.base", "DN"]),
    ('[ldap]\ndefault_method = "Torent"', ["ldap.default_method", "install_methods", "Torrent"]),
    ('[ldap]\ninstall_methods = ["Torrent"]', ["ldap.default_method", "CVMFS", "install_methods"]),
    ('[ssh]\njump_host = "-oProxyCommand=touch /tmp/pwned"', ["ssh.jump_host", "[user@]host[:port]"]),
    ('[ssh]\njump_host = "a.example.org,b.example.org"', ["ssh.jump_host", "one jump host"]),
    ('[ssh]\njump_host = "admin@bastion:99999"', ["ssh.jump_host", "[user@]host[:port]"]),
    # every error one line, whatever the file's keys hold
    ('[site]\n"na\\nme" = 1', ["unknown key", "na\\nme"]),
    ('[wns.nodes."bad\\u202ehost"]\nport = 22', ["wns.nodes", "host name", "\\u202e"]),
    # hostlists are bounded before they are expanded
    ('[wns]\nhosts = ["wn[1-1000000]"]', ["wns.hosts", "wn[1-1000000]", "max_hosts = 100000"]),
    ('[wns]\nmax_hosts = 10\nhosts = ["wn[1-8]"]\nexclude = ["wn[1-3]"]', ["wns.exclude", "max_hosts = 10"]),
    ("[wns]\nmax_hosts = 0", ["wns.max_hosts", "1-10000000"]),
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
    path.touch(mode=0o600)  # it holds secrets
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


def test_the_site_config_is_below_the_inventory_and_the_aria2c_package() -> None:
    # loading a config with hostlists and allowed lint rules imports neither layer above it
    code = (
        "import sys\n"
        "from siteadmin.site import site_from_mapping\n"
        "site_from_mapping({'wns': {'hosts': ['wn[1-4].x'], 'groups': {'g': {'hosts': ['wn1.x']}}},"
        " 'aria2c': {'allow': ['rpc-listen-all']}})\n"
        "print(sorted(m for m in sys.modules if m.startswith('siteadmin')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = done.stdout
    assert "siteadmin.site" in loaded
    assert "siteadmin.inventory" not in loaded
    assert "siteadmin.aria2conf" not in loaded


def test_an_inline_secret_needs_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[aria2c.options]\nrpc-secret = "inline-s3cr3t"\n')
    path.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    line = info.value.one_line()
    assert str(path) in line and f"chmod 600 {path}" in line and "aria2c.options.rpc-secret" in line
    assert "inline-s3cr3t" not in line
    err = io.StringIO()
    assert main(["--site", str(path), "config", "show"], out=io.StringIO(), err=err) == 2
    assert len(err.getvalue().splitlines()) == 1 and "chmod 600" in err.getvalue()
    path.chmod(0o600)
    assert load_site(path).aria2c.options["rpc-secret"] == "inline-s3cr3t"


@pytest.mark.parametrize(
    "table",
    [
        '[wns.groups.g]\nhosts = ["wn1"]\naria2c = { all-proxy-pass = "inline-s3cr3t" }\n',
        '[wns.nodes."wn1.x"]\naria2c = { http-proxy = "http://u:inline-s3cr3t@proxy:3128" }\n',
        '[ssh]\njump_host = "admin@bastion"\n[aria2c.options]\nrpc-secrets = "inline-s3cr3t"\n',
    ],
)
def test_every_inline_secret_needs_a_private_file(tmp_path: Path, table: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(table)
    path.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert f"chmod 600 {path}" in info.value.one_line()
    assert "inline-s3cr3t" not in info.value.one_line()
    path.chmod(0o600)
    load_site(path)


def test_a_config_without_secrets_may_be_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[aria2c.options]\nmax-concurrent-downloads = "5"\nrpc-secret = ""\n')
    path.chmod(0o644)
    assert load_site(path).aria2c.options["max-concurrent-downloads"] == "5"


def test_config_show_masks_mistyped_and_unknown_secret_names(tmp_path: Path) -> None:
    import json

    path = tmp_path / "site.toml"
    path.write_text(
        '[aria2c.options]\nrpc-secrets = "value-one"\nall-proxy-pass = "value-two"\nrpc-secrte = "value-three"\n'
        'max-concurrent-downloads = "7"\n'
        '[wns.groups.g]\nhosts = ["wn1"]\naria2c = { http-pasword = "value-four", no-such-option = "value-five" }\n'
    )
    path.chmod(0o600)
    for argv in (["config", "show"], ["config", "show", "--json"]):
        out = io.StringIO()
        assert main(["--site", str(path), *argv], out=out, err=io.StringIO()) == 0
        for secret in ("value-one", "value-two", "value-three", "value-four", "value-five"):
            assert secret not in out.getvalue(), (argv, secret)
    data = json.loads(out.getvalue())
    assert data["aria2c"]["options"]["max-concurrent-downloads"] == "7"
    assert data["aria2c"]["options"]["rpc-secrets"] == "********"
    assert data["wns"]["groups"]["g"]["hosts"] == ["wn1"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[ssh]\njump_host = "admin:pw-s3cr3t@bastion"\n', "ssh.jump_host"),
        ('[aria2c]\noptions = "rpc-secret=pw-s3cr3t"\n', "aria2c.options"),
        ('[wns.nodes."wn1.x"]\naria2c = "rpc-secret=pw-s3cr3t"\n', "wns.nodes.wn1.x.aria2c"),
    ],
)
def test_a_password_in_a_bad_value_is_not_repeated(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    assert key in info.value.one_line()
    assert "pw-s3cr3t" not in info.value.one_line()


def test_config_init_creates_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    assert main(["config", "init", str(path)], out=io.StringIO(), err=io.StringIO()) == 0
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    assert main(["config", "init", "--force", str(path)], out=io.StringIO(), err=io.StringIO()) == 0
    assert path.stat().st_mode & 0o777 == 0o600


def test_config_init_force_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    import resource

    path = tmp_path / "site.toml"
    old = '[site]\nname = "KEEP"\n'
    path.write_text(old)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    done = subprocess.run(  # noqa: PLW1509 - the limit must apply to the child only
        [sys.executable, "-m", "siteadmin", "config", "init", "--force", str(path)],
        capture_output=True, text=True, timeout=60, preexec_fn=small_files, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "cannot write" in done.stderr
    assert path.read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]  # no temp file left


def test_config_init_never_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.toml"
    target.write_text("precious\n")
    link = tmp_path / "site.toml"
    link.symlink_to(target)
    for argv in (["config", "init", str(link)], ["config", "init", "--force", str(link)]):
        err = io.StringIO()
        assert main(argv, out=io.StringIO(), err=err) == 2, argv
        assert len(err.getvalue().splitlines()) == 1 and "symlink" in err.getvalue(), argv
    assert target.read_text() == "precious\n"
    assert link.is_symlink()
    dangling = tmp_path / "dangling.toml"
    dangling.symlink_to(tmp_path / "created-through-the-link.toml")
    for argv in (["config", "init", str(dangling)], ["config", "init", "--force", str(dangling)]):
        err = io.StringIO()
        assert main(argv, out=io.StringIO(), err=err) == 2, argv
        assert "symlink" in err.getvalue()
    assert not (tmp_path / "created-through-the-link.toml").exists()


def test_a_site_file_under_an_unknown_users_home_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    assert main(["--site", "~nosuchuser-xyz/site.toml", "config", "show"], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("siteadmin: config: --site: ~nosuchuser-xyz/site.toml: ")
    assert len(err.getvalue().splitlines()) == 1 and "internal error" not in err.getvalue()
    monkeypatch.setenv("SITEADMIN_SITE", "~nosuchuser-xyz/site.toml")
    err = io.StringIO()
    assert main(["config", "show"], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("siteadmin: config: $SITEADMIN_SITE: ~nosuchuser-xyz/site.toml: ")
    assert len(err.getvalue().splitlines()) == 1


def test_a_huge_host_range_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[wns]\nhosts = ["wn[1-100000000]"]\n')
    started = time.monotonic()
    err = io.StringIO()
    assert main(["--site", str(path), "config", "show"], out=io.StringIO(), err=err) == 2
    assert time.monotonic() - started < 2
    assert len(err.getvalue().splitlines()) == 1
    assert "wns.hosts" in err.getvalue() and "max_hosts = 100000" in err.getvalue()


def test_a_site_file_name_with_a_newline_still_gives_one_line(tmp_path: Path) -> None:
    for text in ("[site\nname=", '[site]\nname = 1\n'):
        path = tmp_path / "odd\nname.toml"
        path.write_text(text)
        err = io.StringIO()
        assert main(["--site", str(path), "config", "show"], out=io.StringIO(), err=err) == 2
        assert len(err.getvalue().splitlines()) == 1, err.getvalue()
        assert "odd\\nname.toml" in err.getvalue()
