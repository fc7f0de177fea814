"""The gated switch of a CE (``siteadmin switch``) in the console: plan, confirm, watch each step.

``s`` on a CE opens this screen. It plans first (nothing changed: the CE read from LDAP, its
WNs, each WN's rollout diff, the LDIF) and shows the plan; ``y`` runs it: preflight, rollout,
LDAP, then waiting for the WNs' aria2c (going to torrent), or LDAP first (going back). Each
step's result appears as it happens; a step that fails, or ``x``, undoes what the switch did,
in reverse order, and the screen says what was undone. Escape closes the screen when nothing
runs (before ``y`` it changes nothing).
"""

from __future__ import annotations

import threading

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState, get_current_worker

from siteadmin import switch
from siteadmin.directory import CE
from siteadmin.errors import printable, printable_lines
from siteadmin.hostlist import fold
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.services import ConsoleServices
from siteadmin.tui.views.base import error_line


def plan_text(plan: switch.SwitchPlan) -> str:
    """The plan as the confirmation shows it: steps, WNs, per-WN changes, LDIF, notes."""
    lines = [f"{plan.ce}: installMethod {'|'.join(plan.before) or '(none)'} -> {plan.to}",
             f"{len(plan.hosts)} WNs: {fold(plan.hosts)} ({plan.hosts_from})", "", "Steps, in order:"]
    lines += [f"  {i}. {step.name}: {step.title}" for i, step in enumerate(plan.steps, 1)]
    diffs = [r for r in plan.diffs() if r.outcome != "unchanged"]
    if diffs:
        lines += ["", "Profile changes:"]
        for report in diffs:
            lines.append(f"  {report.host}: {report.label}")
        lines += ["", *[r.diff for r in diffs if r.diff]]
    if plan.ldif:
        lines += ["", "LDIF:", plan.ldif]
    lines += [f"note: {n}" for n in plan.notes]
    lines += ["", "A failure at any step undoes what this switch did, in reverse order."]
    return "\n".join(lines)


def event_line(event: switch.SwitchEvent) -> tuple[str, str]:
    """(text, style) of one event as the log shows it."""
    result = event.result
    if isinstance(result, switch.StepResult):
        mark = "✔" if result.ok else "✘"
        details = "".join(f"\n      {d}" for d in result.details[:6])
        return f"{mark} {result.step}: {result.outcome}: {result.summary}{details}", "green" if result.ok else "red"
    if isinstance(result, switch.UndoResult):
        return f"↶ undo {result.step}: {result.outcome}: {result.summary}", "yellow" if result.outcome == switch.UNDONE else "red"
    if event.kind == "step-started":
        return f"▶ {event.step}: {event.message}", "bold"
    if event.kind == "undo-started":
        return f"↶ undoing {event.step}: {event.message}", "yellow"
    return f"    {event.step}: {event.message}", "dim"


class SwitchScreen(ModalScreen[None]):
    """Plan, confirm and run the switch of one CE."""

    BINDINGS = [
        Binding("y", "go", "Switch"),
        Binding("x", "abort", "Abort (undo)"),
        Binding("escape", "close", "Close"),
    ]

    def __init__(self, services: ConsoleServices, ce: CE) -> None:
        super().__init__(classes="confirm")
        self.services = services
        self.ce = ce
        self.plan: switch.SwitchPlan | None = None
        self.result: switch.SwitchResult | None = None
        self.cancel = threading.Event()
        self.running = False
        self.log_lines: list[tuple[str, str]] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(f"Switch {self.ce.name}", classes="title", id="switch-title", markup=False)
            yield Static("planning (nothing is changed)…", classes="what", id="switch-state", markup=False)
            with VerticalScroll(classes="body", can_focus=True, id="switch-scroll"):
                yield Static("", id="switch-body", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#switch-scroll").focus()
        services, ce, cancel = self.services, self.ce, self.cancel

        def work() -> None:
            to, why = services.switch_target(ce)
            self.app.call_from_thread(self._state, f"{ce.name} -> {to} ({why}): planning, nothing is changed…")
            plan = services.switch_plan(ce.name, to, cancel, self._post_event)
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(self._planned, plan)

        self.run_worker(work, name="switch-plan", group="switch", thread=True, exclusive=True, exit_on_error=False)

    def _state(self, text: str, style: str = "") -> None:
        state = self.query_one("#switch-state", Static)
        state.update(printable(text))
        state.set_class(style == "error", "-error")

    def _post_event(self, event: switch.SwitchEvent) -> None:
        self.app.call_from_thread(self._event, event)

    def _event(self, event: switch.SwitchEvent) -> None:
        if event.kind == "plan-progress" and self.plan is None:
            self._state(f"planning: {event.message}")
            return
        self.log_lines.append(event_line(event))
        self._draw_log()

    def _draw_log(self) -> None:
        from rich.text import Text

        text = Text()
        for line, style in self.log_lines:
            text.append(printable_lines(line) + "\n", style=style)
        self.query_one("#switch-body", Static).update(text)
        self.query_one("#switch-scroll", VerticalScroll).scroll_end(animate=False)

    def _planned(self, plan: switch.SwitchPlan) -> None:
        self.plan = plan
        self.query_one("#switch-title", Static).update(printable(f"Switch {plan.ce} to {plan.to}?"))
        self.query_one("#switch-body", Static).update(printable_lines(plan_text(plan)))
        if plan.unchanged:
            self._state(f"{plan.ce} is already {plan.to}: nothing to do. Escape closes.")
        else:
            self._state("y: run the switch   Escape: close, nothing is changed")

    def action_go(self) -> None:
        plan = self.plan
        if plan is None or self.running or self.result is not None or plan.unchanged:
            return
        self.running = True
        self.log_lines = []
        self._state(f"switching {plan.ce} to {plan.to}… x aborts and undoes")
        services, cancel = self.services, self.cancel

        def work() -> None:
            result = services.switch_run(plan, cancel, self._post_event)
            self.app.call_from_thread(self._done, result)

        self.run_worker(work, name="switch-run", group="switch", thread=True, exclusive=True, exit_on_error=False)

    def _done(self, result: switch.SwitchResult) -> None:
        self.running = False
        self.result = result
        undone = f"; undone: {', '.join(u.step for u in result.undone)}" if result.undone else ""
        note = f" {result.note}" if result.note else ""
        self._state(f"{result.plan.ce}: {result.outcome}{undone}.{note} Escape closes.", "" if result.ok else "error")
        self.post_message(SiteChanged("switch"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.running = False
            self._state(f"{error_line(event.worker.error)}. Escape closes.", "error")

    def action_abort(self) -> None:
        if self.running:
            self.cancel.set()
            self._state("aborting: the running step stops and what the switch did is undone…", "error")

    def action_close(self) -> None:
        if self.running:
            self.app.notify("the switch is running: x aborts it (and undoes what it did)", severity="warning")
            return
        self.cancel.set()  # a plan still being made stops
        self.dismiss(None)
