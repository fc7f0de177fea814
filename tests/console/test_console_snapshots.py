"""Snapshots of every console screen at 80x24 and 120x40, on the recorded site and results.

Fast tier: no daemon, no network (``RecordedServices`` answers from ``recorded.py``). Update
after an intended change of a screen with ``pytest tests/console/test_console_snapshots.py
--snapshot-update`` and look at the report before committing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from siteadmin.tui.app import SiteadminApp

from .recorded import RecordedServices, recorded_site

SIZES = [(80, 24), (120, 40)]


async def quiet(pilot: Pilot[Any]) -> None:
    """Wait until no worker runs (the recorded answers come at once)."""
    for _ in range(300):
        await pilot.pause()
        if not any(not w.is_finished for w in pilot.app.workers):  # pending ones too
            break
        await asyncio.sleep(0.02)
    await pilot.pause()


def steps(*keys: str) -> Callable[[Pilot[Any]], Any]:
    async def run(pilot: Pilot[Any]) -> None:
        await quiet(pilot)
        for key in keys:
            await pilot.press(key)
            await quiet(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor would make the picture depend on the instant
        await pilot.pause()

    return run


SCREENS: dict[str, tuple[str, ...]] = {
    "overview": (),
    "ces": ("2",),
    "ces-confirm": ("2", "down", "down", "e"),
    "switch-plan": ("2", "s"),
    "wns": ("3", "c"),
    "profile": ("4",),
    "profile-form": ("4", "e"),
    "rollout": ("5", "p"),
    "rollout-confirm": ("5", "p", "a"),
    "preflight": ("6", "c"),
    "swarm": ("7",),
    "swarm-detail": ("7", "enter"),
    "audit": ("8",),
    "config": ("9",),
}


def app_for(tmp_path: Path) -> SiteadminApp:
    shown, real = recorded_site(tmp_path)
    return SiteadminApp(shown, RecordedServices(shown, real))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(screen: str, size: tuple[int, int], tmp_path: Path, snap_compare: Any) -> None:
    app = app_for(tmp_path)
    assert snap_compare(app, terminal_size=size, run_before=steps(*SCREENS[screen]))
    assert app.services.writes == []  # type: ignore[attr-defined]


def test_the_light_theme(tmp_path: Path, snap_compare: Any) -> None:
    app = app_for(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=steps("ctrl+t", "7"))
