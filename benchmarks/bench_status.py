"""`siteadmin status` polls of 50 and 200 lab WNs (each a real sshd and aria2c), cold and warm, against two baselines.

For each lab size, in the same run:

- status cold: a new ``SwarmMonitor`` and its first poll (SSH connect, tunnel, profiles, the
  accounting probe, both RPC round trips);
- status warm: further polls on the same monitor (sessions, tunnels and HTTP connections kept);
- baseline "aria2p": what an admin would script: one WN at a time, a fresh SSH session and tunnel,
  aria2p's API (a new HTTP connection per call) for the global stat, the downloads and the version
  (run on 20 WNs and scaled: it takes about a second per WN);
- baseline "floor": paramiko sessions kept open, one direct-tcpip channel per WN kept open, one
  ``system.multicall`` of getGlobalStat, tellActive, tellWaiting, tellStopped and getVersion per
  WN, 32 threads; cold (connect) and warm.

Then the same with every WN seeding the package to its neighbours (each fetched it from the
swarm first), so polls also ask for peers. Wall time and this process's CPU time per poll (the
VoBox's cost; the WNs' sshd and aria2c run elsewhere) are printed, medians of the warm polls.
Goals: a warm status poll of 200 WNs within 2x of the floor; a poll of 500 WNs every 10 s under
5% of one core (extrapolated linearly from 200, the arithmetic printed).

Run as root from the repo: ``.venv/bin/python benchmarks/bench_status.py [--wns 50,200] [--polls 7]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))

import aria2p  # noqa: E402
import paramiko  # noqa: E402
from _common import throwaway_lab  # noqa: E402

from siteadmin.aria2conf.render import site_rpc_secret  # noqa: E402
from siteadmin.inventory import Inventory  # noqa: E402
from siteadmin.lab import Lab  # noqa: E402
from siteadmin.remote import SessionPool  # noqa: E402
from siteadmin.site import Site  # noqa: E402
from siteadmin.swarm import SwarmMonitor  # noqa: E402

PARALLEL = 32
ARIA2P_SAMPLE = 20
"""The aria2p baseline runs on this many WNs, one at a time, and is scaled to the lab's size."""
SETTLE = 10.0
"""Seconds after the last WN completed before measuring the seeding swarm."""
FLOOR_CALLS = ["aria2.getGlobalStat", "aria2.tellActive", "aria2.tellWaiting", "aria2.tellStopped", "aria2.getVersion"]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU of this process) seconds of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def median_of(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def line(name: str, wall: float, cpu: float) -> None:
    print(f"  {name:<34} wall {wall * 1000:8.1f} ms   CPU {cpu * 1000:8.1f} ms")


# ---------------------------------------------------------------- status itself


def status_cold(site: Site, hosts: list[str]) -> tuple[SwarmMonitor, tuple[float, float]]:
    """A new monitor and its first poll: (the monitor, kept for warm polls; (wall, CPU))."""
    made: list[SwarmMonitor] = []

    def cold() -> None:
        monitor = SwarmMonitor(site, parallelism=PARALLEL, keep_memory=False)
        made.append(monitor)
        report = monitor.poll(hosts)
        bad = [w for w in report.wns if not w.reachable]
        if bad:
            raise SystemExit(f"status: {len(bad)} WNs unread, e.g. {bad[0].host}: {bad[0].detail}")

    first = timed(cold)
    return made[0], first


# ---------------------------------------------------------------- baseline: aria2p, one WN at a time


def aria2p_serial(site: Site, hosts: list[str]) -> None:
    secret = site_rpc_secret(site, create=False)
    pool = SessionPool(site, Inventory(site))
    try:
        for host in hosts:
            session = pool.connect(host)
            try:
                tunnel = session.open_tunnel("127.0.0.1", site.wns.rpc_port)
                api = aria2p.API(aria2p.Client(host="http://127.0.0.1", port=tunnel.local_port, secret=secret or ""))
                api.get_stats()
                api.get_downloads()  # tellActive, tellWaiting, tellStopped: three calls
                api.client.get_version()
            finally:
                session.close()
    finally:
        pool.close()


# ---------------------------------------------------------------- baseline: the floor


class FloorWN:
    """One kept direct-tcpip channel to a WN's aria2c, bare HTTP/1.1 keep-alive on it."""

    def __init__(self, transport: paramiko.Transport, port: int, secret: str) -> None:
        self.chan = transport.open_channel("direct-tcpip", ("127.0.0.1", port), ("127.0.0.1", 0), timeout=10)
        self.chan.settimeout(10)
        self.token = f"token:{secret}"
        self.buf = b""

    def call(self) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "system.multicall",
                           "params": [[{"methodName": m, "params": [self.token]} for m in FLOOR_CALLS]]}).encode()
        self.chan.sendall(b"POST /jsonrpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                          b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            self.buf += self._recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        length = next(int(h.split(b":", 1)[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:"))
        while len(self.buf) < length:
            self.buf += self._recv()
        data, self.buf = self.buf[:length], self.buf[length:]
        return json.loads(data)

    def _recv(self) -> bytes:
        chunk = self.chan.recv(65536)
        if not chunk:
            raise EOFError("aria2c closed the connection")
        return chunk


class Floor:
    """The bare floor: kept paramiko sessions and channels, one multicall per WN, 32 threads."""

    def __init__(self, site: Site, hosts: list[str]) -> None:
        self.site, self.hosts = site, hosts
        self.secret = site_rpc_secret(site, create=False) or ""
        self.pool = SessionPool(site, Inventory(site))
        self.ex = ThreadPoolExecutor(PARALLEL)
        self.wns: list[FloorWN] = []

    def connect(self) -> None:
        sessions = list(self.ex.map(self.pool.session, self.hosts))
        self.wns = list(self.ex.map(lambda s: FloorWN(s.transport, self.site.wns.rpc_port, self.secret), sessions))
        self.poll()

    def poll(self) -> None:
        list(self.ex.map(FloorWN.call, self.wns))

    def close(self) -> None:
        for wn in self.wns:
            wn.chan.close()
        self.ex.shutdown()
        self.pool.close()


