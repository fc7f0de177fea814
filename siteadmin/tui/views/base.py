"""What every console view shares: a title, a status line, typed loading in a thread worker,
and long jobs that a second start cancels.

A view is loaded the first time it is shown (``activate``), so the first screen paints at once
and only the overview's own calls start at launch. ``fetch`` runs in a thread worker and
returns a typed value that ``show`` draws on the event loop. A long job (a check, a rollout,
a poll) gets a ``Job``: starting another of the same kind sets the earlier one's cancel event
and its late progress is dropped, so two runs never write the same rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import Worker, WorkerState, get_current_worker

from siteadmin.errors import SiteadminError, printable
from siteadmin.site import Site

if TYPE_CHECKING:
    from siteadmin.tui.services import ConsoleServices

T = TypeVar("T")
R = TypeVar("R")


def cells(*values: object) -> list[Text]:
    """Table cells shown as plain text: names from LDAP, the audit log or site.toml may hold
    ``[...]`` that Rich would otherwise read as markup (and fail on), and terminal escapes or
    bidi controls, shown written out (``printable``) rather than sent to the terminal."""
    return [Text(printable(str(value))) for value in values]


def cell(value: object, style: str = "") -> Text:
    """One plain-text cell, optionally coloured."""
    return Text(printable(str(value)), style=style)


def error_line(error: BaseException | None) -> str:
    """The one line the admin sees for a worker's failure."""
    if isinstance(error, SiteadminError):
        return f"{error.category}: {error.one_line()}"
    return f"internal error: {type(error).__name__}: {error}"


class Job:
    """One run of a long job: its cancel event, and whether it is still the current one."""

    def __init__(self) -> None:
        self.cancel = threading.Event()

    def stop(self) -> None:
        self.cancel.set()


class View(Vertical, Generic[T]):
    """A tab's content: ``fetch`` (thread worker) returns a T that ``show`` draws."""

    title = ""
    hint = ""
    key = ""
    """The number key that shows the view (set by the app)."""
    can_focus = True

    def __init__(self, site: Site, services: ConsoleServices, **kwargs: Any) -> None:
        super().__init__(classes="view", **kwargs)
        self.site = site
        self.services = services
        self.loaded = False
        self.ready = False
        """``show`` has drawn the first load (an action from the palette waits for it)."""
        self._waiting: list[Callable[[], object]] = []
        self._jobs: dict[str, Job] = {}
        self._status_text = ""

    # ------------------------------------------------ composing

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        yield Static(self.title, classes="title", markup=False)
        if self.hint:
            yield Static(self.hint, classes="hint", markup=False)
        yield from self.compose_body()
        yield Static("", classes="status", id=f"{self.id}-status", markup=False)

    def focus_target(self) -> Widget:
        """What gets the focus when the view is shown: its first focusable widget, else itself."""
        for widget in self.query("*"):
            if widget.focusable:
                return widget
        return self

    # ------------------------------------------------ loading

    def activate(self) -> None:
        """The view is shown: load it the first time."""
        if not self.loaded:
            self.loaded = True
            self.reload()

    def set_status(self, text: str, state: str = "") -> None:
        status = self.query_one(".status", Static)
        shown = printable(text)
        if shown != self._status_text:  # an update lays the whole screen out again: a poll's unchanged line is left alone
            self._status_text = shown
            status.update(shown)
        status.set_class(state == "error", "-error")
        status.set_class(state == "ok", "-ok")
        status.set_class(state == "busy", "-busy")

    def reload(self) -> None:
        self.set_status("loading…", "busy")
        self.load(self.fetch, self.show)

    def fetch(self) -> T:
        """Blocking work (LDAP, SSH, RPC, files); runs in a thread worker."""
        raise NotImplementedError

    def show(self, data: T) -> None:
        """Show what ``fetch`` returned; runs on the event loop."""

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def load(self, job: Callable[[], T], then: Callable[[T], None]) -> None:
        result = job()
        if not get_current_worker().is_cancelled:  # a newer load replaced this one
            self.app.call_from_thread(self._loaded, then, result)

    def _loaded(self, then: Callable[[T], None], result: T) -> None:
        then(result)
        self.ready = True
        waiting, self._waiting = self._waiting, []
        for action in waiting:
            action()

    def when_ready(self, action: Callable[[], object]) -> None:
        """Run ``action`` once the view has drawn its first load (at once when it has)."""
        if self.ready:
            action()
        else:
            self._waiting.append(action)

    def call(self, group: str, job: Callable[[], R], then: Callable[[R], None]) -> Worker[None]:
        """Run one blocking call in a thread worker (exclusive in its group: a newer call of the
        group replaces the older, whose result is dropped); ``then`` gets the result on the loop."""

        def run() -> None:
            result = job()
            if not get_current_worker().is_cancelled:
                self.app.call_from_thread(then, result)

        return self.run_worker(run, name=group, group=group, thread=True, exclusive=True, exit_on_error=False)

    # ------------------------------------------------ long jobs

    def start_job(self, kind: str) -> Job:
        """A new run of ``kind``: an earlier one still running is cancelled."""
        earlier = self._jobs.get(kind)
        if earlier is not None:
            earlier.stop()
        job = self._jobs[kind] = Job()
        return job

    def current(self, kind: str, job: Job) -> bool:
        """Whether ``job`` is still the run of ``kind`` the view shows."""
        return self._jobs.get(kind) is job and not job.cancel.is_set()

    def stop_jobs(self) -> None:
        for job in self._jobs.values():
            job.stop()

    def on_unmount(self) -> None:
        self.stop_jobs()  # leaving the console stops what is still running and aborts its connections

    # ------------------------------------------------ failures

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            message = error_line(event.worker.error)
            self.set_status(message, "error")
            self.failed(message)
            self.app.notify(printable(message), severity="error", timeout=8, markup=False)

    def failed(self, message: str) -> None:
        """A worker of this view failed (its line is on the status line already)."""
