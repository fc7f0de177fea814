"""Screens over the views: the confirmation every write passes through, and a scrollable detail page.

``ConfirmScreen`` shows exactly what will change (the LDIF, the diff, the hosts) before LDAP or
a WN is touched; ``y`` or Enter goes ahead, Escape or ``n`` cancels and nothing is written.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from siteadmin.errors import printable_lines


class ConfirmScreen(ModalScreen[bool]):
    """Asks before a write; dismissed with True (go ahead) or False (cancelled)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, do it"),
        Binding("enter", "answer(True)", "Yes", show=False),
        Binding("escape", "answer(False)", "Cancel"),
        Binding("n", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, what: str, body: str) -> None:
        super().__init__(classes="confirm")
        self.title_text = title
        self.what = what
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="title", markup=False)
            yield Static(self.what, classes="what", markup=False)
            with VerticalScroll(classes="body", can_focus=True):
                yield Static(printable_lines(self.body), markup=False, id="confirm-body")
            yield Static("y: go ahead   Escape: cancel (nothing is written)", classes="keys", markup=False)
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class DetailScreen(ModalScreen[None]):
    """A page of text over the view (a WN's torrents and peers, a finding's reason and rule)."""

    BINDINGS = [Binding("escape", "close", "Back"), Binding("q", "close", "Back", show=False)]

    def __init__(self, title: str, body: str) -> None:
        super().__init__(classes="confirm")
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.title_text, classes="title", markup=False)
            with VerticalScroll(classes="body", can_focus=True):
                yield Static(printable_lines(self.body), markup=False, id="detail-body")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
