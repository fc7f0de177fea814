"""Every lint rule triggered, passing, and allowed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from siteadmin.aria2conf import RULES, Finding, allowed_rules, lint, profile_for
from siteadmin.aria2conf.lint import ALLOWED, ERROR, WARNING, local_interfaces, secret_bits
from siteadmin.secrets import generate_secret
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

STRONG = generate_secret(256)
CLEAN = {
    "enable-rpc": "true",
    "rpc-secret": STRONG,
    "rpc-listen-all": "false",
    "rpc-allow-origin-all": "false",
    "listen-port": "6881-6999",
    "dht-listen-port": "6890",
    "bt-enable-lpd": "true",
    "log": "/var/log/aria2/aria2c.log",
    "log-level": "notice",
    "all-proxy": "http://proxy.example.org:3128",
    "all-proxy-user": "alice",
    "all-proxy-passwd": "pw",
}

# rule -> (options changed from CLEAN (None deletes), the option the finding names)
TRIGGERS: dict[str, tuple[dict[str, str | None], str]] = {
    "rpc-no-secret": ({"rpc-secret": None}, "rpc-secret"),
    "rpc-weak-secret": ({"rpc-secret": "password1234"}, "rpc-secret"),
    "rpc-listen-all": ({"rpc-listen-all": "true"}, "rpc-listen-all"),
    "rpc-allow-origin-all": ({"rpc-allow-origin-all": "true"}, "rpc-allow-origin-all"),
    "proxy-credentials-in-url": ({"all-proxy": "http://alice:pw@proxy.example.org:3128"}, "all-proxy"),
    "log-level-debug": ({"log-level": "debug"}, "log-level"),
    "rpc-disabled": ({"enable-rpc": "false", "rpc-secret": None}, "enable-rpc"),
    "ports-outside-firewall": ({"dht-listen-port": "6881-7005"}, "dht-listen-port"),
    "lpd-no-interface": ({}, "bt-lpd-interface"),  # triggered by passing two interfaces
    "file-outside-state-dirs": ({"log": "/etc/passwd"}, "log"),
}


def _ifaces(rule: str) -> list[str]:
    return ["eth0", "ib0"] if rule == "lpd-no-interface" else ["eth0"]


def _with(changes: dict[str, str | None]) -> dict[str, str]:
    options = dict(CLEAN)
    for name, value in changes.items():
        if value is None:
            options.pop(name, None)
        else:
            options[name] = value
    return options


def test_every_rule_has_a_trigger() -> None:
    assert set(TRIGGERS) == set(RULES)


def test_clean_profile_has_no_findings() -> None:
    assert lint(Site(), CLEAN, interfaces=["eth0"]) == []
    assert lint(Site(), _with({"bt-enable-lpd": "false"}), interfaces=["eth0", "eth1"]) == []
    assert lint(Site(), _with({"bt-lpd-interface": "eth1"}), interfaces=["eth0", "eth1"]) == []


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_is_triggered(rule: str) -> None:
    changes, option = TRIGGERS[rule]
    findings = lint(Site(), _with(changes), host="wn1", interfaces=_ifaces(rule))
    assert [f.rule for f in findings] == [rule]
    (finding,) = findings
    assert finding.level == RULES[rule][0]
    assert finding.option == option
    assert finding.message.startswith("wn1: ")
    assert STRONG not in str(finding)


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_can_be_allowed(rule: str) -> None:
    changes, _ = TRIGGERS[rule]
    (finding,) = lint(Site(), _with(changes), allow=[rule], interfaces=_ifaces(rule))
    assert finding.level == ALLOWED and finding.rule == rule
    others = [r for r in RULES if r != rule]
    (still,) = lint(Site(), _with(changes), allow=others, interfaces=_ifaces(rule))
    assert still.level == RULES[rule][0]


def test_unset_log_level_with_a_log_file_is_debug() -> None:
    findings = lint(Site(), _with({"log-level": None}), interfaces=["eth0"])
    assert [(f.rule, f.level) for f in findings] == [("log-level-debug", ERROR)]
    assert "unset means debug" in findings[0].message
    assert lint(Site(), _with({"log-level": None, "log": None}), interfaces=["eth0"]) == []


def test_ports_are_checked_against_the_sites_firewall(make_site: SiteFactory) -> None:
    site = make_site('[wns]\nports = "6881-6999,7100-7199"\n')
    assert lint(site, _with({"listen-port": "7100-7110,6881"}), interfaces=["eth0"]) == []
    (finding,) = lint(site, _with({"listen-port": "6990-7010"}), interfaces=["eth0"])
    assert finding.level == WARNING and "6990-7010 not within wns.ports = 6881-6999,7100-7199" in finding.message


def test_secret_strength_estimate() -> None:
    assert secret_bits(generate_secret(256)) >= 250
    # every secret siteadmin generates (256 bits) passes the 128-bit rule, whichever characters
    # chance gave it; the estimate is conservative, so a 22-character one may score below 128
    assert min(secret_bits(generate_secret()) for _ in range(5000)) >= 128
    assert secret_bits("abcdefghijABCDEFGHIJab") >= 128  # 22 base64url characters without digits
    assert secret_bits("abcdefghijABCDEFGHIJ") < 128  # 20 characters are 120 bits
    assert secret_bits("a" * 100) < 128
    assert secret_bits("abababababababababababababababababababab") < 128
    assert secret_bits("") == 0
    assert secret_bits("Tr0ub4dor&3") < 128


def test_lint_of_a_rendered_default_profile_is_clean(make_site: SiteFactory) -> None:
    site = make_site('[site]\nname = "OK"\n')
    assert lint(site, profile_for(site, "wn1"), interfaces=["eth0"]) == []


def test_local_interfaces_come_from_netifaces() -> None:
    import netifaces

    names = local_interfaces()
    assert "lo" not in names
    assert set(names) <= set(netifaces.interfaces())


def test_an_interface_gone_while_listing_is_skipped() -> None:
    # a lab or container link deleted between netifaces.interfaces() and ifaddresses() raised
    # ValueError and crashed a whole rollout; it is simply not there any more
    import netifaces

    real = [n for n in netifaces.interfaces() if n != "lo"]
    assert local_interfaces(["siteadmin-gone0", *real]) == local_interfaces(real)


def test_the_site_allows_rules_in_site_toml() -> None:
    from siteadmin.site import site_from_mapping

    assert allowed_rules(Site()) == ()
    site = site_from_mapping({"aria2c": {"allow": ["rpc-listen-all"]}})
    assert allowed_rules(site) == ("rpc-listen-all",)
    options = {**CLEAN, "rpc-listen-all": "true"}
    findings = {f.rule: f.level for f in lint(site, options, interfaces=["eth0"])}
    assert findings["rpc-listen-all"] == ALLOWED
    assert {f.rule: f.level for f in lint(Site(), options, interfaces=["eth0"])}["rpc-listen-all"] == ERROR


def test_finding_text() -> None:
    assert str(Finding(ERROR, "rpc-secret", "m", "rpc-no-secret")) == "error: rpc-secret: m [rpc-no-secret]"


@pytest.mark.parametrize("option", ["log", "save-session", "input-file", "dht-file-path", "dht-file-path6"])
def test_state_files_outside_dir_and_state_dirs_are_named(option: str) -> None:
    (finding,) = lint(Site(), _with({option: "/etc/passwd"}), interfaces=["eth0"])
    assert (finding.rule, finding.level, finding.option) == ("file-outside-state-dirs", WARNING, option)
    assert "/etc/passwd is not within /var/lib/aria2, /var/log/aria2" in finding.message
    assert lint(Site(), _with({option: "/var/lib/aria2/state/f"}), interfaces=["eth0"]) == []


def test_state_files_may_live_in_dir_and_dot_dot_counts_where_it_lands() -> None:
    assert lint(Site(), _with({"dir": "/data/aria2", "save-session": "/data/aria2/.session"}), interfaces=["eth0"]) == []
    (finding,) = lint(Site(), _with({"log": "/var/log/aria2/../../../etc/shadow"}), interfaces=["eth0"])
    assert finding.rule == "file-outside-state-dirs"
    # a sibling whose name starts like an allowed folder is outside it
    (sibling,) = lint(Site(), _with({"log": "/var/log/aria2-evil/x.log"}), interfaces=["eth0"])
    assert sibling.rule == "file-outside-state-dirs"
    assert lint(Site(), _with({"log": "-"}), interfaces=["eth0"]) == []


def test_the_site_names_its_own_state_dirs(make_site: SiteFactory) -> None:
    site = make_site('[aria2c]\nstate_dirs = ["/srv/aria2"]\n')
    assert lint(site, _with({"log": "/srv/aria2/log/aria2c.log", "dht-file-path": "/srv/aria2/dht.dat"}), interfaces=["eth0"]) == []
    (finding,) = lint(site, CLEAN, interfaces=["eth0"])  # /var/log/aria2 is no longer one of them
    assert finding.rule == "file-outside-state-dirs" and "within /srv/aria2" in finding.message
