"""Shared tables and fixtures of the aria2conf tests.

GOOD and BAD list values for every catalogue option. A BAD entry says whether aria2c 1.36
itself refuses the value when it reads it from a conf file (True), accepts it although
siteadmin refuses it (False: siteadmin is stricter there, measured), or whether the value has
no conf text at all because its TOML type is wrong (None).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.lab.netns import free_port as free_port  # the tests import it from here
from siteadmin.site import Site, load_site

ANY_PATH = "/var/lib/aria2/x"

GOOD: dict[str, list[Any]] = {
    "listen-port": ["6881-6999", "6881", "6881,6890-6899", 6881, "1024", "65535"],
    "bt-tracker": ["http://tracker.example.org:8088/announce", "udp://10.0.0.1:6969/announce,https://t.example.org/a", ""],
    "bt-exclude-tracker": ["*", "http://t.example.org/announce", ""],
    "bt-tracker-interval": [0, "1800"],
    "bt-external-ip": ["192.0.2.10", "2001:db8::1"],
    "bt-max-peers": [0, 55, "200"],
    "bt-request-peer-speed-limit": ["50K", "1M", 0, "1024", "10k", "2m"],
    "bt-max-open-files": [1, "100"],
    "seed-ratio": [0.0, 1.5, "1.0", 2, "0"],
    "seed-time": [0, 60, "0.5", 1.25],
    "bt-stop-timeout": [0, "600"],
    "timeout": [1, 600, "300"],
    "bt-seed-unverified": [True, False, "true"],
    "bt-hash-check-seed": [True, "false"],
    "bt-detach-seed-only": [False, "true"],
    "bt-require-crypto": [True, "false"],
    "bt-min-crypto-level": ["plain", "arc4"],
    "follow-torrent": ["true", "mem", "false", True, False],
    "enable-dht": [True, False],
    "enable-dht6": [False, "true"],
    "dht-listen-port": ["6881-6999", "7000", 7001],
    "dht-entry-point": ["wn001.example.org:6881", "192.0.2.1:6881"],
    "dht-file-path": ["/var/lib/aria2/dht.dat"],
    "dht-file-path6": ["/var/lib/aria2/dht6.dat"],
    "enable-peer-exchange": [True, "false"],
    "bt-enable-lpd": [True, False],
    "bt-lpd-interface": ["eth0", "ens3f0.100", "192.0.2.10"],
    "max-overall-upload-limit": ["100M", 0, "512K"],
    "max-overall-download-limit": ["0", "20M", 1048576],
    "max-upload-limit": ["1M", 0],
    "max-download-limit": ["2M", "0"],
    "max-concurrent-downloads": [1, "5"],
    "all-proxy": ["http://proxy.example.org:3128", "proxy.example.org:3128", "10.0.0.1", "", "http://u:p@proxy.example.org:3128"],
    "all-proxy-user": ["alice", "dave"],
    "all-proxy-passwd": ["s3cr=t#1;x", "other"],
    "http-proxy": ["http://10.0.0.1:3128", ""],
    "http-proxy-user": ["bob"],
    "http-proxy-passwd": ["pw"],
    "https-proxy": ["http://proxy.example.org:8080/"],
    "https-proxy-user": ["carol"],
    "https-proxy-passwd": ["p w"],
    "no-proxy": ["localhost,.cern.ch,10.0.0.0/8", "wn001.example.org", ""],
    "enable-rpc": [True, False],
    "rpc-listen-port": [6800, "1024", 65535],
    "rpc-listen-all": [False, "true"],
    "rpc-secret": ["aR9sKd82hsK_2-d8e7sLs0dk29sLd0Qx", "a=b"],
    "rpc-allow-origin-all": [False, True],
    "rpc-max-request-size": ["2M", 0],
    "dir": ["/var/lib/aria2/downloads"],
    "input-file": ["/var/lib/aria2/session", "-"],
    "save-session": ["/var/lib/aria2/session"],
    "save-session-interval": [0, 60],
    "force-save": [True, False],
    "auto-save-interval": [0, 600, "60"],
    "continue": [True, False],
    "check-integrity": [True, "false"],
    "file-allocation": ["none", "prealloc", "trunc", "falloc"],
    "disk-cache": ["16M", 0, "64K"],
    "enable-mmap": [False, True],
    "log": ["/var/log/aria2c/aria2c.log", "-"],
    "log-level": ["notice", "warn", "error", "info", "debug"],
    "console-log-level": ["notice", "error"],
    "summary-interval": [0, 60, 2147483647],
    "quiet": [True, False],
    "show-console-readout": [False, True],
    "daemon": [False, True],
    "interface": ["lo", "127.0.0.1"],
    "disable-ipv6": [True, False],
}

BAD: dict[str, list[tuple[Any, bool | None]]] = {
    "listen-port": [
        ("1023", True), ("65536", True), ("6881-", True), ("0", True), ("abc", True),
        ("6881-6880", False), ("6881,,6882", False), (True, None), ("", False),
    ],
    "bt-tracker": [("ftp://t.example.org/announce", False), ("not a uri", False), ("http://", False)],
    "bt-exclude-tracker": [("**", False), ("tracker", False)],
    "bt-tracker-interval": [("-1", True), ("1.5", True), ("x", True), (1.0, None)],
    "bt-external-ip": [("abc", False), ("999.1.1.1", False), ("host.example.org", False)],
    "bt-max-peers": [("-1", True), ("ten", True), (True, None), (5.5, None)],
    "bt-request-peer-speed-limit": [("1G", True), ("1.5M", True), ("-1", True), ("50 K", False), ("0x10", True)],
    "bt-max-open-files": [("0", True), ("x", True)],
    "seed-ratio": [("-1", True), ("nan", True), ("inf", False), ("1e3", False), ("ratio", False), (True, None), (".5", False)],
    "seed-time": [("-1", True), ("abc", False), (False, None)],
    "bt-stop-timeout": [("-5", True), ("5s", True)],
    "timeout": [("0", True), ("601", True), ("5s", True)],
    "bt-seed-unverified": [("yes", True), ("True", True), ("1", True), (1, None), ("", False)],
    "bt-hash-check-seed": [("no", True)],
    "bt-detach-seed-only": [("on", True)],
    "bt-require-crypto": [("maybe", True)],
    "bt-min-crypto-level": [("aes", True), ("ARC4", True)],
    "follow-torrent": [("disk", True), (1, None)],
    "enable-dht": [("yes", True), (1, None), ("TRUE", True)],
    "enable-dht6": [("off", True)],
    "dht-listen-port": [("80", True), ("6881-70000", True), ("", False)],
    "dht-entry-point": [("host", False), ("host:0", False), ("host:65536", True), (":6881", True), ("bad host:1", False)],
    "dht-file-path": [("dht.dat", False), ("", False), (" /x", False)],
    "dht-file-path6": [("relative/dht6.dat", False)],
    "enable-peer-exchange": [("nope", True)],
    "bt-enable-lpd": [("enabled", True)],
    "bt-lpd-interface": [("eth0 ", False), ("a-very-long-interface-name", False), ("eth/0", False)],
    "max-overall-upload-limit": [("10G", True), ("fast", True), ("-1", True), (1.5, None)],
    "max-overall-download-limit": [("1T", True)],
    "max-upload-limit": [("1 M", False)],
    "max-download-limit": [("-2M", True)],
    "max-concurrent-downloads": [("0", True), ("many", True)],
    "all-proxy": [("socks5://p.example.org:1080", True), ("http://p.example.org:99999", True), ("http://", True), ("ftp://p.example.org:21", False),
                  ("https://proxy.example.org", False)],
    "all-proxy-user": [(" alice", False), ("", False)],
    "all-proxy-passwd": [("", False), ("pw ", False)],
    "http-proxy": [("http://proxy:3128/path", False)],
    "http-proxy-user": [(5, None)],
    "http-proxy-passwd": [(True, None)],
    "https-proxy": [("socks4://p:1", True)],
    "https-proxy-user": [("\tcarol", False)],
    "https-proxy-passwd": [(" ", False)],
    "no-proxy": [("a,,b", False), ("10.0.0.0/33", False), ("bad host", False)],
    "enable-rpc": [("1", True)],
    "rpc-listen-port": [("80", True), ("65536", True), ("6800-6801", True), (True, None)],
    "rpc-listen-all": [("all", True)],
    "rpc-secret": [("", True), (" padded", False), (123456, None)],
    "rpc-allow-origin-all": [("*", True)],
    "rpc-max-request-size": [("2G", True)],
    "dir": [("downloads", False), ("", False)],
    "input-file": [("session.txt", False)],
    "save-session": [("session", False)],
    "save-session-interval": [("-1", True), ("1m", True)],
    "force-save": [("always", True)],
    "auto-save-interval": [("601", True), ("-1", True)],
    "continue": [("resume", True)],
    "check-integrity": [("full", True)],
    "file-allocation": [("fallocate", True), ("None", True), ("", True)],
    "disk-cache": [("1G", True), ("1e3", True), ("big", True)],
    "enable-mmap": [("mmap", True)],
    "log": [("aria2c.log", False), ("", False)],
    "log-level": [("Notice", True), ("trace", True), ("", True), ("warning", True)],
    "console-log-level": [("verbose", True)],
    "summary-interval": [("2147483648", True), ("-1", True)],
    "quiet": [("silent", True)],
    "show-console-readout": [("no", True)],
    "daemon": [("fork", True)],
    "interface": [("eth0 ", False), ("eth/0", False), ("", False)],
    "disable-ipv6": [("yes", True)],
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "good_case" in metafunc.fixturenames:
        cases = [(name, value) for name, values in GOOD.items() for value in values]
        metafunc.parametrize("good_case", cases, ids=[f"{n}={v!r}" for n, v in cases])
    if "bad_case" in metafunc.fixturenames:
        bad = [(name, value, aria2) for name, values in BAD.items() for value, aria2 in values]
        metafunc.parametrize("bad_case", bad, ids=[f"{n}={v!r}" for n, v, _ in bad])


@pytest.fixture
def good_table() -> dict[str, list[Any]]:
    return GOOD


@pytest.fixture
def bad_table() -> dict[str, list[tuple[Any, bool | None]]]:
    return BAD


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HOME, so no secret file lands in the real one."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SITEADMIN_SITE", raising=False)
    return home


SiteFactory = Callable[[str], Site]


@pytest.fixture
def make_site(tmp_path: Path) -> SiteFactory:
    """Write a site.toml (dedented) into a fresh dir and load it."""
    counter = iter(range(1000))

    def make(text: str) -> Site:
        folder = tmp_path / f"site{next(counter)}"
        folder.mkdir()
        path = folder / "site.toml"
        path.touch(mode=0o600)  # some of these configs hold a secret inline, which only a 0600 file may
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_site(path)

    return make


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def aria2c_binary() -> Iterator[str]:
    from siteadmin.aria2conf import aria2c_path

    path = aria2c_path()
    assert path is not None, "aria2c must be installed for these tests (apt-get install aria2)"
    assert os.access(path, os.X_OK)
    yield path


class Daemon:
    """A real aria2c started on a conf file, spoken to over JSON-RPC on 127.0.0.1.

    The secret travels in the request body only; argv holds nothing but the conf path.
    """

    def __init__(self, binary: str, conf: Path, port: int, secret: str, home: Path) -> None:
        import subprocess

        self.port = port
        self.secret = secret
        self.log = (home / "aria2c.stderr").open("w")
        self.proc = subprocess.Popen(
            [binary, f"--conf-path={conf}"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, cwd=home,
            env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
        )
        self._wait_ready()

    def call(self, method: str, *params: Any, token: str | None = None) -> dict[str, Any]:
        import json
        import urllib.error
        import urllib.request

        body = json.dumps({"jsonrpc": "2.0", "id": "t", "method": method, "params": [f"token:{token or self.secret}", *params]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/jsonrpc", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - fixed http://127.0.0.1 URL
                answer: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            with exc:
                answer = json.load(exc)
        return answer

    def _wait_ready(self) -> None:
        import time

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise AssertionError(f"aria2c exited with {self.proc.returncode}")
            try:
                if "result" in self.call("aria2.getVersion"):
                    return
            except OSError:
                time.sleep(0.01)
        self.close()
        raise AssertionError("aria2c RPC did not come up within 10 s")

    def close(self) -> None:
        import subprocess

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
