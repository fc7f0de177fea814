"""The profile form: the site's aria2c options grouped (ports, proxies, bandwidth, RPC, DHT/LPD/peer
exchange, seeding), checked as you type by the option catalogue, with the file a WN would get
beside it (secrets masked). Ctrl+S shows the diff of site.toml and saves after ``y``
(``siteadmin.siteedit``: comments and layout kept, mode kept, atomic).
"""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from textual.worker import Worker, WorkerState

from siteadmin.errors import printable, printable_lines
from siteadmin.siteedit import ProfileEdit, check_value
from siteadmin.tui.screens import ConfirmScreen
from siteadmin.tui.services import ConsoleServices
from siteadmin.tui.views.base import error_line

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Ports", ("listen-port", "dht-listen-port")),
    ("Proxies", ("all-proxy", "all-proxy-user", "all-proxy-passwd", "no-proxy")),
    ("Bandwidth", ("max-overall-download-limit", "max-overall-upload-limit", "max-download-limit", "max-upload-limit")),
    ("RPC", ("enable-rpc", "rpc-listen-port", "rpc-listen-all")),
    ("DHT, LPD, peer exchange", ("enable-dht", "bt-enable-lpd", "bt-lpd-interface", "enable-peer-exchange")),
    ("Seeding", ("seed-time", "seed-ratio")),
)
SECRET_FIELDS = {"all-proxy-passwd"}


def field_id(name: str) -> str:
    return "opt-" + name


class ProfileForm(Screen[bool]):
    """Edits ``[aria2c] options``; dismissed with True when it saved."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save (shows the diff)"),
        Binding("escape", "close", "Back"),
    ]

    def __init__(self, services: ConsoleServices, host: str | None) -> None:
        super().__init__()
        self.services = services
        self.host = host
        self.original = services.current_options()
        self.problems: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(f"Profile: [aria2c] options of {self.services.site.source or '(no site.toml)'} — empty = aria2's default",
                     classes="title", markup=False)
        with Horizontal(classes="split"):
            with VerticalScroll(classes="form", id="profile-form"):
                for group, names in GROUPS:
                    yield Label(group, classes="group")
                    for name in names:
                        with Horizontal(classes="field-row"):
                            yield Label(name, classes="field-name")
                            yield Input(self.original.get(name, ""), id=field_id(name), password=name in SECRET_FIELDS,
                                        placeholder="(default)", classes="field")
                        yield Static("", id=f"why-{name}", classes="why", markup=False)
            yield Static("", id="form-preview", classes="conf", markup=False)
        yield Static("", id="form-status", classes="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        self._preview()

    def values(self) -> dict[str, str | None]:
        """The form's changes: option -> new text (None removes it); unchanged fields left out."""
        changes: dict[str, str | None] = {}
        for _, names in GROUPS:
            for name in names:
                value = self.query_one(f"#{field_id(name)}", Input).value.strip()
                if value != self.original.get(name, ""):
                    changes[name] = value or None
        return changes

    @on(Input.Changed)
    def changed(self, event: Input.Changed) -> None:
        name = (event.input.id or "").removeprefix("opt-")
        value = event.value.strip()
        why = check_value(name, value) if value else None
        if why:
            self.problems[name] = why
        else:
            self.problems.pop(name, None)
        line = self.query_one(f"#why-{name}", Static)
        line.update(printable(why or ""))
        line.set_class(bool(why), "-error")
        self._status()
        if not self.problems:
            self._preview()

    def _status(self, text: str = "", state: str = "") -> None:
        status = self.query_one("#form-status", Static)
        if not text:
            count = len(self.values())
            text = (f"{len(self.problems)} field(s) not valid: {next(iter(self.problems.values()))}" if self.problems
                    else f"{count} change(s); Ctrl+S shows the diff and saves" if count else "no changes")
            state = "error" if self.problems else ""
        status.update(printable(text))
        status.set_class(state == "error", "-error")
        status.set_class(state == "ok", "-ok")

    def _preview(self) -> None:
        changes = self.values()
        host = self.host
        services = self.services

        def job() -> tuple[ProfileEdit | None, str]:
            edit = services.plan_profile(changes) if changes else None
            site = edit.site if edit is not None else services.site
            return edit, (services.preview(site, host) if host else "(no WN to render for)")

        self.run_worker(lambda: self._post_preview(job), group="preview", thread=True, exclusive=True, exit_on_error=False)

    def _post_preview(self, job: Callable[[], tuple[ProfileEdit | None, str]]) -> None:
        from textual.worker import get_current_worker

        edit, text = job()
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_preview, text)

    def _show_preview(self, text: str) -> None:
        self.query_one("#form-preview", Static).update(printable_lines(f"# {self.host} would get (secrets masked):\n{text}"))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self._status(error_line(event.worker.error), "error")

    def action_save(self) -> None:
        if self.problems:
            self._status(f"fix first: {next(iter(self.problems.values()))}", "error")
            return
        changes = self.values()
        if not changes:
            self._status("no changes to save", "ok")
            return
        services = self.services

        def plan() -> None:
            edit = services.plan_profile(changes)
            self.app.call_from_thread(self._confirm, edit)

        self.run_worker(plan, group="save", thread=True, exclusive=True, exit_on_error=False)

    def _confirm(self, edit: ProfileEdit) -> None:
        what = f"Save {len(edit.changed)} option(s) of [aria2c] options in {edit.path}: {', '.join(edit.changed)}. " \
               "Comments and layout are kept; the WNs get it at the next rollout (5)."

        def answered(yes: bool | None) -> None:
            if not yes:
                self._status("not saved", "ok")
                return
            self.run_worker(lambda: self._write(edit), group="save", thread=True, exclusive=True, exit_on_error=False)

        self.app.push_screen(ConfirmScreen("Save the profile?", what, edit.diff or "(no change)"), answered)

    def _write(self, edit: ProfileEdit) -> None:
        self.services.save_profile(edit)
        self.app.call_from_thread(self._saved, edit)

    def _saved(self, edit: ProfileEdit) -> None:
        replace = getattr(self.app, "replace_site", None)
        if callable(replace):
            replace(edit.site)
        self.app.notify(f"saved {edit.path}; roll it out from Rollout (5)", markup=False)
        self.dismiss(True)

    def action_close(self) -> None:
        self.dismiss(False)
