"""CE names from LDAP that would drive a terminal, and the warnings a risky bind gives, against a real slapd."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ldap3.utils.dn import escape_rdn

from siteadmin.cli import main
from siteadmin.directory import ce_container, ldif_line

pytestmark = pytest.mark.lab

HOSTILE = "CE\u202eevil\x1b[2J\x1b]0;owned\x07"
"""U+202E reverses what follows; ESC [2J clears the screen; ESC ]0;...BEL retitles the terminal."""
SHOWN = "CE\\u202eevil\\x1b[2J\\x1b]0;owned\\x07"
BIDI_ONLY = "CE\u202e2"
"""A name `ce show` accepts on the command line (no C0 control) that still reverses the text after it."""


def add_ces(lab: Any, ces: list[tuple[str, str]]) -> None:
    """Load CE entries offline with slapadd before the lab's slapd starts: siteadmin (and the lab
    builder, which uses its name check) refuse control characters in names, LDAP does not."""
    lines = []
    for name, host in ces:
        lines += [
            ldif_line("dn", f"name={escape_rdn(name)},{ce_container('LAB', lab.spec.base)}"),
            "objectClass: AliEnCE", ldif_line("name", name), "type: LCG", ldif_line("host", host), "installMethod: CVMFS",
            "maxqueuedjobs: 100", "maxjobs: 1000", "",
        ]
    ldif = lab.spec.workdir / "hostile.ldif"
    ldif.write_text("\n".join(lines), encoding="utf-8")
    subprocess.run([shutil.which("slapadd") or "/usr/sbin/slapadd", "-q", "-f", str(lab.spec.workdir / "slapd.conf"), "-l", str(ldif)],
                   check=True, capture_output=True)
    lab.start()


def run(site: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), *argv], out=out, err=err)
    assert "internal error" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def _terminal_safe(text: str) -> bool:
    return all(c not in text for c in "\x1b\x07\u202e")


def test_ce_list_and_show_escape_control_and_bidi_characters(own_lab: Callable[..., Any], site_for: Callable[..., Path]) -> None:
    lab = own_lab([("CE1", "Torrent", "ce1.lab.example")], defer_start=True)
    add_ces(lab, [(HOSTILE, "host\u202e.lab.example"), (BIDI_ONLY, "ce2.lab.example")])
    site = site_for(lab, "reader")
    code, out, err = run(site, "ce", "list")
    assert code == 0 and err == ""
    assert _terminal_safe(out)
    assert sorted(line.split()[:2] for line in out.splitlines()[1:]) == [["CE1", "Torrent"], ["CE\\u202e2", "CVMFS"], [SHOWN, "CVMFS"]]
    assert "host\\u202e.lab.example" in out
    code, out, _ = run(site, "ce", "list", "--json")
    assert code == 0 and {ce["name"] for ce in json.loads(out)} == {"CE1", HOSTILE, BIDI_ONLY}  # exact values in JSON
    code, out, err = run(site, "ce", "show", BIDI_ONLY)
    assert code == 0 and _terminal_safe(out) and err == ""
    assert "name: CE\\u202e2" in out.splitlines() and "dn: name=CE\\u202e2," in out


def test_a_plain_text_bind_and_insecure_warn_on_every_run(own_lab: Callable[..., Any], site_for: Callable[..., Path]) -> None:
    lab = own_lab([("CE1", "Torrent", "ce1.lab.example")], require_tls=False)
    site = site_for(lab, "reader", url=f"ldap://localhost:{lab.spec.ldap_port}", starttls=False, insecure=True)
    endpoint = f"localhost:{lab.spec.ldap_port}"
    for _ in range(2):
        code, out, err = run(site, "ce", "list")
        assert code == 0 and "CE1" in out
        assert err.splitlines() == [
            f"siteadmin: warning: ldap.insecure = true: plain LDAP to {endpoint} is allowed (for a lab or debugging only)",
            f"siteadmin: warning: LDAP bind as {lab.spec.reader_dn} to {endpoint} in clear text (ldap:// without StartTLS): "
            "the password crosses the network unencrypted",
        ]


def test_a_config_from_the_current_directory_is_named_before_a_bind(
    lab: Any, make_site: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site("reader")
    monkeypatch.chdir(site.parent)
    code, out, err = run(Path("site.toml"), "ce", "list")
    assert code == 0 and "CE1" in out
    assert err == f"siteadmin: warning: using {site} from the current directory for an LDAP bind to localhost:{lab.spec.ldaps_port}\n"
    code, out, err = run(Path("site.toml"), "hosts")  # nothing sent, nothing changed: nothing to say
    assert err == ""
