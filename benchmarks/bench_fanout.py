"""Fan-out over SSH to every WN of a lab: parallel (ssh.parallelism 32) against one WN at a time.

Two sweeps. "connect": SSH handshake and authentication only, the latency-bound part that
parallelism must hide. "command": connect and run `true`, which also starts the remote user's
shell; in the lab every WN's shell runs on the same 2 cores (and root's .bashrc on this
machine costs ~140 ms of CPU), so that sweep is CPU-bound and its ceiling is about the core count.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(__file__))

from _common import best_of, report, throwaway_lab  # noqa: E402

from siteadmin.inventory import Inventory  # noqa: E402
from siteadmin.remote import Session, WNService  # noqa: E402
from siteadmin.site import Site  # noqa: E402

WNS = 24


def sweep(site: Site, hosts: list[str], parallelism: int, work: Callable[[Session], object]) -> None:
    with WNService(site, parallelism=parallelism) as service:
        results = service.run(hosts, work)
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"fan-out failed on {len(bad)} WNs: {bad[0].error}")


def main() -> int:
    with throwaway_lab(WNS) as (lab, _):
        site = lab.site
        hosts = Inventory(site).select()
        connect: Callable[[Session], object] = lambda s: s.transport.is_active()  # noqa: E731
        command: Callable[[Session], object] = lambda s: s.run("true", check=True)  # noqa: E731
        sweep(site, hosts, 32, command)  # warm up: page cache, sshd first-connection work
        results = {}
        for name, work in (("connect", connect), ("command", command)):
            serial = best_of(3, functools.partial(sweep, site, hosts, 1, work))
            parallel = best_of(3, functools.partial(sweep, site, hosts, 32, work))
            results[name] = (serial, parallel)
    serial, parallel = results["connect"]
    report(f"connect to {WNS} WNs", parallel, serial, "parallel >= 4x faster than serial", serial / parallel >= 4)
    serial, parallel = results["command"]
    report(f"connect + command on {WNS} WNs", parallel, serial, "parallel >= 2x faster (CPU-bound on 2 shared cores)", serial / parallel >= 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
