"""`siteadmin ce ...` and `siteadmin audit` through siteadmin.cli.main against the real lab slapd."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siteadmin.cli import main
from siteadmin.secrets import read_secret_file

pytestmark = pytest.mark.lab

MakeSite = Callable[..., Path]
TRANSCRIPT: list[str] = []
"""Every stdout/stderr of this module's runs, for the password check at the end."""


def run(site: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site), *argv], out=out, err=err)
    TRANSCRIPT.extend([out.getvalue(), err.getvalue()])
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), err.getvalue()
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("siteadmin: ")
    return lines[0]


def test_list_text_and_json(lab: Any, make_site: MakeSite) -> None:
    site = make_site("reader")
    code, out, err = run(site, "ce", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["CE", "INSTALLMETHOD", "TORRENT", "HOST"]
    assert len(rows) == len(lab.spec.ces)
    assert any(r.split()[:3] == ["CE2", "Torrent", "yes"] for r in rows)
    assert any(r.split()[:2] == ["CE3", "(none)"] for r in rows)
    code, out, _ = run(site, "ce", "list", "--json")
    data = json.loads(out)
    assert code == 0
    assert {d["name"]: d["installMethod"] for d in data} == {n: m for n, m, _ in lab.spec.ces}
    assert {d["name"]: d["host"] for d in data}["CE1"] == "ce1.lab.example"


def test_show(lab: Any, make_site: MakeSite) -> None:
    code, out, _ = run(make_site(), "ce", "show", "ALICE::Site, comma", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "ALICE::Site, comma" and data["attributes"]["host"] == ["comma.lab.example"]
    code, out, _ = run(make_site(), "ce", "show", "CE2")
    assert code == 0 and "installMethod: Torrent" in out and "torrent: yes" in out


def test_enable_disable_round_trip_and_audit(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    code, out, err = run(site, "ce", "enable", "CE4", "CE1")
    assert code == 0
    assert out.splitlines() == ["CE4: Parrot -> Torrent (ok)", "CE1: CVMFS -> Torrent (ok)"]
    assert "600 s" in err
    assert lab.methods()["CE4"] == ("Torrent",) and lab.methods()["CE1"] == ("Torrent",)
    code, out, err = run(site, "ce", "disable", "CE4", "CE1", "--json")
    assert code == 0
    assert [(c["ce"], c["before"], c["after"], c["outcome"]) for c in json.loads(out)] == [
        ("CE4", "Torrent", "Parrot", "ok"), ("CE1", "Torrent", "CVMFS", "ok"),
    ]
    assert lab.methods()["CE4"] == ("Parrot",)
    code, out, _ = run(site, "audit", "--ce", "ce4", "--json")
    assert code == 0
    assert [(e["action"], e["before"], e["after"], e["outcome"]) for e in json.loads(out)] == [
        ("enable", "Parrot", "Torrent", "ok"), ("disable", "Torrent", "Parrot", "ok"),
    ]
    code, out, _ = run(site, "audit", "--last", "1")
    assert code == 0 and len(out.splitlines()) == 1 and "disable CE1  Torrent -> CVMFS  ok" in out
    assert lab.spec.admin_dn in out


def test_several_ces_go_on_after_one_fails(lab: Any, make_site: MakeSite) -> None:
    code, out, err = run(make_site(), "ce", "enable", "CE1", "NOPE", "CE4")
    assert code == 2
    assert out.splitlines() == ["CE1: CVMFS -> Torrent (ok)", "CE4: Parrot -> Torrent (ok)"]
    errors = [line for line in err.splitlines() if "600 s" not in line]
    assert len(errors) == 1 and "no CE 'NOPE'" in errors[0]
    assert lab.methods()["CE1"] == ("Torrent",) and lab.methods()["CE4"] == ("Torrent",)


def test_set_dry_run_prints_ldif_and_changes_nothing(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    code, out, err = run(site, "ce", "set", "ce+special", "Torrent", "--dry-run")
    assert code == 0 and err == ""
    assert "dn: name=ce\\2Bspecial,ou=CE,ou=Services,ou=LAB,ou=Sites,o=alice,dc=cern,dc=ch\nchangetype: modify\n" in out
    assert "delete: installMethod\ninstallMethod: CVMFS\n-\nadd: installMethod\ninstallMethod: Torrent\n-" in out
    assert lab.methods()["ce+special"] == ("CVMFS",)
    assert not (site.parent / "audit.jsonl").exists()


def test_ldif_request_for_a_read_only_site(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    site = make_site("reader")
    request = tmp_path / "request.ldif"
    code, out, _ = run(site, "ce", "enable", "CE1", "--ldif-request", str(request))
    assert code == 0 and "requested" in out
    text = request.read_text()
    assert text.startswith("# installMethod change request from siteadmin\n") and "# CE: CE1\n" in text
    assert lab.methods()["CE1"] == ("CVMFS",)
    code, _, err = run(site, "ce", "enable", "CE1", "CE2", "--ldif-request", str(tmp_path / "other.ldif"))
    assert code == 2 and "one CE at a time" in one_error_line(err)


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["ce", "set", "CE1", "torrent"], 2, ["'torrent'", "case-sensitively", "use 'Torrent'"]),
        (["ce", "set", "CE1", "Bogus"], 2, ["unknown installMethod 'Bogus'", "allowed: Torrent"]),
        (["ce", "enable", "NOPE"], 2, ["no CE 'NOPE' at site LAB", "CE1, CE2, CE3, CE4"]),
        (["ce", "show", "star\\2a"], 2, ["no CE"]),
        (["ce", "set", "CE1"], 2, ["usage:"]),
        (["ce", "enable", ""], 2, ["must not be empty"]),
        (["audit", "--last", "0"], 2, ["--last 0"]),
    ],
)
def test_bad_input_is_one_line_and_non_zero(lab: Any, make_site: MakeSite, argv: list[str], code: int, words: list[str]) -> None:
    before = lab.methods()
    got, out, err = run(make_site(), *argv)
    line = one_error_line(err)
    assert got == code, err
    for word in words:
        assert word in line
    assert lab.methods() == before


def test_failures_keep_every_earlier_audit_line(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    audit_file = site.parent / "audit.jsonl"
    assert run(site, "ce", "enable", "CE1")[0] == 0
    earlier = audit_file.read_bytes()
    assert run(site, "ce", "set", "CE1", "torrent")[0] == 2
    assert run(site, "ce", "enable", "NOPE")[0] == 2
    reader = make_site("reader", name="reader.toml")
    assert run(reader, "ce", "disable", "CE1")[0] == 3
    now = audit_file.read_bytes()
    assert now.startswith(earlier)
    events = [json.loads(line) for line in now.splitlines()]
    assert [e["outcome"] for e in events] == ["ok", "refused", "refused", "denied"]
    assert lab.methods()["CE1"] == ("Torrent",)


def test_corrupt_audit_line_is_shown_and_others_kept(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    run(site, "ce", "enable", "CE1")
    audit_file = site.parent / "audit.jsonl"
    with audit_file.open("ab") as handle:
        handle.write(b'{"torn": \xff')  # a torn, non-UTF-8 last line without newline
    run(site, "ce", "disable", "CE1")
    code, out, err = run(site, "audit")
    lines = out.splitlines()
    assert code == 1 and len(lines) == 3
    assert "enable CE1" in lines[0] and "UNREADABLE (not UTF-8)" in lines[1] and "disable CE1" in lines[2]
    assert "1 unreadable" in err


def test_reader_refused_through_cli(lab: Any, make_site: MakeSite) -> None:
    before = lab.methods()
    code, _, err = run(make_site("reader"), "ce", "enable", "CE1")
    line = one_error_line(err)
    assert code == 3 and line.startswith("siteadmin: denied: ") and "may not change installMethod of CE CE1" in line
    assert lab.methods() == before


def test_wrong_ca_through_cli(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    from siteadmin.lab.tls import make_ca

    other = make_ca(tmp_path / "other")
    code, _, err = run(make_site(ca_file=str(other.cert)), "ce", "list")
    assert code == 3 and one_error_line(err).startswith("siteadmin: unreachable: TLS to LDAP server localhost:")


def test_server_down_through_cli(own_lab: Callable[..., Any], site_for: MakeSite) -> None:
    lab = own_lab([("CE1", "CVMFS", "h")])
    site = site_for(lab)
    assert run(site, "ce", "list")[0] == 0
    lab.stop()
    code, _, err = run(site, "ce", "enable", "CE1")
    assert code == 3 and "unreachable" in one_error_line(err)


def test_password_file_must_be_private(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    loose = tmp_path / "loose.password"
    loose.write_text(read_secret_file(lab.spec.admin_password_file) + "\n")
    loose.chmod(0o644)
    code, _, err = run(make_site(password_file=str(loose)), "ce", "list")
    assert code == 2 and "readable by others" in one_error_line(err)


def test_bad_password_from_environment_through_cli(lab: Any, make_site: MakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITEADMIN_LDAP_PASSWORD", "wrong-secret-value")
    code, _, err = run(make_site("none", bind_dn=lab.spec.admin_dn), "ce", "enable", "CE1")
    assert code == 3 and "invalid credentials" in one_error_line(err)
    assert "wrong-secret-value" not in err


def test_password_from_environment_works(lab: Any, make_site: MakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITEADMIN_LDAP_PASSWORD", read_secret_file(lab.spec.admin_password_file))
    code, out, _ = run(make_site("none", bind_dn=lab.spec.admin_dn), "ce", "set", "CE1", "Local")
    assert code == 0 and "CVMFS -> Local (ok)" in out


def test_zz_no_password_in_any_output_or_audit_log(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    site = make_site()
    request = tmp_path / "r.ldif"
    for argv in (["ce", "list", "--json"], ["ce", "show", "CE1", "--json"], ["ce", "enable", "CE1", "--json"],
                 ["ce", "disable", "CE1", "--dry-run"], ["ce", "disable", "CE1", "--ldif-request", str(request)],
                 ["config", "show"], ["config", "show", "--json"], ["audit", "--json"], ["audit"]):
        run(site, *argv)
    run(make_site("reader", name="r.toml"), "ce", "enable", "CE2", "CE3")
    secrets = [read_secret_file(lab.spec.admin_password_file), read_secret_file(lab.spec.reader_password_file)]
    written = [request.read_text(), (site.parent / "audit.jsonl").read_text()]
    assert len(TRANSCRIPT) > 20 and len(written[1].splitlines()) >= 3
    for secret in secrets:
        for text in TRANSCRIPT + written:
            assert secret not in text


def test_input_that_is_not_utf8_is_refused_in_one_line_and_audited(lab: Any, make_site: MakeSite) -> None:
    from siteadmin import audit
    from siteadmin.directory import Directory
    from siteadmin.errors import UsageError
    from siteadmin.site import load_site

    site = make_site()
    bad = "CE1\udcff"  # how argv delivers the byte 0xff
    for argv in (("ce", "show", bad), ("ce", "set", bad, "Torrent"), ("ce", "enable", "CE2", bad)):
        code, _, err = run(site, *argv)
        assert code == 2, argv
        assert one_error_line(err) == "siteadmin: usage: CE name 'CE1\\udcff' is not valid UTF-8 text"
    # a refused attempt that reaches the directory is audited, escaped, and the log stays readable
    loaded = load_site(site)
    before = audit.read(loaded.audit.path)
    with Directory(loaded) as directory, pytest.raises(UsageError):
        directory.set_method("CE1", "Tor\udcffrent")
    records = audit.read(loaded.audit.path)
    assert records[: len(before)] == before
    assert len(records) == len(before) + 1 and records[-1].ok
    assert records[-1].event is not None
    # written as the JSON escape \udcff, read back as the same (surrogate) text
    assert records[-1].event["after"] == "Tor\udcffrent" and records[-1].event["outcome"].startswith("refused")
