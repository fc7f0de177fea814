"""Good and bad values for every catalogue option, against siteadmin's checks and aria2c's own."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from siteadmin.aria2conf import CATALOGUE, check_option, check_with_aria2c
from siteadmin.aria2conf.catalogue import Kind, aria2_form, mask_value, size_in_bytes
from siteadmin.aria2conf.validate import to_text
from siteadmin.errors import ConfigError
from siteadmin.secrets import MASK


def test_every_option_has_good_and_bad_cases(good_table: dict[str, list[Any]], bad_table: dict[str, list[Any]]) -> None:
    assert set(good_table) == set(CATALOGUE)
    assert set(bad_table) == set(CATALOGUE)
    assert all(good_table[n] and bad_table[n] for n in CATALOGUE)


def test_catalogue_covers_the_required_options() -> None:
    required = """listen-port dht-listen-port enable-dht enable-dht6 dht-entry-point dht-file-path enable-peer-exchange
    bt-enable-lpd bt-lpd-interface bt-external-ip bt-tracker bt-max-peers bt-request-peer-speed-limit seed-ratio seed-time
    bt-stop-timeout max-overall-upload-limit max-overall-download-limit max-upload-limit all-proxy all-proxy-user
    all-proxy-passwd http-proxy http-proxy-user http-proxy-passwd https-proxy https-proxy-user https-proxy-passwd no-proxy
    enable-rpc rpc-listen-port rpc-listen-all rpc-secret rpc-allow-origin-all dir save-session input-file continue
    check-integrity file-allocation disk-cache log log-level daemon bt-seed-unverified force-save save-session-interval quiet""".split()
    assert sorted(set(required) - set(CATALOGUE)) == []
    assert {n for n, s in CATALOGUE.items() if s.secret} == {"rpc-secret", "all-proxy-passwd", "http-proxy-passwd", "https-proxy-passwd"}


def test_good_value_is_accepted(good_case: tuple[str, Any]) -> None:
    name, value = good_case
    key, text = check_option(name, value, "site: [aria2c.options]")
    assert key == name
    assert isinstance(text, str)
    if isinstance(value, bool):
        assert text == ("true" if value else "false")
    elif isinstance(value, (int, float)):
        assert float(text) == value


def test_bad_value_is_refused_in_one_line(bad_case: tuple[str, Any, bool | None]) -> None:
    name, value, _ = bad_case
    with pytest.raises(ConfigError) as caught:
        check_option(name, value, "wn001: [aria2c.options]")
    message = caught.value.message
    assert "\n" not in message
    assert message.startswith("wn001: [aria2c.options]: " + name)
    assert "must" in message
    if CATALOGUE[name].secret and isinstance(value, str) and value.strip():
        assert value not in message


ARIA2C_AT_ONCE = 4
"""aria2c checks run side by side: each reads its own conf in its own temp dir."""

SAYS_ALONE = frozenset({"quiet", "console-log-level", "log", "log-level", "show-console-readout", "summary-interval", "daemon", "enable-rpc", "input-file"})
"""Options that change what aria2c prints or whether it stays to serve: checked one per conf, so
none of them can hide another option's complaint in a shared conf."""


def aria2c_verdicts(texts: list[str], binary: str) -> list[list[str]]:
    """``check_with_aria2c`` of each conf text, several aria2c at once; in the order given."""
    with ThreadPoolExecutor(ARIA2C_AT_ONCE) as pool:
        return list(pool.map(lambda text: check_with_aria2c(text, binary=binary), texts))


def test_aria2c_accepts_every_good_value(aria2c_binary: str, good_table: dict[str, list[Any]]) -> None:
    """Every good value of every option, read by aria2c. The i-th good values of the options that
    print nothing share one conf (aria2c checks each line on its own and complains about the
    first bad one); a conf aria2c complains about is checked again one line per conf, so a failure
    names the option and value."""
    lines = {(name, i): f"{name}={to_text(CATALOGUE[name], value, 't')}\n" for name, values in good_table.items() for i, value in enumerate(values)}
    shared: dict[int, list[tuple[str, int]]] = {}
    alone = []
    for name, i in lines:
        if name in SAYS_ALONE:
            alone.append([(name, i)])
        else:
            shared.setdefault(i, []).append((name, i))
    groups = [*shared.values(), *alone]
    verdicts = aria2c_verdicts(["".join(lines[key] for key in group) for group in groups], aria2c_binary)
    again = [key for group, problems in zip(groups, verdicts, strict=True) if problems for key in group]
    for key, problems in zip(again, aria2c_verdicts([lines[key] for key in again], aria2c_binary), strict=True):
        assert problems == [], lines[key].strip()
    assert sum(len(group) for group in groups) == sum(len(values) for values in good_table.values())


