"""Parallel fan-out over WNs: every host gets a result, nothing raises per host.

``run_on_hosts(hosts, fn, parallelism)`` calls ``fn(host)`` on a thread pool and returns one
``HostResult`` per host, in the input order. An exception inside ``fn`` becomes that host's
result (a ``SiteadminError`` keeps its one-line message, anything else its type and text), so
one broken WN never hides the other 119. ``summarise`` folds hosts by outcome into lines like
``wn[001-040].lab  ok`` for the CLI and the console.

Pure: no SSH here; the caller's ``fn`` decides what a host's work is.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from siteadmin.errors import SiteadminError
from siteadmin.inventory import fold

T = TypeVar("T")

OK = "ok"
CANCELLED = "cancelled"


@dataclasses.dataclass(frozen=True)
class HostResult(Generic[T]):
    """What happened on one host."""

    host: str
    ok: bool
    value: T | None
    error: str | None
    """One line saying what went wrong; None when ok."""
    elapsed: float
    """Seconds spent on this host."""
    outcome: str = OK
    """Short host-free label hosts are folded by: ``ok``, ``auth failed``, ``cancelled``..."""
    category: str = ""
    """The error's category (``hostkey``, ``unreachable``...), "" when ok."""

    def line(self) -> str:
        """``host: error`` (or ``host: ok``), naming the host exactly once."""
        text = self.error if self.error is not None else self.outcome
        return text if text.startswith(f"{self.host}:") else f"{self.host}: {text}"


def describe_error(exc: BaseException, host: str) -> tuple[str, str, str]:
    """(one-line error, host-free outcome, category) for an exception raised while working on ``host``."""
    if isinstance(exc, SiteadminError):
        line = exc.one_line()
        outcome = getattr(exc, "outcome", None)
        if not isinstance(outcome, str) or not outcome:
            outcome = exc.message.removeprefix(f"{host}: ")
        category = exc.category
    else:
        line = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        outcome = line
        category = "error"
    return " ".join(line.split()), " ".join(outcome.split()), category


def _one(host: str, fn: Callable[[str], T], cancel: threading.Event | None) -> HostResult[T]:
    if cancel is not None and cancel.is_set():
        return HostResult(host, False, None, "cancelled before it started", 0.0, CANCELLED, "cancelled")
    start = time.monotonic()
    try:
        value = fn(host)
    except Exception as exc:  # noqa: BLE001 - per-host failures become results, never escape
        line, outcome, category = describe_error(exc, host)
        return HostResult(host, False, None, line, time.monotonic() - start, outcome, category)
    return HostResult(host, True, value, None, time.monotonic() - start)


def run_on_hosts(
    hosts: Sequence[str],
    fn: Callable[[str], T],
    parallelism: int = 32,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[HostResult[T]], None] | None = None,
) -> list[HostResult[T]]:
    """Call ``fn(host)`` for every host, ``parallelism`` at a time.

    Args:
        hosts: host names; duplicates are worked on once per occurrence.
        fn: the work for one host; its return value becomes ``HostResult.value``.
        parallelism: worker threads (at least 1).
        cancel: when set, hosts not yet started get a ``cancelled`` result; running ones finish.
        progress: called in the calling thread with each result as it completes.

    Returns:
        One result per host, in the order of ``hosts``.

    Raises:
        KeyboardInterrupt: after setting ``cancel`` and dropping hosts not yet started.
    """
    if not hosts:
        return []
    cancel = cancel if cancel is not None else threading.Event()
    workers = max(1, min(parallelism, len(hosts)))
    results: list[HostResult[T] | None] = [None] * len(hosts)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
    try:
        futures = {pool.submit(_one, host, fn, cancel): index for index, host in enumerate(hosts)}
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if progress is not None:
                progress(result)
    except BaseException:
        cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [r for r in results if r is not None]


def summarise(results: Sequence[HostResult[T]], describe: Callable[[HostResult[T]], str] | None = None) -> list[tuple[str, str]]:
    """Fold hosts by outcome: ``[("wn[001-040].lab", "ok"), ("wn041.lab", "auth failed")]``.

    Args:
        results: what ``run_on_hosts`` returned.
        describe: label per result; default ``result.outcome`` (``ok`` for successes). Pass one
            to fold successes by value, e.g. ``unchanged`` / ``changed``.

    Returns:
        (folded hosts, label) pairs, labels in order of first appearance.
    """
    label_of = describe if describe is not None else (lambda r: r.outcome)
    groups: dict[str, list[str]] = {}
    for result in results:
        groups.setdefault(label_of(result), []).append(result.host)
    return [(fold(hosts), label) for label, hosts in groups.items()]
