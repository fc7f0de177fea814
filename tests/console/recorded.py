"""A site and its results recorded once, for the console's snapshot tests and the benchmark.

``recorded_site`` copies ``fixtures/`` (site.toml, its RPC secret) to a folder, then shows the
site as if it lived in /etc/siteadmin, so no screen shows a temporary path. ``RecordedServices``
answers the console's calls with fixed results (CEs, a rollout plan, a preflight report, a
swarm poll, audit records) built from the core's own types: the screens drawn from them do not
change with the lab's random addresses and timings. The profile check is the real one (render
and lint; without aria2c's own reading, whose timeout a loaded machine may reach).
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from siteadmin import audit, switch
from siteadmin.aria2conf import ProfileCheck, check_profiles
from siteadmin.directory import CE, Change, modify_ldif
from siteadmin.inventory import Inventory, fold
from siteadmin.preflight import CHECKS, CheckReport, Finding
from siteadmin.remote.fanout import HostResult, Progress
from siteadmin.rollout import HostReport, OptionChange, RolloutRun
from siteadmin.site import Site, load_site
from siteadmin.swarm import PackageView, Peer, Problem, Share, SwarmReport, Torrent, WNState
from siteadmin.tui.services import AuditPage, ConsoleServices, LastRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHOWN_AS = Path("/etc/siteadmin/site.toml")
BASE = "o=alice,dc=cern,dc=ch"
HOUR = 3600.0


def recorded_site(folder: Path) -> tuple[Site, Site]:
    """(the site as screens show it, the same site as files hold it) from the fixtures copied to ``folder``."""
    for name in ("site.toml", "rpc-secret"):
        shutil.copy(FIXTURES / name, folder / name)
        (folder / name).chmod(0o600)
    real = load_site(folder / "site.toml")
    shown = dataclasses.replace(real, source=SHOWN_AS, audit=dataclasses.replace(real.audit, path=SHOWN_AS.parent / "audit.jsonl"))
    return shown, real


def ces() -> list[CE]:
    def dn(name: str) -> str:
        return f"name={name},ou=CE,ou=Services,ou=EXAMPLE,ou=Sites,{BASE}"

    return [
        CE("CE1", dn("CE1"), ("CVMFS",), "ce1.example.org"),
        CE("CE2", dn("CE2"), ("Torrent",), "ce2.example.org"),
        CE("CE3", dn("CE3"), ("Parrot",), "ce3.example.org"),
    ]


DIFF = """--- wn001.example.org:/etc/aria2/aria2c.conf (now)
+++ wn001.example.org:/etc/aria2/aria2c.conf (new)
@@ -3,4 +3,4 @@
 enable-dht=true
