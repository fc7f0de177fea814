"""Parallel fan-out over WNs: every host gets exactly one result, nothing raises per host.

``fan_out(hosts, fn, parallelism)`` calls ``fn(host)`` on a bounded thread pool and returns one
``HostResult`` per host, in the input order. An exception inside ``fn`` becomes that host's
result: its one-line text (a ``SiteadminError`` keeps its message, anything else its type and
text) and the exception object itself, so one broken WN never hides the other 119 and a caller
can still tell a changed host key from a failed command. Optional ``Batches`` cut the run into
batches with an abort threshold; a cancel event stops it. ``summarise`` and ``fold_failures``
fold hosts by outcome into lines like ``wn[001-040].lab: ok`` for the CLI and the console.

Pure: no SSH here; the caller's ``fn`` decides what a host's work is. Work on WNs over SSH goes
through ``siteadmin.remote.service.WNService``, which runs on this.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from siteadmin.errors import SiteadminError, UsageError
from siteadmin.inventory import fold
from siteadmin.site import batch_percent

if TYPE_CHECKING:
    from siteadmin.site import Site

T = TypeVar("T")
X = TypeVar("X")

OK = "ok"
CANCELLED = "cancelled"
"""Outcome of a host whose work was stopped, or never begun, because the run was cancelled."""
NOT_STARTED = "not started"
"""Outcome of a host in a batch after one that failed more than ``Batches.max_fail_percent``."""

POLL = 0.05
"""Seconds between looks at the cancel event while waiting for hosts."""
CANCEL_GRACE = 2.0
"""Seconds hosts still working may take to end after a cancel before they are left behind."""


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
    """Short host-free label hosts are folded by: ``ok``, ``auth failed``, ``cancelled``, ``not started``..."""
    category: str = ""
    """The error's category (``hostkey``, ``unreachable``...), "" when ok."""
    exception: BaseException | None = dataclasses.field(default=None, compare=False, repr=False)
    """The exception the host's work raised (``HostKeyChanged``, ``CommandFailed``...); None when
    it returned, or was cancelled or not started before it began."""

    def line(self) -> str:
        """``host: error`` (or ``host: ok``), naming the host exactly once."""
        text = self.error if self.error is not None else self.outcome
        return text if text.startswith(f"{self.host}:") else f"{self.host}: {text}"

    def detail(self) -> str:
        """The error (or outcome) without the leading host name, for lines naming many hosts."""
        text = self.error if self.error is not None else self.outcome
        return text.removeprefix(f"{self.host}: ")


@dataclasses.dataclass(frozen=True)
class Progress(Generic[T]):
    """One host's result as it lands, with how far the run has come."""

    result: HostResult[T]
    done: int
    """Hosts with a result so far, this one included."""
    total: int
    """Hosts in the run."""
    batch: int = 1
    """The batch the host belongs to, from 1."""
    batches: int = 1
    """Batches in the run."""

    @property
    def host(self) -> str:
        """The host whose result this is."""
        return self.result.host


@dataclasses.dataclass(frozen=True)
class Batches:
    """How a run is cut into batches, and after which batch it stops.

    The hosts of one batch are worked on (``parallelism`` at a time) before the next batch
    starts. When more than ``max_fail_percent`` of a batch failed, no later batch starts and
    its hosts get a ``not started`` result.

    Raises (constructor):
        UsageError: a size below 1 or a percentage outside 0-100, naming the value.
    """

    size: int | str
    """WNs per batch (the last batch may be smaller), or a share of the WNs run on, like ``"20%"`` (rounded up)."""
    max_fail_percent: float = 100.0
    """Share of a batch (0-100) that may fail before the run stops; 100 never stops."""

    def __post_init__(self) -> None:
        if isinstance(self.size, str) and self.size.endswith("%"):
            if batch_percent(self.size) is None:
                raise UsageError(f"batch size {self.size!r}: must be a percentage of the WNs above 0 and at most 100, like \"20%\"")
        elif isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise UsageError(f"batch size {self.size!r}: must be a whole number of WNs, 1 or more")
        percent = self.max_fail_percent
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise UsageError(f"max_fail_percent {percent!r}: must be a number from 0 to 100")

    @classmethod
    def from_site(cls, site: Site) -> Batches:
        """The site's ``[rollout] batch_size`` and ``max_fail_percent``."""
        return cls(site.rollout.batch_size, site.rollout.max_fail_percent)

    def split(self, items: Sequence[X]) -> list[Sequence[X]]:
        """``items`` cut into consecutive batches, in order (none for no items)."""
        # the one place that turns the size into counts
        count = self.count(len(items))
        return [items[start : start + count] for start in range(0, len(items), count)]

    def count(self, total: int) -> int:
        """WNs per batch for a run on ``total`` WNs: the size, or its percentage of ``total`` rounded up (at least 1)."""
        percent = batch_percent(self.size)
        if percent is None:
            return int(self.size)
        return max(1, math.ceil(total * percent / 100 - 1e-9))

    def exceeded(self, failed: int, count: int) -> bool:
        """Whether ``failed`` of a batch of ``count`` WNs is more than ``max_fail_percent``."""
        return count > 0 and failed * 100 > self.max_fail_percent * count


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