# ---------------------------------------------------------------- every WN seeding

NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


@contextlib.contextmanager
def roomy_neighbour_table(entries: int) -> Iterator[None]:
    """Raise the kernel's ARP table limits for the block, then put them back.

    The IPv4 neighbour table is one table for every network namespace, 1024 entries at most by
    default (gc_thresh3): 200 lab WNs that all talk to each other need about 200 x 200 entries,
    and past the limit new neighbours are refused, so SSH to most WNs fails with "no route to
    host". Measured here, not guessed: the first 200-WN seeding run lost 164-181 WNs that way.
    """
    names = ("gc_thresh1", "gc_thresh2", "gc_thresh3")
    before = {n: (NEIGH / n).read_text() for n in names}
    try:
        for n, value in zip(names, (entries // 4, entries // 2, entries), strict=True):
            (NEIGH / n).write_text(f"{value}\n")
        yield
    finally:
        for n in reversed(names):
            (NEIGH / n).write_text(before[n])



def make_everyone_seed(lab: Lab, timeout: float = 300.0) -> float:
    """Every WN fetches the package's .torrent URL (as the installer would) and keeps seeding; seconds it took."""
    url = lab.site.central.http_fallback + lab.state["package"]["torrent_name"]
    names = lab.wn_names
    started = time.monotonic()
    with ThreadPoolExecutor(16) as ex:
        metas = dict(zip(names, ex.map(lambda n: str(lab.rpc(n, "aria2.addUri", [[url]])), names), strict=True))
    pending = set(names)
    while pending:
        for name in list(pending):
            st = lab.rpc(name, "aria2.tellStatus", [metas[name], ["followedBy"]])
            if not st.get("followedBy"):
                continue
            bt = lab.rpc(name, "aria2.tellStatus", [st["followedBy"][0], ["completedLength", "totalLength"]])
            if bt["totalLength"] != "0" and bt["completedLength"] == bt["totalLength"]:
                pending.discard(name)
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{len(pending)} WNs did not complete within {timeout:g} s")
        time.sleep(0.5)
    return time.monotonic() - started


# ---------------------------------------------------------------- main


def measure(lab: Lab, polls: int, label: str) -> dict[str, tuple[float, float]]:
    site = lab.site
    hosts = Inventory(site).select()
    print(f"{len(hosts)} WNs, {label}:")
    warmup, _ = status_cold(site, hosts)  # page cache, sshd's first-connection work
    warmup.close()
    monitor, s_cold = status_cold(site, hosts)
    floor = Floor(site, hosts)
    try:
        f_cold = timed(floor.connect)
        # warm polls alternate between the two, so both see the same swarm (aria2c answers slower
        # while it moves data) and the same machine load
        s_samples, f_samples = [], []
        for _ in range(polls):
            s_samples.append(timed(lambda: monitor.poll(hosts)))
            f_samples.append(timed(floor.poll))
        s_warm, f_warm = median_of(s_samples), median_of(f_samples)
    finally:
        monitor.close()
        floor.close()
    line("status cold (connect + first poll)", *s_cold)
    line("status warm (median)", *s_warm)
    line("floor cold (connect + first call)", *f_cold)
    line("floor warm (median)", *f_warm)
    results = {"status_cold": s_cold, "status_warm": s_warm, "floor_cold": f_cold, "floor_warm": f_warm}
    if label == "idle":
        sample = hosts[:ARIA2P_SAMPLE]
        wall, cpu = timed(lambda: aria2p_serial(site, sample))
        scale = len(hosts) / len(sample)
        line(f"aria2p, one WN at a time ({len(sample)} WNs)", wall, cpu)
        line(f"  extrapolated to {len(hosts)} WNs", wall * scale, cpu * scale)
        results["aria2p"] = (wall * scale, cpu * scale)
    ratio = s_warm[0] / f_warm[0] if f_warm[0] else float("inf")
    print(f"  warm status / floor: {ratio:.2f}x wall ({'met' if ratio <= 2 else 'NOT met'}: goal within 2x), "
          f"{s_warm[1] / f_warm[1] if f_warm[1] else float('inf'):.2f}x CPU")
    per_wn_cpu = s_warm[1] / len(hosts)
    share = per_wn_cpu * 500 / 10
    print(f"  500 WNs every 10 s: {per_wn_cpu * 1000:.3f} ms CPU per WN per poll x 500 WNs / 10 s = "
          f"{share * 100:.2f}% of one core ({'met' if share < 0.05 else 'NOT met'}: goal under 5%)")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wns", default="50,200", help="lab sizes, comma-separated (default 50,200)")
    parser.add_argument("--polls", type=int, default=7, help="warm polls per measurement (default 7)")
    args = parser.parse_args()
    for n in (int(x) for x in args.wns.split(",")):
        with throwaway_lab(n, package_mb=1) as (lab, up):
            print(f"lab of {n} WNs up in {up:.1f} s")
            measure(lab, args.polls, "idle")
            with roomy_neighbour_table(max(1024, 4 * n * n)):
                took = make_everyone_seed(lab)
                time.sleep(SETTLE)
                print(f"every WN fetched the package and seeds it ({took:.1f} s; measured {SETTLE:g} s later)")
                measure(lab, args.polls, "every WN seeding")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
