"""Pure helpers of siteadmin.directory (both layers): method validation, escaping, LDIF, assertion control, restore."""

from __future__ import annotations

import base64

import pytest
from ldap3.utils.dn import parse_dn

from siteadmin import directory as d
from siteadmin.audit import AuditRecord
from siteadmin.directory import ldap
from siteadmin.errors import ConfigError, UsageError

METHODS = ["Torrent", "TorrentPerHost", "CVMFS", "Parrot", "Local"]
BASE = "o=alice,dc=cern,dc=ch"


@pytest.mark.parametrize("value", METHODS)
def test_exact_methods_pass(value: str) -> None:
    assert d.validate_method(value, METHODS) == value


@pytest.mark.parametrize(("value", "right"), [("torrent", "Torrent"), ("TORRENT", "Torrent"), ("cvmfs", "CVMFS"), ("torrentperhost", "TorrentPerHost")])
def test_wrong_case_names_the_right_spelling(value: str, right: str) -> None:
    with pytest.raises(UsageError) as err:
        d.validate_method(value, METHODS)
    assert "case-sensitively" in err.value.message and err.value.hint == f"use {right!r}"


@pytest.mark.parametrize("value", ["Bogus", "", "Torrent ", " Torrent", "Torrent\n"])
def test_unknown_methods_list_the_allowed(value: str) -> None:
    with pytest.raises(UsageError) as err:
        d.validate_method(value, METHODS)
    assert "unknown installMethod" in err.value.message and "Torrent, TorrentPerHost, CVMFS" in (err.value.hint or "")


@pytest.mark.parametrize("name", ["", "  ", "a\nb", "tab\there", "nul\0"])
def test_bad_ce_names(name: str) -> None:
    with pytest.raises(UsageError):
        d.check_ce_name(name)


@pytest.mark.parametrize("name", ["CE1", "ce+special", "ALICE::Site, comma", "star*", "back\\slash", "eq=ual;semi", "#hash", "trail ", "<>\"q\""])
def test_ce_dn_is_one_rdn_with_the_exact_name(name: str) -> None:
    dn = d.ce_dn(name, "LAB", BASE)
    parts = parse_dn(dn, escape=False)
    assert len(parts) == 8  # name=..., ou=CE, ou=Services, ou=LAB, ou=Sites, o=alice, dc=cern, dc=ch: nothing else
    attr, value, sep = parts[0]
    assert attr == "name" and sep == ","
    assert _unescape(value) == name
    assert [p[0] for p in parts[1:]] == ["ou", "ou", "ou", "ou", "o", "dc", "dc"]


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            nxt = value[i + 1 : i + 3]
            if len(nxt) == 2 and all(c in "0123456789abcdefABCDEF" for c in nxt):
                out.append(chr(int(nxt, 16)))
                i += 3
                continue
            out.append(value[i + 1])
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def test_ce_dn_structure() -> None:
    dn = d.ce_dn("ce+special", "LAB", BASE)
    assert [(a, v) for a, v, _ in parse_dn(dn)] == [
        ("name", "ce\\+special"), ("ou", "CE"), ("ou", "Services"), ("ou", "LAB"), ("ou", "Sites"),
        ("o", "alice"), ("dc", "cern"), ("dc", "ch"),
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("CE1", "(name=CE1)"), ("star*", "(name=star\\2a)"), ("par(en)", "(name=par\\28en\\29)"), ("back\\slash", "(name=back\\5cslash)"),
     ("ALICE::Site, comma", "(name=ALICE::Site, comma)")],
)
def test_ce_filter_escapes(name: str, expected: str) -> None:
    assert d.ce_filter(name) == expected


def test_absent_assertion_matches_ldap3_encoding() -> None:
    from ldap3.operation.search import compile_filter, parse_filter
    from pyasn1.codec.ber import encoder

    node = parse_filter("(!(installMethod=*))", None, auto_escape=True, auto_encode=True, validator=None, check_names=False)
    assert d.absent_assertion("installMethod") == encoder.encode(compile_filter(node.elements[0]))
    assert d.absent_assertion("installMethod") == b"\xa2\x0f\x87\x0dinstallMethod"


