"""The fan-out engine under the WN service, with plain callables: batches and the abort threshold,
``not started`` and ``cancelled`` results, progress, exceptions kept, failures folded by outcome."""

from __future__ import annotations

import ast
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import siteadmin
from siteadmin.errors import SiteadminError, UsageError
from siteadmin.remote import fanout
from siteadmin.remote.errors import CommandFailed, ConnectFailed, HostKeyChanged
from siteadmin.remote.fanout import CANCELLED, NOT_STARTED, Batches, HostResult, Progress, fan_out, fold_failures
from siteadmin.site import site_from_mapping


def hosts(count: int) -> list[str]:
    return [f"wn{i:03d}.lab" for i in range(1, count + 1)]


def failing(bad: set[str]) -> Callable[[str], str]:
    def work(host: str) -> str:
        if host in bad:
            raise ConnectFailed(host, "connection refused by 10.0.0.9:22", outcome="connection refused")
        return host.upper()

    return work


# ---------------------------------------------------------------- Batches


def test_batches_split_in_order_the_last_one_smaller() -> None:
    assert Batches(3).split(list(range(7))) == [[0, 1, 2], [3, 4, 5], [6]]
    assert Batches(10).split(list(range(4))) == [[0, 1, 2, 3]]
    assert Batches(1).split([]) == []


@pytest.mark.parametrize(("size", "shown"), [(0, "0"), (-2, "-2"), (True, "True"), (2.5, "2.5"), ("10", "'10'")])
def test_batch_size_must_be_a_whole_number_from_1(size: object, shown: str) -> None:
    with pytest.raises(UsageError) as info:
        Batches(size)  # type: ignore[arg-type]  # what a bad caller passes
    assert info.value.one_line() == f"batch size {shown}: must be a whole number of WNs, 1 or more"


@pytest.mark.parametrize("percent", [-1, 100.5, float("nan")])
def test_max_fail_percent_must_be_0_to_100(percent: float) -> None:
    with pytest.raises(UsageError, match=r"^max_fail_percent .*: must be a number from 0 to 100$"):
        Batches(5, percent)


def test_exceeded_means_more_than_the_share() -> None:
    assert not Batches(10, 10).exceeded(1, 10)
    assert Batches(10, 10).exceeded(2, 10)
    assert Batches(3, 0).exceeded(1, 3)
    assert not Batches(3, 0).exceeded(0, 3)
    assert not Batches(3, 100).exceeded(3, 3)
    assert not Batches(3, 50).exceeded(0, 0)


def test_batches_from_the_sites_rollout_table() -> None:
    site = site_from_mapping({"rollout": {"batch_size": 4, "max_fail_percent": 25}})
    assert Batches.from_site(site) == Batches(4, 25.0)
    assert Batches.from_site(site_from_mapping({})) == Batches(10, 10.0)


# ---------------------------------------------------------------- batches in a run


def test_a_batch_over_the_threshold_leaves_the_later_hosts_not_started() -> None:
    names = hosts(10)
    called: list[str] = []
    steps: list[Progress[str]] = []
    work = failing({"wn002.lab", "wn003.lab"})

    def counted(host: str) -> str:
        called.append(host)
        return work(host)

    results = fan_out(names, counted, 4, batches=Batches(4, 25), progress=steps.append)
    assert sorted(called) == names[:4]  # 2 of 4 failed, more than 25%: batches 2 and 3 never start
    assert [r.host for r in results] == names
    assert [r.outcome for r in results] == ["ok", "connection refused", "connection refused", "ok"] + [NOT_STARTED] * 6
    stopped = results[4]
    assert (stopped.ok, stopped.category, stopped.exception, stopped.value) == (False, "aborted", None, None)
    assert stopped.error == "wn005.lab: not started: 2 of 4 WNs of batch 1 of 3 failed, more than max_fail_percent 25%"
    # every host exactly once in the progress, done counting up to total
    assert sorted(s.host for s in steps) == names
    assert [s.done for s in steps] == list(range(1, 11))
    assert {s.total for s in steps} == {10}
    assert {s.batches for s in steps} == {3}
    assert {s.host: s.batch for s in steps}["wn010.lab"] == 3
    assert fold_failures(results)[-1] == (
        "aborted",
        "wn[005-010].lab: not started: 2 of 4 WNs of batch 1 of 3 failed, more than max_fail_percent 25%",
    )


def test_a_batch_at_the_threshold_goes_on() -> None:
    results = fan_out(hosts(8), failing({"wn002.lab", "wn007.lab"}), 8, batches=Batches(4, 25))
    assert [r.ok for r in results] == [True, False, True, True, True, True, False, True]
    assert NOT_STARTED not in {r.outcome for r in results}


