"""The pure parts of ``siteadmin switch``: the step machine and its undo order (steps are plain callables),
what a rollout's undo must put back, the preflight's verdict, the audit look-ups, the CE's WNs, the
audit ids a switch links, and the command's refusals that need no site."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from siteadmin import audit
from siteadmin import switch as sw
from siteadmin.audit import AuditRecord
from siteadmin.cli import main
from siteadmin.errors import ConfigError, ExitCode, InventoryError, ServiceUnreachable
from siteadmin.preflight import CheckReport, Finding
from siteadmin.remote.fanout import HostResult
from siteadmin.rollout import BUSY, VALIDATION, HostReport, RolloutError, RolloutRun
from siteadmin.site import site_from_mapping

# ---------------------------------------------------------------- the step machine


class Log:
    """What ran, in order: ``run <name>`` and ``undo <name>``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def step(self, name: str, *, fail: BaseException | None = None, undo: bool = True, partial: bool = False,
             then: Callable[[], None] | None = None) -> sw.Step:
        def undo_it() -> sw.StepOutcome:
            self.calls.append(f"undo {name}")
            return sw.StepOutcome(f"undid {name}")

        def run() -> sw.StepOutcome:
            self.calls.append(f"run {name}")
            if then is not None:
                then()
            if fail is not None:
                if partial and isinstance(fail, sw.StepFailed):
                    raise sw.StepFailed(fail.summary, outcome=fail.outcome, undo=undo_it)
                raise fail
            return sw.StepOutcome(f"{name} done", undo=undo_it if undo else None)

        return sw.Step(name, f"do {name}", run)


def test_every_step_runs_in_order_and_nothing_is_undone() -> None:
    log = Log()
    events: list[sw.SwitchEvent] = []
    machine = sw.run_steps([log.step("a"), log.step("b"), log.step("c")], ce="CE1", progress=events.append)
    assert log.calls == ["run a", "run b", "run c"]
    assert [s.outcome for s in machine.steps] == ["ok", "ok", "ok"]
    assert machine.failed is None and machine.undone == () and not machine.cancelled
    assert [(e.kind, e.step) for e in events] == [
        ("step-started", "a"), ("step-done", "a"), ("step-started", "b"), ("step-done", "b"), ("step-started", "c"), ("step-done", "c"),
    ]
    assert all(e.ce == "CE1" for e in events)


def test_a_failure_undoes_the_earlier_steps_newest_first_and_runs_no_later_step() -> None:
    log = Log()
    steps = [log.step("preflight", undo=False), log.step("rollout"), log.step("ldap"), log.step("wait", fail=sw.StepFailed("2 WNs not ready")),
             log.step("never")]
    machine = sw.run_steps(steps)
    assert log.calls == ["run preflight", "run rollout", "run ldap", "run wait", "undo ldap", "undo rollout"]
    assert [(s.step, s.outcome) for s in machine.steps] == [
        ("preflight", "ok"), ("rollout", "ok"), ("ldap", "ok"), ("wait", "failed"), ("never", "not run"),
    ]
    assert [(u.step, u.outcome) for u in machine.undone] == [("ldap", "undone"), ("rollout", "undone")]
    assert machine.failed is not None and machine.failed.step == "wait" and machine.undo_complete


def test_the_failing_steps_own_partial_undo_runs_first() -> None:
    log = Log()
    steps = [log.step("preflight", undo=False), log.step("rollout", fail=sw.StepFailed("1 of 4 WNs failed"), partial=True), log.step("ldap")]
    machine = sw.run_steps(steps)
    assert log.calls == ["run preflight", "run rollout", "undo rollout"]
    assert [u.step for u in machine.undone] == ["rollout"]


def test_a_blocked_preflight_changes_nothing_and_keeps_its_outcome() -> None:
    log = Log()
    machine = sw.run_steps([log.step("preflight", fail=sw.StepFailed("stopped", outcome=sw.BLOCKED)), log.step("rollout")])
    assert log.calls == ["run preflight"]
    assert machine.failed is not None and machine.failed.outcome == "blocked" and machine.undone == ()


