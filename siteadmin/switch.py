"""Switching a CE's install method, gated end to end (``siteadmin switch``, the console's switch).

Going to ``Torrent``, one CE at a time, in this order:

1. ``preflight``: the firewall checks (``siteadmin.preflight``) on the WNs that serve the CE
   (``[ces.<name>] wns`` in the site config; all WNs when absent). Any error, or a WN that could
   not be checked, stops the switch (``blocked``); warnings are shown and stop it only with
   ``strict``;
2. ``rollout``: the WNs' rendered profile (``siteadmin.rollout.apply``); every WN must succeed;
3. ``ldap``: the compare-and-set of ``installMethod`` (``siteadmin.directory``), expecting the
   value the plan showed; or, for a site without write access, ``ldif-request``: the change
   request is written and the switch stops there (``requested``; ``verify`` confirms it later);
4. ``wait``: the swarm status (``siteadmin.swarm``) is polled until every one of those WNs
   has a reachable aria2c whose live options match its profile, for at most ``timeout`` seconds.

Going back (to any other method): ``ldap`` first, then with ``restore_profile`` the
``restore-profile`` step puts back on each WN the backup generation the last switch of this CE
to torrent took (``backups`` in its audit record).

A failure (or a cancel, or Ctrl-C) at any step undoes what this switch did, in reverse order:
the WNs whose file the failing step had already changed, then each earlier step (the LDAP value
set back by compare-and-set, the WNs' files rolled back to the generation taken before). Every
undo is reported. The step machine (``run_steps``) is pure: steps and undos are callables.

Audit: the steps' own services write their records (with ids); the switch writes one record
(``action: switch``) naming each step's outcome and the ids of its records, and what was undone.
A dry run (``plan`` alone) writes nothing anywhere.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from siteadmin import audit
from siteadmin.directory import CACHE_NOTE, TORRENT, Change, Directory, audit_value, check_ce_name, is_torrent_value, validate_method
from siteadmin.errors import ExitCode, SiteadminError, UsageError
from siteadmin.hostlist import fold
from siteadmin.inventory import Inventory
from siteadmin.preflight import CHECKS, CheckReport, run_check
from siteadmin.remote import Batches, Progress
from siteadmin.rollout import BUSY, UNCHANGED, HostReport, RolloutRun, apply, describe, report_of, rollback
from siteadmin.rollout import plan as rollout_plan
from siteadmin.site import Site
from siteadmin.swarm import SwarmMonitor, SwarmReport

# step names, in the admin's words
PREFLIGHT = "preflight"
ROLLOUT = "rollout"
LDAP = "ldap"
REQUEST = "ldif-request"
WAIT = "wait"
RESTORE = "restore-profile"

# a step's outcome (StepResult.outcome)
OK = "ok"
FAILED = "failed"
BLOCKED = "blocked"
"""The preflight found a reason not to go on (an error, an unchecked WN, or a warning with ``strict``)."""
CANCELLED = "cancelled"
NOT_RUN = "not run"
# an undo's outcome (UndoResult.outcome)
UNDONE = "undone"
UNDO_FAILED = "undo failed"

# the switch's outcome (SwitchResult.outcome); a failed step gives its own outcome (failed, blocked)
SWITCHED = "ok"
REQUESTED = "requested"
UNDO_INCOMPLETE = "undo incomplete"

DEFAULT_TIMEOUT = 300.0
"""Seconds the ``wait`` step polls the WNs' aria2c before it fails the switch."""
POLL_INTERVAL = 2.0
"""Seconds between two polls of the ``wait`` step."""
PREFLIGHT_CHECKS: tuple[str, ...] = tuple(c for c in CHECKS if c != "inbound")
"""The checks a switch runs (``inbound`` needs a host outside the site: ``siteadmin check --outside``)."""
NOT_READY_PROBLEMS = frozenset({"rpc-unreachable", "wrong-secret", "drift"})
"""Swarm problems that mean a WN's aria2c is not (yet) reachable and configured as its profile says."""

StepData = CheckReport | RolloutRun | Change | SwarmReport | tuple[RolloutRun, ...] | None
"""What a step's own service returned, for a face that wants more than the summary."""
EventKind = Literal["step-started", "step-progress", "step-done", "undo-started", "undo-done", "plan-progress"]


# ---------------------------------------------------------------- the step machine (pure)


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What a step (or an undo) returns when it succeeds."""

    summary: str
    details: tuple[str, ...] = ()
    data: StepData = None
    undo: Callable[[], StepOutcome] | None = None
    """Undoes what the step did; None when there is nothing to undo."""
    records: tuple[str, ...] = ()
    """Ids of the audit records the step wrote."""


class StepFailed(Exception):
    """A step did not succeed: why, and how to undo what it did before it failed (a rollout that reached some WNs)."""

    def __init__(
        self,
        summary: str,
        details: Sequence[str] = (),
        *,
        outcome: str = FAILED,
        data: StepData = None,
        undo: Callable[[], StepOutcome] | None = None,
        records: Sequence[str] = (),
        exit_code: int = ExitCode.FAILED,
    ) -> None:
        super().__init__(summary)
        self.summary = summary
        self.details = tuple(details)
        self.outcome = outcome
        self.data = data
        self.undo = undo
        self.records = tuple(records)
        self.exit_code = exit_code


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a switch: its name, what it does in one line, and the callable that does it."""

    name: str
    title: str
    run: Callable[[], StepOutcome]


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one step did."""

    step: str
    title: str
    outcome: str
    """``ok``, ``failed``, ``blocked``, ``cancelled`` or ``not run``."""
    summary: str
    details: tuple[str, ...] = ()
    elapsed: float = 0.0
    records: tuple[str, ...] = ()
    data: StepData = dataclasses.field(default=None, compare=False, repr=False)
    exit_code: int = ExitCode.OK

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "title": self.title, "outcome": self.outcome, "summary": self.summary,
            "details": list(self.details), "elapsed": round(self.elapsed, 3), "records": list(self.records),
        }


@dataclasses.dataclass(frozen=True)
class UndoResult:
    """What undoing one step did."""

    step: str
    outcome: str
    """``undone`` or ``undo failed``."""
    summary: str
    details: tuple[str, ...] = ()
    records: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "outcome": self.outcome, "summary": self.summary, "details": list(self.details), "records": list(self.records)}


@dataclasses.dataclass(frozen=True)
class SwitchEvent:
    """One thing a face shows as it happens: a step started, made progress, ended; an undo started or ended."""

    ce: str
    kind: EventKind
    step: str
    message: str
    result: StepResult | UndoResult | None = None


@dataclasses.dataclass(frozen=True)
class MachineRun:
    """What ``run_steps`` did: each step's result (those not reached as ``not run``) and the undos, in the order they ran."""

    steps: tuple[StepResult, ...]
    undone: tuple[UndoResult, ...]
    cancelled: bool

    @property
    def failed(self) -> StepResult | None:
        """The step that failed (or was cancelled); None when every step succeeded."""
        return next((s for s in self.steps if s.outcome not in (OK, NOT_RUN)), None)

    @property
    def undo_complete(self) -> bool:
        return all(u.outcome == UNDONE for u in self.undone)