def test_the_last_batch_failing_leaves_nothing_not_started() -> None:
    results = fan_out(hosts(4), failing({"wn003.lab", "wn004.lab"}), 2, batches=Batches(2, 0))
    assert [r.outcome for r in results] == ["ok", "ok", "connection refused", "connection refused"]


def test_batches_run_one_after_another_parallel_inside() -> None:
    spans: dict[str, tuple[float, float]] = {}

    def work(host: str) -> None:
        start = time.monotonic()
        time.sleep(0.1)
        spans[host] = (start, time.monotonic())

    start = time.monotonic()
    fan_out(hosts(6), work, 8, batches=Batches(3))
    took = time.monotonic() - start
    first_end = max(spans[h][1] for h in hosts(3))
    assert all(spans[h][0] >= first_end for h in hosts(6)[3:])
    assert took < 0.5  # two batches of three parallel sleeps, not six sequential ones


def test_duplicates_are_worked_on_once_per_occurrence_in_batches() -> None:
    results = fan_out(["wn001.lab", "wn001.lab", "wn002.lab"], str.upper, 2, batches=Batches(2))
    assert [(r.host, r.value) for r in results] == [("wn001.lab", "WN001.LAB"), ("wn001.lab", "WN001.LAB"), ("wn002.lab", "WN002.LAB")]


# ---------------------------------------------------------------- exceptions kept


def test_the_result_keeps_the_exception_object() -> None:
    raised: dict[str, BaseException] = {}

    def work(host: str) -> str:
        exc: Exception
        if host == "wn001.lab":
            exc = HostKeyChanged(host, "HOST KEY CHANGED for wn001.lab: it offers ...", "verify it out of band")
        elif host == "wn002.lab":
            exc = CommandFailed(host, "`aria2c --version` exited with status 3", outcome="command failed (status 3)")
        elif host == "wn003.lab":
            exc = ValueError("not a number")
        else:
            return "fine"
        raised[host] = exc
        raise exc

    results = {r.host: r for r in fan_out(hosts(4), work, 4)}
    assert results["wn001.lab"].exception is raised["wn001.lab"]
    assert isinstance(results["wn001.lab"].exception, HostKeyChanged)
    assert isinstance(results["wn002.lab"].exception, CommandFailed)
    assert not isinstance(results["wn002.lab"].exception, HostKeyChanged)
    assert results["wn003.lab"].exception is raised["wn003.lab"]
    assert results["wn004.lab"].exception is None
    # the one-line text is still there beside it
    assert results["wn001.lab"].error == "wn001.lab: HOST KEY CHANGED for wn001.lab: it offers ... (verify it out of band)"
    assert (results["wn002.lab"].outcome, results["wn002.lab"].category) == ("command failed (status 3)", "failed")
    assert results["wn003.lab"].error == "ValueError: not a number"
    # the exception takes no part in equality (exceptions compare by identity)
    assert results["wn004.lab"] == HostResult("wn004.lab", True, "fine", None, results["wn004.lab"].elapsed)


# ---------------------------------------------------------------- cancel


def test_cancel_mid_run_gives_every_host_one_result_and_calls_on_cancel_once_in_the_caller() -> None:
    cancel = threading.Event()
    release = threading.Event()
    calls: list[str] = []
    names = hosts(8)

    def work(host: str) -> str:
        if host in ("wn001.lab", "wn002.lab"):
            return host
        # the rest wait like a handshake does, until the cancel closes their connection
        release.wait(10)
        raise ConnectFailed(host, "the connection was closed", outcome="connection lost")

    def on_cancel() -> None:
        calls.append(threading.current_thread().name)
        release.set()

    def progress(step: Progress[str]) -> None:
        if step.done == 2:
            cancel.set()

    start = time.monotonic()
    results = fan_out(names, work, 4, cancel=cancel, on_cancel=on_cancel, progress=progress)
    took = time.monotonic() - start
    assert took < 1.0
    assert calls == [threading.current_thread().name]
    assert [r.host for r in results] == names
    assert [r.ok for r in results] == [True, True] + [False] * 6
    assert {r.outcome for r in results[2:]} == {CANCELLED}
    assert {r.category for r in results[2:]} == {CANCELLED}
    working = [r for r in results[2:] if r.exception is not None]
    waiting = [r for r in results[2:] if r.exception is None]
    # wn003 and wn004 were in flight from the start (wn005 and wn006 may have followed wn001 and
    # wn002 before the cancel); wn007 and wn008 could only start after one of those ended
    assert {"wn003.lab", "wn004.lab"} <= {r.host for r in working}
    assert {"wn007.lab", "wn008.lab"} <= {r.host for r in waiting}
    assert all(r.error == f"{r.host}: cancelled while working (the connection was closed)" for r in working)
    assert all(isinstance(r.exception, ConnectFailed) for r in working)
    assert all(r.error == f"{r.host}: cancelled before it started" for r in waiting)