def _cancelled(host: str, why: str, elapsed: float = 0.0, exc: BaseException | None = None) -> HostResult[T]:
    return HostResult(host, False, None, f"{host}: {why}", elapsed, CANCELLED, CANCELLED, exc)


def _one(host: str, fn: Callable[[str], T], cancel: threading.Event) -> HostResult[T]:
    if cancel.is_set():
        return _cancelled(host, "cancelled before it started")
    start = time.monotonic()
    try:
        value = fn(host)
    except Exception as exc:  # noqa: BLE001 - per-host failures become results, never escape
        line, outcome, category = describe_error(exc, host)
        elapsed = time.monotonic() - start
        if cancel.is_set():
            # most likely the cancel itself broke the work (its connection was closed under it)
            return _cancelled(host, f"cancelled while working ({line.removeprefix(f'{host}: ')})", elapsed, exc)
        return HostResult(host, False, None, line, elapsed, outcome, category, exc)
    return HostResult(host, True, value, None, time.monotonic() - start)


def fan_out(
    hosts: Sequence[str],
    fn: Callable[[str], T],
    parallelism: int = 32,
    *,
    batches: Batches | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[T]], None] | None = None,
    on_cancel: Callable[[], None] | None = None,
) -> list[HostResult[T]]:
    """Call ``fn(host)`` for every host, ``parallelism`` at a time, batch after batch.

    Args:
        hosts: host names; duplicates are worked on once per occurrence.
        fn: the work for one host; its return value becomes ``HostResult.value``, an exception
            it raises becomes the host's error (kept in ``HostResult.exception``).
        parallelism: worker threads (at least 1).
        batches: when given, hosts are worked on one batch after another, and a batch failing
            more than ``batches.max_fail_percent`` leaves every later host ``not started``.
        cancel: when set, hosts not yet started get a ``cancelled`` result; hosts whose work
            then fails, or still runs ``CANCEL_GRACE`` seconds later, get one too.
        progress: called in the calling thread with each result as it lands (``not started``
            and ``cancelled`` ones included), with done/total.
        on_cancel: called once, in the calling thread, as soon as ``cancel`` is seen set (the
            service closes its connections here, so work in flight stops now).

    Returns:
        Exactly one result per host, in the order of ``hosts``.

    Raises:
        KeyboardInterrupt: (or whatever ``progress`` raises) after setting ``cancel``, calling
            ``on_cancel`` and dropping hosts not yet started.
    """
    if not hosts:
        return []
    cancel = cancel if cancel is not None else threading.Event()
    total = len(hosts)
    groups: list[Sequence[int]] = batches.split(range(total)) if batches is not None else [range(total)]
    results: list[HostResult[T] | None] = [None] * total
    batch_of = {index: number for number, group in enumerate(groups, 1) for index in group}
    done = 0
    seen_cancel = False

    def landed(index: int, result: HostResult[T]) -> None:
        nonlocal done
        results[index] = result
        done += 1
        if progress is not None:
            progress(Progress(result, done, total, batch_of[index], len(groups)))

    def notice_cancel() -> bool:
        nonlocal seen_cancel
        if cancel.is_set() and not seen_cancel:
            seen_cancel = True
            if on_cancel is not None:
                on_cancel()
        return seen_cancel

    workers = max(1, min(parallelism, max(len(g) for g in groups)))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
    stopped: str | None = None  # why later batches never started
    left_behind = False
    try:
        for number, group in enumerate(groups, 1):
            if notice_cancel():
                break
            futures = {pool.submit(_one, hosts[i], fn, cancel): i for i in group}
            pending = set(futures)
            give_up: float | None = None
            while pending:
                finished, pending = concurrent.futures.wait(pending, timeout=POLL, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in sorted(finished, key=futures.__getitem__):
                    landed(futures[future], future.result())
                if notice_cancel() and pending:
                    give_up = give_up if give_up is not None else time.monotonic() + CANCEL_GRACE
                    if time.monotonic() >= give_up:
                        for future in sorted(pending, key=futures.__getitem__):
                            future.cancel()
                            index = futures[future]
                            landed(index, _cancelled(hosts[index], f"still working {CANCEL_GRACE:g} s after the cancel; left behind"))
                        left_behind = True
                        break
            if seen_cancel:
                break
            failed = sum(1 for i in group if (r := results[i]) is not None and not r.ok)
            if batches is not None and number < len(groups) and batches.exceeded(failed, len(group)):
                stopped = (
                    f"not started: {failed} of {len(group)} WNs of batch {number} of {len(groups)} failed, "
                    f"more than max_fail_percent {batches.max_fail_percent:g}%"
                )
                break
        notice_cancel()  # a cancel that came with the last results still gets its connections closed
        for index, host in enumerate(hosts):
            if results[index] is None:
                if stopped is not None and not cancel.is_set():
                    landed(index, HostResult(host, False, None, f"{host}: {stopped}", 0.0, NOT_STARTED, "aborted"))
                else:
                    landed(index, _cancelled(host, "cancelled before it started"))
    except BaseException:
        cancel.set()
        notice_cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=not left_behind, cancel_futures=True)
    return [r for r in results if r is not None]


