"""CE changes through the command line reach syslog as well as the audit log; the bind password never does.

The listener is this test's own Unix datagram socket, given as ``[syslog] address`` in the site
config, standing for the VoBox's /dev/log.
"""

from __future__ import annotations

import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.cli import main
from siteadmin.secrets import read_secret_file

pytestmark = pytest.mark.lab

LINE = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ops-audit\[\d+\]: (.*)")
AUTHPRIV = 10


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log"))
    sock.settimeout(5)
    yield sock
    sock.close()


def with_syslog(site: Path, address: Path) -> Path:
    text, n = re.subn(r"\[syslog\]\n[^\n]*\n", f'[syslog]\naddress = "{address}"\nfacility = "authpriv"\ntag = "ops-audit"\n', site.read_text())
    assert n == 1
    site.write_text(text)
    return site


def run(site: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), *argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_ce_change_and_a_refused_one_reach_syslog(lab: Any, make_site: Callable[..., Path], tmp_path: Path, listener: socket.socket) -> None:
    site = with_syslog(make_site(), tmp_path / "log")
    code, out, err = run(site, "ce", "enable", "CE1")
    assert code == 0 and out == "CE1: CVMFS -> Torrent (ok)\n"
    assert "syslog" not in err
    match = LINE.fullmatch(listener.recv(4096).decode())
    assert match, "not an RFC 3164 line"
    assert int(match[1]) == AUTHPRIV * 8 + 5
    assert re.fullmatch(r"enable ce=CE1 before=CVMFS after=Torrent outcome=ok .*user=\S+ .*bind_dn=\S+ .*", match[2]), match[2]
    audit = [json.loads(line) for line in (site.parent / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "enable" and audit[-1]["outcome"] == "ok"  # the audit log stays the full record

    reader = with_syslog(make_site("reader", name="reader.toml"), tmp_path / "log")
    code, _, err = run(reader, "ce", "set", "CE2", "CVMFS")
    assert code == 3 and "denied" in err
    match = LINE.fullmatch(listener.recv(4096).decode())
    assert match and int(match[1]) == AUTHPRIV * 8 + 4 and match[2].startswith("set ce=CE2 "), match  # refused: warning
    for secret_file in (lab.spec.admin_password_file, lab.spec.reader_password_file):
        assert read_secret_file(secret_file, "password") not in match[2]


def test_without_a_syslog_the_change_stands_and_one_warning_is_printed(lab: Any, make_site: Callable[..., Path], tmp_path: Path) -> None:
    site = with_syslog(make_site(), tmp_path / "absent.sock")
    code, out, err = run(site, "ce", "enable", "CE1", "CE4")
    assert code == 0 and out.splitlines() == ["CE1: CVMFS -> Torrent (ok)", "CE4: Parrot -> Torrent (ok)"]
    assert lab.methods()["CE1"] == ("Torrent",) and lab.methods()["CE4"] == ("Torrent",)
    warnings = [line for line in err.splitlines() if "syslog" in line]
    assert warnings == [f"siteadmin: warning: syslog {tmp_path / 'absent.sock'}: cannot send (No such file or directory); "
                        "changes are in the audit log only (set [syslog] address, or enabled = false)"]