-seed-time=5
+seed-time=10
-max-overall-upload-limit=10M
+max-overall-upload-limit=20M
"""


def plan_run(hosts: Sequence[str]) -> RolloutRun:
    results: list[HostResult[HostReport]] = []
    for i, host in enumerate(hosts):
        path = "/etc/aria2/aria2c.conf"
        changes: tuple[OptionChange, ...]
        if i == 0:
            changes = (OptionChange("seed-time", "5", "10", "new-downloads"), OptionChange("max-overall-upload-limit", "10M", "20M", "live"))
            report = HostReport(host, path, "changed", "sha256:" + "a" * 64, "sha256:" + "b" * 64, DIFF.replace("wn001.example.org", host),
                                changes, reload="rpc", dry_run=True)
        elif i == 1:
            changes = (OptionChange("listen-port", "6881-6999", "6881-6899", "restart"),)
            report = HostReport(host, path, "changed", "sha256:" + "c" * 64, "sha256:" + "d" * 64,
                                f"--- {host}:{path} (now)\n+++ {host}:{path} (new)\n-listen-port=6881-6999\n+listen-port=6881-6899\n",
                                changes, reload="restart", dry_run=True)
        else:
            report = HostReport(host, path, "unchanged", "sha256:" + "b" * 64, "sha256:" + "b" * 64, dry_run=True)
        results.append(HostResult(host, True, report, None, 0.1))
    return RolloutRun("plan", "run-0001", True, results, 1.2)


def check_report(hosts: Sequence[str]) -> CheckReport:
    report = CheckReport(checks=tuple(c for c in CHECKS if c != "inbound"), hosts=list(hosts))
    report.started = time.time() - 5 * HOUR
    report.elapsed = 7.4
    report.pairs, report.all_pairs = 30, 30
    report.ports_probed, report.ports_failed = 3570, 33
    report.findings = [
        Finding("ports", "error", "wn[001-003].example.org -> wn[004-006].example.org tcp 6881-6891 filtered",
                "the probe's SYN got no answer: a firewall drops it between the two groups",
                "nft add rule inet filter input ip saddr 10.1.2.0/24 tcp dport 6881-6999 accept"),
        Finding("multicast", "warning", "wn006.example.org hears no LPD announce (239.192.152.143:6771)",
                "IGMP snooping or a filter drops multicast to this WN; peers are still found by DHT and the tracker", ""),
    ]
    return report


def swarm_report(hosts: Sequence[str]) -> SwarmReport:
    wns: list[WNState] = []
    for i, host in enumerate(hosts):
        if i == len(hosts) - 1:
            wns.append(WNState(host, False, "refused", "connect to 127.0.0.1:6800 through the tunnel: connection refused"))
            continue
        peers = (
            Peer("10.1.2.11", 6881, "site", hosts[(i + 1) % len(hosts)], 2_400_000, 0, False),
            Peer("192.0.2.10", 8092, "central", None, 800_000, 0, True),
        )
        seeding = i % 2 == 1
        torrent = Torrent(f"gid{i:04d}", "VO_ALICE@AliPhysics::v5-09-59", "c" * 40, "bittorrent", "active" if not seeding else "complete",
                          1_200_000_000, 1_200_000_000 if seeding else 700_000_000, 300_000_000, 0 if seeding else 3_200_000,
                          1_100_000, 2, seeding, 60.0 if seeding else None, 0.25, peers if not seeding else (), None)
        wns.append(WNState(host, True, None, "", "1.36.0", 0 if seeding else 1, 0, 1 if seeding else 0, 0,
                           torrent.download_speed, torrent.upload_speed, (torrent,)))
    problems = [Problem(hosts[-1], "rpc-unreachable", "aria2c refused the RPC connection (is it running?)")]
    package = PackageView("VO_ALICE@AliPhysics::v5-09-59", tuple(h for i, h in enumerate(hosts[:-1]) if i % 2 == 1),
                          tuple(h for i, h in enumerate(hosts[:-1]) if i % 2 == 1), tuple(h for i, h in enumerate(hosts[:-1]) if i % 2 == 0),
                          (), (), Share(3_100_000_000, 900_000_000, False))
    return SwarmReport(time.time(), 0.4, tuple(wns), (package,), tuple(problems), Share(3_100_000_000, 900_000_000, False))


def audit_page() -> AuditPage:
    now = time.time()
    # fixed texts in the table: the "when" column shows dates, so these records carry fixed ones
    events: list[dict[str, Any]] = [
        {"when": "2026-11-30T09:12:03Z", "user": "admin", "action": "enable", "site": "EXAMPLE", "ce": "CE2", "before": "CVMFS",
         "after": "Torrent", "outcome": "ok"},
        {"when": "2026-11-30T10:40:51Z", "user": "admin", "action": "rollout.apply.run", "hosts": "wn[001-006].example.org",
         "count": 6, "failed": 0, "outcome": "ok"},
    ]
    records = [audit.AuditRecord(i + 1, e) for i, e in enumerate(events)]
    last = LastRun("rollout", now - 26 * HOUR, "ok", "6 WNs (wn[001-006].example.org), 0 failed")
    return AuditPage(len(records), records, last)


class RecordedServices(ConsoleServices):
    """The console's calls answered from the recording (no LDAP, SSH or RPC)."""

    def __init__(self, shown: Site, real: Site, *, swarm: SwarmReport | None = None) -> None:
        super().__init__(shown)
        self.real = real
        self.swarm_answer = swarm
        self.writes: list[str] = []

    def list_ces(self) -> list[CE]:
        return ces()

    def ce_preview(self, name: str, action: str, expected: tuple[str, ...]) -> Change:
        ce = next(c for c in ces() if c.name == name)
        after = "Torrent" if action == "enable" else "CVMFS"
        return Change(ce.name, ce.dn, action, expected, after, "dry-run", ldif=modify_ldif(ce.dn, expected, after))

    def ce_change(self, name: str, action: str, expected: tuple[str, ...]) -> Change:
        self.writes.append(f"ldap {action} {name}")
        raise AssertionError("a recorded console never writes")

    def switch_target(self, ce: CE) -> tuple[str, str]:
        return "Torrent", "torrent mode"

    def switch_plan(self, ce: str, to: str, cancel: threading.Event, progress: Callable[[switch.SwitchEvent], None]) -> switch.SwitchPlan:
        found = next(c for c in ces() if c.name == ce)
        hosts = tuple(hosts_of(self.site))
        steps = (
            switch.PlannedStep(switch.PREFLIGHT, f"preflight (local, central, ports, multicast, exposure) on {fold(hosts)}: "
                                                 "an error stops the switch; warnings are shown"),
            switch.PlannedStep(switch.ROLLOUT, f"roll the profile out to {fold(hosts)}: 2 changed, 4 unchanged"),
            switch.PlannedStep(switch.LDAP, f"installMethod of {ce}: {'|'.join(found.install_methods)} -> {to} (compare-and-set)"),
            switch.PlannedStep(switch.WAIT, "wait up to 300 s for a reachable aria2c with the profile's options on each WN"),
        )
        return switch.SwitchPlan(site="EXAMPLE", ce=ce, dn=found.dn, before=found.install_methods, to=to, hosts=hosts,
                                 hosts_from="all WNs (no [ces.CE1] wns)", steps=steps, checks=("local", "central", "ports", "multicast", "exposure"),
                                 ldif=modify_ldif(found.dn, found.install_methods, to), rollout=(plan_run(hosts),))

    def switch_run(self, plan: switch.SwitchPlan, cancel: threading.Event, progress: Callable[[switch.SwitchEvent], None]) -> switch.SwitchResult:
        self.writes.append(f"switch {plan.ce}")
        raise AssertionError("a recorded console never writes")

    def reach(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[str]], None]) -> list[HostResult[str]]:
        results = []
        for i, host in enumerate(hosts):
            if i == len(hosts) - 1:
                result: HostResult[str] = HostResult(host, False, None, "connection refused: 10.1.2.16:22", 0.01, "connection refused", "unreachable")
            else:
                result = HostResult(host, True, host, None, 0.05)
            results.append(result)
            progress(Progress(result, i + 1, len(hosts)))
        return results

    def profiles(self) -> ProfileCheck:
        # the WNs' interfaces as recorded, not this machine's (the LPD rule judges them); aria2c's own
        # reading is left out: on a loaded machine its timeout would change the picture
        return check_profiles(self.real, interfaces=lambda hosts: {h: ("eth0",) for h in hosts}, aria2c=False)

    def rollout_plan(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        run = plan_run(hosts)
        for i, result in enumerate(run.results):
            progress(Progress(result, i + 1, len(hosts)))
        return run

    def rollout_apply(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        self.writes.append("rollout apply")
        raise AssertionError("a recorded console never writes")

    def rollback(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        self.writes.append("rollback")
        raise AssertionError("a recorded console never writes")

    def preflight(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[str], None]) -> CheckReport:
        return check_report(hosts)

    def last_saved_check(self) -> dict[str, Any] | None:
        return check_report(self.hosts()).as_dict()

    def last_check(self) -> LastRun | None:
        return LastRun("check", time.time() - 5 * HOUR, "FAILED", "6 WNs, 1 error")

    def swarm(self, hosts: Sequence[str], cancel: threading.Event) -> SwarmReport:
        return self.swarm_answer if self.swarm_answer is not None else swarm_report(hosts)

    def audit_page(self) -> AuditPage:
        return audit_page()

    def preview(self, site: Site, host: str) -> str:
        real = dataclasses.replace(site, aria2c=dataclasses.replace(site.aria2c, rpc_secret_file=self.real.aria2c.rpc_secret_file))
        return super().preview(real, host)

    def plan_profile(self, changes: dict[str, str | None]) -> Any:
        from siteadmin.siteedit import plan_profile_edit

        assert self.real.source is not None
        edit = plan_profile_edit(self.real.source, changes)
        return dataclasses.replace(edit, diff=edit.diff.replace(str(self.real.source), str(SHOWN_AS)))

    def current_options(self) -> dict[str, str]:
        from siteadmin.siteedit import read_options

        assert self.real.source is not None
        return read_options(self.real.source.read_text())

    def save_profile(self, edit: Any) -> Path:
        self.writes.append("site.toml")
        raise AssertionError("a recorded console never writes")


def hosts_of(site: Site) -> list[str]:
    return Inventory(site).select()