Emit = Callable[[SwitchEvent], None]


def run_steps(steps: Sequence[Step], *, ce: str = "", cancel: threading.Event | None = None, progress: Emit | None = None) -> MachineRun:
    """Run steps in order; on the first failure (or cancel) undo what was done, in reverse order.

    The failing step's own partial undo (``StepFailed.undo``) runs first, then each earlier
    step's undo, newest first. An undo that fails is reported and the others still run. Never
    raises for a step's failure: a ``SiteadminError`` is that step's failure with its exit code,
    any other exception a failure naming it, Ctrl-C a cancel (undone the same way).

    Args:
        steps: the steps, in the order they must run.
        ce: the CE named in the events.
        cancel: set it to stop before the next step (the running step is asked through its own
            cancel, when it takes one); what was done is undone.
        progress: called with each event, in the calling thread.

    Returns:
        The MachineRun.
    """
    emit = progress or (lambda _event: None)
    results: list[StepResult] = []
    undos: list[tuple[str, Callable[[], StepOutcome]]] = []
    cancelled = False
    failed = False
    for index, step in enumerate(steps):
        if cancel is not None and cancel.is_set():
            cancelled = True
            results.append(StepResult(step.name, step.title, CANCELLED, "cancelled before it started", exit_code=ExitCode.INTERRUPTED))
            results += [StepResult(s.name, s.title, NOT_RUN, "not run") for s in steps[index + 1 :]]
            break
        emit(SwitchEvent(ce, "step-started", step.name, step.title))
        started = time.monotonic()
        try:
            out = step.run()
        except StepFailed as exc:
            result = StepResult(step.name, step.title, exc.outcome, exc.summary, exc.details, time.monotonic() - started,
                                exc.records, exc.data, exc.exit_code or ExitCode.FAILED)
            partial = exc.undo
        except SiteadminError as exc:
            result = StepResult(step.name, step.title, FAILED, exc.one_line(), (), time.monotonic() - started, exit_code=exc.exit_code)
            partial = None
        except KeyboardInterrupt:
            cancelled = True
            result = StepResult(step.name, step.title, CANCELLED, "interrupted", (), time.monotonic() - started, exit_code=ExitCode.INTERRUPTED)
            partial = None
        except Exception as exc:  # noqa: BLE001 - a bug in a step must still undo what the switch did
            result = StepResult(step.name, step.title, FAILED, f"internal error: {type(exc).__name__}: {exc}", (), time.monotonic() - started)
            partial = None
        else:
            result = StepResult(step.name, step.title, OK, out.summary, out.details, time.monotonic() - started, out.records, out.data)
            partial = None
            if out.undo is not None:
                undos.append((step.name, out.undo))
            if cancel is not None and cancel.is_set() and index + 1 < len(steps):
                cancelled = True
        if partial is not None:
            undos.append((step.name, partial))
        results.append(result)
        emit(SwitchEvent(ce, "step-done", step.name, result.summary, result))
        if not result.ok or cancelled:
            failed = True
            if result.ok:
                results += [StepResult(steps[index + 1].name, steps[index + 1].title, CANCELLED, "cancelled before it started",
                                       exit_code=ExitCode.INTERRUPTED)]
                results += [StepResult(s.name, s.title, NOT_RUN, "not run") for s in steps[index + 2 :]]
            else:
                results += [StepResult(s.name, s.title, NOT_RUN, "not run") for s in steps[index + 1 :]]
            break
    undone: list[UndoResult] = []
    if failed:
        for name, undo in reversed(undos):
            emit(SwitchEvent(ce, "undo-started", name, f"undoing {name}"))
            try:
                out = undo()
                done = UndoResult(name, UNDONE, out.summary, out.details, out.records)
            except StepFailed as exc:
                done = UndoResult(name, UNDO_FAILED, exc.summary, exc.details, exc.records)
            except SiteadminError as exc:
                done = UndoResult(name, UNDO_FAILED, exc.one_line())
            except Exception as exc:  # noqa: BLE001 - the other undos must still run
                done = UndoResult(name, UNDO_FAILED, f"internal error: {type(exc).__name__}: {exc}")
            undone.append(done)
            emit(SwitchEvent(ce, "undo-done", name, done.summary, done))
    return MachineRun(tuple(results), tuple(undone), cancelled)


# ---------------------------------------------------------------- plan and result


@dataclasses.dataclass(frozen=True)
class PlannedStep:
    """A step as the plan shows it."""

    name: str
    title: str

    def as_dict(self) -> dict[str, str]:
        return {"step": self.name, "title": self.title}


