"""parse_conf reads a conf file as aria2 does, and strict mode refuses what reads differently."""

from __future__ import annotations

import pytest

from siteadmin.aria2conf import parse_conf
from siteadmin.errors import ConfigError


def test_plain_file() -> None:
    text = "# header\n\nlisten-port=6881-6999\n#x=y\nseed-ratio=1.0\n"
    assert parse_conf(text) == {"listen-port": "6881-6999", "seed-ratio": "1.0"}


def test_lenient_reading_follows_aria2() -> None:
    text = "  listen-port = 6881 \r\nlisten-port=7000\n   # indented\nnoequals\n=value only\nrpc-secret=a=b\n"
    assert parse_conf(text, strict=False) == {"listen-port": "7000", "# indented": "", "noequals": "", "rpc-secret": "a=b"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("  listen-port=6881\n", "starts with whitespace"),
        ("   # comment\n", "starts with whitespace"),
        ("listen-port =6881\n", "space before '='"),
        ("listen-port= 6881\n", "leading or trailing whitespace"),
        ("listen-port=6881 \n", "leading or trailing whitespace"),
        ("listen-port=6881\r\n", "carriage return"),
        ("listen-port\n", "no '='"),
        ("listen-port=6881\nlisten-port=7000\n", "set twice"),
        ("dir=/a\0b\n", "NUL"),
        ("\ufefflisten-port=6881\n", "byte-order mark"),
    ],
)
def test_strict_refusals_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_conf(text, source="wn1.conf")
    assert problem in caught.value.message
    assert caught.value.message.startswith("wn1.conf line ")


def test_strict_errors_never_show_a_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_conf("rpc-secret=hunter2hunter2 \n")
    assert "hunter2" not in caught.value.one_line()