def test_an_admin_error_keeps_its_exit_code_and_an_unexpected_one_is_named() -> None:
    log = Log()
    machine = sw.run_steps([log.step("rollout"), log.step("ldap", fail=ServiceUnreachable("ldaps://x: connection refused"))])
    assert machine.failed is not None and machine.failed.exit_code == ExitCode.UNREACHABLE
    assert "connection refused" in machine.failed.summary and log.calls[-1] == "undo rollout"

    log = Log()
    machine = sw.run_steps([log.step("rollout"), log.step("ldap", fail=ZeroDivisionError("boom"))])
    assert machine.failed is not None and machine.failed.summary == "internal error: ZeroDivisionError: boom"
    assert log.calls[-1] == "undo rollout"


def test_a_failed_undo_is_reported_and_the_older_undos_still_run() -> None:
    calls: list[str] = []

    def bad_undo() -> sw.StepOutcome:
        calls.append("undo ldap")
        raise ServiceUnreachable("LDAP went away")

    def ok_undo() -> sw.StepOutcome:
        calls.append("undo rollout")
        return sw.StepOutcome("rolled back")

    def fail() -> sw.StepOutcome:
        raise sw.StepFailed("not ready")

    steps = [sw.Step("rollout", "", lambda: sw.StepOutcome("ok", undo=ok_undo)), sw.Step("ldap", "", lambda: sw.StepOutcome("ok", undo=bad_undo)),
             sw.Step("wait", "", fail)]
    machine = sw.run_steps(steps)
    assert calls == ["undo ldap", "undo rollout"]
    assert [(u.step, u.outcome) for u in machine.undone] == [("ldap", "undo failed"), ("rollout", "undone")]
    assert "LDAP went away" in machine.undone[0].summary and not machine.undo_complete


def test_a_cancel_during_a_step_undoes_it_and_what_came_before() -> None:
    log = Log()
    cancel = threading.Event()
    steps = [log.step("rollout"), log.step("ldap", then=cancel.set), log.step("wait")]
    machine = sw.run_steps(steps, cancel=cancel)
    assert log.calls == ["run rollout", "run ldap", "undo ldap", "undo rollout"]
    assert machine.cancelled and [(s.step, s.outcome) for s in machine.steps] == [("rollout", "ok"), ("ldap", "ok"), ("wait", "cancelled")]


def test_a_cancel_before_the_first_step_runs_nothing() -> None:
    log = Log()
    cancel = threading.Event()
    cancel.set()
    machine = sw.run_steps([log.step("a"), log.step("b")], cancel=cancel)
    assert log.calls == [] and machine.cancelled
    assert [s.outcome for s in machine.steps] == ["cancelled", "not run"]


def test_ctrl_c_in_a_step_is_a_cancel_that_undoes() -> None:
    log = Log()
    machine = sw.run_steps([log.step("rollout"), log.step("ldap", fail=KeyboardInterrupt())])
    assert machine.cancelled and log.calls == ["run rollout", "run ldap", "undo rollout"]
    assert machine.steps[1].outcome == "cancelled" and machine.steps[1].exit_code == ExitCode.INTERRUPTED


# ---------------------------------------------------------------- what a rollout's undo puts back


def _result(host: str, outcome: str, *, ok: bool = True, backup: str | None = "20261201T140915.123Z-3f2a9c01d4e5",
            failure: str | None = None) -> HostResult[HostReport]:
    report = HostReport(host, "/etc/aria2/aria2c.conf", outcome, "a" * 64 if outcome != "new" else None, "b" * 64, backup=backup)
    if ok:
        return HostResult(host, True, report, None, 0.1)
    error = RolloutError(host, "it failed", outcome=failure, report=report)
    return HostResult(host, False, None, f"{host}: it failed", 0.1, failure or "failed", "rollout", error)


def test_a_rollouts_undo_puts_back_the_changed_wns_and_names_those_it_cannot() -> None:
    run = RolloutRun("apply", "r1", False, [
        _result("wn1", "changed", backup="g1"),
        _result("wn2", "unchanged", backup=None),
        _result("wn3", "changed", ok=False, failure=BUSY, backup="g3"),  # new file kept for the next restart
        _result("wn4", "changed", ok=False, failure=VALIDATION, backup="g4"),  # never installed
        _result("wn5", "new", backup=None),
        HostResult("wn6", False, None, "wn6: auth failed", 0.1, "auth failed", "auth"),
    ], 1.0)
    targets, cannot = sw.rollout_undo_targets(run)
    assert targets == {"wn1": "g1", "wn3": "g3"}
    assert cannot == ["wn5"]
    assert sw.by_generation({"wn1": "g1", "wn2": "g1", "wn3": "g3"}) == {"g1": ["wn1", "wn2"], "g3": ["wn3"]}


