"""parse_conf reads a conf file as aria2 does, and strict mode refuses what reads differently."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from siteadmin.aria2conf import parse_conf
from siteadmin.errors import ConfigError
from siteadmin.secrets import write_private_file


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


def test_private_files_are_0600_even_with_an_open_umask(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    old = os.umask(0)
    try:
        target = folder / "wn1.conf"
        target.write_text("old")
        target.chmod(0o644)
        write_private_file(target, "rpc-secret=x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "rpc-secret=x\n"
    assert [p.name for p in folder.iterdir()] == ["wn1.conf"]


def test_private_file_write_failure_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        write_private_file(folder, "a")  # renaming a file over a directory fails after the temp file exists
    assert list(folder.iterdir()) == [] and list(tmp_path.glob(".out.*")) == []
