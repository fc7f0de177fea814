"""App-wide messages of the console."""

from __future__ import annotations

from textual.message import Message


class SiteChanged(Message):
    """Something changed the site's state (a CE toggled): views showing it should reload."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what