@pytest.mark.parametrize(("value", "line"), [("Torrent", "installMethod: Torrent"), ("", "installMethod: ")])
def test_ldif_safe_values(value: str, line: str) -> None:
    assert d.ldif_line("installMethod", value) == line


@pytest.mark.parametrize("value", [" lead", "trail ", ":colon", "<angle", "é", "a\nb", "nul\0"])
def test_ldif_unsafe_values_are_base64(value: str) -> None:
    line = d.ldif_line("name", value)
    assert line.startswith("name:: ")
    assert base64.b64decode(line.removeprefix("name:: ")).decode() == value


def test_modify_ldif_is_compare_and_set() -> None:
    text = d.modify_ldif("name=CE1,ou=CE,o=x", ("CVMFS",), "Torrent")
    assert text == (
        "dn: name=CE1,ou=CE,o=x\nchangetype: modify\n"
        "delete: installMethod\ninstallMethod: CVMFS\n-\n"
        "add: installMethod\ninstallMethod: Torrent\n-\n"
    )


def test_modify_ldif_deletes_every_value_read() -> None:
    text = d.modify_ldif("name=CE1,o=x", ("CVMFS", "Parrot"), "Torrent")
    assert "delete: installMethod\ninstallMethod: CVMFS\ninstallMethod: Parrot\n-\n" in text


def test_modify_ldif_for_absent_value_carries_the_assertion() -> None:
    text = d.modify_ldif("name=CE3,o=x", (), "Torrent")
    lines = text.splitlines()
    assert lines[1].startswith("control: 1.3.6.1.1.12 true:: ")
    assert base64.b64decode(lines[1].split(":: ")[1]) == d.absent_assertion("installMethod")
    assert "delete:" not in text and "add: installMethod\ninstallMethod: Torrent\n-\n" in text


def test_modify_ldif_base64_dn() -> None:
    assert d.modify_ldif("name=\\ lead,o=x", ("A",), "B").startswith("dn: name=\\ lead,o=x\n")
    assert d.modify_ldif("name=é,o=x", ("A",), "B").startswith("dn:: ")


def _rec(line: int, **event: object) -> AuditRecord:
    base: dict[str, object] = {"site": "LAB", "ce": "CE1", "outcome": "ok", "when": "T"}
    base.update(event)
    return AuditRecord(line, base)


def test_restore_from_the_latest_enable() -> None:
    records = [
        _rec(1, before="Parrot", after="Torrent"),
        _rec(2, before="Torrent", after="Parrot"),
        _rec(3, before="Local", after="Torrent"),
        AuditRecord(4, None, "not JSON", "junk"),
        _rec(5, before="CVMFS", after="Torrent", outcome="conflict"),
        _rec(6, before="Parrot", after="Torrent", ce="CE2"),
        _rec(7, before="Parrot", after="Torrent", site="OTHER"),
    ]
    method, source = d.restore_method(records, "lab", "ce1", METHODS, "CVMFS")
    assert method == "Local" and "line 3" in source


def test_restore_skips_torrent_to_torrent() -> None:
    records = [_rec(1, before="Parrot", after="TorrentPerHost"), _rec(2, before="TorrentPerHost", after="Torrent")]
    assert d.restore_method(records, "LAB", "CE1", METHODS, "CVMFS")[0] == "Parrot"


def test_restore_defaults() -> None:
    assert d.restore_method([], "LAB", "CE1", METHODS, "CVMFS") == ("CVMFS", "ldap.default_method (no earlier method in the audit log)")
    absent = d.restore_method([_rec(1, before=None, after="Torrent")], "LAB", "CE1", METHODS, "CVMFS")
    assert absent[0] == "CVMFS" and "no installMethod before" in absent[1]
    not_allowed = d.restore_method([_rec(1, before="Weird", after="Torrent")], "LAB", "CE1", METHODS, "Parrot")
    assert not_allowed[0] == "Parrot"


