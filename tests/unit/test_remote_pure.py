"""Pure parts of siteadmin.remote: jump host parsing, targets, outcomes, fan-out and folding."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paramiko
import pytest

from siteadmin.errors import ConfigError, SiteadminError, warnings_to
from siteadmin.inventory import Inventory
from siteadmin.lab.sshd import known_hosts_line, known_hosts_pattern
from siteadmin.remote import HostResult, JumpHost, parse_jump_host, run_on_hosts, summarise
from siteadmin.remote.errors import AuthFailed, ConnectFailed
from siteadmin.remote.fanout import describe_error
from siteadmin.remote.knownhosts import KnownHosts, known_hosts_name, parse_known_hosts
from siteadmin.remote.target import resolve_jump, resolve_target
from siteadmin.site import site_from_mapping

# ---------------------------------------------------------------- jump host strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bastion.example.org", JumpHost("bastion.example.org")),
        ("admin@bastion.example.org", JumpHost("bastion.example.org", None, "admin")),
        ("admin@bastion.example.org:2222", JumpHost("bastion.example.org", 2222, "admin")),
        ("bastion:22", JumpHost("bastion", 22)),
        ("10.0.0.1:2200", JumpHost("10.0.0.1", 2200)),
        ("[2001:db8::1]:2222", JumpHost("2001:db8::1", 2222)),
        ("root@[2001:db8::1]", JumpHost("2001:db8::1", None, "root")),
        ("2001:db8::1", JumpHost("2001:db8::1")),
        ("ssh://ops@gw.example.org:22", JumpHost("gw.example.org", 22, "ops")),
        ("  gw  ", JumpHost("gw")),
    ],
)
def test_parse_jump_host(text: str, expected: JumpHost) -> None:
    assert parse_jump_host(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "none", "NONE"])
def test_parse_jump_host_empty_means_direct(text: str) -> None:
    assert parse_jump_host(text) is None


@pytest.mark.parametrize("text", ["gw:0", "gw:65536", "gw:ssh", "@gw", "bad user@gw", "[::1", "[::1]x", "gw_underscore!", "gw:22:33x"])
def test_parse_jump_host_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"must be \[user@\]host\[:port\]"):
        parse_jump_host(text)


def test_the_ssh_layer_and_the_config_check_read_a_jump_host_alike() -> None:
    # one parser: a user with a trailing newline passed the SSH layer's own ^...$ match before
    from siteadmin.site import check_jump_host

    for text in ("root\n@bastion", "admin@bastion:2222", "-oProxyCommand=x", "[::1]:22", "a b"):
        try:
            parse_jump_host(text)
            parsed = True
        except ConfigError:
            parsed = False
        assert parsed == (check_jump_host(text) is None), text
    with pytest.raises(ConfigError):
        parse_jump_host("root\n@bastion")


def test_parse_jump_host_refuses_chains() -> None:
    with pytest.raises(ConfigError, match="only one jump host"):
        parse_jump_host("a,b")


def test_jump_host_str_round_trips() -> None:
    for text in ["gw", "ops@gw:2222", "[2001:db8::1]:22", "root@10.0.0.1"]:
        parsed = parse_jump_host(text)
        assert parsed is not None
        assert str(parsed) == text
        assert parse_jump_host(str(parsed)) == parsed


def test_known_hosts_names() -> None:
    assert known_hosts_name("wn001.lab", 22) == "wn001.lab"
    assert known_hosts_name("wn001.lab", 2201) == "[wn001.lab]:2201"
    assert known_hosts_pattern("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    assert known_hosts_line(["127.0.0.1", "wn001.lab"], 2201, line) == f"[127.0.0.1]:2201,[wn001.lab]:2201 {line}"
    hashed = known_hosts_line(["wn001.lab", "10.0.0.1"], 22, line, hashed=True).splitlines()
    assert len(hashed) == 2 and all(h.startswith("|1|") for h in hashed)


# ---------------------------------------------------------------- known_hosts parsing


def _ed25519_line() -> str:
    """A fresh ``ssh-ed25519 AAAA...`` public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _key(line: str) -> paramiko.PKey:
    kind, blob = line.split()[:2]
    return paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(blob))