@dataclasses.dataclass(frozen=True)
class SwitchPlan:
    """What a switch of one CE will do; ``run`` carries it out as shown (the LDAP change expects ``before``)."""

    site: str
    ce: str
    """The CE's name as LDAP spells it."""
    dn: str
    before: tuple[str, ...]
    """installMethod as read when planning (empty when absent)."""
    to: str
    hosts: tuple[str, ...]
    """The WNs that serve the CE."""
    hosts_from: str
    """Where ``hosts`` came from, for the admin."""
    steps: tuple[PlannedStep, ...]
    checks: tuple[str, ...] = ()
    """The preflight checks to run (none when going back)."""
    strict: bool = False
    ldif: str = ""
    """The LDIF of the LDAP change ("" when the value is already ``to``)."""
    rollout: tuple[RolloutRun, ...] = ()
    """Dry runs: the profile rollout's per-WN diff (to torrent), or the restores' (going back)."""
    restore: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Going back with ``restore_profile``: WN -> the backup generation put back."""
    restore_from: str | None = None
    """The id of the switch record those generations come from."""
    request_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    notes: tuple[str, ...] = ()

    @property
    def torrent(self) -> bool:
        """Going to a torrent method."""
        return is_torrent_value(self.to)

    @property
    def unchanged(self) -> bool:
        """The CE is already on ``to`` and nothing else is to be done on the WNs."""
        return self.before == (self.to,) and not self.torrent and not self.restore

    def diffs(self) -> list[HostReport]:
        """The per-WN reports of the dry runs (diff, outcome), in order."""
        return [rep for run in self.rollout for r in run.results if (rep := report_of(r)) is not None]

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site, "ce": self.ce, "dn": self.dn, "before": audit_value(self.before), "to": self.to,
            "torrent": self.torrent, "hosts": fold(self.hosts), "wns": len(self.hosts), "hosts_from": self.hosts_from,
            "steps": [s.as_dict() for s in self.steps], "checks": list(self.checks), "strict": self.strict,
            "ldif": self.ldif,
            "rollout": [{"host": r.host, "ok": r.ok, "outcome": describe(r), "report": None if report_of(r) is None else report_of(r).as_dict()}  # type: ignore[union-attr]
                        for run in self.rollout for r in run.results],
            "restore": dict(self.restore), "restore_from": self.restore_from,
            "request_file": None if self.request_file is None else str(self.request_file),
            "timeout": self.timeout, "notes": list(self.notes),
        }


@dataclasses.dataclass(frozen=True)
class SwitchResult:
    """What a switch of one CE did."""

    plan: SwitchPlan
    outcome: str
    """``ok``, ``requested`` (LDIF written), ``unchanged``, or the failing step's ``failed`` / ``blocked``,
    ``cancelled``, ``undo incomplete`` (a failure whose undo failed too)."""
    steps: tuple[StepResult, ...]
    undone: tuple[UndoResult, ...]
    backups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """WN -> the backup generation the rollout took (what ``restore_profile`` puts back later)."""
    record: str | None = None
    """The id of the switch's audit record."""
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in (SWITCHED, REQUESTED, "unchanged")

    @property
    def exit_code(self) -> int:
        """0 when it did what was asked; else the failing step's code (1 a step failed, 3 LDAP unreachable...), 130 cancelled."""
        if self.ok:
            return ExitCode.OK
        if self.outcome == CANCELLED:
            return ExitCode.INTERRUPTED
        failed = next((s for s in self.steps if s.outcome not in (OK, NOT_RUN)), None)
        code = failed.exit_code if failed is not None and failed.exit_code else ExitCode.FAILED
        return int(code)

    @property
    def note(self) -> str:
        """What the admin should know after it: AliEn's cache delay, where the request went, what stayed."""
        if self.outcome == SWITCHED and self.plan.before != (self.plan.to,):
            return CACHE_NOTE
        if self.outcome == REQUESTED:
            return (f"LDIF change request written to {self.plan.request_file}: LDAP is unchanged until the central LDAP team applies it; "
                    f"then run `siteadmin switch --verify '{self.plan.ce}'`")
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ce": self.plan.ce, "to": self.plan.to, "before": audit_value(self.plan.before), "outcome": self.outcome,
            "ok": self.ok, "exit_code": self.exit_code, "hosts": fold(self.plan.hosts),
            "steps": [s.as_dict() for s in self.steps], "undone": [u.as_dict() for u in self.undone],
            "backups": dict(self.backups), "record": self.record, "elapsed": round(self.elapsed, 3), "note": self.note,
        }


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """``switch --verify``: whether a CE reached a method (after an LDIF request was applied)."""

    ce: str
    to: str
    """The method looked for."""
    to_from: str
    now: tuple[str, ...]
    """installMethod as read now."""
    wait: StepResult | None = None
    """Going to torrent: whether the CE's WNs have a reachable, configured aria2c."""
    record: str | None = None

    @property
    def ok(self) -> bool:
        return self.now == (self.to,) and (self.wait is None or self.wait.ok)

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.ok else ExitCode.FAILED

    def as_dict(self) -> dict[str, Any]:
        return {
            "ce": self.ce, "to": self.to, "to_from": self.to_from, "now": audit_value(self.now), "ok": self.ok,
            "wait": None if self.wait is None else self.wait.as_dict(), "record": self.record,
        }


# ---------------------------------------------------------------- helpers (pure)


def ce_hosts(site: Site, ce: str, inventory: Inventory | None = None) -> tuple[list[str], str]:
    """The WNs that serve a CE: ``[ces.<name>] wns`` (patterns and @groups), all WNs when absent or empty.

    Returns:
        (WN names in the site's order, where they came from).

    Raises:
        InventoryError: a pattern naming a host that is not a WN of the site, or a bad pattern.
        UsageError: the selection is empty.
    """
    inventory = inventory if inventory is not None else Inventory(site)
    every = inventory.select(None)
    section = site.ce_section(ce)
    if section is None or not section.wns:
        source = f"all WNs (no [ces.\"{ce}\"] wns in the site config)"
        chosen = every
    else:
        wanted: set[str] = set()
        for pattern in section.wns:
            wanted.update(inventory.select(pattern))
        chosen = [h for h in every if h in wanted]
        source = f"[ces.\"{ce}\"] wns = {', '.join(section.wns)}"
    if not chosen:
        raise UsageError(f"CE {ce}: no WNs to switch ({source})", "set [wns] hosts or [ces.\"<CE>\"] wns in the site config")
    return chosen, source


