"""The siteadmin console: a sidebar of views (number keys), each a view over a core service.

The sidebar fits ten views in 13 columns, so the console is usable at 80x24. Showing a view
(number key, click, command palette) moves the focus into it, so its keys work at once and the
footer shows them. Every view action is also a command-palette entry. Quitting cancels every
running job and closes the sessions and tunnels kept between polls.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable
from dataclasses import dataclass

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Click
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Footer, Header, Static

from siteadmin.directory import CE
from siteadmin.errors import printable, warnings_to
from siteadmin.site import Site
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.services import ConsoleServices
from siteadmin.tui.switch_screen import SwitchScreen
from siteadmin.tui.views.audit import AuditView
from siteadmin.tui.views.base import View
from siteadmin.tui.views.ces import CesView
from siteadmin.tui.views.config import ConfigView
from siteadmin.tui.views.lab import LabView, lab_of
from siteadmin.tui.views.overview import OverviewView
from siteadmin.tui.views.preflight import PreflightView
from siteadmin.tui.views.profile import ProfileView
from siteadmin.tui.views.rollout import RolloutView
from siteadmin.tui.views.swarm import SwarmView
from siteadmin.tui.views.wns import WnsView


@dataclass(frozen=True)
class Entry:
    """One view in the sidebar."""

    id: str
    label: str
    key: str


ENTRIES = (
    Entry("overview", "Overview", "1"),
    Entry("ces", "CEs", "2"),
    Entry("wns", "WNs", "3"),
    Entry("profile", "Profile", "4"),
    Entry("rollout", "Rollout", "5"),
    Entry("preflight", "Preflight", "6"),
    Entry("swarm", "Swarm", "7"),
    Entry("audit", "Audit", "8"),
    Entry("config", "Config", "9"),
    Entry("lab", "Lab", "0"),
)


class NavItem(Static):
    """A sidebar line: ``1 Overview``; a click shows the view."""

    def __init__(self, entry: Entry) -> None:
        super().__init__(f"{entry.key} {entry.label}", id=f"nav-{entry.id}", classes="nav-item", markup=False)
        self.entry = entry

    def on_click(self, event: Click) -> None:
        event.stop()
        app = self.app
        if isinstance(app, SiteadminApp):
            app.show_view(self.entry.id)


class SiteadminApp(App[int]):
    """The interactive console on one site."""

    CSS_PATH = ["theme.tcss", "layout.tcss"]
    TITLE = "siteadmin"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "reload", "Reload"),
        Binding("ctrl+t", "toggle_dark", "Theme", show=False),
        *(Binding(e.key, f"show_view('{e.id}')", e.label, show=False) for e in ENTRIES),
    ]

    def __init__(self, site: Site, services: ConsoleServices | None = None) -> None:
        super().__init__()
        self.site = site
        self.services = services if services is not None else ConsoleServices(site)
        self.sub_title = f"site {site.site.name or '(unnamed)'}"
        self._warned: set[str] = set()
        self.lab = lab_of(site.source)
        self.entries = tuple(e for e in ENTRIES if e.id != "lab" or self.lab is not None)
        self.current = "overview"

    def warning(self, message: str) -> None:
        """A core warning (``errors.warn``), from any thread: a notice, once per distinct message."""
        if message not in self._warned:
            self._warned.add(message)
            self.notify(f"warning: {printable(message)}", severity="warning", timeout=12, markup=False)  # thread-safe: posts a message

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="nav"):
                for entry in self.entries:
                    yield NavItem(entry)
            with ContentSwitcher(initial="overview", id="views"):
                yield OverviewView(self.site, self.services, id="overview")
                yield CesView(self.site, self.services, id="ces")
                yield WnsView(self.site, self.services, id="wns")
                yield ProfileView(self.site, self.services, id="profile")
                yield RolloutView(self.site, self.services, id="rollout")
                yield PreflightView(self.site, self.services, id="preflight")
                yield SwarmView(self.site, self.services, id="swarm")
                yield AuditView(self.site, self.services, id="audit")
                yield ConfigView(self.site, self.services, id="config")
                if self.lab is not None:
                    yield LabView(self.lab, self.site, self.services, id="lab")
        yield Footer()

    def on_mount(self) -> None:
        self.show_view("overview")

    # ------------------------------------------------ views

    def view(self, view_id: str) -> View[object] | None:
        found = self.query(f"#views > #{view_id}")
        widget = found.first() if found else None
        return widget if isinstance(widget, View) else None

    def show_view(self, view_id: str) -> None:
        """Show a view, load it the first time, and put the focus in it (its keys work at once)."""
        view = self.view(view_id)
        if view is None:
            return  # the Lab view exists only on a lab site
        self.query_one("#views", ContentSwitcher).current = view_id
        self.current = view_id
        for item in self.query(NavItem):
            item.set_class(item.entry.id == view_id, "-active")
        view.activate()
        self.call_after_refresh(lambda: view.focus_target().focus())

    def action_show_view(self, view_id: str) -> None:
        self.show_view(view_id)

    def act(self, view_id: str, action: str) -> None:
        """Show a view and run one of its actions (the overview's attention line, the palette)."""
        self.show_view(view_id)
        view = self.view(view_id)
        if view is not None and action:
            view.when_ready(lambda: self.call_after_refresh(lambda: self.run_action(action, view)))

    def open_switch(self, ce: CE) -> None:
        """The switch of a CE, gated end to end (``siteadmin switch``): plan, confirm, each step as it happens."""
        self.push_screen(SwitchScreen(self.services, ce))

    def on_site_changed(self, message: SiteChanged) -> None:
        for view_id in ("audit", "overview", "ces"):
            view = self.view(view_id)
            if view is not None and view.loaded:
                view.reload()

    def replace_site(self, site: Site) -> None:
        """The site config was saved (profile form): every view works on the new one."""
        self.site = site
        self.services.replace_site(site)
        for view in self.query(View):
            view.site = site
            if view.loaded and view.id != self.current:
                view.loaded = False  # reloaded when next shown

    def action_reload(self) -> None:
        view = self.view(self.current)
        if view is not None:
            view.reload()

    def action_toggle_dark(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    # ------------------------------------------------ palette

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for entry in self.entries:
            yield SystemCommand(f"Show {entry.label} ({entry.key})", f"Show the {entry.label} view", lambda e=entry.id: self.show_view(e))
            view = self.view(entry.id)
            if view is None:
                continue
            for binding in view.BINDINGS:
                if not isinstance(binding, Binding) or not binding.description:
                    continue
                yield SystemCommand(
                    f"{entry.label}: {binding.description} ({binding.key})",
                    f"In the {entry.label} view, as the key {binding.key}",
                    lambda e=entry.id, a=binding.action: self.act(e, a),
                )

    # ------------------------------------------------ quitting

    async def action_quit(self) -> None:
        self.shutdown()
        self.exit(0)

    def shutdown(self) -> None:
        """Cancel every job and close what is kept open (idempotent)."""
        for view in self.query(View):
            view.stop_jobs()
        self.workers.cancel_all()
        self.services.close()

    def on_unmount(self) -> None:
        self.shutdown()


def run_console(site: Site) -> int:
    """Open the console on a site; returns the exit status."""
    app = SiteadminApp(site)
    # what exists now (modules, Textual, the site) lives as long as the console: left out of the
    # collector's full passes, which otherwise scan it all and stop the event loop for tens of ms
    gc.freeze()
    with warnings_to(app.warning):  # not the CLI's stderr: the console owns the terminal
        app.run()
    return 0