def test_parse_known_hosts_keeps_good_lines_and_names_bad_ones() -> None:
    good, ca, revoked, other = _ed25519_line(), _ed25519_line(), _ed25519_line(), _ed25519_line()
    hashed = known_hosts_line(["wn009.lab"], 22, other, hashed=True)
    text = "\n".join(
        [
            "# a comment",
            "",
            f"wn001.lab,[10.0.0.1]:2222 {good} admin@vobox",  # 3
            f"@cert-authority *.lab,!wn666.lab {ca}",  # 4
            f"@revoked wn002.lab {revoked}",  # 5
            "wn003.lab ssh-ed25519 not!base64",  # 6
            "wn004.lab ssh-ed25519",  # 7
            f"@trusted wn005.lab {good}",  # 8: no such marker
            f"wn006.lab ssh-foo {good.split()[1]}",  # 9: unknown key type
            f"wn007.lab ssh-rsa {good.split()[1]}",  # 10: the blob is an ed25519 key
            f"|1|bm90IGEgc2FsdA==|x {good}",  # 11: a hashed name that is not base64 of a SHA-1
            hashed,  # 12
            "   \t  ",
        ]
    )
    parsed = parse_known_hosts(text, Path("/etc/ssh/ssh_known_hosts"))
    assert [(e.lineno, e.marker, e.patterns) for e in parsed.entries] == [
        (3, "", ("wn001.lab", "[10.0.0.1]:2222")),
        (4, "cert-authority", ("*.lab", "!wn666.lab")),
        (5, "revoked", ("wn002.lab",)),
        (12, "", (hashed.split()[0],)),
    ]
    assert parsed.entries[0].key.asbytes() == _key(good).asbytes()
    assert parsed.entries[2].key.asbytes() == _key(revoked).asbytes()
    assert [b.lineno for b in parsed.bad] == [6, 7, 8, 9, 10, 11]
    reasons = {b.lineno: b.reason for b in parsed.bad}
    assert "base64" in reasons[6]
    assert "hosts, key type and key" in reasons[7]
    assert "@trusted" in reasons[8] and "@cert-authority" in reasons[8]
    assert "ssh-foo" in reasons[9]
    assert "ssh-rsa" in reasons[10]
    assert all("\n" not in r for r in reasons.values())


def test_known_hosts_patterns_match_as_openssh_does() -> None:
    line = parse_known_hosts(f"wn0??.lab,[10.0.0.*]:2222,!wn013.lab,GW.Example.ORG {_ed25519_line()}", Path("k")).entries[0]
    assert line.matches("wn001.lab") and line.matches("wn099.lab")
    assert not line.matches("wn0100.lab")
    assert not line.matches("wn013.lab")  # negated
    assert line.matches("[10.0.0.7]:2222") and not line.matches("10.0.0.7")
    assert line.matches("gw.example.org")  # host names compare without case
    assert not line.matches("wn[0-9]1.lab")
    hashed = parse_known_hosts(known_hosts_line(["wn001.lab"], 2201, _ed25519_line(), hashed=True), Path("k")).entries[0]
    assert hashed.matches("[wn001.lab]:2201")
    assert not hashed.matches("wn001.lab") and not hashed.matches("[wn002.lab]:2201")


