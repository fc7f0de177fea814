"""`lab up` wall time: 50 WNs against 4 WNs (12.5x the processes)."""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import report, throwaway_lab  # noqa: E402


def up_time(wns: int) -> tuple[float, float]:
    with throwaway_lab(wns) as (lab, seconds):
        t0 = time.perf_counter()
        healthy = lab.status().healthy
        status_seconds = time.perf_counter() - t0
        if not healthy:
            raise SystemExit(f"lab with {wns} WNs is not healthy:\n{lab.status().text()}")
    return seconds, status_seconds


def main() -> int:
    up_time(4)  # warm up: the package cache, page cache
    small, small_status = up_time(4)
    big, big_status = up_time(50)
    print(f"lab up: 4 WNs {small:.2f} s (status {small_status:.2f} s), 50 WNs {big:.2f} s (status {big_status:.2f} s)")
    report("lab up 50 WNs vs 4", big, small, "50 WNs take < 4x the time of 4", big / small < 4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