def run_on_hosts(
    hosts: Sequence[str],
    fn: Callable[[str], T],
    parallelism: int = 32,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[HostResult[T]], None] | None = None,
) -> list[HostResult[T]]:
    """Call ``fn(host)`` for every host, ``parallelism`` at a time: ``fan_out`` without batches.

    Args:
        hosts: host names; duplicates are worked on once per occurrence.
        fn: the work for one host; its return value becomes ``HostResult.value``.
        parallelism: worker threads (at least 1).
        cancel: when set, hosts not yet started get a ``cancelled`` result.
        progress: called in the calling thread with each result as it lands.

    Returns:
        One result per host, in the order of ``hosts``.

    Raises:
        KeyboardInterrupt: after setting ``cancel`` and dropping hosts not yet started.
    """
    if progress is None:
        return fan_out(hosts, fn, parallelism, cancel=cancel)
    report = progress

    def each(step: Progress[T]) -> None:
        report(step.result)

    return fan_out(hosts, fn, parallelism, cancel=cancel, progress=each)


def summarise(results: Sequence[HostResult[T]], describe: Callable[[HostResult[T]], str] | None = None) -> list[tuple[str, str]]:
    """Fold hosts by outcome: ``[("wn[001-040].lab", "ok"), ("wn041.lab", "auth failed")]``.

    Args:
        results: what ``fan_out`` returned.
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


def fold_failures(results: Sequence[HostResult[T]]) -> list[tuple[str, str]]:
    """The failed hosts folded by outcome, as ``summarise`` folds them: one line per outcome.

    A lone host keeps its whole error (``wn003.lab: HOST KEY CHANGED for ...``); hosts sharing
    the same error text share one line (``wn[003,017].lab: connection refused by ...``); hosts
    with the same outcome but different texts get the outcome and the first host's error
    (``wn[002-004].lab: ssh handshake failed; e.g. wn002.lab: SSH handshake with ...``).

    Args:
        results: what ``fan_out`` returned; the ok ones are left out.

    Returns:
        (category, line) pairs, outcomes in order of first appearance.
    """
    groups: dict[str, list[HostResult[T]]] = {}
    for result in results:
        if not result.ok:
            groups.setdefault(result.outcome, []).append(result)
    lines: list[tuple[str, str]] = []
    for outcome, group in groups.items():
        first = group[0]
        if len(group) == 1:
            text = first.line()
        elif len({r.detail() for r in group}) == 1:
            text = f"{fold(r.host for r in group)}: {first.detail()}"
        else:
            text = f"{fold(r.host for r in group)}: {outcome}; e.g. {first.line()}"
        lines.append((first.category or "error", text))
    return lines