@pytest.mark.parametrize(
    ("url", "expected"),
    [("ldaps://h:1636", ("h", 1636, True)), ("ldap://h", ("h", 389, False)), ("ldaps://h/", ("h", 636, True)),
     ("ldap://[::1]:3389", ("::1", 3389, False))],
)
def test_parse_url(url: str, expected: tuple[str, int, bool]) -> None:
    assert d.parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://h", "ldap://", "ldaps://h:99999", "h:389"])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ConfigError):
        d.parse_url(url)


def test_torrent_detection() -> None:
    assert d.CE("CE1", "dn", ("Torrent",)).torrent
    assert not d.CE("CE1", "dn", ("torrent",)).torrent
    assert not d.CE("CE1", "dn", ("Torrent", "CVMFS")).torrent
    assert d.is_torrent_value("torrent") and d.is_torrent_value("TorrentPerHost") and not d.is_torrent_value("CVMFS")
    assert d.audit_value(()) is None and d.audit_value(("A",)) == "A" and d.audit_value(("A", "B")) == ["A", "B"]


def test_tls_reason_reads_the_wrapped_text() -> None:
    msg = (
        "('socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED] "
        "certificate verify failed: self-signed certificate in certificate chain (_ssl.c:1006)',)"
    )
    assert ldap.tls_reason(Exception(msg)) == "certificate verify failed: self-signed certificate in certificate chain"
    assert ldap.tls_reason(Exception("[Errno 111] Connection refused")) is None
    mismatch = (
        "(\"socket ssl wrapping error: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
        "Hostname mismatch, certificate is not valid for \\'vm\\'. (_ssl.c:1006)\",)"
    )
    assert ldap.tls_reason(Exception(mismatch)) == "certificate verify failed: Hostname mismatch, certificate is not valid for 'vm'"


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"result": 7}, True),
        ({"result": 8}, True),
        ({"result": 48}, True),
        ({"result": 53, "message": "unwilling to perform simple authentication"}, True),
        ({"result": 53, "message": "unauthenticated bind (DN with no password) disallowed"}, False),
        ({"result": 49}, False),
        ({"result": 13}, False),
    ],
)
def test_wants_sasl_reads_code_and_slapds_words(result: dict[str, object], expected: bool) -> None:
    assert ldap.wants_sasl(result) is expected


def test_busy_and_unavailable_say_what_to_do() -> None:
    busy = ldap.busy_or_unavailable("h:636", {"result": 51, "description": "busy", "message": "too\nmany"}, "changing CE CE1", nothing_written=True)
    assert busy.message == "changing CE CE1: LDAP server h:636 is busy (busy, 51: too many); nothing written"
    assert busy.hint is not None and "try again in a few minutes" in busy.hint
    gone = ldap.busy_or_unavailable("h:636", {"result": 52, "description": "unavailable"})
    assert gone.message == "LDAP server h:636 is unavailable (unavailable, 52)"
    assert gone.hint is not None and "try again later" in gone.hint and "ldap.url" in gone.hint


def test_server_text_is_one_printable_line() -> None:
    assert ldap.one_line("a\nb\x1b[2J\u202ec\x00d") == "a b [2J c d"
    assert len(ldap.one_line("x" * 500, 50)) == 50


def test_the_ldap_layer_never_reaches_up_to_the_ce_service() -> None:
    import grimp

    graph = grimp.build_graph("siteadmin", cache_dir=None)
    # the check sees imports at all: the CE service is built on the LDAP layer
    assert graph.chain_exists(importer="siteadmin.directory.ces", imported="siteadmin.directory.ldap")
    assert not graph.chain_exists(importer="siteadmin.directory.ldap", imported="siteadmin.directory.ces")
