"""The siteadmin console: one tab per concern, each a view over a core service."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, TabbedContent, TabPane

from siteadmin.errors import printable, warnings_to
from siteadmin.site import Site
from siteadmin.tui.messages import SiteChanged
from siteadmin.tui.views.audit import AuditView
from siteadmin.tui.views.base import View
from siteadmin.tui.views.ces import CesView
from siteadmin.tui.views.lab import LabView, lab_of
from siteadmin.tui.views.overview import OverviewView
from siteadmin.tui.views.profile import ProfileView
from siteadmin.tui.views.wns import WnsView


class SiteadminApp(App[int]):
    """The interactive console on one site."""

    CSS_PATH = ["theme.tcss", "layout.tcss"]
    TITLE = "siteadmin"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "reload", "Reload"),
        Binding("1", "show_tab('tab-site')", "Site", show=False),
        Binding("2", "show_tab('tab-ces')", "CEs", show=False),
        Binding("3", "show_tab('tab-wns')", "WNs", show=False),
        Binding("4", "show_tab('tab-profile')", "Profile", show=False),
        Binding("5", "show_tab('tab-audit')", "Audit", show=False),
        Binding("6", "show_tab('tab-lab')", "Lab", show=False),
    ]

    def __init__(self, site: Site) -> None:
        super().__init__()
        self.site = site
        self.sub_title = f"site {site.site.name or '(unnamed)'}"
        self._warned: set[str] = set()

    def warning(self, message: str) -> None:
        """A core warning (``errors.warn``), from any thread: a notice, once per distinct message."""
        if message not in self._warned:
            self._warned.add(message)
            self.notify(f"warning: {printable(message)}", severity="warning", timeout=12, markup=False)  # thread-safe: posts a message

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Site", id="tab-site"):
                yield OverviewView(self.site, id="overview")
            with TabPane("CEs", id="tab-ces"):
                yield CesView(self.site, id="ces")
            with TabPane("WNs", id="tab-wns"):
                yield WnsView(self.site, id="wns")
            with TabPane("Profile", id="tab-profile"):
                yield ProfileView(self.site, id="profile")
            with TabPane("Audit", id="tab-audit"):
                yield AuditView(self.site, id="audit")
            lab = lab_of(self.site.source)
            if lab is not None:
                with TabPane("Lab", id="tab-lab"):
                    yield LabView(lab, self.site, id="lab")
        yield Footer()

    def on_site_changed(self, message: SiteChanged) -> None:
        self.query_one(AuditView).reload()

    def action_show_tab(self, tab: str) -> None:
        tabs = self.query_one(TabbedContent)
        if not tabs.query(f"#{tab}"):
            return  # the Lab tab exists only on a lab site
        tabs.active = tab
        pane = self.query_one(TabbedContent).active_pane
        if pane is not None:
            for table in pane.query("DataTable"):
                table.focus()
                break

    def action_reload(self) -> None:
        pane = self.query_one(TabbedContent).active_pane
        if pane is not None:
            for view in pane.query(View):
                view.reload()


def run_console(site: Site) -> int:
    """Open the console on a site; returns the exit status."""
    app = SiteadminApp(site)
    with warnings_to(app.warning):  # not the CLI's stderr: the console owns the terminal
        app.run()
    return 0
