"""End to end: a real aria2c started on a rendered file runs with exactly the intended options.

One daemon per module: the site below is rendered by ``siteadmin render --out`` (0600, real
generated secret), aria2c is started with ``--conf-path`` only, HOME in a temp dir, RPC on
127.0.0.1 at a free port, and asked over JSON-RPC (token in the request body).
"""

from __future__ import annotations

import io
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteadmin.aria2conf import CATALOGUE, Applies, Rendered, parse_conf, render
from siteadmin.aria2conf.catalogue import HIDDEN_OVER_RPC, Kind, aria2_form
from siteadmin.aria2conf.validate import to_text
from siteadmin.cli import main
from siteadmin.site import load_site

from .conftest import GOOD, Daemon, free_port

pytestmark = pytest.mark.lab

HOST = "wn001.example.org"


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory, aria2c_binary: str) -> Iterator[tuple[Daemon, Rendered, Path]]:
    root = tmp_path_factory.mktemp("daemon")
    home = root / "home"
    home.mkdir()
    (home / "session").write_text("")
    bt = free_port()
    site_toml = root / "site.toml"
    site_toml.touch(mode=0o600)  # it holds a proxy password: a site.toml with a secret must be 0600
    site_toml.write_text(textwrap.dedent(f"""
        [site]
        name = "E2E"
        [wns]
        hosts = ["{HOST}"]
        rpc_port = {free_port()}
        ports = "{bt}-{bt}"
        [central]
        tracker_host = "127.0.0.1"
        tracker_port = 1
        [aria2c]
        state_dirs = ["{home}"]
        [aria2c.options]
        dir = "{home}/data"
        dht-file-path = "{home}/dht.dat"
        dht-file-path6 = "{home}/dht6.dat"
        input-file = "{home}/session"
        save-session = "{home}/session"
        save-session-interval = 60
        log = "{home}/aria2c.log"
        log-level = "notice"
        console-log-level = "warn"
        summary-interval = 0
        seed-ratio = 0.0
        seed-time = 120.5
        bt-max-peers = 30
        bt-request-peer-speed-limit = "100K"
        max-overall-upload-limit = "10M"
        max-upload-limit = "1M"
        max-download-limit = 2048
        bt-stop-timeout = 600
        bt-seed-unverified = true
        force-save = true
        continue = true
        check-integrity = true
        file-allocation = "none"
        disk-cache = "32M"
        enable-dht6 = false
        bt-enable-lpd = false
        bt-lpd-interface = "lo"
        bt-external-ip = "192.0.2.10"
        dht-entry-point = "192.0.2.11:{bt}"
        all-proxy = "proxy.example.org:3128"
        all-proxy-user = "alice"
        all-proxy-passwd = "proxy-password-1"
        no-proxy = "localhost,10.0.0.0/8"
        bt-tracker-interval = 0
        bt-max-open-files = 50
        max-concurrent-downloads = 3
        bt-detach-seed-only = true
        follow-torrent = "mem"
        rpc-max-request-size = "4M"
        auto-save-interval = 30
        daemon = false
        quiet = true
        show-console-readout = false
        disable-ipv6 = true
        interface = "lo"
        """))
    out, err = io.StringIO(), io.StringIO()
    assert main(["render", "--site", str(site_toml), "--out", str(root / "out")], out=out, err=err) == 0, err.getvalue()
    conf = root / "out" / f"{HOST}.conf"
    rendered = render(load_site(site_toml), HOST)
    daemon = Daemon(aria2c_binary, conf, int(rendered.options["rpc-listen-port"]), rendered.options["rpc-secret"], home)
    try:
        yield daemon, rendered, conf
    finally:
        daemon.close()


def test_written_file_is_0600_and_the_rendered_text(started: tuple[Daemon, Rendered, Path]) -> None:
    _, rendered, conf = started
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert conf.read_text() == rendered.text
    assert len(rendered.options) >= 50


def test_daemon_reports_exactly_the_intended_options(started: tuple[Daemon, Rendered, Path]) -> None:
    daemon, rendered, _ = started
    live = daemon.call("aria2.getGlobalOption")["result"]
    expected = {k: aria2_form(k, v) for k, v in rendered.options.items() if k not in HIDDEN_OVER_RPC}
    reported = {k: live.get(k) for k in expected}
    assert reported == expected
    assert "rpc-secret" not in live  # aria2 never reports it ...


def test_the_generated_secret_is_what_guards_rpc(started: tuple[Daemon, Rendered, Path]) -> None:
    daemon, rendered, _ = started
    # ... so prove it the other way: the rendered secret opens RPC, anything else does not
    assert "result" in daemon.call("aria2.getVersion")
    refused = daemon.call("aria2.getVersion", token="wrong" + rendered.options["rpc-secret"])
    assert refused.get("error", {}).get("message") == "Unauthorized"


