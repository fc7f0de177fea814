"""The rollout's pure parts: classification, live-or-restart marking, masked diffs, batch sizes, the CLI's options
(the WN lock's content: tests/unit/test_wnlock_pure.py)."""

from __future__ import annotations

import io

import pytest

from siteadmin.cli.apply import ProgressLine, parse_batch, parse_percent
from siteadmin.errors import UsageError
from siteadmin.inventory import CONFIG_PATH_PLACEHOLDER, config_path_for, restart_command_for
from siteadmin.remote.fanout import Batches, HostResult, Progress
from siteadmin.rollout import changes as p
from siteadmin.rollout.service import HostReport, RolloutError, describe, downloads_in_flight, summary
from siteadmin.site import site_from_mapping

SECRET = "f3c1a0b9e8d7c6b5a4f3e2d1c0b9a8f7"


def conf(**options: str) -> bytes:
    return "".join(f"{k.replace('_', '-')}={v}\n" for k, v in options.items()).encode()


def test_classify_new_unchanged_changed() -> None:
    assert p.classify(None, b"a=1\n") == p.NEW
    assert p.classify(b"a=1\n", b"a=1\n") == p.UNCHANGED
    assert p.classify(b"a=1\n", b"a=2\n") == p.CHANGED
    assert p.classify(b"", b"a=1\n") == p.CHANGED  # an empty file is a file


def test_each_changed_option_is_marked_by_the_catalogue() -> None:
    before = p.read_options(conf(max_overall_upload_limit="1M", disk_cache="16M", seed_ratio="1.0", log_level="notice"))
    after = p.read_options(conf(max_overall_upload_limit="2M", disk_cache="32M", seed_ratio="0.0", log_level="notice"))
    changes = {c.name: c.applies for c in p.option_changes(before, after)}
    assert changes == {"max-overall-upload-limit": p.LIVE, "disk-cache": p.RESTART, "seed-ratio": p.NEW_DOWNLOADS}


def test_reload_kind_is_rpc_only_when_every_change_can_go_over_rpc() -> None:
    live = p.option_changes({"max-overall-upload-limit": "1M"}, {"max-overall-upload-limit": "2M"})
    mixed = p.option_changes({"max-overall-upload-limit": "1M", "disk-cache": "16M"}, {"max-overall-upload-limit": "2M", "disk-cache": "8M"})
    assert p.reload_kind([]) == p.RELOAD_NONE
    assert p.reload_kind(live) == p.RELOAD_RPC
    assert p.reload_kind(p.option_changes({}, {"seed-ratio": "0.0"})) == p.RELOAD_RPC
    assert p.reload_kind(mixed) == p.RELOAD_RESTART


def test_a_removed_option_goes_back_to_aria2s_default_or_needs_a_restart() -> None:
    (limit,) = p.option_changes({"max-overall-upload-limit": "1M"}, {})
    assert (limit.after, limit.rpc_value, limit.applies) == (None, "0", p.LIVE)
    (log,) = p.option_changes({"log": "/var/log/aria2/aria2c.log"}, {})  # no default: only a restart unsets it
    assert log.applies == p.RESTART
    (unknown,) = p.option_changes({"no-such-option": "1"}, {})
    assert unknown.applies == p.RESTART
    assert p.reload_kind([limit]) == p.RELOAD_RPC


def test_header_comments_alone_change_the_file_but_no_option() -> None:
    before, after = b"# hash aaa\nlog-level=notice\n", b"# hash bbb\nlog-level=notice\n"
    assert p.classify(before, after) == p.CHANGED
    assert p.option_changes(p.read_options(before), p.read_options(after)) == []


def test_diff_masks_secret_options_and_known_secret_values_on_both_sides() -> None:
    before = conf(rpc_secret="old" + SECRET, all_proxy="http://user:hunter2@proxy:3128", log_level="notice")
    after = conf(rpc_secret=SECRET, all_proxy="http://user:hunter3@proxy:3128", log_level="warn") + f"# note {SECRET}\n".encode()
    diff = p.masked_diff(before, after, "/etc/aria2/aria2c.conf", [SECRET])
    assert diff.startswith("--- /etc/aria2/aria2c.conf\n+++ /etc/aria2/aria2c.conf\n")
    assert "+log-level=warn" in diff and "-log-level=notice" in diff
    for value in (SECRET, "hunter2", "hunter3"):
        assert value not in diff
    assert "rpc-secret=********" in diff
    assert p.masked_diff(after, after, "/x", [SECRET]) == ""
    assert p.masked_diff(None, after, "/x", [SECRET]).startswith("--- /dev/null\n+++ /x\n")


def test_option_changes_shown_with_secrets_masked() -> None:
    (change,) = p.option_changes({"rpc-secret": "a" + SECRET}, {"rpc-secret": SECRET})
    assert change.masked() == {"option": "rpc-secret", "before": "********", "after": "********", "applies": p.RESTART}


def test_read_back_compares_in_the_form_aria2_reports() -> None:
    expected = p.expected_over_rpc({"max-overall-upload-limit": "3M", "rpc-secret": SECRET, "all-proxy": "proxy:3128"})
    assert expected == {"max-overall-upload-limit": "3145728", "all-proxy": "http://proxy:3128/"}
    assert p.mismatches(expected, {"max-overall-upload-limit": "3145728", "all-proxy": "http://proxy:3128/"}) == []
    assert p.mismatches(expected, {"max-overall-upload-limit": "0"}) == ["max-overall-upload-limit", "all-proxy"]