def restore_targets(records: Sequence[audit.AuditRecord], site: str, ce: str) -> tuple[dict[str, str], str] | None:
    """The backups the last switch of this CE to torrent took: ``({WN: generation id}, record id)``; None when there is none.

    Looks from the newest line for a ``switch`` record of this site and CE whose ``after`` is a
    torrent method and that went through (``ok`` or ``requested``).
    """
    for rec in reversed(records):
        event = rec.event
        if event is None or event.get("action") != "switch" or event.get("outcome") not in (SWITCHED, REQUESTED):
            continue
        if str(event.get("site", "")).casefold() != site.casefold() or str(event.get("ce", "")).casefold() != ce.casefold():
            continue
        after = event.get("after")
        if not isinstance(after, str) or not is_torrent_value(after):
            continue
        backups = event.get("backups")
        found = {str(h): str(b) for h, b in backups.items()} if isinstance(backups, dict) else {}
        return found, str(event.get("id") or f"line {rec.line}")
    return None


def requested_method(records: Sequence[audit.AuditRecord], site: str, ce: str) -> tuple[str, str] | None:
    """The method the last switch of this CE asked for with an LDIF request: ``(method, record id)``; None when none did."""
    for rec in reversed(records):
        event = rec.event
        if event is None or event.get("action") != "switch" or event.get("outcome") != REQUESTED:
            continue
        if str(event.get("site", "")).casefold() == site.casefold() and str(event.get("ce", "")).casefold() == ce.casefold():
            after = event.get("after")
            if isinstance(after, str):
                return after, str(event.get("id") or f"line {rec.line}")
    return None


def rollout_undo_targets(run: RolloutRun) -> tuple[dict[str, str], list[str]]:
    """What undoing a rollout (apply or restore) must put back: ``{WN: generation}``, and the WNs it cannot undo.

    A WN counts when its file was changed and stays changed: it succeeded, or it failed ``busy``
    (the new file kept for aria2c's next restart). A WN whose failure put its backup back
    itself, or that never installed the file, has nothing to undo. A WN that had no file before
    has no generation to go back to.
    """
    targets: dict[str, str] = {}
    cannot: list[str] = []
    for result in run.results:
        report = report_of(result)
        if report is None or report.outcome == UNCHANGED or report.dry_run:
            continue
        if not (result.ok or result.outcome == BUSY):
            continue
        if report.backup is None:
            cannot.append(result.host)
        else:
            targets[result.host] = report.backup
    return targets, cannot


def by_generation(targets: Mapping[str, str]) -> dict[str, list[str]]:
    """WNs grouped by the generation to put back (one rollback run per generation id)."""
    groups: dict[str, list[str]] = {}
    for host, generation in targets.items():
        groups.setdefault(generation, []).append(host)
    return groups


def preflight_verdict(report: CheckReport, strict: bool) -> tuple[bool, list[str]]:
    """Whether the preflight lets the switch go on, and the lines that say why (errors first, then warnings).

    Any error finding, an unchecked WN or a check that could not run stops it; warnings stop it only with ``strict``.
    """
    lines: list[str] = []
    if report.fatal is not None:
        lines.append(f"error: {report.fatal}")
    for host, why in sorted(report.unchecked.items()):
        lines.append(f"error: {host}: not checked: {why}")
    for finding in [*report.errors, *report.warnings]:
        lines.append(f"{finding.level}: {finding.check}: {finding.text}")
        if finding.reason:
            lines.append(f"    why: {finding.reason}")
        if finding.rule:
            lines.append(f"    fix: {finding.rule}")
    go = report.fatal is None and not report.errors and not report.unchecked and not (strict and report.warnings)
    return go, lines


def not_ready(report: SwarmReport, hosts: Sequence[str]) -> dict[str, str]:
    """WN -> why its aria2c is not yet reachable and configured as its profile says (only the WNs asked about)."""
    why: dict[str, str] = {}
    states = {w.host: w for w in report.wns}
    for host in hosts:
        state = states.get(host)
        if state is None:
            why[host] = "not polled"
            continue
        problems = [p for p in report.problems_of(host) if p.code in NOT_READY_PROBLEMS]
        if not state.reachable:
            why[host] = f"{state.reason}: {state.detail}" if state.detail else str(state.reason)
        elif problems:
            why[host] = "; ".join(f"{p.code}: {p.message}" for p in problems)
    return why


