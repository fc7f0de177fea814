"""The console's calls into the core, in one place: every LDAP, SSH, RPC and file call a view makes.

Views call these from thread workers only (never on the event loop). Each method is typed, so
what a worker hands a view is a core type (``list[CE]``, ``RolloutRun``, ``CheckReport``,
``SwarmReport``...), never ``Any``. ``close()`` ends what is kept between calls (the swarm
monitor's sessions and tunnels); the app calls it when it quits.

Snapshot tests replace this class with one answering recorded results, so the screens they
draw do not change with the lab's addresses and timings.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from siteadmin import audit, preflight, rollout, runlock, switch
from siteadmin.aria2conf import ProfileCheck, check_profiles, render
from siteadmin.directory import CE, TORRENT, Change, Directory, is_torrent_value, restore_method
from siteadmin.inventory import WN, Inventory
from siteadmin.preflight import CheckReport
from siteadmin.remote.fanout import Batches, HostResult, Progress
from siteadmin.remote.reach import reach_wns
from siteadmin.rollout import HostReport, RolloutRun
from siteadmin.site import Site
from siteadmin.siteedit import ProfileEdit, plan_profile_edit, read_options, write_site_text
from siteadmin.swarm import SwarmMonitor, SwarmReport

AUDIT_SHOWN = 500
"""Audit records the console keeps (the newest); all are counted."""


@dataclasses.dataclass(frozen=True)
class LastRun:
    """The last rollout or check, as the overview shows it."""

    what: str
    when: float
    """Unix time."""
    outcome: str
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class AuditPage:
    total: int
    records: list[audit.AuditRecord]
    last_rollout: LastRun | None = None


def _when(event: dict[str, Any]) -> float:
    import datetime as dt

    text = str(event.get("when", ""))
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class ConsoleServices:
    """The blocking calls of the console over one site config."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._monitor: SwarmMonitor | None = None
        self._poll_lock = threading.Lock()
        self._closed = False

    def replace_site(self, site: Site) -> None:
        """The site config changed (a profile was saved): later calls use the new one."""
        with self._lock:
            self.site = site
            monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.close()

    # ------------------------------------------------ inventory and config

    def wns(self) -> list[WN]:
        inventory = Inventory(self.site)
        return [inventory.wn(host) for host in inventory.select()]

    def hosts(self) -> list[str]:
        return Inventory(self.site).select()

    def batches(self) -> Batches:
        return Batches.from_site(self.site)

    # ------------------------------------------------ LDAP

    def list_ces(self) -> list[CE]:
        with Directory(self.site) as directory:
            return directory.list_ces()

    def ce_preview(self, name: str, action: str, expected: tuple[str, ...]) -> Change:
        """The change a toggle would send (its LDIF), computed with a dry run: nothing written."""
        with Directory(self.site) as directory:
            method = directory.enable if action == "enable" else directory.disable
            return method(name, dry_run=True, expected=expected)

    def ce_change(self, name: str, action: str, expected: tuple[str, ...]) -> Change:
        with runlock.hold(self.site, f"siteadmin console: ce {action} {name}"), Directory(self.site) as directory:
            method = directory.enable if action == "enable" else directory.disable
            return method(name, expected=expected)

    # ------------------------------------------------ the switch (preflight, rollout, LDAP, wait)

    def switch_target(self, ce: CE) -> tuple[str, str]:
        """Where ``s`` switches a CE: to Torrent, or back to the method it had before (audit log)."""
        if not is_torrent_value(ce.install_method or ""):
            return TORRENT, "torrent mode"
        name = self.site.site.name or ""
        method, source = restore_method(audit.read(self.site.audit.path), name, ce.name, self.site.ldap.install_methods,
                                        self.site.ldap.default_method)
        return method, f"back, from {source}"

    def switch_plan(self, ce: str, to: str, cancel: threading.Event, progress: Callable[[switch.SwitchEvent], None]) -> switch.SwitchPlan:
        return switch.plan(self.site, ce, to, cancel=cancel, progress=progress)

    def switch_run(self, plan: switch.SwitchPlan, cancel: threading.Event, progress: Callable[[switch.SwitchEvent], None]) -> switch.SwitchResult:
        with runlock.hold(self.site, f"siteadmin console: switch {plan.ce} --to {plan.to}"):
            return switch.run(self.site, plan, cancel=cancel, progress=progress)

    # ------------------------------------------------ SSH

    def reach(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[str]], None]) -> list[HostResult[str]]:
        return reach_wns(self.site, hosts, cancel=cancel, progress=progress)

    def profiles(self) -> ProfileCheck:
        return check_profiles(self.site)

    def rollout_plan(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        return rollout.plan(self.site, hosts, cancel=cancel, progress=progress)

    def rollout_apply(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        with runlock.hold(self.site, "siteadmin console: apply"):
            return rollout.apply(self.site, hosts, batches=self.batches(), cancel=cancel, progress=progress)

    def rollback(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[Progress[HostReport]], None]) -> RolloutRun:
        with runlock.hold(self.site, "siteadmin console: rollback"):
            return rollout.rollback(self.site, hosts, batches=self.batches(), cancel=cancel, progress=progress)

    def preflight(self, hosts: Sequence[str], cancel: threading.Event, progress: Callable[[str], None]) -> CheckReport:
        report = preflight.run_check(self.site, hosts, cancel=cancel, progress=progress)
        if not cancel.is_set():
            try:
                preflight.save_last(report)
            except OSError:
                pass  # the result is shown all the same; only the overview's "last check" misses it
        return report

    def last_saved_check(self) -> dict[str, Any] | None:
        """The saved result of the last check on this VoBox (``siteadmin check`` or the console)."""
        return preflight.load_last()

    def last_check(self) -> LastRun | None:
        data = self.last_saved_check()
        if data is None:
            return None
        findings = data.get("findings") or []
        errors = sum(1 for f in findings if isinstance(f, dict) and f.get("level") == "error")
        unchecked = len(data.get("unchecked") or {})
        outcome = "passed" if data.get("ok") else "FAILED"
        detail = f"{data.get('wns', '?')} WNs, {errors} error{'' if errors == 1 else 's'}" + (f", {unchecked} not checked" if unchecked else "")
        return LastRun("check", float(data.get("started") or 0.0), outcome, detail)

    # ------------------------------------------------ RPC

    def swarm(self, hosts: Sequence[str], cancel: threading.Event) -> SwarmReport:
        """One poll through the kept monitor (sessions, tunnels and memory kept between polls)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the console is closing")
            monitor = self._monitor
            if monitor is None:
                monitor = self._monitor = SwarmMonitor(self.site, keep_memory=False)
        with self._poll_lock:  # the overview and the swarm view share the monitor: one poll at a time
            return monitor.poll(hosts, cancel=cancel)

    # ------------------------------------------------ files

    def audit_page(self) -> AuditPage:
        counted = 0
        last_rollout: LastRun | None = None

        def counting() -> Iterator[audit.AuditRecord]:
            nonlocal counted, last_rollout
            for record in audit.iter_records(self.site.audit.path):
                counted += 1
                event = record.event
                if event is not None and str(event.get("action", "")) in ("rollout.apply.run", "rollout.rollback.run"):
                    what = "rollout" if event["action"] == "rollout.apply.run" else "rollback"
                    detail = f"{event.get('count', '?')} WNs ({event.get('hosts', '')}), {event.get('failed', 0)} failed"
                    last_rollout = LastRun(what, _when(event), str(event.get("outcome", "?")), detail)
                yield record

        last = collections.deque(counting(), maxlen=AUDIT_SHOWN)
        return AuditPage(counted, list(last), last_rollout)

    def plan_profile(self, changes: dict[str, str | None]) -> ProfileEdit:
        path = self.site.source
        if path is None:
            from siteadmin.errors import ConfigError

            raise ConfigError("the console runs on the built-in defaults: there is no site.toml to save to", "siteadmin config init FILE, then --site FILE")
        return plan_profile_edit(path, changes)

    def current_options(self) -> dict[str, str]:
        """``[aria2c] options`` as site.toml holds them now (empty without a file)."""
        path = self.site.source
        if path is None or not path.is_file():
            return {}
        return read_options(path.read_text(encoding="utf-8"))

    def save_profile(self, edit: ProfileEdit) -> Path:
        return write_site_text(edit)

    def preview(self, site: Site, host: str) -> str:
        """The file a WN would get with an edited profile, secrets masked."""
        return render(site, host, create_secret=False).masked_text

    # ------------------------------------------------ lifetime

    def close(self) -> None:
        """End kept sessions and tunnels (idempotent)."""
        with self._lock:
            self._closed = True
            monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.close()


def age(when: float, now: float | None = None) -> str:
    """``3 min ago``, ``2 h ago``, ``5 days ago``."""
    seconds = max(0.0, (now if now is not None else time.time()) - when)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