def test_known_hosts_lookup_skips_bad_lines_and_warns_once_per_file(tmp_path: Path) -> None:
    good, ca, revoked, stale = _ed25519_line(), _ed25519_line(), _ed25519_line(), _ed25519_line()
    user = tmp_path / "known_hosts"
    user.write_text(f"corrupt line\n[wn001.lab]:2201 {good}\n[wn001.lab]:2201 {stale}\n")
    system = tmp_path / "ssh_known_hosts"
    system.write_text(
        f"@cert-authority *.lab,[*.lab]:* {ca}\n@revoked [wn001.lab]:2201,wn002.lab {revoked}\n"
        f"@revoked [wn001.lab]:2201 {stale}\nwn003.lab ssh-ed25519 AAAA=\n@cert-authority wn004.lab {ca}\n"
    )
    seen: list[str] = []
    known = KnownHosts()
    with warnings_to(seen.append):
        for _ in range(3):  # many WNs, one pool: the warnings come once
            entry = known.lookup(["wn001.lab"], 2201, [user, system])
            assert entry is not None and entry.path == user
            assert list(entry.keys) == ["ssh-ed25519"]
            assert entry.keys["ssh-ed25519"].asbytes() == _key(good).asbytes()  # the revoked one is not trusted
            assert [(r.path, r.lineno) for r in known.revoked(["wn001.lab"], 2201, [user, system])] == [(system, 2), (system, 3)]
            assert known.revoked(["wn005.lab"], 22, [user, system]) == []
            assert [(c.path, c.lineno) for c in known.cert_authorities(["wn005.lab"], 22, [user, system])] == [(system, 1)]
            assert known.lookup(["wn003.lab"], 22, [user, system]) is None
    assert seen == [
        f"{user}:1: unreadable known_hosts line skipped (expected hosts, key type and key)",
        f"{system}:4: unreadable known_hosts line skipped (not a valid ssh-ed25519 key)",
        f"{system}: host certificates (@cert-authority) are not supported, so hosts matching "
        "*.lab, [*.lab]:* (line 1), wn004.lab (line 5) need a plain key line",
    ]


def test_known_hosts_lookup_by_name_keeps_file_order_across_plain_wildcard_negated_and_hashed_lines(tmp_path: Path) -> None:
    """Plain names are looked up by name; the first line per key type still wins whatever kind of pattern it has."""
    first, second, third, other = _ed25519_line(), _ed25519_line(), _ed25519_line(), _ed25519_line()
    path = tmp_path / "known_hosts"
    path.write_text(
        f"wn0*.lab,!wn002.lab {first}\nWN001.lab,wn002.lab {second}\n"
        + known_hosts_line(["wn003.lab"], 22, third, hashed=True) + "\n"
        + f"wn003.lab {other}\nwn00?.lab {other}\n"
    )
    known = KnownHosts()
    found = {h: known.lookup([h], 22, [path]) for h in ("wn001.lab", "wn002.lab", "wn003.lab", "wn004.lab", "wn1.lab")}
    keys = {h: (k.keys["ssh-ed25519"].asbytes() if k is not None else None) for h, k in found.items()}
    assert keys["wn001.lab"] == _key(first).asbytes()  # the wildcard line comes first in the file
    assert keys["wn002.lab"] == _key(second).asbytes()  # negated in the first line: the plain one
    assert keys["wn003.lab"] == _key(first).asbytes()
    assert keys["wn004.lab"] == _key(first).asbytes()
    assert keys["wn1.lab"] is None
    hashed_first = tmp_path / "hashed"
    hashed_first.write_text(known_hosts_line(["wn003.lab"], 22, third, hashed=True) + f"\nwn003.lab {other}\n")
    entry = KnownHosts().lookup(["wn003.lab"], 22, [hashed_first])
    assert entry is not None and entry.keys["ssh-ed25519"].asbytes() == _key(third).asbytes()


def test_known_hosts_many_bad_lines_are_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("a\nb\nc\nd\n")
    seen: list[str] = []
    with warnings_to(seen.append):
        assert KnownHosts().lookup(["a"], 22, [path]) is None
    assert seen == [f"{path}: 4 unreadable known_hosts lines skipped (lines 1, 2, 3, 4; line 1: expected hosts, key type and key)"]


def test_known_hosts_missing_file_is_no_file(tmp_path: Path) -> None:
    assert KnownHosts().lookup(["wn001.lab"], 22, [tmp_path / "absent"]) is None


# ---------------------------------------------------------------- targets


