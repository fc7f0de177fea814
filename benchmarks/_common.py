"""Shared bits of the benchmarks: a throwaway lab and a timer."""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from siteadmin.lab import Lab


@contextlib.contextmanager
def throwaway_lab(wns: int, package_mb: int = 4) -> Iterator[tuple[Lab, float]]:
    """A lab in a temp dir; yields it with the wall time `up` took, and takes it down."""
    with tempfile.TemporaryDirectory(prefix="siteadmin-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", cache_dir=Path(tempfile.gettempdir()) / "siteadmin-bench-cache")
        t0 = time.perf_counter()
        try:
            lab.up(wns, package_mb=package_mb)
            yield lab, time.perf_counter() - t0
        finally:
            lab.down()


def best_of(runs: int, fn: Callable[[], object]) -> float:
    """Median wall time of ``runs`` calls of ``fn`` (seconds)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 1 else f"{value * 1000:.2f} ms"


def report(name: str, measured: float, baseline: float, goal: str, ok: bool) -> None:
    """One line: both times, baseline/measured as a ratio, and whether the goal is met."""
    ratio = baseline / measured if measured else float("inf")
    print(f"{name}: measured {_seconds(measured)}, baseline {_seconds(baseline)}, ratio {ratio:.2f}x ({goal}: {'met' if ok else 'NOT met'})")