# ---------------------------------------------------------------- the preflight's verdict


def _report(*findings: Finding, unchecked: Mapping[str, str] | None = None) -> CheckReport:
    return CheckReport(checks=sw.PREFLIGHT_CHECKS, hosts=["wn1", "wn2"], findings=list(findings), unchecked=dict(unchecked or {}))


def test_the_preflight_verdict() -> None:
    warning = Finding("multicast", "warning", "wn1 -> wn2: 1 of 3 LPD announces lost")
    error = Finding("central", "error", "wn[1-2] -> tracker t:8088: timed out", "the tracker is unreachable", "nft add rule ...")
    assert sw.preflight_verdict(_report(), strict=False) == (True, [])
    go, lines = sw.preflight_verdict(_report(warning), strict=False)
    assert go and lines == ["warning: multicast: wn1 -> wn2: 1 of 3 LPD announces lost"]
    assert sw.preflight_verdict(_report(warning), strict=True)[0] is False
    go, lines = sw.preflight_verdict(_report(warning, error), strict=False)
    assert not go
    assert lines[:3] == ["error: central: wn[1-2] -> tracker t:8088: timed out", "    why: the tracker is unreachable", "    fix: nft add rule ..."]
    go, lines = sw.preflight_verdict(_report(unchecked={"wn2": "auth failed"}), strict=False)
    assert not go and lines == ["error: wn2: not checked: auth failed"]


# ---------------------------------------------------------------- audit look-ups


def _records(*events: dict[str, Any]) -> list[AuditRecord]:
    return [AuditRecord(n, e) for n, e in enumerate(events, 1)]


def test_restore_targets_come_from_the_last_switch_to_torrent_that_went_through() -> None:
    records = _records(
        {"id": "s1", "action": "switch", "site": "LAB", "ce": "CE1", "after": "Torrent", "outcome": "ok", "backups": {"wn1": "g-old"}},
        {"id": "s2", "action": "switch", "site": "LAB", "ce": "CE1", "after": "Torrent", "outcome": "ok", "backups": {"wn1": "g1", "wn2": "g2"}},
        {"id": "s3", "action": "switch", "site": "LAB", "ce": "CE1", "after": "Torrent", "outcome": "failed", "backups": {}},
        {"id": "o1", "action": "switch", "site": "LAB", "ce": "CE2", "after": "Torrent", "outcome": "ok", "backups": {"wn9": "g9"}},
        {"id": "b1", "action": "switch", "site": "LAB", "ce": "CE1", "after": "CVMFS", "outcome": "ok", "backups": {}},
    )
    assert sw.restore_targets(records, "lab", "ce1") == ({"wn1": "g1", "wn2": "g2"}, "s2")
    assert sw.restore_targets(records, "LAB", "CE3") is None
    assert sw.restore_targets([AuditRecord(1, None, "not JSON")], "LAB", "CE1") is None


def test_the_requested_method_is_the_last_ldif_request_of_that_ce() -> None:
    records = _records(
        {"id": "r1", "action": "switch", "site": "LAB", "ce": "CE1", "after": "Torrent", "outcome": "requested"},
        {"id": "r2", "action": "switch", "site": "LAB", "ce": "CE2", "after": "CVMFS", "outcome": "requested"},
    )
    assert sw.requested_method(records, "LAB", "CE1") == ("Torrent", "r1")
    assert sw.requested_method(records, "LAB", "CE4") is None


# ---------------------------------------------------------------- the CE's WNs


def _site(ces: Mapping[str, Any]) -> Any:
    return site_from_mapping({
        "site": {"name": "LAB"},
        "wns": {"hosts": ["wn[001-006].lab"], "groups": {"big": {"hosts": ["wn[005-006].lab"]}}},
        "ces": dict(ces),
    })


def test_a_ce_serves_its_wns_or_all_of_them() -> None:
    site = _site({"CE1": {"wns": ["wn[001-002].lab", "@big"]}, "CE2": {}})
    hosts, source = sw.ce_hosts(site, "ce1")
    assert hosts == ["wn001.lab", "wn002.lab", "wn005.lab", "wn006.lab"] and "wn[001-002].lab, @big" in source
    hosts, source = sw.ce_hosts(site, "CE2")
    assert len(hosts) == 6 and source.startswith("all WNs")
    assert len(sw.ce_hosts(site, "CE3")[0]) == 6