def test_resolve_target_precedence(tmp_path: Path) -> None:
    config = paramiko.SSHConfig.from_text(
        "Host wn00*.lab\n  HostName %h.internal\n  Port 2200\n  User ops\n  HostKeyAlias wnalias\n  IdentityFile ~/.ssh/wn_key\n"
    )
    site = site_from_mapping(
        {
            "wns": {"hosts": ["wn[001-003].lab"], "nodes": {"wn002.lab": {"address": "10.0.0.2"}, "wn003.lab": {"port": 2203}}},
            "ssh": {"user": "root", "port": 22},
        }
    )
    inventory = Inventory(site)
    plain = resolve_target(site, inventory.wn("wn001.lab"), config)
    assert (plain.address, plain.port, plain.user) == ("wn001.lab.internal", 2200, "ops")
    assert plain.key_names == ("wnalias", "wn001.lab", "wn001.lab.internal")
    assert plain.identity_files == (Path("~/.ssh/wn_key").expanduser(),)
    assert plain.jump is None
    # a node address or port in site.toml wins over the ssh config
    assert resolve_target(site, inventory.wn("wn002.lab"), config).address == "10.0.0.2"
    assert resolve_target(site, inventory.wn("wn003.lab"), config).port == 2203
    # without an ssh config: name, ssh.port, ssh.user
    bare = resolve_target(site, inventory.wn("wn001.lab"))
    assert (bare.address, bare.port, bare.user, bare.key_names) == ("wn001.lab", 22, "root", ("wn001.lab",))


def test_resolve_target_jump_from_site_then_ssh_config() -> None:
    config = paramiko.SSHConfig.from_text("Host wn001.lab\n  ProxyJump gw.example.org:2022\nHost gw.example.org\n  User jumper\n  HostName 192.0.2.1\n")
    direct = site_from_mapping({"wns": {"hosts": ["wn[001-002].lab"]}})
    inventory = Inventory(direct)
    assert resolve_target(direct, inventory.wn("wn001.lab"), config).jump == JumpHost("gw.example.org", 2022)
    assert resolve_target(direct, inventory.wn("wn002.lab"), config).jump is None
    jump = resolve_jump(direct, JumpHost("gw.example.org", 2022), config)
    assert (jump.label, jump.address, jump.port, jump.user) == ("jump host gw.example.org:2022", "192.0.2.1", 2022, "jumper")
    assert jump.key_names == ("gw.example.org", "192.0.2.1")
    forced = site_from_mapping({"wns": {"hosts": ["wn[001-002].lab"]}, "ssh": {"jump_host": "admin@bastion:2222"}})
    assert resolve_target(forced, Inventory(forced).wn("wn002.lab"), config).jump == JumpHost("bastion", 2222, "admin")


def test_resolve_target_carries_proxy_command_unless_a_site_jump_host_overrides_it() -> None:
    config = paramiko.SSHConfig.from_text(
        "Host wn001.lab gw\n  ProxyCommand nc -X 5 -x socks:1080 %h %p\nHost wn002.lab\n  ProxyCommand none\n"
    )
    direct = site_from_mapping({"wns": {"hosts": ["wn[001-003].lab"]}})
    inventory = Inventory(direct)
    assert resolve_target(direct, inventory.wn("wn001.lab"), config).proxy_command == "nc -X 5 -x socks:1080 wn001.lab 22"
    assert resolve_target(direct, inventory.wn("wn002.lab"), config).proxy_command is None  # "none"
    assert resolve_target(direct, inventory.wn("wn003.lab"), config).proxy_command is None
    assert resolve_jump(direct, JumpHost("gw"), config).proxy_command == "nc -X 5 -x socks:1080 gw 22"
    forced = site_from_mapping({"wns": {"hosts": ["wn[001-003].lab"]}, "ssh": {"jump_host": "bastion"}})
    assert resolve_target(forced, Inventory(forced).wn("wn001.lab"), config).proxy_command is None


# ---------------------------------------------------------------- outcomes and fan-out


def test_describe_error() -> None:
    assert describe_error(AuthFailed("wn001.lab", "authentication failed as root@x:22", "add the key"), "wn001.lab") == (
        "wn001.lab: authentication failed as root@x:22 (add the key)",
        "auth failed",
        "denied",
    )
    assert describe_error(SiteadminError("wn002.lab: something odd\nsecond line"), "wn002.lab") == (
        "wn002.lab: something odd second line",
        "something odd second line",
        "error",
    )
    assert describe_error(ValueError("bad value"), "wn003.lab") == ("ValueError: bad value", "ValueError: bad value", "error")
    assert describe_error(KeyError(), "wn003.lab") == ("KeyError", "KeyError", "error")


