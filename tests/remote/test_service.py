"""The WN service against real sshd: sessions per WN, kept sessions, cancel in bounded time,
batches from the site's ``[rollout]``, and the lab's WN checks on it."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.inventory import WN
from siteadmin.remote import Batches, CommandFailed, ConnectFailed, Progress, Session, SshError, WNService
from siteadmin.remote.fanout import CANCELLED, NOT_STARTED
from siteadmin.site import load_site

pytestmark = pytest.mark.lab

HOSTS = ["wn001.lab", "wn002.lab", "wn003.lab"]


@contextlib.contextmanager
def silent_ports(count: int) -> Iterator[list[int]]:
    """Listeners that complete the TCP handshake (the kernel's backlog) and never say a word: an
    SSH client connected to one waits in its handshake for a banner that never comes."""
    listeners = []
    try:
        for _ in range(count):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listeners.append(listener)
        yield [int(s.getsockname()[1]) for s in listeners]
    finally:
        for listener in listeners:
            listener.close()


def test_every_wn_gets_its_own_session_closed_after_its_work(ssh_lab: Any) -> None:
    handed: list[Session] = []
    steps: list[Progress[tuple[str, str]]] = []

    def work(session: Session) -> tuple[str, str]:
        handed.append(session)
        if session.host == "wn003.lab":
            session.run("exit 3", check=True)
        return session.host, session.run("echo $SSH_CONNECTION", check=True).stdout.split()[-1]

    with WNService(ssh_lab.site()) as service:
        results = service.run(HOSTS, work, progress=steps.append)
    assert [r.host for r in results] == HOSTS
    assert [r.value for r in results[:2]] == [(h, str(ssh_lab.spec(h).port)) for h in HOSTS[:2]]
    failed = results[2]
    assert (failed.ok, failed.outcome, failed.category) == (False, "command failed (status 3)", "failed")
    assert isinstance(failed.exception, CommandFailed)
    assert sorted(s.host for s in handed) == HOSTS
    assert not any(s.is_active() for s in handed)  # one session per WN, closed right after its work
    assert [s.done for s in steps] == [1, 2, 3]
    assert {s.total for s in steps} == {3}


def test_kept_sessions_serve_the_next_run_until_the_service_closes(ssh_lab: Any) -> None:
    service = WNService(ssh_lab.site(), keep_sessions=True)
    try:
        first = service.run(HOSTS, lambda s: s)
        second = service.run(HOSTS, lambda s: s)
        assert all(r.ok for r in first + second)
        assert [r.value for r in first] == [r.value for r in second]  # the very same Session objects
        assert all(r.value is not None and r.value.is_active() for r in second)
    finally:
        service.close()
    assert not any(r.value is not None and r.value.is_active() for r in second)
    with pytest.raises(RuntimeError, match="closed service"):
        service.run(HOSTS, lambda s: s)


def test_a_host_the_inventory_does_not_hold_is_reached_at_its_own_address_and_not_kept(ssh_lab: Any) -> None:
    # "outside.test" resolves nowhere: only the WN object's address and port can reach an sshd
    outside = WN(name="outside.test", address="127.0.0.1", port=ssh_lab.spec("wn002.lab").port, groups=())

    def work(session: Session) -> tuple[Session, str]:
        return session, session.run("echo $SSH_CONNECTION", check=True).stdout.split()[-1]

    with WNService(ssh_lab.site(), keep_sessions=True) as service:
        results = service.run(["wn001.lab", outside], work)
        assert [(r.host, r.ok) for r in results] == [("wn001.lab", True), ("outside.test", True)]
        kept, reached = [r.value for r in results if r.value is not None]
        assert (kept[1], reached[1]) == (str(ssh_lab.spec("wn001.lab").port), str(outside.port))
        assert reached[0].host == "outside.test"
        assert kept[0].is_active() and not reached[0].is_active()  # the inventory's WN kept, the outside host's closed
        [unknown] = service.run(["outside.test"], work)  # by name it is not a WN of the site
        assert (unknown.outcome, type(unknown.exception)) == ("name not resolved", ConnectFailed)


def test_cancelling_mid_way_ends_in_bounded_time_with_a_result_for_every_wn(ssh_lab: Any) -> None:
    good = {spec.name: spec.port for spec in ssh_lab.specs}
    with silent_ports(4) as hanging:
        nodes = {**good, **{f"wn10{i}.lab": port for i, port in enumerate(hanging, 1)}}
        site = ssh_lab.site(ssh_lab.write_site("service-cancel", nodes, ssh={"connect_timeout": 30.0}))
        hosts = sorted(nodes)
        cancel = threading.Event()
        answered = threading.Event()
        steps: list[str] = []
        cancelled_at: list[float] = []

        def progress(step: Progress[str]) -> None:
            steps.append(step.host)
            if set(good) <= set(steps):
                answered.set()

        def cancel_later() -> None:
            # the real WNs have answered (on 2 busy cores that can take a while), the others have
            # hung in their handshakes for at least 0.5 s
            answered.wait(20)
            time.sleep(max(0.0, start + 0.5 - time.monotonic()))
            cancelled_at.append(time.monotonic())
            cancel.set()

        with WNService(site, parallelism=8) as service:
            canceller = threading.Thread(target=cancel_later)
            start = time.monotonic()
            canceller.start()
            results = service.run(hosts, lambda s: s.run("uname -n", check=True).stdout.strip(), cancel=cancel, progress=progress)
            ended = time.monotonic()
            canceller.join()
            # the cancel closed the pool; the next run opens a fresh one
            again = service.run(sorted(good), lambda s: s.host)
    took = ended - cancelled_at[0]
    assert cancelled_at[0] - start >= 0.5
    assert took < 2.0, f"the run ended {took:.1f} s after the cancel"
    assert [r.host for r in results] == hosts
    assert sorted(steps) == hosts  # each WN's result reported exactly once
    by_host = {r.host: r for r in results}
    assert all(by_host[h].ok for h in good), [by_host[h].line() for h in good]
    hung = [by_host[f"wn10{i}.lab"] for i in range(1, 5)]
    assert {(r.ok, r.outcome, r.category) for r in hung} == {(False, CANCELLED, CANCELLED)}
    assert all(r.error is not None and r.error.startswith(f"{r.host}: cancelled while working (") for r in hung)
    assert all(isinstance(r.exception, SshError) for r in hung)
    assert [r.value for r in again] == sorted(good)


def test_cancel_stops_a_command_in_flight(ssh_lab: Any) -> None:
    cancel = threading.Event()

    def work(session: Session) -> int:
        if session.host == "wn002.lab":
            return session.run("sleep 30", timeout=60).exit_status  # no check: the cancel must still show
        return 0

    timer = threading.Timer(0.5, cancel.set)
    with WNService(ssh_lab.site()) as service:
        start = time.monotonic()
        timer.start()
        results = service.run(HOSTS, work, cancel=cancel)
        took = time.monotonic() - start
    timer.join()
    assert took < 2.0
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].outcome == CANCELLED
    assert results[1].error == "wn002.lab: cancelled while working (the connection was closed by the cancel)"


def test_batches_from_the_sites_rollout_stop_after_a_failing_batch(ssh_lab: Any) -> None:
    nodes = {"wn001.lab": ssh_lab.free_port(), "wn002.lab": ssh_lab.spec("wn002.lab").port, "wn003.lab": ssh_lab.spec("wn003.lab").port}
    path: Path = ssh_lab.write_site("batches", nodes)
    path.write_text(path.read_text() + "\n[rollout]\nbatch_size = 1\nmax_fail_percent = 0\n")
    site = load_site(path)
    touched: list[str] = []

    def work(session: Session) -> str:
        touched.append(session.host)
        return session.host

    with WNService(site) as service:
        results = service.run(HOSTS, work, batches=Batches.from_site(site))
    assert touched == []
    assert [r.outcome for r in results] == ["connection refused", NOT_STARTED, NOT_STARTED]
    assert isinstance(results[0].exception, ConnectFailed)
    assert results[1].error == "wn002.lab: not started: 1 of 1 WNs of batch 1 of 3 failed, more than max_fail_percent 0%"