def test_a_seeding_download_is_not_in_flight() -> None:
    active = [
        {"gid": "a", "status": "active", "completedLength": "100", "totalLength": "100"},  # seeding
        {"gid": "b", "status": "active", "completedLength": "10", "totalLength": "100"},
        {"gid": "c", "status": "active", "completedLength": "0", "totalLength": "0"},  # metadata not fetched yet
    ]
    assert downloads_in_flight(active) == ["b", "c"]
    assert downloads_in_flight(active[:1]) == []


def test_batch_percentages_become_counts_rounded_up() -> None:
    assert Batches("20%").count(200) == 40
    assert Batches("20%").count(7) == 2
    assert Batches("1%").count(3) == 1
    assert Batches("100%").split(list(range(5))) == [[0, 1, 2, 3, 4]]
    assert Batches("50%").split(list(range(5))) == [[0, 1, 2], [3, 4]]
    assert Batches.from_site(site_from_mapping({"rollout": {"batch_size": "25%"}})).count(8) == 2


@pytest.mark.parametrize("size", ["0%", "101%", "%", "-5%", "abc%"])
def test_a_bad_batch_percentage_is_one_line(size: str) -> None:
    with pytest.raises(UsageError, match=r"^batch size .*: must be a percentage of the WNs above 0 and at most 100"):
        Batches(size)


def test_cli_batch_and_max_fail_options() -> None:
    assert parse_batch(None, 10) == 10
    assert parse_batch("5", 10) == 5
    assert parse_batch("20%", 10) == "20%"
    assert parse_percent("20%", 10.0) == 20.0
    assert parse_percent("0", 10.0) == 0.0
    assert parse_percent(None, 10.0) == 10.0
    for bad in ("0", "x", "150%", "-1"):
        with pytest.raises(UsageError, match=r"^--batch "):
            parse_batch(bad, 10)
    for bad in ("101", "x%", "nan"):
        with pytest.raises(UsageError, match=r"^--max-fail "):
            parse_percent(bad, 10.0)


def test_config_path_and_restart_command_per_wn() -> None:
    site = site_from_mapping(
        {
            "wns": {"hosts": ["wn[1-2].x"], "nodes": {"wn2.x": {"config_path": "/srv/wn 2/aria2c.conf"}}},
            "rollout": {"restart_command": f"svc restart {CONFIG_PATH_PLACEHOLDER} ${{HOME}}"},
        }
    )
    assert config_path_for(site, "wn1.x") == "/etc/aria2/aria2c.conf"
    assert config_path_for(site, "wn2.x") == "/srv/wn 2/aria2c.conf"
    assert restart_command_for(site, "wn2.x") == "svc restart '/srv/wn 2/aria2c.conf' ${HOME}"


def test_summary_folds_successes_by_label_and_failures_by_outcome() -> None:
    def ok(host: str, outcome: str, reload: str = p.RELOAD_NONE, reloaded: str = "") -> HostResult[HostReport]:
        return HostResult(host, True, HostReport(host, "/c", outcome, "a", "b", reload=reload, reloaded=reloaded), None, 0.1)

    def failed(host: str, outcome: str, message: str) -> HostResult[HostReport]:
        exc = RolloutError(host, message, outcome=outcome)
        return HostResult(host, False, None, exc.one_line(), 0.1, outcome, "rollout", exc)

    results = [
        ok("wn001", p.UNCHANGED),
        ok("wn002", p.UNCHANGED),
        ok("wn003", p.CHANGED, p.RELOAD_RPC, "rpc"),
        ok("wn004", p.CHANGED, p.RELOAD_RESTART, "restarted"),
        failed("wn005", "failed: validation", "new /c refused by aria2c: listen-port"),
        failed("wn006", "failed: validation", "new /c refused by aria2c: listen-port"),
        failed("wn007", "locked", "locked: /c.siteadmin-lock held by x@y"),
    ]
    assert summary(results) == [
        ("wn[001-002]", "unchanged"),
        ("wn003", "changed (live)"),
        ("wn004", "changed (restarted)"),
        ("wn[005-006]", "failed: validation: new /c refused by aria2c: listen-port"),
        ("wn007", "locked: /c.siteadmin-lock held by x@y"),
    ]
    assert describe(HostResult("wn8", False, None, "wn8: x", 0.0, "not started", "aborted")) == "not started"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_only() -> None:
    def step(done: int, ok: bool) -> Progress[HostReport]:
        result: HostResult[HostReport] = HostResult(f"wn{done}", ok, None, None if ok else "x", 0.0, "ok" if ok else "unreachable")
        return Progress(result, done, 3, 1, 2)

    terminal, pipe = _Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        line = ProgressLine(stream)
        line(step(1, True))
        line(step(2, False))
        line.clear()
    assert pipe.getvalue() == ""
    shown = terminal.getvalue()
    assert "\r\x1b[K1/3 WNs, 0 failed" in shown and "2/3 WNs, 1 failed" in shown and "batch 1/2" in shown
    assert shown.endswith("\r\x1b[K")