def _fold_reasons(reasons: Mapping[str, str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for host, why in reasons.items():
        groups.setdefault(why, []).append(host)
    return [f"{fold(hosts)}: {why}" for why, hosts in groups.items()]


def _rollout_lines(run: RolloutRun) -> list[str]:
    return _runs_lines([run])


def _runs_lines(runs: Sequence[RolloutRun]) -> list[str]:
    """WNs of several runs (one per generation) folded by what happened to them."""
    groups: dict[str, list[str]] = {}
    for one in runs:
        for result in one.results:
            groups.setdefault(describe(result), []).append(result.host)
    return [f"{fold(hosts)}: {label}" for label, hosts in groups.items()]


# ---------------------------------------------------------------- the service


@contextmanager
def _collecting() -> Iterator[list[Mapping[str, Any]]]:
    """The audit events written while the block runs (their ids link the switch record to its steps')."""
    seen: list[Mapping[str, Any]] = []
    lock = threading.Lock()

    def keep(event: Mapping[str, Any]) -> None:
        with lock:
            seen.append(event)

    with audit.watching(keep):
        yield seen


def _ids(events: Sequence[Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool]) -> tuple[str, ...]:
    return tuple(str(e["id"]) for e in events if "id" in e and keep(e))


class _Context:
    """What the steps of one switch share: the site, its services, the cancel and the events."""

    def __init__(self, site: Site, directory: Directory, inventory: Inventory, ce: str,
                 cancel: threading.Event | None, progress: Emit | None) -> None:
        self.site = site
        self.directory = directory
        self.inventory = inventory
        self.ce = ce
        self.cancel = cancel
        self.emit = progress or (lambda _event: None)
        self.backups: dict[str, str] = {}

    def say(self, step: str, message: str) -> None:
        self.emit(SwitchEvent(self.ce, "step-progress", step, message))

    def host_progress(self, step: str) -> Callable[[Progress[HostReport]], None]:
        def each(item: Progress[HostReport]) -> None:
            self.say(step, f"{item.done}/{item.total} {item.result.host}: {describe(item.result)}")

        return each

    def cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


def _method_action(before: Sequence[str], to: str) -> str:
    if is_torrent_value(to):
        return "enable"
    return "disable" if any(is_torrent_value(v) for v in before) else "set"


def _rollback_to(ctx: _Context, targets: Mapping[str, str], step: str) -> tuple[list[RolloutRun], tuple[str, ...]]:
    """Roll each WN back to its generation (one run per generation id); the runs and the ids of their records."""
    runs: list[RolloutRun] = []
    with _collecting() as events:
        for generation, hosts in by_generation(targets).items():
            runs.append(rollback(ctx.site, hosts, to=generation, inventory=ctx.inventory, restart_now=True, progress=ctx.host_progress(step)))
    run_ids = {r.run_id for r in runs}
    return runs, _ids(events, lambda e: e.get("run") in run_ids)


def _undo_rollout(ctx: _Context, run: RolloutRun, step: str) -> Callable[[], StepOutcome] | None:
    targets, cannot = rollout_undo_targets(run)
    if not targets and not cannot:
        return None

    def undo() -> StepOutcome:
        runs, records = _rollback_to(ctx, targets, step)
        lines = _runs_lines(runs)
        if cannot:
            lines.append(f"{fold(cannot)}: had no config before the switch; the new file is left in place")
        failed = [r for run_ in runs for r in run_.failed]
        if failed or cannot:
            raise StepFailed(
                f"rolled back {len(targets) - len(failed)} of {len(targets) + len(cannot)} WN(s); "
                f"{fold([r.host for r in failed] + cannot)} not back as before", lines, records=records,
            )
        return StepOutcome(f"put back the profile {fold(list(targets))} had before ({len(targets)} WN(s))", tuple(lines), records=records)

    return undo


def _preflight_step(ctx: _Context, plan: SwitchPlan) -> Step:
    def run() -> StepOutcome:
        report = run_check(ctx.site, list(plan.hosts), only=plan.checks, inventory=ctx.inventory, cancel=ctx.cancel,
                           progress=lambda line: ctx.say(PREFLIGHT, line))
        go, lines = preflight_verdict(report, plan.strict)
        if ctx.cancelled():
            raise StepFailed("cancelled during the preflight", lines, outcome=CANCELLED, data=report, exit_code=ExitCode.INTERRUPTED)
        if not go:
            parts = []
            if report.fatal is not None:
                parts.append("the check could not run")
            if report.unchecked:
                parts.append(f"{len(report.unchecked)} WN(s) not checked")
            if report.errors:
                parts.append(f"{len(report.errors)} error(s)")
            if plan.strict and report.warnings:
                parts.append(f"{len(report.warnings)} warning(s) (--strict)")
            stoppers = report.errors or (report.warnings if plan.strict else [])
            why = f": {stoppers[0].check}: {stoppers[0].text}" if stoppers else ""
            raise StepFailed(f"stopped by the preflight ({', '.join(parts)}){why}", lines, outcome=BLOCKED, data=report)
        warned = f", {len(report.warnings)} warning(s)" if report.warnings else ""
        return StepOutcome(f"passed on {len(plan.hosts)} WN(s) ({', '.join(report.checks)}){warned}", tuple(lines), data=report)

    return Step(PREFLIGHT, f"preflight ({', '.join(plan.checks)}) on {fold(plan.hosts)}", run)


def _rollout_step(ctx: _Context, plan: SwitchPlan) -> Step:
    def run() -> StepOutcome:
        with _collecting() as events:
            result = apply(ctx.site, list(plan.hosts), inventory=ctx.inventory, batches=Batches.from_site(ctx.site),
                           cancel=ctx.cancel, progress=ctx.host_progress(ROLLOUT))
        records = _ids(events, lambda e: e.get("run") == result.run_id)
        lines = tuple(_rollout_lines(result))
        undo = _undo_rollout(ctx, result, ROLLOUT)
        targets, _cannot = rollout_undo_targets(result)
        if not result.ok:
            failed = result.failed
            outcome = CANCELLED if ctx.cancelled() else FAILED
            raise StepFailed(f"{len(failed)} of {len(result.results)} WN(s) failed: {failed[0].line()}", lines, outcome=outcome,
                             data=result, undo=undo, records=records)
        ctx.backups.update(targets)
        changed = len(targets) + len(_cannot)
        return StepOutcome(f"{len(result.results)} WN(s): {changed} changed, {len(result.results) - changed} unchanged", lines,
                           data=result, undo=undo, records=records)

    return Step(ROLLOUT, f"roll the profile out to {fold(plan.hosts)}", run)


def _ldap_undo(ctx: _Context, plan: SwitchPlan, change: Change) -> Callable[[], StepOutcome]:
    def undo() -> StepOutcome:
        if len(plan.before) == 1:
            back, note = plan.before[0], ""
        else:
            back = ctx.site.ldap.default_method
            note = f" (it had {'no value' if not plan.before else '|'.join(plan.before)}; ldap.default_method set instead)"
        with _collecting() as events:
            undone = ctx.directory.set_method(plan.ce, back, expected=(change.after,), action=_method_action((change.after,), back))
        records = _ids(events, lambda e: str(e.get("ce", "")).casefold() == plan.ce.casefold())
        return StepOutcome(f"installMethod of {plan.ce} set back to {undone.after}{note}", records=records)

    return undo


def _ldap_step(ctx: _Context, plan: SwitchPlan) -> Step:
    def run() -> StepOutcome:
        with _collecting() as events:
            change = ctx.directory.set_method(plan.ce, plan.to, expected=plan.before, action=_method_action(plan.before, plan.to))
        records = _ids(events, lambda e: str(e.get("ce", "")).casefold() == plan.ce.casefold())
        shown = "|".join(plan.before) or "(none)"
        if change.outcome == "unchanged":
            return StepOutcome(f"installMethod of {plan.ce} already {plan.to}", data=change, records=records)
        note = f" ({change.note})" if change.note else ""
        return StepOutcome(f"installMethod of {plan.ce}: {shown} -> {plan.to}, read back{note}", data=change,
                           undo=_ldap_undo(ctx, plan, change), records=records)

    return Step(LDAP, f"set installMethod of {plan.ce} to {plan.to} (compare-and-set, expecting {'|'.join(plan.before) or 'none'})", run)


def _request_step(ctx: _Context, plan: SwitchPlan) -> Step:
    path = plan.request_file
    assert path is not None  # noqa: S101 - only planned with a request file

    def run() -> StepOutcome:
        with _collecting() as events:
            change = ctx.directory.set_method(plan.ce, plan.to, expected=plan.before, request_file=path, action=_method_action(plan.before, plan.to))
        records = _ids(events, lambda e: str(e.get("ce", "")).casefold() == plan.ce.casefold())
        if change.outcome == "unchanged":
            return StepOutcome(f"installMethod of {plan.ce} is already {plan.to}: no request written", data=change, records=records)
        return StepOutcome(f"LDIF change request written to {path}; LDAP not changed", data=change, records=records)

    return Step(REQUEST, f"write the LDIF change request to {path} (LDAP is not changed)", run)


def wait_ready(site: Site, hosts: Sequence[str], timeout: float, *, inventory: Inventory | None = None,
               cancel: threading.Event | None = None, say: Callable[[str], None] | None = None,
               interval: float = POLL_INTERVAL) -> tuple[bool, SwarmReport | None, dict[str, str]]:
    """Poll the WNs' aria2c until each is reachable with its profile's options live, for at most ``timeout`` seconds.

    Args:
        site: the site config.
        hosts: the WNs to wait for.
        timeout: seconds to keep polling.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop waiting.
        say: called with one line after each poll.
        interval: seconds between polls.

    Returns:
        (every WN ready, the last poll, WN -> why it is not ready).

    Raises:
        ConfigError: no RPC secret for the site yet, a bad key file or ssh config.
    """
    deadline = time.monotonic() + timeout
    last: SwarmReport | None = None
    why: dict[str, str] = {h: "not polled" for h in hosts}
    with SwarmMonitor(site, inventory, keep_memory=False) as monitor:
        while True:
            last = monitor.poll(list(hosts), cancel=cancel)
            why = not_ready(last, hosts)
            if say is not None:
                waiting = f"; waiting for {'; '.join(_fold_reasons(why))}" if why else ""
                say(f"{len(hosts) - len(why)} of {len(hosts)} WN(s) ready{waiting}")
            if not why or time.monotonic() + interval > deadline or (cancel is not None and cancel.is_set()):
                return not why, last, why
            if cancel is not None:
                cancel.wait(interval)
            else:
                time.sleep(interval)


def _wait_step(ctx: _Context, plan: SwitchPlan) -> Step:
    def run() -> StepOutcome:
        ready, report, why = wait_ready(ctx.site, plan.hosts, plan.timeout, inventory=ctx.inventory, cancel=ctx.cancel,
                                        say=lambda line: ctx.say(WAIT, line))
        if not ready:
            outcome = CANCELLED if ctx.cancelled() else FAILED
            raise StepFailed(f"{len(why)} of {len(plan.hosts)} WN(s) not ready after {plan.timeout:g} s", _fold_reasons(why),
                             outcome=outcome, data=report)
        return StepOutcome(f"aria2c reachable and configured on {len(plan.hosts)} WN(s)", data=report)

    return Step(WAIT, f"wait up to {plan.timeout:g} s for a reachable, configured aria2c on {fold(plan.hosts)}", run)


def _restore_step(ctx: _Context, plan: SwitchPlan) -> Step:
    def run() -> StepOutcome:
        if not plan.restore:
            return StepOutcome("no WN's profile changed in that switch: nothing to restore")
        runs: list[RolloutRun] = []
        with _collecting() as events:
            for generation, hosts in by_generation(plan.restore).items():
                runs.append(rollback(ctx.site, hosts, to=generation, inventory=ctx.inventory, cancel=ctx.cancel, progress=ctx.host_progress(RESTORE)))
        run_ids = {r.run_id for r in runs}
        records = _ids(events, lambda e: e.get("run") in run_ids)
        lines = tuple(_runs_lines(runs))
        undos = [u for r in runs if (u := _undo_rollout(ctx, r, RESTORE)) is not None]

        def undo() -> StepOutcome:
            outs = [u() for u in undos]
            return StepOutcome("; ".join(o.summary for o in outs), tuple(d for o in outs for d in o.details),
                               records=tuple(i for o in outs for i in o.records))

        failed = [r for run_ in runs for r in run_.failed]
        if failed:
            raise StepFailed(f"{len(failed)} WN(s) not restored: {failed[0].line()}", lines, data=tuple(runs),
                             undo=undo if undos else None, records=records)
        return StepOutcome(f"put back the profile of {len(plan.restore)} WN(s) from before the switch {plan.restore_from}", lines,
                           data=tuple(runs), undo=undo if undos else None, records=records)

    return Step(RESTORE, f"put back the profile {fold(list(plan.restore)) or 'no WN'} had before the switch to torrent", run)


def plan(
    site: Site,
    ce: str,
    to: str,
    *,
    strict: bool = False,
    request_file: Path | None = None,
    restore_profile: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Directory | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Emit | None = None,
) -> SwitchPlan:
    """What switching a CE to a method would do, changing nothing anywhere (``--dry-run`` prints it).

    Reads the CE from LDAP, works out its WNs, and for torrent plans the rollout (each WN's diff,
    over SSH) and the LDIF; going back, the LDIF and (``restore_profile``) the restores' diffs.

    Args:
        site: the site config.
        ce: the CE's name as in LDAP.
        to: the method, one of ``ldap.install_methods`` (exact spelling).
        strict: a preflight warning stops the switch too.
        request_file: write an LDIF change request there instead of changing LDAP.
        restore_profile: going back, put back the profile the WNs had before the last switch to torrent.
        timeout: seconds the ``wait`` step may poll.
        directory: an open Directory (the console's); one is opened and closed here when None.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop planning (the rollout's dry run stops; WNs not reached show ``cancelled``).
        progress: called with ``plan-progress`` events.

    Returns:
        The SwitchPlan.

    Raises:
        UsageError: bad CE name or method, unknown CE, a request file that exists, ``restore_profile``
            to torrent or without a recorded switch, ``request_file`` going back with ``restore_profile``.
        InventoryError: a bad ``[ces.<name>] wns`` pattern.
        ServiceUnreachable, PermissionDenied, ConfigError: LDAP or the config.
    """
    check_ce_name(ce)
    validate_method(to, site.ldap.install_methods)
    if not 0 < timeout <= 86400:
        raise UsageError(f"--timeout {timeout:g}: must be seconds greater than 0 and at most 86400")
    torrent = is_torrent_value(to)
    if restore_profile and torrent:
        raise UsageError("--restore-profile is for going back from torrent", "switching to torrent rolls the site's profile out anyway")
    if request_file is not None and restore_profile:
        raise UsageError("--ldif-request and --restore-profile do not go together",
                         "going back, LDAP changes first: switch once the request is applied, then restore the profile")
    if request_file is not None and request_file.exists():
        raise UsageError(f"{request_file}: already exists", "choose another --ldif-request file")
    emit = progress or (lambda _event: None)
    inventory = inventory if inventory is not None else Inventory(site)
    own = directory is None
    directory = directory if directory is not None else Directory(site)
    try:
        emit(SwitchEvent(ce, "plan-progress", LDAP, f"reading CE {ce} from LDAP"))
        change = directory.set_method(ce, to, dry_run=True)
    finally:
        if own:
            directory.close()
    name = change.ce
    hosts, source = ce_hosts(site, name, inventory)
    notes: list[str] = []
    steps: list[PlannedStep] = []
    runs: list[RolloutRun] = []
    restore: dict[str, str] = {}
    restore_from: str | None = None

    def say(item: Progress[HostReport]) -> None:
        emit(SwitchEvent(name, "plan-progress", ROLLOUT, f"{item.done}/{item.total} {item.result.host}: {describe(item.result)}"))

    if change.outcome == "unchanged":
        notes.append(f"installMethod of {name} is already {to}")
    if torrent:
        steps.append(PlannedStep(PREFLIGHT, f"preflight ({', '.join(PREFLIGHT_CHECKS)}) on {fold(hosts)}: an error stops the switch"
                                            + (", a warning too (--strict)" if strict else "; warnings are shown")))
        emit(SwitchEvent(name, "plan-progress", ROLLOUT, f"planning the rollout on {len(hosts)} WN(s)"))
        runs.append(rollout_plan(site, hosts, inventory=inventory, cancel=cancel, progress=say))
        steps.append(PlannedStep(ROLLOUT, f"roll the profile out to {fold(hosts)}: {'; '.join(_rollout_lines(runs[0]))}"))
        if request_file is not None:
            steps.append(PlannedStep(REQUEST, f"write the LDIF change request to {request_file} and stop (LDAP is not changed)"))
        else:
            steps.append(PlannedStep(LDAP, f"installMethod of {name}: {'|'.join(change.before) or '(none)'} -> {to} (compare-and-set)"))
            steps.append(PlannedStep(WAIT, f"wait up to {timeout:g} s for a reachable aria2c with the profile's options on each WN"))
    else:
        if request_file is not None:
            steps.append(PlannedStep(REQUEST, f"write the LDIF change request to {request_file} and stop (LDAP is not changed)"))
        else:
            steps.append(PlannedStep(LDAP, f"installMethod of {name}: {'|'.join(change.before) or '(none)'} -> {to} (compare-and-set)"))
        if restore_profile:
            found = restore_targets(audit.read(site.audit.path), directory.site_name, name)
            if found is None:
                raise UsageError(f"CE {name}: no switch to torrent in the audit log to restore the profile from",
                                 "put a profile back with `siteadmin rollback --list` and `siteadmin rollback --to ID`")
            restore, restore_from = found
            gone = sorted(set(restore) - set(hosts))
            if gone:
                notes.append(f"{fold(gone)}: in that switch but no longer among the CE's WNs; restored all the same")
            for generation, group in by_generation(restore).items():
                runs.append(rollback(site, group, to=generation, dry_run=True, inventory=inventory, cancel=cancel, progress=say))
            shown = fold(list(restore)) or "no WN (none changed then)"
            steps.append(PlannedStep(RESTORE, f"put back on {shown} the profile from before the switch {restore_from}"))
        else:
            notes.append("the WNs keep their torrent profile (--restore-profile puts back the one from before the switch)")
    return SwitchPlan(
        site=directory.site_name, ce=name, dn=change.dn, before=change.before, to=to, hosts=tuple(hosts), hosts_from=source,
        steps=tuple(steps), checks=PREFLIGHT_CHECKS if torrent else (), strict=strict, ldif=change.ldif, rollout=tuple(runs),
        restore=restore, restore_from=restore_from, request_file=request_file, timeout=timeout, notes=tuple(notes),
    )


def build_steps(ctx: _Context, plan: SwitchPlan) -> list[Step]:
    """The plan's steps as callables, in order."""
    makers: dict[str, Callable[[_Context, SwitchPlan], Step]] = {
        PREFLIGHT: _preflight_step, ROLLOUT: _rollout_step, LDAP: _ldap_step, REQUEST: _request_step, WAIT: _wait_step, RESTORE: _restore_step,
    }
    return [makers[s.name](ctx, plan) for s in plan.steps]


def run(
    site: Site,
    plan: SwitchPlan,
    *,
    directory: Directory | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Emit | None = None,
) -> SwitchResult:
    """Carry out a plan from ``plan`` (see the module docstring for the order and the undo).

    The caller holds the site's run lock (``siteadmin.runlock``) around it, as for any change.

    Args:
        site: the site config the plan was made with.
        plan: what the admin was shown; the LDAP change fails (``conflict``) if the CE's value
            changed since.
        directory: an open Directory (the console's); one is opened and closed here when None.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop: the running step stops as soon as it can, and what the switch
            did is undone.
        progress: called with each SwitchEvent in the calling thread (steps started, their
            progress lines, results, undos).

    Returns:
        The SwitchResult; step failures are in it, never raised.

    Raises:
        ConfigError: the audit log cannot be appended to (checked before anything is changed).
    """
    started = time.monotonic()
    audit.check_writable(site.audit.path)
    inventory = inventory if inventory is not None else Inventory(site)
    own = directory is None
    directory = directory if directory is not None else Directory(site)
    try:
        ctx = _Context(site, directory, inventory, plan.ce, cancel, progress)
        machine = run_steps(build_steps(ctx, plan), ce=plan.ce, cancel=cancel, progress=progress)
    finally:
        if own:
            directory.close()
    failed = machine.failed
    if failed is None:
        ldap_steps = [s for s in machine.steps if s.step in (LDAP, REQUEST)]
        unchanged = all(isinstance(s.data, Change) and s.data.outcome == "unchanged" for s in ldap_steps)
        if any(s.step == REQUEST for s in ldap_steps) and not unchanged:
            outcome = REQUESTED
        elif unchanged and not plan.torrent and not plan.restore:
            outcome = "unchanged"
        else:
            outcome = SWITCHED
    elif machine.cancelled or failed.outcome == CANCELLED:
        outcome = CANCELLED
    else:
        outcome = failed.outcome
    if failed is not None and not machine.undo_complete:
        outcome = UNDO_INCOMPLETE if outcome != CANCELLED else outcome
    backups = dict(ctx.backups) if failed is None else {}
    event = {
        "id": audit.new_id(),
        "action": "switch",
        "site": plan.site,
        "ce": plan.ce,
        "dn": plan.dn,
        "before": audit_value(plan.before),
        "after": plan.to,
        "hosts": fold(plan.hosts),
        "outcome": outcome,
        "steps": [{"step": s.step, "outcome": s.outcome, "summary": s.summary, "records": list(s.records)} for s in machine.steps],
        "undone": [{"step": u.step, "outcome": u.outcome, "summary": u.summary, "records": list(u.records)} for u in machine.undone],
        "backups": backups,
    }
    if plan.request_file is not None:
        event["request_file"] = str(plan.request_file)
    if plan.restore_from is not None:
        event["restored_from"] = plan.restore_from
    written = audit.record(site.audit.path, event)
    return SwitchResult(plan, outcome, machine.steps, machine.undone, backups, str(written["id"]), time.monotonic() - started)


def verify(
    site: Site,
    ce: str,
    to: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    directory: Directory | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Emit | None = None,
) -> VerifyResult:
    """Whether a CE reached a method (``switch --verify``), e.g. once the central LDAP team applied an LDIF request.

    Args:
        site: the site config.
        ce: the CE's name.
        to: the method expected; when None, the one the CE's last LDIF request asked for (audit
            log), else ``Torrent``.
        timeout: going to torrent, seconds to wait for the CE's WNs' aria2c (as the ``wait`` step).
        directory, inventory, cancel, progress: as ``run``.

    Returns:
        The VerifyResult (recorded in the audit log as ``switch.verify``).

    Raises:
        UsageError: bad CE name or method, unknown CE.
        ServiceUnreachable, PermissionDenied, ConfigError: LDAP or the config.
    """
    check_ce_name(ce)
    own = directory is None
    directory = directory if directory is not None else Directory(site)
    try:
        if to is None:
            found = requested_method(audit.read(site.audit.path), directory.site_name, ce)
            to, source = (found[0], f"the LDIF request of the switch {found[1]}") if found is not None else (TORRENT, "default")
        else:
            source = "asked"
        validate_method(to, site.ldap.install_methods)
        current = directory.show(ce)
    finally:
        if own:
            directory.close()
    wait: StepResult | None = None
    if current.install_methods == (to,) and is_torrent_value(to):
        hosts, _source = ce_hosts(site, current.name, inventory)
        ctx = _Context(site, directory, inventory if inventory is not None else Inventory(site), current.name, cancel, progress)
        machine = run_steps([_wait_step(ctx, SwitchPlan(
            site=directory.site_name, ce=current.name, dn=current.dn, before=current.install_methods, to=to, hosts=tuple(hosts),
            hosts_from=_source, steps=(), timeout=timeout))], ce=current.name, cancel=cancel, progress=progress)
        wait = machine.steps[0]
    result = VerifyResult(current.name, to, source, current.install_methods, wait)
    written = audit.record(site.audit.path, {
        "action": "switch.verify", "site": directory.site_name, "ce": current.name, "expected": to,
        "installMethod": audit_value(current.install_methods), "outcome": "ok" if result.ok else "failed",
        "wait": None if wait is None else wait.summary,
    })
    return dataclasses.replace(result, record=str(written["id"]))