def _alternative(name: str, current: str | None, tmp: Path) -> str:
    spec = CATALOGUE[name]
    if spec.kind is Kind.PATH:
        return f"{tmp}/{name}.alt"
    for value in GOOD[name]:
        text = to_text(spec, value, "t")
        if text and text != "-" and aria2_form(name, text) != current:
            return text
    raise AssertionError(f"no alternative value for {name}")  # pragma: no cover


def test_live_flags_match_what_changeGlobalOption_really_does(started: tuple[Daemon, Rendered, Path], tmp_path: Path) -> None:
    """aria2 answers OK to every change and silently drops the ones it cannot make live.

    A paused download to 127.0.0.1 added before the changes and one added after tell
    "new downloads" options (the old download keeps its value, the new one gets the new
    value) from "live" ones (daemon-wide, not download options at all).
    """
    daemon, rendered, _ = started
    before_gid = daemon.call("aria2.addUri", ["http://127.0.0.1:9/before"], {"pause": "true"})["result"]
    wrong = []
    changed_to: dict[str, tuple[str | None, str]] = {}
    for name, spec in CATALOGUE.items():
        if name == "rpc-secret":
            continue
        before = daemon.call("aria2.getGlobalOption")["result"].get(name)
        value = _alternative(name, before, tmp_path)
        assert daemon.call("aria2.changeGlobalOption", {name: value}).get("result") == "OK", name
        after = daemon.call("aria2.getGlobalOption")["result"].get(name)
        changed = after == aria2_form(name, value)
        changed_to[name] = (before, aria2_form(name, value))
        if changed != (spec.applies is not Applies.RESTART):
            wrong.append(f"{name}: catalogue says {spec.applies.value}, changeGlobalOption {'applied' if changed else 'ignored'} it")
    after_gid = daemon.call("aria2.addUri", ["http://127.0.0.1:9/after"], {"pause": "true"})["result"]
    old = daemon.call("aria2.getOption", before_gid)["result"]
    new = daemon.call("aria2.getOption", after_gid)["result"]
    for name, spec in CATALOGUE.items():
        if name not in changed_to:
            continue
        was, now = changed_to[name]
        if spec.applies is Applies.NEW_DOWNLOADS and (old.get(name) != was or new.get(name) != now):
            wrong.append(f"{name}: not a new-downloads option: old download has {old.get(name)!r}, new one {new.get(name)!r}")
        if spec.applies is Applies.LIVE and (name in old or name in new):
            wrong.append(f"{name}: not daemon-wide: downloads carry it")
    assert wrong == []
    daemon.call("aria2.remove", before_gid)
    daemon.call("aria2.remove", after_gid)
    # rpc-secret cannot be read back: prove it stays by using the old one after a change
    daemon.call("aria2.changeGlobalOption", {"rpc-secret": "another-secret-value-1234567890"})
    assert "result" in daemon.call("aria2.getVersion")
    assert CATALOGUE["rpc-secret"].applies is Applies.RESTART


def test_lenient_parser_reads_a_messy_file_as_aria2_does(aria2c_binary: str, tmp_path: Path) -> None:
    port = free_port()
    secret = "messy-file-secret-0123456789abcdef"
    messy = (
        "# a comment\n"
        "  seed-ratio = 2.5 \n"
        "bt-max-peers=10\n"
        "bt-max-peers=12\n"
        "max-upload-limit =\t64K\r\n"
        f"enable-rpc=true\nrpc-listen-port={port}\nrpc-secret={secret}\n"
        f"dir={tmp_path}/d\nrpc-listen-all=false\nlog-level=warn\n"
    )
    conf = tmp_path / "messy.conf"
    conf.write_text(messy)
    conf.chmod(0o600)
    daemon = Daemon(aria2c_binary, conf, port, secret, tmp_path)
    try:
        live = daemon.call("aria2.getGlobalOption")["result"]
    finally:
        daemon.close()
    ours = parse_conf(messy, strict=False)
    assert ours["seed-ratio"] == "2.5" and ours["bt-max-peers"] == "12" and ours["max-upload-limit"] == "64K"
    assert {k: aria2_form(k, v) for k, v in ours.items() if k not in HIDDEN_OVER_RPC} == {k: live[k] for k in ours if k not in HIDDEN_OVER_RPC}


def test_check_with_aria2c_accepts_the_rendered_file(started: tuple[Daemon, Rendered, Path], aria2c_binary: str) -> None:
    from siteadmin.aria2conf import check_with_aria2c

    _, rendered, _ = started
    assert check_with_aria2c(rendered.text, secrets=rendered.secrets, binary=aria2c_binary) == []