def test_a_ce_naming_a_host_outside_the_site_is_refused() -> None:
    with pytest.raises(InventoryError, match="not a WN of this site"):
        sw.ce_hosts(_site({"CE1": {"wns": ["wn999.lab"]}}), "CE1")


# ---------------------------------------------------------------- the switch's exit code and note


def _plan(to: str = "Torrent") -> sw.SwitchPlan:
    return sw.SwitchPlan(site="LAB", ce="CE1", dn="name=CE1", before=("CVMFS",), to=to, hosts=("wn1",), hosts_from="all", steps=())


@pytest.mark.parametrize(("outcome", "failed", "code"), [
    ("ok", None, 0), ("requested", None, 0), ("blocked", sw.StepResult("preflight", "", "blocked", "x", exit_code=1), 1),
    ("failed", sw.StepResult("ldap", "", "failed", "x", exit_code=ExitCode.UNREACHABLE), 3),
    ("cancelled", sw.StepResult("rollout", "", "cancelled", "x", exit_code=130), 130),
])
def test_the_switchs_exit_code(outcome: str, failed: sw.StepResult | None, code: int) -> None:
    result = sw.SwitchResult(_plan(), outcome, (failed,) if failed else (), ())
    assert result.exit_code == code


def test_success_names_alien_s_cache_delay_and_a_request_names_its_file() -> None:
    assert "600 s" in sw.SwitchResult(_plan(), "ok", (), ()).note
    plan = sw.SwitchPlan(site="LAB", ce="CE1", dn="d", before=("CVMFS",), to="Torrent", hosts=("wn1",), hosts_from="all", steps=(),
                         request_file=Path("/tmp/req.ldif"))
    note = sw.SwitchResult(plan, "requested", (), ()).note
    assert "/tmp/req.ldif" in note and "switch --verify 'CE1'" in note and "600" not in note


# ---------------------------------------------------------------- audit ids


def test_every_record_gets_an_id_and_a_watcher_sees_records_of_other_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    seen: list[Mapping[str, Any]] = []
    with audit.watching(seen.append):
        first = audit.record(path, {"action": "a"})
        worker = threading.Thread(target=audit.record, args=(path, {"action": "b"}))
        worker.start()
        worker.join()
    audit.record(path, {"action": "c"})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["action"] for e in seen] == ["a", "b"]
    ids = [e["id"] for e in lines]
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids) and first["id"] == ids[0]
    assert audit.record(path, {"id": "mine", "action": "d"})["id"] == "mine"


# ---------------------------------------------------------------- the command's refusals


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("argv", "says"), [
    (["switch", "CE1", "--to", "Torrent"], "no terminal to ask on"),
    (["switch", "CE1"], "switch needs --to METHOD"),
    (["switch", "CE1", "CE2", "--to", "Torrent", "--ldif-request", "x.ldif", "--yes"], "--ldif-request takes one CE at a time"),
    (["switch", "--verify", "CE1", "--dry-run"], "switch --verify does not take --dry-run"),
    (["switch", "CE1", "--to", "Torrent", "--timeout", "0", "--yes"], "--timeout 0: must be seconds greater than 0"),
    (["switch", "CE1", "--to", "Torrent", "--timeout", "nan", "--yes"], "--timeout nan"),
    (["switch", "CE\n1", "--to", "Torrent", "--yes"], "CE"),
])
def test_refusals_are_one_line_with_exit_2(argv: list[str], says: str) -> None:
    code, out, err = _run(*argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("siteadmin: usage: ") and says in err, err


def test_the_ce_commands_take_yes() -> None:
    for action in ("enable", "disable"):
        code, _out, err = _run("ce", action, "CE1", "--yes", "--site", "/nonexistent/site.toml")
        assert "unrecognized arguments" not in err and code == 2, err


@pytest.mark.parametrize(("ces", "says"), [
    ({"CE1": {"wns": ["@nope"]}}, 'ces."CE1".wns: @nope: no such WN group'),
    ({"CE1": {"wns": ["a@b.lab"]}}, "or an @group"),
    ({"CE1": {"wns": [""]}}, "hostlist patterns or @group names"),
    ({"CE1": {"hosts": []}}, "ces.CE1.hosts: unknown key"),
    ({"CE1": {}, "ce1": {}}, "the same CE as"),
])
def test_a_bad_ces_table_is_one_line_naming_the_key(ces: Mapping[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _site(ces)
    assert says in err.value.one_line() and "\n" not in err.value.one_line()
