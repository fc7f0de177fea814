"""The first screen: the state of the site, and the first thing that needs attention.

It paints at once from the site config (site, LDAP URL, WN count); the answers that need the
network arrive afterwards, each from its own thread worker: the CEs and their mode (LDAP), the
last rollout (audit log) and the last check (the saved result), the WNs' health, swarm totals
and the share of bytes from site WNs (one status poll over RPC). The attention line names the
key that acts on it; Enter does it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from siteadmin.directory import CE
from siteadmin.inventory import Inventory, fold
from siteadmin.swarm import SwarmReport
from siteadmin.tui.services import AuditPage, LastRun, age
from siteadmin.tui.views.base import View, cell, error_line

ROWS = ("site", "LDAP", "CEs", "WNs", "rollout", "check", "swarm", "share")
LABELS = {
    "site": "site", "LDAP": "LDAP", "CEs": "CEs", "WNs": "WNs", "rollout": "last rollout",
    "check": "last check", "swarm": "swarm", "share": "from site WNs",
}


@dataclasses.dataclass(frozen=True)
class Attention:
    """One thing to look at: what, the view that acts on it, and the action there."""

    rank: int
    text: str
    view: str
    action: str = ""
    key: str = ""


@dataclasses.dataclass
class SiteState:
    """What the overview knows so far (None: not known yet)."""

    ces: list[CE] | None = None
    ldap_error: str | None = None
    audit: AuditPage | None = None
    check: LastRun | None = None
    check_loaded: bool = False
    swarm: SwarmReport | None = None
    swarm_error: str | None = None


def attention(state: SiteState) -> Attention | None:
    """The first thing that needs the admin, by rank; None when all is well (or not known yet)."""
    found: list[Attention] = []
    if state.ldap_error is not None:
        found.append(Attention(1, f"LDAP: {state.ldap_error}", "overview", "reload", "r retries"))
    if state.swarm is not None:
        down = [w.host for w in state.swarm.wns if not w.reachable]
        critical = [p for p in state.swarm.problems if p.severity == "critical"]
        if down:
            found.append(Attention(2, f"aria2c not reachable on {fold(down)}", "swarm", "", "7 shows the swarm"))
        elif critical:
            found.append(Attention(3, f"{len(critical)} swarm problems, first: {critical[0].host}: {critical[0].message}", "swarm", "", "7 shows the swarm"))
    if state.check_loaded:
        if state.check is None:
            found.append(Attention(5, "no preflight has been run on this VoBox", "preflight", "run", "6, c runs it"))
        elif state.check.outcome != "passed":
            found.append(Attention(4, f"the last preflight FAILED ({state.check.detail})", "preflight", "run", "6 shows it, c runs it again"))
    if state.audit is not None and state.audit.last_rollout is not None and state.audit.last_rollout.outcome != "ok":
        last = state.audit.last_rollout
        found.append(Attention(4, f"the last {last.what} failed: {last.detail}", "rollout", "plan", "5, p plans it again"))
    return min(found, key=lambda a: a.rank) if found else None


class OverviewView(View[None]):
    title = "Overview"
    hint = ""
    BINDINGS = [Binding("enter", "attend", "Act on it")]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state = SiteState()

    def compose_body(self) -> ComposeResult:
        yield Static("", id="attention", classes="attention", markup=False)
        with VerticalScroll(classes="facts", id="overview-facts"):
            for key in ROWS:
                with Horizontal(classes="fact"):
                    yield Static(LABELS[key], classes="fact-name", markup=False)
                    yield Static("…", classes="fact-value", id=f"fact-{key}", markup=False)

    def fact(self, key: str) -> str:
        """The text shown for one row (``site``, ``LDAP``, ``CEs``...)."""
        return str(self.query_one(f"#fact-{key}", Static).render())

    def on_mount(self) -> None:
        site = self.site
        hosts = Inventory(site).select()
        self._put("site", f"{site.site.name or '(not set)'} — {site.source or 'built-in defaults'}")
        self._put("LDAP", f"{site.ldap.url}: connecting…")
        self._put("WNs", f"{len(hosts)}: {fold(hosts) or '(none)'}; health: asking aria2c…")
        self._attention()

    def activate(self) -> None:
        self.ready = True  # its keys act on what is shown, however much has arrived
        if not self.loaded:
            self.loaded = True
            self.reload()

    def _put(self, key: str, text: str, style: str = "") -> None:
        self.query_one(f"#fact-{key}", Static).update(cell(text, style))

    def reload(self) -> None:
        self.state = SiteState()
        self.set_status("asking LDAP, the audit log and the WNs…", "busy")
        self.call("overview-ldap", self.services.list_ces, self._ces)
        self.call("overview-audit", self.services.audit_page, self._audit)
        self.call("overview-check", self.services.last_check, self._check)
        hosts = Inventory(self.site).select()
        job = self.start_job("swarm")
        self.call("overview-swarm", lambda: self.services.swarm(hosts, job.cancel), self._swarm)

    def fetch(self) -> None:
        return None

    # ------------------------------------------------ answers

    def _ces(self, ces: list[CE]) -> None:
        self.state.ces = ces
        self._put("LDAP", f"{self.site.ldap.url}: connected ({len(ces)} CEs read)", "green")
        if ces:
            text = ", ".join(f"{ce.name} {ce.install_method or '(none)'}" for ce in ces)
            on = sum(ce.torrent for ce in ces)
            self._put("CEs", f"{on} of {len(ces)} on torrent: {text}")
        else:
            self._put("CEs", "none under this site in LDAP")
        self._done()

    def _audit(self, page: AuditPage) -> None:
        self.state.audit = page
        last = page.last_rollout
        if last is None:
            self._put("rollout", "none in the audit log")
        else:
            style = "green" if last.outcome == "ok" else "red"
            self._put("rollout", f"{last.what} {last.outcome}, {age(last.when)}: {last.detail}", style)
        self._done()

    def _check(self, last: LastRun | None) -> None:
        self.state.check = last
        self.state.check_loaded = True
        if last is None:
            self._put("check", "never run on this VoBox (6, then c)", "yellow")
        else:
            self._put("check", f"{last.outcome}, {age(last.when)}: {last.detail}", "green" if last.outcome == "passed" else "red")
        self._done()

    def _swarm(self, report: SwarmReport) -> None:
        self.state.swarm = report
        total = len(report.wns)
        up = len(report.reachable)
        flagged = len({p.host for p in report.problems})
        style = "green" if up == total and not flagged else ("red" if up < total else "yellow")
        hosts = Inventory(self.site).select()
        self._put("WNs", f"{len(hosts)}: {fold(hosts)}; aria2c answers on {up} of {total}, {flagged} flagged", style)
        active = sum(w.active for w in report.wns)
        seeding = sum(w.seeding for w in report.wns)
        down = sum(w.download_speed for w in report.wns)
        up_speed = sum(w.upload_speed for w in report.wns)
        self._put("swarm", f"{active} downloading, {seeding} seeding, {len(report.packages)} packages; "
                           f"down {_rate(down)}, up {_rate(up_speed)}")
        self._put("share", report.share.label)
        self._done()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            message = error_line(event.worker.error)
            group = event.worker.group
            if group == "overview-ldap":
                self.state.ldap_error = message
                self._put("LDAP", message, "red")
                self._put("CEs", "unknown (LDAP)", "red")
            elif group == "overview-swarm":
                self.state.swarm_error = message
                self._put("swarm", f"unknown: {message}", "yellow")
                self._put("share", "-")
                hosts = Inventory(self.site).select()
                self._put("WNs", f"{len(hosts)}: {fold(hosts) or '(none)'}; health unknown (status)", "yellow")
            elif group == "overview-check":
                self.state.check_loaded = True
                self._put("check", message, "red")
            else:
                self._put("rollout", message, "red")
            self._done()

    def _done(self) -> None:
        self._attention()
        pending = [n for n, v in (("LDAP", self.state.ces is not None or self.state.ldap_error is not None),
                                  ("audit log", self.state.audit is not None),
                                  ("status", self.state.swarm is not None or self.state.swarm_error is not None)) if not v]
        if pending:
            self.set_status(f"waiting for {', '.join(pending)}…", "busy")
        else:
            self.set_status("up to date; r reloads", "ok")

    def _attention(self) -> None:
        found = attention(self.state)
        line = self.query_one("#attention", Static)
        if found is None:
            line.update("Nothing needs attention." if self.state.swarm is not None and self.state.ces is not None else "Looking at the site…")
            line.set_class(False, "-alert")
            return
        line.update(f"▶ {found.text}  [{found.key}; Enter]")
        line.set_class(True, "-alert")

    def action_attend(self) -> None:
        found = attention(self.state)
        if found is None:
            return
        if found.view == "overview":
            self.reload()
            return
        go = getattr(self.app, "act", None)
        if callable(go):
            go(found.view, found.action)


def _rate(bytes_per_second: int) -> str:
    value = float(bytes_per_second)
    for unit in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if value < 1024 or unit == "GiB/s":
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB/s"  # pragma: no cover
