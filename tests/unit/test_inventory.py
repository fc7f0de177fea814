"""WN selection from hostlist patterns, groups and exclusions."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from ClusterShell.NodeSet import NodeSet

from siteadmin.cli import main
from siteadmin.errors import ConfigError, InventoryError
from siteadmin.hostlist import TooManyHosts, count_hosts
from siteadmin.inventory import Inventory, fold, parse_hostlist
from siteadmin.site import load_site, site_from_mapping

SITE = {
    "site": {"name": "TEST"},
    "ssh": {"port": 22},
    "wns": {
        "hosts": ["wn[001-120].example.org"],
        "exclude": ["wn[100-110].example.org"],
        "groups": {
            "bigdisk": {"hosts": ["wn[001-010].example.org"], "aria2c": {"max-overall-upload-limit": "100M"}},
            "gpu": {"hosts": ["gpu[1-2].example.org"]},
        },
        "nodes": {"wn001.example.org": {"address": "192.0.2.10", "port": 2222, "aria2c": {"listen-port": "6890"}}},
    },
}


@pytest.fixture
def inventory() -> Inventory:
    return Inventory(site_from_mapping(SITE))


def test_all_hosts_expand_with_groups_and_exclusions(inventory: Inventory) -> None:
    hosts = inventory.select()
    assert len(hosts) == 120 - 11 + 2
    assert "wn105.example.org" not in hosts
    assert "gpu1.example.org" in hosts
    assert hosts[0] == "gpu1.example.org"


@pytest.mark.parametrize(
    ("pattern", "count", "first"),
    [
        ("wn[001-004].example.org", 4, "wn001.example.org"),
        ("@bigdisk", 10, "wn001.example.org"),
        ("@bigdisk!wn[002-009].example.org", 2, "wn001.example.org"),
        ("@gpu,wn120.example.org", 3, "gpu1.example.org"),
        ("all", 111, "gpu1.example.org"),
    ],
)
def test_select(inventory: Inventory, pattern: str, count: int, first: str) -> None:
    hosts = inventory.select(pattern)
    assert len(hosts) == count
    assert hosts[0] == first


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("@nosuch", ["@nosuch", "no such WN group", "@bigdisk"]),
        ("wn[001-", ["hostlist", "wn[001-"]),
        ("wn105.example.org", ["wn105.example.org", "not a WN of this site"]),
        ("other[1-3].example.org", ["other[1-3].example.org", "not a WN"]),
    ],
)
def test_select_refuses(inventory: Inventory, pattern: str, words: list[str]) -> None:
    with pytest.raises(InventoryError) as info:
        inventory.select(pattern)
    for word in words:
        assert word in info.value.one_line()


def test_connection_details_and_layers(inventory: Inventory) -> None:
    wn = inventory.wn("wn001.example.org")
    assert (wn.address, wn.port, wn.groups) == ("192.0.2.10", 2222, ("bigdisk",))
    plain = inventory.wn("wn050.example.org")
    assert (plain.address, plain.port, plain.groups) == ("wn050.example.org", 22, ())
    layers = [name for name, _ in inventory.overrides_for("wn001.example.org")]
    assert layers == ["site", "group bigdisk", "host wn001.example.org"]


def test_fold() -> None:
    assert fold(["wn003.lab", "wn001.lab", "wn002.lab", "wn010.lab"]) == "wn[001-003,010].lab"
    assert fold([]) == ""


@pytest.mark.parametrize("bad", ["", "wn[1-", "wn[z-a]", "@group", "wn_1", "[1-3]x]"])
def test_parse_hostlist_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="hostlist"):
        parse_hostlist(bad)


def test_cli_hosts(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[wns]\nhosts = ["wn[001-120].example.org"]\nexclude = ["wn[100-110].example.org"]\n')
    out = io.StringIO()
    assert main(["--site", str(path), "hosts"], out=out, err=io.StringIO()) == 0
    assert out.getvalue() == "wn[001-099,111-120].example.org (109 WNs)\n"
    out = io.StringIO()
    assert main(["--site", str(path), "hosts", "wn[001-002].example.org", "--json"], out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert data["count"] == 2
    assert [h["name"] for h in data["hosts"]] == ["wn001.example.org", "wn002.example.org"]
    err = io.StringIO()
    assert main(["--site", str(path), "hosts", "wn[001-"], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("siteadmin: hosts: ")
    assert len(err.getvalue().splitlines()) == 1


def test_cli_usage_errors_are_one_line() -> None:
    for argv in (["nosuchcommand"], ["hosts", "--bogus"], ["config"]):
        err = io.StringIO()
        assert main(argv, out=io.StringIO(), err=err) == 2, argv
        assert err.getvalue().startswith("siteadmin: usage: "), argv
        assert len(err.getvalue().splitlines()) == 1, argv


def test_the_console_without_a_terminal_is_one_line_exit_2(tmp_path: Path) -> None:
    # pytest's stdin/stdout are not terminals: scripts get a clear word instead of a broken screen
    for argv in ([], ["lab", "console", "--dir", str(tmp_path / "lab")]):
        err = io.StringIO()
        assert main(argv, out=io.StringIO(), err=err) == 2, argv
        assert err.getvalue().startswith("siteadmin: usage: the console needs a terminal")
        assert len(err.getvalue().splitlines()) == 1
    assert not (tmp_path / "lab").exists()  # nothing was started


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from siteadmin import __version__

    assert main(["--version"], out=io.StringIO(), err=io.StringIO()) == 0
    assert capsys.readouterr().out == f"siteadmin {__version__}\n"


@pytest.mark.parametrize(
    ("pattern", "count"),
    [
        ("wn1.x", 1),
        ("wn[001-120].example.org", 120),
        ("wn[1-10/2]", 5),
        ("wn[1-3,7,10-11]", 6),
        ("r[1-2]n[1-3]", 6),
        ("wn[1-3]-[1-2]", 6),
        ("a,b!a", 3),
        ("wn[1-3]&wn[2-5]", 7),
        ("wn[1-100000000]", 100_000_000),
        ("r[1-100000]n[1-100000]", 10_000_000_000),
    ],
)
def test_count_hosts_is_an_upper_bound_counted_from_the_text(pattern: str, count: int) -> None:
    assert count_hosts(pattern) == count
    if count < 1000:
        assert len(NodeSet(pattern)) <= count


@pytest.mark.parametrize("bad", ["wn[1-", "wn1-2]", "wn[[1-2]]", "wn[3-1]", "wn[1-4/0]", "wn[a-c]", "wn[1-2,]"])
def test_count_hosts_refuses_what_it_cannot_count(bad: str) -> None:
    with pytest.raises(ValueError, match="hostlist"):
        count_hosts(bad)


def test_a_pattern_past_the_bound_is_refused_before_expanding() -> None:
    started = time.monotonic()
    with pytest.raises(TooManyHosts) as info:
        parse_hostlist("r[1-100000]n[1-100000]")
    assert info.value.count == 10_000_000_000
    with pytest.raises(TooManyHosts):
        parse_hostlist("wn[1-11]", max_hosts=10)
    assert time.monotonic() - started < 1
    assert len(parse_hostlist("wn[1-10]", max_hosts=10)) == 10


def test_selecting_past_the_sites_bound_is_one_line_and_fast(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[wns]\nhosts = ["wn[001-120].example.org"]\nmax_hosts = 1000\n')
    for pattern in ("wn[1-100000000]", "wn[1-1001]", "wn[1-2],x[1-100000000]"):
        started = time.monotonic()
        err = io.StringIO()
        assert main(["--site", str(path), "hosts", pattern], out=io.StringIO(), err=err) == 2, pattern
        assert time.monotonic() - started < 2, pattern
        assert err.getvalue().startswith("siteadmin: hosts: hosts pattern: ")
        assert "max_hosts" in err.getvalue() and len(err.getvalue().splitlines()) == 1
    inventory = Inventory(load_site(path))
    assert len(inventory.select("wn[001-010].example.org")) == 10


def test_the_bound_covers_every_pattern_of_the_config_together() -> None:
    data = {"wns": {"max_hosts": 100, "hosts": ["a[1-60]"], "groups": {"g": {"hosts": ["b[1-60]"]}}}}
    with pytest.raises(ConfigError) as info:
        site_from_mapping(data)
    assert "wns.groups.g.hosts" in info.value.one_line() and "max_hosts = 100" in info.value.one_line()
    data["wns"]["max_hosts"] = 120
    assert len(Inventory(site_from_mapping(data)).select()) == 120