def _work(host: str) -> str:
    number = int(host[2:5])
    if number == 3:
        raise ConnectFailed(host, "connection refused by 10.0.0.3:22", outcome="connection refused")
    if number == 5:
        raise RuntimeError("boom")
    time.sleep(0.01 * (10 - number))  # later hosts finish first
    return host.upper()


def test_run_on_hosts_keeps_order_and_catches_everything() -> None:
    hosts = [f"wn{i:03d}.lab" for i in range(1, 9)]
    progress: list[tuple[str, str]] = []
    results = run_on_hosts(hosts, _work, 4, progress=lambda r: progress.append((r.host, threading.current_thread().name)))
    assert [r.host for r in results] == hosts
    assert [r.ok for r in results] == [True, True, False, True, False, True, True, True]
    assert results[0] == HostResult("wn001.lab", True, "WN001.LAB", None, results[0].elapsed)
    assert results[2].error == "wn003.lab: connection refused by 10.0.0.3:22"
    assert (results[2].outcome, results[2].category) == ("connection refused", "unreachable")
    assert results[4].error == "RuntimeError: boom"
    assert results[4].line() == "wn005.lab: RuntimeError: boom"
    assert results[2].line() == "wn003.lab: connection refused by 10.0.0.3:22"
    assert sorted(h for h, _ in progress) == hosts
    assert {t for _, t in progress} == {threading.current_thread().name}  # progress runs in the caller's thread
    assert summarise(results) == [
        ("wn[001-002,004,006-008].lab", "ok"),
        ("wn003.lab", "connection refused"),
        ("wn005.lab", "RuntimeError: boom"),
    ]


def test_run_on_hosts_is_parallel() -> None:
    hosts = [f"wn{i:03d}.lab" for i in range(1, 17)]
    start = time.monotonic()
    results = run_on_hosts(hosts, lambda h: time.sleep(0.2), 16)
    assert all(r.ok for r in results)
    assert time.monotonic() - start < 0.2 * 4  # 16 sequential sleeps would take 3.2 s


def test_run_on_hosts_cancel_between_hosts() -> None:
    cancel = threading.Event()
    hosts = [f"wn{i:03d}.lab" for i in range(1, 11)]
    done: list[str] = []

    def work(host: str) -> str:
        done.append(host)
        if len(done) == 3:
            cancel.set()
        return host

    results = run_on_hosts(hosts, work, 1, cancel=cancel)
    assert [r.ok for r in results] == [True] * 3 + [False] * 7
    assert done == hosts[:3]
    assert {r.outcome for r in results[3:]} == {"cancelled"}
    assert summarise(results) == [("wn[001-003].lab", "ok"), ("wn[004-010].lab", "cancelled")]


def test_run_on_hosts_empty_and_interrupt() -> None:
    assert run_on_hosts([], _work, 8) == []
    cancel = threading.Event()

    def interrupt(result: HostResult[None]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_on_hosts(["wn001.lab", "wn002.lab", "wn003.lab"], lambda h: None, 1, cancel=cancel, progress=interrupt)
    assert cancel.is_set()


def test_summarise_by_value() -> None:
    results = [HostResult(f"wn{i:03d}.lab", True, "changed" if i % 2 else "unchanged", None, 0.0) for i in range(1, 7)]
    results.append(HostResult("wn007.lab", False, None, "wn007.lab: auth failed", 0.0, "auth failed"))
    assert summarise(results, lambda r: str(r.value) if r.ok else r.outcome) == [
        ("wn[001,003,005].lab", "changed"),
        ("wn[002,004,006].lab", "unchanged"),
        ("wn007.lab", "auth failed"),
    ]
    assert summarise([]) == []


def test_parse_ipv4_interfaces() -> None:
    from siteadmin.remote.facts import parse_ipv4_interfaces

    text = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
        "2: eth0@if12    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever\n"
        "2: eth0@if12    inet 10.0.0.6/24 scope global secondary eth0\\       valid_lft forever\n"
        "3: ib0    inet 192.168.10.5/16 scope global ib0\\       valid_lft forever\n"
        "garbage line\n"
    )
    assert parse_ipv4_interfaces(text) == ["eth0", "ib0"]
    assert parse_ipv4_interfaces("") == []
