"""What every console view shares: a title, a status line, and loading in a thread worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from siteadmin.errors import SiteadminError, printable
from siteadmin.site import Site


def cells(*values: object) -> list[Text]:
    """Table cells shown as plain text: names from LDAP, the audit log or site.toml may hold
    ``[...]`` that Rich would otherwise read as markup (and fail on), and terminal escapes or
    bidi controls, shown written out (``printable``) rather than sent to the terminal."""
    return [Text(printable(str(value))) for value in values]


class View(Vertical):
    """A tab's content: subclasses fetch data off the event loop with ``fetch`` and show it in ``show``."""

    title = ""
    hint = ""

    def __init__(self, site: Site, **kwargs: Any) -> None:
        super().__init__(classes="view", **kwargs)
        self.site = site

    def compose_body(self) -> ComposeResult:
        yield from ()

    def compose(self) -> ComposeResult:
        yield Static(self.title, classes="title", markup=False)
        if self.hint:
            yield Static(self.hint, classes="hint", markup=False)
        yield from self.compose_body()
        yield Static("", classes="status", id=f"{self.id}-status", markup=False)

    def on_mount(self) -> None:
        self.reload()

    def set_status(self, text: str, state: str = "") -> None:
        status = self.query_one(".status", Static)
        status.update(printable(text))
        status.set_class(state == "error", "-error")
        status.set_class(state == "ok", "-ok")

    def reload(self) -> None:
        self.set_status("loading…")
        self.run_blocking(self.fetch, self.show)

    def fetch(self) -> Any:
        """Blocking work (LDAP, SSH, RPC); runs in a thread worker."""
        return None

    def show(self, data: Any) -> None:
        """Show what ``fetch`` returned; runs on the event loop."""

    @work(thread=True, exclusive=True, exit_on_error=False, group="view")
    def run_blocking(self, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        result = job()
        self.app.call_from_thread(then, result)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            error = event.worker.error
            if isinstance(error, SiteadminError):
                message = f"{error.category}: {error.one_line()}"
            else:
                message = f"internal error: {type(error).__name__}: {error}"
            self.set_status(message, "error")
            self.app.notify(printable(message), severity="error", timeout=8, markup=False)