def test_cancel_between_batches_cancels_rather_than_not_started() -> None:
    cancel = threading.Event()

    def work(host: str) -> str:
        if host == "wn002.lab":
            cancel.set()
        return host

    results = fan_out(hosts(6), work, 1, batches=Batches(2), cancel=cancel)
    assert [r.outcome for r in results] == ["ok", "ok"] + [CANCELLED] * 4


def test_work_ignoring_the_cancel_is_left_behind_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "CANCEL_GRACE", 0.3)
    cancel = threading.Event()
    release = threading.Event()

    def work(host: str) -> str:
        if host == "wn001.lab":
            release.wait(10)  # deaf to the cancel
        return host

    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        start = time.monotonic()
        results = fan_out(hosts(3), work, 3, cancel=cancel)
        took = time.monotonic() - start
    finally:
        release.set()
        timer.join()
    assert took < 1.0
    assert results[0].outcome == CANCELLED
    assert results[0].error == "wn001.lab: still working 0.3 s after the cancel; left behind"
    assert [r.ok for r in results[1:]] == [True, True]


def test_a_cancel_set_before_the_run_starts_nothing() -> None:
    cancel = threading.Event()
    cancel.set()
    seen: list[str] = []
    results = fan_out(hosts(3), seen.append, 2, batches=Batches(1), cancel=cancel)
    assert seen == []
    assert [r.error for r in results] == [f"{h}: cancelled before it started" for h in hosts(3)]


def test_an_interrupt_cancels_and_calls_on_cancel() -> None:
    cancel = threading.Event()
    closed: list[bool] = []

    def interrupt(step: Progress[None]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fan_out(hosts(3), lambda h: None, 1, cancel=cancel, progress=interrupt, on_cancel=lambda: closed.append(True))
    assert cancel.is_set()
    assert closed == [True]


# ---------------------------------------------------------------- failures folded


def _failed(host: str, error: str, outcome: str, category: str) -> HostResult[None]:
    return HostResult(host, False, None, error, 0.1, outcome, category)


def test_fold_failures_one_line_per_outcome() -> None:
    results: list[HostResult[None]] = [
        HostResult("wn001.lab", True, None, None, 0.1),
        _failed("wn003.lab", "wn003.lab: authentication failed as root@wn003.lab:22 (ssh agent): Authentication failed.", "auth failed", "denied"),
        _failed("wn017.lab", "wn017.lab: authentication failed as root@wn017.lab:22 (ssh agent): Authentication failed.", "auth failed", "denied"),
        _failed("wn004.lab", "wn004.lab: connection refused by 10.0.0.4:22", "connection refused", "unreachable"),
        _failed("wn005.lab", "wn005.lab: cancelled before it started", CANCELLED, CANCELLED),
        _failed("wn006.lab", "wn006.lab: cancelled before it started", CANCELLED, CANCELLED),
        _failed("wn007.lab", "RuntimeError: boom", "RuntimeError: boom", "error"),
    ]
    assert fold_failures(results) == [
        ("denied", "wn[003,017].lab: auth failed; e.g. wn003.lab: authentication failed as root@wn003.lab:22 (ssh agent): Authentication failed."),
        ("unreachable", "wn004.lab: connection refused by 10.0.0.4:22"),
        (CANCELLED, "wn[005-006].lab: cancelled before it started"),
        ("error", "wn007.lab: RuntimeError: boom"),
    ]
    assert fold_failures([HostResult("wn001.lab", True, None, None, 0.1)]) == []


def test_an_error_not_of_ours_keeps_its_type_in_the_fold() -> None:
    results = fan_out(hosts(2), lambda h: 1 // 0, 2)
    assert fold_failures(results) == [("error", "wn[001-002].lab: ZeroDivisionError: integer division or modulo by zero")]
    assert all(isinstance(r.exception, ZeroDivisionError) for r in results)
    assert not any(isinstance(r.exception, SiteadminError) for r in results)


# ---------------------------------------------------------------- one service


def test_only_the_wn_service_builds_a_session_pool() -> None:
    root = Path(siteadmin.__file__).parent
    builders = set()
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "SessionPool" not in text:
            continue  # a call of SessionPool names it: only these files are worth parsing
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name == "SessionPool":
                    builders.add(path.relative_to(root).as_posix())
    assert builders == {"remote/service.py"}
