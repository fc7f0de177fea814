"""Fan-out over SSH: every WN of a lab runs `uname -n`, in parallel vs one at a time."""

from __future__ import annotations

import sys

sys.path.insert(0, __import__("os").path.dirname(__file__))

from _common import best_of, report, throwaway_lab  # noqa: E402

from siteadmin.inventory import Inventory  # noqa: E402
from siteadmin.remote import SessionPool, run_on_hosts  # noqa: E402

WNS = 24


def main() -> int:
    with throwaway_lab(WNS) as (lab, _):
        site = lab.site
        hosts = Inventory(site).select()

        def sweep(parallelism: int) -> None:
            with SessionPool(site) as pool:

                def probe(host: str) -> str:
                    with pool.connect(host) as session:
                        return session.run("uname -n").stdout.strip()

                results = run_on_hosts(hosts, probe, parallelism)
            bad = [r for r in results if not r.ok]
            if bad:
                raise SystemExit(f"fan-out failed on {len(bad)} WNs: {bad[0].error}")

        sweep(32)  # warm up: page cache, sshd first-connection work
        serial = best_of(3, lambda: sweep(1))
        parallel = best_of(3, lambda: sweep(32))
    ratio = serial / parallel
    report(f"fan-out over {WNS} WNs", parallel, serial, "parallel >= 4x faster than serial", ratio >= 4)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
