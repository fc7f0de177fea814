"""The one profile check (``check_profiles``): a result per WN, aria2c once per distinct profile."""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from siteadmin.aria2conf import PLACEHOLDER_HOST, HostCheck, Verdict, check_profiles, hosts_to_check
from siteadmin.aria2conf.check import ARIA2C_RULE, PROBE_RULE
from siteadmin.errors import ConfigError, UsageError
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

SITE = """
[wns]
hosts = ["wn[1-4].example.org"]
[wns.nodes."wn3.example.org"]
aria2c = { bt-max-peers = 80 }
[wns.nodes."wn4.example.org"]
aria2c = { rpc-listen-all = true }
[aria2c.options]
bt-lpd-interface = "eth0"
"""


def counting_aria2c(tmp_path: Path, aria2c_binary: str) -> tuple[str, Path]:
    """The real aria2c behind a wrapper that notes each run, to count how often it reads a profile."""
    log = tmp_path / "aria2c-runs"
    wrapper = tmp_path / "aria2c-counted"
    wrapper.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{aria2c_binary}" "$@"\n')
    wrapper.chmod(stat.S_IRWXU)
    return str(wrapper), log


def test_a_result_per_host_with_verdicts(make_site: SiteFactory) -> None:
    checked = check_profiles(make_site(SITE))
    assert [h.host for h in checked.hosts] == [f"wn{i}.example.org" for i in range(1, 5)]
    assert checked.verdicts == {
        "wn1.example.org": Verdict.OK, "wn2.example.org": Verdict.OK,
        "wn3.example.org": Verdict.OK, "wn4.example.org": Verdict.ERROR,
    }
    assert not checked.ok and [h.host for h in checked.failed] == ["wn4.example.org"]
    wn4 = checked.by_host()["wn4.example.org"]
    assert [f.rule for f in wn4.findings] == ["rpc-listen-all"] and wn4.errors == 1
    assert wn4.text is not None and wn4.options is not None and wn4.hash is not None
    assert wn4.options["rpc-listen-all"] == "true" and wn4.hash in wn4.text
    assert checked.aria2c is not None and all(h.aria2c_checked for h in checked.hosts)


def test_identical_profiles_are_read_by_aria2c_once(make_site: SiteFactory, tmp_path: Path, aria2c_binary: str) -> None:
    wrapper, runs = counting_aria2c(tmp_path, aria2c_binary)
    checked = check_profiles(make_site(SITE), aria2c_binary=wrapper)
    # wn1 and wn2 share their options; wn3 and wn4 each have their own
    assert runs.read_text().count("run") == 3
    assert all(h.aria2c_checked for h in checked.hosts)
    assert not any(f.rule == ARIA2C_RULE for h in checked.hosts for f in h.findings)


def test_caller_allowed_rules_add_to_the_sites(make_site: SiteFactory) -> None:
    checked = check_profiles(make_site(SITE), allow=["rpc-listen-all"], aria2c=False)
    wn4 = checked.by_host()["wn4.example.org"]
    assert wn4.verdict is Verdict.OK and wn4.allowed == 1 and checked.ok
    assert checked.aria2c is None and not wn4.aria2c_checked
    with pytest.raises(UsageError, match="rpc-listen-al: no such lint rule"):
        check_profiles(make_site(SITE), allow=["rpc-listen-al"])


def test_a_host_that_cannot_be_rendered_gets_its_error(make_site: SiteFactory) -> None:
    site = make_site(SITE + '[wns.nodes."wn2.example.org"]\naria2c = { bt-max-peers = "lots" }\n')
    checked = check_profiles(site, aria2c=False)
    wn2 = checked.by_host()["wn2.example.org"]
    assert wn2.rendered is None and isinstance(wn2.error, ConfigError)
    assert wn2.verdict is Verdict.ERROR and wn2.errors == 1
    assert wn2.error_text is not None and "bt-max-peers" in wn2.error_text
    assert [f.rule for f in wn2.all_findings()] == ["render"]
    assert checked.by_host()["wn1.example.org"].verdict is Verdict.OK


def test_interface_facts_judge_lpd_per_host(make_site: SiteFactory) -> None:
    site = make_site('[wns]\nhosts = ["wn[1-3].example.org"]\n')
    asked: list[Sequence[str]] = []

    def probe(hosts: Sequence[str]) -> Mapping[str, Sequence[str] | BaseException]:
        asked.append(list(hosts))
        return {"wn1.example.org": ["eth0"], "wn2.example.org": ["eth0", "ib0"], "wn3.example.org": TimeoutError("timed out")}

    checked = check_profiles(site, interfaces=probe, aria2c=False)
    assert asked == [["wn1.example.org", "wn2.example.org", "wn3.example.org"]]
    by_host = checked.by_host()
    assert by_host["wn1.example.org"].findings == ()
    assert [f.rule for f in by_host["wn2.example.org"].findings] == ["lpd-no-interface"]
    assert "eth0, ib0" in by_host["wn2.example.org"].findings[0].message
    wn3: HostCheck = by_host["wn3.example.org"]
    assert wn3.verdict is Verdict.ERROR and wn3.findings[0].rule == PROBE_RULE
    assert "TimeoutError: timed out" in wn3.findings[0].message


def test_a_host_the_probe_does_not_answer_for_is_an_error(make_site: SiteFactory) -> None:
    site = make_site('[wns]\nhosts = ["wn[1-2].example.org"]\n[aria2c.options]\nbt-lpd-interface = "eth0"\n')
    checked = check_profiles(site, interfaces=lambda hosts: {"wn1.example.org": ["eth0"]}, aria2c=False)
    assert checked.verdicts == {"wn1.example.org": Verdict.OK, "wn2.example.org": Verdict.ERROR}
    assert "no answer" in checked.by_host()["wn2.example.org"].findings[0].message


def test_no_wns_checks_the_placeholder_host_and_never_probes_it(make_site: SiteFactory) -> None:
    site = make_site('[aria2c.options]\nbt-lpd-interface = "eth0"\n')
    assert hosts_to_check(site) == [PLACEHOLDER_HOST]

    def probe(hosts: Sequence[str]) -> Mapping[str, Sequence[str] | BaseException]:
        raise AssertionError(f"probed {hosts}")

    checked = check_profiles(site, interfaces=probe, aria2c=False)
    assert [h.host for h in checked.hosts] == [PLACEHOLDER_HOST] and checked.ok


def test_missing_aria2c_is_a_note_not_a_failure(make_site: SiteFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SITEADMIN_ARIA2C", str(tmp_path / "no-aria2c-here"))
    checked = check_profiles(make_site(SITE))
    assert checked.aria2c is None and checked.notes == ("aria2c not installed: profiles not checked by aria2c itself",)
    assert not any(h.aria2c_checked for h in checked.hosts)
