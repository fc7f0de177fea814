"""siteadmin.directory against a real slapd (no mocks): list, toggle, races, TLS, failures, audit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siteadmin import audit
from siteadmin.directory import Change, Directory
from siteadmin.errors import ConfigError, ConflictError, PermissionDenied, ServiceUnreachable, SiteadminError, UsageError
from siteadmin.lab.tls import CertPair, make_ca, make_server_cert
from siteadmin.site import load_site

pytestmark = pytest.mark.lab

MakeSite = Callable[..., Path]


def directory(site_file: Path) -> Directory:
    return Directory(load_site(site_file))


def events(site_file: Path) -> list[dict[str, Any]]:
    out = []
    for rec in audit.read(load_site(site_file).audit.path):
        assert rec.event is not None, rec
        out.append(rec.event)
    return out


def test_list_ces(lab: Any, make_site: MakeSite) -> None:
    with directory(make_site()) as d:
        ces = d.list_ces()
    expected = {name: (method,) if method else () for name, method, _ in lab.spec.ces}
    assert {c.name: c.install_methods for c in ces} == expected
    assert [c.name for c in ces] == sorted(expected, key=str.casefold)
    by_name = {c.name: c for c in ces}
    assert by_name["CE2"].torrent and not by_name["CE1"].torrent
    assert by_name["CE1"].host == "ce1.lab.example"
    assert by_name["ce+special"].dn  # the server's DN form, never compared as a string


def test_list_with_reader_and_starttls(lab: Any, make_site: MakeSite) -> None:
    site = make_site("reader", url=f"ldap://localhost:{lab.spec.ldap_port}", starttls=True)
    with directory(site) as d:
        assert {c.name for c in d.list_ces()} == {name for name, _, _ in lab.spec.ces}


def test_ip_address_url_verifies_the_ip_san(lab: Any, make_site: MakeSite) -> None:
    with directory(make_site(url=f"ldaps://127.0.0.1:{lab.spec.ldaps_port}")) as d:
        assert d.show("CE1").install_methods == ("CVMFS",)


def test_enable_disable_round_trip_restores_the_earlier_method(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    with directory(site) as d:
        on = d.enable("CE4")
        assert (on.outcome, on.before, on.after, on.read_back) == ("ok", ("Parrot",), "Torrent", ("Torrent",))
        assert lab.methods()["CE4"] == ("Torrent",)
        again = d.enable("CE4")
        assert again.outcome == "unchanged"
        off = d.disable("CE4")
        assert (off.outcome, off.before, off.after, off.read_back) == ("ok", ("Torrent",), "Parrot", ("Parrot",))
        assert "audit log line 1" in off.note
        assert d.disable("CE4").outcome == "unchanged"
    assert lab.methods()["CE4"] == ("Parrot",)
    log = events(site)
    assert [(e["action"], e["ce"], e["before"], e["after"], e["outcome"]) for e in log] == [
        ("enable", "CE4", "Parrot", "Torrent", "ok"),
        ("disable", "CE4", "Torrent", "Parrot", "ok"),
    ]
    for e in log:
        assert e["bind_dn"] == lab.spec.admin_dn and e["user"] and e["when"].endswith("Z") and e["site"] == "LAB"


def test_disable_without_history_uses_the_default_and_absent_gets_the_assertion(lab: Any, make_site: MakeSite) -> None:
    with directory(make_site()) as d:
        off = d.disable("CE2")  # Torrent from the start, nothing in the audit log
        assert (off.after, off.read_back) == ("CVMFS", ("CVMFS",))
        assert "ldap.default_method" in off.note
        on = d.enable("CE3")  # no installMethod at all
        assert on.before == () and on.read_back == ("Torrent",)
        assert "control: 1.3.6.1.1.12 true:: " in on.ldif
        back = d.disable("CE3")
        assert back.after == "CVMFS" and "no installMethod before" in back.note


def test_set_fixes_a_wrong_case_value(lab: Any, make_site: MakeSite) -> None:
    conn = lab.admin()
    try:
        conn.modify(lab.spec.ce_dn("CE1"), {"installMethod": [(2, ["torrent"])]})  # MODIFY_REPLACE
    finally:
        conn.unbind()
    with directory(make_site()) as d:
        ce = d.show("CE1")
        assert ce.install_methods == ("torrent",) and not ce.torrent
        change = d.enable("CE1")
        assert change.outcome == "ok" and change.read_back == ("Torrent",)


def test_reader_is_refused_and_nothing_changes(lab: Any, make_site: MakeSite) -> None:
    site = make_site("reader")
    before = lab.methods()
    with directory(site) as d, pytest.raises(PermissionDenied) as err:
        d.enable("CE1")
    assert "may not change installMethod of CE CE1" in err.value.message
    assert "\n" not in err.value.one_line() and "--ldif-request" in err.value.one_line()
    assert lab.methods() == before
    (event,) = events(site)
    assert (event["outcome"], event["bind_dn"], event["before"], event["after"]) == ("denied", lab.spec.reader_dn, "CVMFS", "Torrent")


def test_reader_can_write_an_ldif_request(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    site = make_site("reader")
    request = tmp_path / "ce1.ldif"
    with directory(site) as d:
        change = d.ldif_request("CE1", "Torrent", request, action="enable")
        with pytest.raises(UsageError, match="already exists"):
            d.ldif_request("CE1", "Torrent", request, action="enable")
    assert change.outcome == "requested"
    text = request.read_text()
    assert "delete: installMethod\ninstallMethod: CVMFS\n-\nadd: installMethod\ninstallMethod: Torrent\n-\n" in text
    assert lab.methods()["CE1"] == ("CVMFS",)
    assert [e["outcome"] for e in events(site)] == ["requested", "refused"]


SPECIAL = ["ce", "ce+special", "ALICE::Site, comma", "ALICE::Site", "star", "star*", "par(en)", "back\\slash=eq;semi#", "#hash <angle> \"quote\""]


@pytest.mark.parametrize("name", SPECIAL)
def test_special_names_touch_only_their_own_entry(lab: Any, make_site: MakeSite, name: str) -> None:
    before = lab.methods()
    with directory(make_site()) as d:
        assert d.show(name).name == name
        change = d.set_method(name, "Local")
    assert change.read_back == ("Local",)
    after = lab.methods()
    assert after[name] == ("Local",)
    assert {k: v for k, v in after.items() if k != name} == {k: v for k, v in before.items() if k != name}


@pytest.mark.parametrize("name", ["s*", "*", "ce+", "ALICE::Site,", "name=CE1", "CE1,ou=CE", "(CE1)", "star\\2a"])
def test_names_that_would_match_others_match_nothing(lab: Any, make_site: MakeSite, name: str) -> None:
    before = lab.methods()
    with directory(make_site()) as d, pytest.raises(UsageError) as err:
        d.set_method(name, "Local")
    assert f"no CE {name!r} at site LAB" in err.value.message and "CE1, CE2" in err.value.message
    assert lab.methods() == before


def _race(site: Path, n: int, call: Callable[[Directory], Change]) -> list[Change | SiteadminError]:
    barrier = threading.Barrier(n)
    results: list[Change | SiteadminError] = []
    lock = threading.Lock()
    dirs = [directory(site) for _ in range(n)]
    for d in dirs:
        d.list_ces()  # connect and bind before the race

    def run(d: Directory) -> None:
        barrier.wait()
        try:
            result: Change | SiteadminError = call(d)
        except SiteadminError as exc:
            result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for d in dirs:
        d.close()
    return results


def test_concurrent_toggles_exactly_one_wins(lab: Any, make_site: MakeSite) -> None:
    site = make_site()
    results = _race(site, 8, lambda d: d.enable("CE1", expected=("CVMFS",)))
    wins = [r for r in results if isinstance(r, Change)]
    losers = [r for r in results if not isinstance(r, Change)]
    assert len(wins) == 1 and wins[0].outcome == "ok"
    assert len(losers) == 7 and all(isinstance(r, ConflictError) for r in losers)
    assert all("changed meanwhile" in r.message and "now 'Torrent'" in r.message for r in losers)
    assert lab.methods()["CE1"] == ("Torrent",)
    assert sorted(e["outcome"] for e in events(site)) == ["conflict"] * 7 + ["ok"]


def test_concurrent_first_values_for_an_absent_method(lab: Any, make_site: MakeSite) -> None:
    methods = ["Torrent", "CVMFS", "Parrot", "Local"]
    counter = iter(range(100))
    lock = threading.Lock()

    def pick(d: Directory) -> Change:
        with lock:
            method = methods[next(counter) % 4]
        return d.set_method("CE3", method, expected=())

    results = _race(make_site(), 6, pick)
    wins = [r for r in results if isinstance(r, Change)]
    assert len(wins) == 1
    assert all(isinstance(r, ConflictError) for r in results if not isinstance(r, Change))
    assert lab.methods()["CE3"] == (wins[0].after,)  # one value, never two


def test_concurrent_toggles_reading_themselves(lab: Any, make_site: MakeSite) -> None:
    results = _race(make_site(), 6, lambda d: d.enable("CE4"))
    outcomes = sorted(r.outcome if isinstance(r, Change) else type(r).__name__ for r in results)
    assert outcomes.count("ok") == 1
    assert set(outcomes) <= {"ok", "unchanged", "ConflictError"}
    assert lab.methods()["CE4"] == ("Torrent",)


def test_wrong_ca_is_refused_with_one_line(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "otherca", "another CA")
    for url in (f"ldaps://localhost:{lab.spec.ldaps_port}", f"ldap://localhost:{lab.spec.ldap_port}"):
        site = make_site(url=url, ca_file=str(other.cert), name=f"site-{url[:5]}.toml")
        with directory(site) as d, pytest.raises(ServiceUnreachable) as err:
            d.list_ces()
        line = err.value.one_line()
        assert line.startswith("TLS to LDAP server localhost:") and "certificate verify failed" in line, line
        assert "\n" not in line and "ldap.ca_file" in line


def test_certificate_for_another_name_is_refused(own_lab: Callable[..., Any], site_for: MakeSite) -> None:
    lab = own_lab([("CE1", "CVMFS", "h")], defer_start=True)
    tls = lab.spec.workdir / "tls"
    make_server_cert(tls, CertPair(tls / "ca.crt", tls / "ca.key"), ["wrong.example"], stem="slapd")
    lab.start()
    for url in (f"ldaps://localhost:{lab.spec.ldaps_port}", f"ldap://localhost:{lab.spec.ldap_port}", f"ldaps://127.0.0.1:{lab.spec.ldaps_port}"):
        with directory(site_for(lab, url=url)) as d, pytest.raises(ServiceUnreachable) as err:
            d.list_ces()
        assert "TLS to LDAP server" in err.value.message, err.value.message
        assert "mismatch" in err.value.message or "not valid for" in err.value.message, err.value.message


def test_plain_ldap_needs_insecure(lab: Any, make_site: MakeSite) -> None:
    with pytest.raises(ConfigError, match="in clear"):
        directory(make_site(url=f"ldap://localhost:{lab.spec.ldap_port}", starttls=False))
    # insecure allows it; this lab then refuses the plain simple bind (security simple_bind=128)
    with directory(make_site(url=f"ldap://localhost:{lab.spec.ldap_port}", starttls=False, insecure=True)) as d:
        with pytest.raises(PermissionDenied, match="requires TLS"):
            d.list_ces()


def test_bad_password_from_environment(lab: Any, make_site: MakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITEADMIN_LDAP_PASSWORD", "not-the-password")
    site = make_site("none", bind_dn=lab.spec.admin_dn)
    with directory(site) as d, pytest.raises(PermissionDenied) as err:
        d.list_ces()
    assert err.value.message == f"LDAP bind as {lab.spec.admin_dn} refused: invalid credentials"
    assert "not-the-password" not in err.value.one_line()


def test_unknown_site(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    site = make_site()
    site.write_text(site.read_text().replace('name = "LAB"', 'name = "NOSUCHSITE"'))
    with directory(site) as d, pytest.raises(ConfigError, match="site 'NOSUCHSITE' has no CEs in LDAP"):
        d.list_ces()


def test_unreachable_server(make_site: MakeSite) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        with directory(make_site(url=f"ldaps://localhost:{port}", timeout=1.0)) as d, pytest.raises(ServiceUnreachable) as err:
            d.list_ces()
    assert "unreachable" in err.value.message and "\n" not in err.value.one_line()


def test_slapd_killed_mid_session(own_lab: Callable[..., Any], site_for: MakeSite) -> None:
    lab = own_lab([("CE1", "CVMFS", "h")])
    site = site_for(lab)
    d = directory(site)
    assert [c.name for c in d.list_ces()] == ["CE1"]
    lab.proc.kill()
    lab.proc.wait()
    with pytest.raises(ServiceUnreachable) as err:
        d.enable("CE1")
    assert "\n" not in err.value.one_line()
    with pytest.raises(ServiceUnreachable):  # the next call tries a new connection, cleanly
        d.list_ces()
    d.close()
    (event,) = events(site)
    assert (event["action"], event["outcome"]) == ("enable", "unreachable")


def test_connection_lost_after_modify_is_read_back(own_lab: Callable[..., Any], site_for: MakeSite, cut_proxy: Callable[..., Any]) -> None:
    lab = own_lab([("CE1", "CVMFS", "h")], require_tls=False)
    proxy = cut_proxy(lab.spec.ldap_port)
    site = site_for(lab, url=f"ldap://localhost:{proxy.port}", starttls=False, insecure=True)
    with directory(site) as d:
        change = d.enable("CE1")
    assert proxy.cuts == 1
    assert change.outcome == "ok" and change.read_back == ("Torrent",)
    assert "confirmed by read-back on a new connection" in change.note
    assert lab.methods()["CE1"] == ("Torrent",)
    (event,) = events(site)
    assert event["outcome"] == "ok" and "read-back" in event["note"]


def test_connection_lost_and_read_back_fails_is_outcome_unknown(own_lab: Callable[..., Any], site_for: MakeSite, cut_proxy: Callable[..., Any]) -> None:
    lab = own_lab([("CE1", "CVMFS", "h")], require_tls=False)
    proxy = cut_proxy(lab.spec.ldap_port, stop_listening_after_cut=True)
    site = site_for(lab, url=f"ldap://localhost:{proxy.port}", starttls=False, insecure=True, timeout=1.0)
    with directory(site) as d, pytest.raises(ServiceUnreachable) as err:
        d.enable("CE1")
    assert "outcome unknown" in err.value.message and "do not repeat" in (err.value.hint or "")
    assert lab.methods()["CE1"] == ("Torrent",)  # it did happen; we said we do not know
    (event,) = events(site)
    assert event["outcome"] == "unknown"


def test_dry_run_changes_nothing_and_its_ldif_applies_with_ldapmodify(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    import subprocess

    site = make_site()
    with directory(site) as d:
        change = d.set_method("ALICE::Site, comma", "Torrent", dry_run=True)
    assert change.outcome == "dry-run"
    assert lab.methods()["ALICE::Site, comma"] == ("CVMFS",)
    assert not load_site(site).audit.path.exists()
    ldif = tmp_path / "change.ldif"
    ldif.write_text(change.ldif)
    password = tmp_path / "pw"
    password.touch(mode=0o600)
    password.write_text(lab.spec.admin_password_file.read_text().strip("\n"))  # -y takes the whole file
    env = {"LDAPTLS_CACERT": str(lab.spec.ca_file), "PATH": "/usr/bin:/bin"}
    cmd = ["ldapmodify", "-H", f"ldaps://127.0.0.1:{lab.spec.ldaps_port}", "-x", "-D", lab.spec.admin_dn, "-y", str(password), "-f", str(ldif)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)
    assert first.returncode == 0, first.stderr
    assert lab.methods()["ALICE::Site, comma"] == ("Torrent",)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)  # compare-and-set: the old value is gone
    assert second.returncode == 16, second.stderr


def test_absent_assertion_ldif_applies_once(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    import subprocess

    with directory(make_site()) as d:
        change = d.set_method("CE3", "Torrent", dry_run=True)
    ldif = tmp_path / "change.ldif"
    ldif.write_text(change.ldif)
    password = tmp_path / "pw"
    password.touch(mode=0o600)
    password.write_text(lab.spec.admin_password_file.read_text().strip("\n"))
    env = {"LDAPTLS_CACERT": str(lab.spec.ca_file), "PATH": "/usr/bin:/bin"}
    cmd = ["ldapmodify", "-H", f"ldaps://127.0.0.1:{lab.spec.ldaps_port}", "-x", "-D", lab.spec.admin_dn, "-y", str(password), "-f", str(ldif)]
    assert subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20).returncode == 0
    assert lab.methods()["CE3"] == ("Torrent",)
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20)
    assert again.returncode == 122, again.stderr  # assertion failed: a value is there now
    assert lab.methods()["CE3"] == ("Torrent",)


def test_unwritable_audit_log_refuses_before_changing(lab: Any, make_site: MakeSite, tmp_path: Path) -> None:
    site = make_site()
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    site.write_text(site.read_text().replace(str(tmp_path / "audit.jsonl"), str(blocker / "audit.jsonl")))
    before = lab.methods()
    with directory(site) as d, pytest.raises(ConfigError, match="cannot append"):
        d.enable("CE1")
    assert lab.methods() == before


def test_anonymous_reads_but_may_not_write(lab: Any, make_site: MakeSite) -> None:
    site = make_site("none")
    with directory(site) as d:
        assert d.show("CE2").install_methods == ("Torrent",)
        with pytest.raises(PermissionDenied) as err:
            d.disable("CE2")
    assert err.value.message.startswith("anonymous may not change installMethod of CE CE2")
    assert lab.methods()["CE2"] == ("Torrent",)
    (event,) = events(site)
    assert (event["bind_dn"], event["outcome"], event["result"]) == ("anonymous", "denied", 8)  # strongerAuthRequired
