"""`siteadmin check`'s WN<->WN matrix against nmap, one pair at a time as an administrator would.

A lab of 20 WNs (default) with UDP 6900-6910 dropped on one WN. Measured in one run:

- the full matrix of the check (every ordered pair, TCP and UDP over 6881-6999), with the exact
  verdict it must give (that WN's 11 UDP ports filtered from every other WN, nothing else);
- nmap -sT and nmap -sU over a sample of the same pairs and ports, each pair on its own, from
  inside the source WN's namespace against a WN where nothing but aria2c listens (the usual case
  before torrent mode is on), then extrapolated to all pairs. Linux rate-limits ICMP
  port-unreachable replies (a burst, then about one a second), which is what makes -sU slow; and
  -sU can only call a port that gives no answer ``open|filtered``.

Goal: the whole 20-WN matrix in under 30 s wall, at least 100x faster than nmap over the same
pairs, with an exact verdict for every UDP port.

    .venv/bin/python benchmarks/bench_check.py [--wns 20] [--tcp-pairs 2] [--udp-pairs 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import report, throwaway_lab  # noqa: E402

from siteadmin.hostlist import fold  # noqa: E402
from siteadmin.lab import Lab  # noqa: E402
from siteadmin.preflight import run_check  # noqa: E402

PORTS = "6881-6999"
DROPPED = "6900-6910"


def nmap_pair(lab: Lab, source: str, target: str, scan: str) -> tuple[float, dict[str, int]]:
    """Wall time of one nmap scan from ``source``'s namespace to ``target``, and its port states counted."""
    ns = lab.wn_ns(source)
    assert ns is not None
    argv = ["ip", "netns", "exec", ns, "nmap", "-n", "-Pn", scan, "-p", PORTS, "-oG", "-", lab.wn(target).address]
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"nmap failed: {done.stderr.strip()}")
    states: dict[str, int] = {}
    for line in done.stdout.splitlines():
        if not line.startswith("Host:"):
            continue  # comments and the "# Ports scanned" line
        ignored = re.search(r"Ignored State: (\S+) \((\d+)\)", line)
        if ignored:
            states[ignored.group(1)] = states.get(ignored.group(1), 0) + int(ignored.group(2))
        ports = re.search(r"Ports: (.*?)(\t|$)", line)
        if ports:
            for entry in ports.group(1).split(", "):
                fields = entry.split("/")
                if len(fields) > 1:
                    states[fields[1]] = states.get(fields[1], 0) + 1
    if not states:
        print(f"  (nmap's output, no port states found in it:)\n{done.stdout}{done.stderr}")
    return took, states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wns", type=int, default=20)
    parser.add_argument("--tcp-pairs", type=int, default=2, help="pairs nmap -sT scans (one at a time)")
    parser.add_argument("--udp-pairs", type=int, default=1, help="pairs nmap -sU scans (each takes minutes)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark brings up a lab in network namespaces")
    if shutil.which("nmap") is None:
        raise SystemExit("nmap is not installed (apt-get install nmap)")
    with throwaway_lab(args.wns) as (lab, up):
        hosts = lab.wn_names
        n = len(hosts)
        target = hosts[min(4, n - 1)]
        ns = lab.wn_ns(target)
        assert ns is not None
        lab.apply_nft(ns, f"table inet bench {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  udp dport {DROPPED} drop\n }}\n}}\n")
        print(f"lab of {n} WNs up in {up:.1f} s; UDP {DROPPED} dropped on {target}")

        t0 = time.perf_counter()
        result = run_check(lab.site, hosts, only=("ports",))
        check_wall = time.perf_counter() - t0
        expected = {f"{fold(h for h in hosts if h != target)} -> {target} udp {DROPPED} filtered"}
        got = {f.text for f in result.findings}
        exact = got == expected and result.ports_failed == 11 * (n - 1) and not result.unchecked
        print(f"check: {result.pairs} pairs x {result.ports_probed // max(result.pairs, 1)} port verdicts = {result.ports_probed} "
              f"in {check_wall:.2f} s wall; {result.ports_failed} not open; exact: {'yes' if exact else 'NO'}")
        for line in sorted(got):
            print(f"  {line}")

        others = [h for h in hosts if h != target]
        tcp_pairs = [(others[i % len(others)], target if i == 0 else others[(i + 1) % len(others)]) for i in range(args.tcp_pairs)]
        udp_pairs = [(others[0], target)] + [(others[i], others[i + 1]) for i in range(1, args.udp_pairs)]
        tcp_times, udp_times, ambiguous = [], [], 0
        for source, dest in tcp_pairs:
            took, states = nmap_pair(lab, source, dest, "-sT")
            tcp_times.append(took)
            print(f"nmap -sT {source} -> {dest}: {took:.2f} s {states}")
        for source, dest in udp_pairs:
            took, states = nmap_pair(lab, source, dest, "-sU")
            udp_times.append(took)
            ambiguous += states.get("open|filtered", 0)
            print(f"nmap -sU {source} -> {dest}: {took:.2f} s {states}")
        per_pair = sum(tcp_times) / len(tcp_times) + sum(udp_times) / len(udp_times)
        all_pairs = n * (n - 1)
        nmap_total = per_pair * all_pairs
        print(f"nmap extrapolated: ({sum(tcp_times) / len(tcp_times):.2f} s -sT + {sum(udp_times) / len(udp_times):.2f} s -sU) per pair "
              f"x {all_pairs} pairs = {nmap_total:.0f} s ({nmap_total / 3600:.2f} h)")
        print(f"ports nmap -sU could only call open|filtered: {ambiguous} over {len(udp_pairs)} pair(s); the check: 0 (every UDP verdict exact)")
        report(f"check vs nmap, {n} WNs", check_wall, nmap_total, "whole matrix < 30 s, >= 100x faster than nmap, exact",
               check_wall < 30 and nmap_total / check_wall >= 100 and exact)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