def test_aria2c_agrees_on_the_bad_values_it_checks(aria2c_binary: str, bad_table: dict[str, list[tuple[Any, bool | None]]]) -> None:
    """Where the table says aria2c refuses a value it does, naming the option; where it says
    aria2c swallows it (seed-time=abc, bt-external-ip=abc, ...) it does, so siteadmin's
    stricter check is what stops it. One value per conf: aria2c stops at the first it refuses."""
    cases = [(name, value, aria2_refuses) for name, values in bad_table.items() for value, aria2_refuses in values if aria2_refuses is not None]
    refused = accepted = 0
    for (name, value, aria2_refuses), problems in zip(cases, aria2c_verdicts([f"{n}={v}\n" for n, v, _ in cases], aria2c_binary), strict=True):
        if aria2_refuses:
            refused += 1
            assert problems, f"aria2c accepted {name}={value!r}"
            assert any(name in p for p in problems), problems
        else:
            accepted += 1
            assert problems == [], f"aria2c now refuses {name}={value!r}: {problems}; update the table"
    assert refused > 60 and accepted > 30


def test_aria2c_check_catches_an_unknown_option_without_echoing_the_value(aria2c_binary: str) -> None:
    problems = check_with_aria2c("rpc-secrt=hunter2-very-secret\n", binary=aria2c_binary)
    assert problems == ["aria2c: unknown option rpc-secrt"]
    assert "hunter2" not in " ".join(problems)


def test_aria2c_check_masks_secrets_it_echoes(aria2c_binary: str) -> None:
    problems = check_with_aria2c("top-secret-token\n", secrets=["top-secret-token"], binary=aria2c_binary)
    assert problems and all("top-secret-token" not in p for p in problems)
    assert MASK in problems[0]


def test_aria2c_check_reports_aria2s_reason(aria2c_binary: str) -> None:
    assert check_with_aria2c("listen-port=80\n", binary=aria2c_binary) == ["aria2c: listen-port: listen-port must be between 1024 and 65535."]


def test_aria2c_check_starts_nothing(aria2c_binary: str, tmp_path: Any, port: int) -> None:
    """A profile that would start an RPC server, fork and load a session still only gets read."""
    session = tmp_path / "session"
    session.write_text("http://127.0.0.1:1/never\n")
    log = tmp_path / "aria2c.log"
    text = f"enable-rpc=true\nrpc-listen-port={port}\ndaemon=true\ninput-file={session}\nlog={log}\nsave-session={tmp_path}/out\n"
    assert check_with_aria2c(text, binary=aria2c_binary) == []
    assert not log.exists() and not (tmp_path / "out").exists()
    import socket

    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_missing_aria2c_is_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from siteadmin.aria2conf import aria2c_path

    monkeypatch.setenv("SITEADMIN_ARIA2C", "/nonexistent/aria2c")
    assert aria2c_path() is None
    assert check_with_aria2c("listen-port=80\n") == []


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("16M", 16 * 1024 * 1024), ("512K", 524288), ("3k", 3072), ("2m", 2097152)])
def test_size_in_bytes(text: str, size: int) -> None:
    assert size_in_bytes(text) == size
    assert aria2_form("disk-cache", text) == str(size)


def test_aria2_form_of_proxies_and_plain_values() -> None:
    assert aria2_form("all-proxy", "proxy.example.org:3128") == "http://proxy.example.org:3128/"
    assert aria2_form("all-proxy", "http://p:1/") == "http://p:1/"
    assert aria2_form("all-proxy", "") == ""
    assert aria2_form("seed-ratio", "1") == "1"


def test_mask_value() -> None:
    assert mask_value("rpc-secret", "abc") == MASK
    assert mask_value("http-proxy", "http://user:pw@p:1") == f"http://user:{MASK}@p:1"
    assert mask_value("http-proxy", "http://p:1") == "http://p:1"
    assert mask_value("dir", "/x") == "/x"


def test_every_kind_is_used() -> None:
    assert {s.kind for s in CATALOGUE.values()} == set(Kind)
