"""Newline, CR and NUL must never reach the file: no value may add an option of its own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from siteadmin.aria2conf import CATALOGUE, check_option, parse_conf, render
from siteadmin.aria2conf.conffile import format_line
from siteadmin.errors import ConfigError
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

CONTROL = {"newline": "\n", "cr": "\r", "nul": "\0"}


@pytest.mark.parametrize("char", list(CONTROL.values()), ids=list(CONTROL))
@pytest.mark.parametrize("name", list(CATALOGUE))
def test_control_characters_are_refused_in_every_option(name: str, char: str) -> None:
    value = f"x{char}rpc-listen-all=true"
    with pytest.raises(ConfigError) as caught:
        check_option(name, value, "site: [aria2c.options]")
    message = caught.value.one_line()
    assert "\n" not in message and "\r" not in message and "\0" not in message
    assert name in message
    if CATALOGUE[name].secret:
        assert "rpc-listen-all" not in message


def test_control_characters_at_the_end_are_refused_too() -> None:
    for char in CONTROL.values():
        with pytest.raises(ConfigError, match="newline, CR or NUL"):
            check_option("dir", f"/data{char}", "site")


def test_format_line_refuses_control_characters() -> None:
    assert format_line("dir", "/data") == "dir=/data"
    for char in CONTROL.values():
        with pytest.raises(ConfigError):
            format_line("dir", f"/a{char}b")
        with pytest.raises(ConfigError):
            format_line(f"d{char}ir", "/a")


def test_proxy_password_cannot_inject_an_option(make_site: SiteFactory) -> None:
    site = make_site('''
        [aria2c.options]
        all-proxy = "http://proxy.example.org:3128"
        all-proxy-user = "alice"
        all-proxy-passwd = "x\\nrpc-listen-all=true"
        ''')
    with pytest.raises(ConfigError) as caught:
        render(site, "wn001.example.org")
    message = caught.value.one_line()
    assert "all-proxy-passwd = ********: must not hold a newline, CR or NUL" in message
    assert "rpc-listen-all" not in message and "[aria2c.options]" in message


def test_secret_with_cr_or_nul_in_a_host_layer_is_refused(make_site: SiteFactory) -> None:
    site = make_site('''
        [wns]
        hosts = ["wn[001-002].example.org"]
        [wns.nodes."wn002.example.org"]
        aria2c = { rpc-secret = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\\renable-rpc=false" }
        ''')
    render(site, "wn001.example.org")
    with pytest.raises(ConfigError, match=r'wn002.example.org: \[wns.nodes."wn002.example.org"\] aria2c: rpc-secret = \*{8}: must not'):
        render(site, "wn002.example.org")


def test_option_name_cannot_carry_a_second_line(make_site: SiteFactory) -> None:
    site = make_site('''
        [aria2c.options]
        "dir\\nrpc-listen-all" = "true"
        ''')
    with pytest.raises(ConfigError, match="not an aria2c option"):
        render(site, "wn001.example.org")


def test_generated_secret_file_with_a_newline_is_refused(make_site: SiteFactory, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("abc\nrpc-listen-all=true\n")
    secret.chmod(0o600)
    site = make_site(f'''
        [aria2c]
        rpc_secret_file = "{secret}"
        ''')
    with pytest.raises(ConfigError, match="exactly one non-empty line"):
        render(site, "wn001.example.org")


def test_equals_sign_in_a_value_round_trips() -> None:
    assert check_option("rpc-secret", "a=b=c", "site") == ("rpc-secret", "a=b=c")
    assert parse_conf("rpc-secret=a=b=c\n") == {"rpc-secret": "a=b=c"}


def test_a_key_holding_a_value_does_not_show_it() -> None:
    with pytest.raises(ConfigError) as caught:
        check_option("rpc-secret=hunter2hunter2", "x", "site")
    assert "hunter2" not in caught.value.one_line()
    assert caught.value.message == "site: rpc-secret=...: not an aria2c option siteadmin knows"
    assert caught.value.hint == "did you mean rpc-secret?"
