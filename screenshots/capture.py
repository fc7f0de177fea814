"""Save an SVG screenshot of every console screen on a running lab site.

    .venv/bin/siteadmin lab up && .venv/bin/python screenshots/capture.py [--dir LAB_DIR] [--size 100x30]

Screens are taken with Textual's own renderer (no terminal needed) into screenshots/*.svg. On
the way the preflight runs, a rollout is planned, and CE4's enable is shown on its confirmation
screen and cancelled (nothing is written to LDAP), and CE4's switch is planned (a dry run) and closed.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from siteadmin.cli.lab import default_dir
from siteadmin.lab import Lab
from siteadmin.tui.app import SiteadminApp

HERE = Path(__file__).resolve().parent
VIEWS = ["overview", "ces", "wns", "profile", "rollout", "preflight", "swarm", "audit", "config", "lab"]


async def settle(app: SiteadminApp, rounds: int = 400) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0.05)
        if not any(not w.is_finished for w in app.workers if w.group != "swarm" and w.group != "overview-swarm"):
            break
    await asyncio.sleep(0.2)


async def capture(lab: Lab, size: tuple[int, int]) -> list[Path]:
    app = SiteadminApp(lab.site)
    saved: list[Path] = []

    def shot(name: str) -> None:
        app.save_screenshot(filename=f"console-{name}.svg", path=str(HERE))
        saved.append(HERE / f"console-{name}.svg")

    async with app.run_test(size=size) as pilot:
        for view in VIEWS:
            await pilot.press("0" if view == "lab" else str(VIEWS.index(view) + 1))
            await settle(app)
            if view == "wns":
                await pilot.press("c")
                await settle(app)
            if view == "rollout":
                await pilot.press("p")
                await settle(app)
            if view == "preflight":
                await pilot.press("c")
                await settle(app)
            if view == "swarm":
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    if app.query_one("#swarm").polls:  # type: ignore[attr-defined]
                        break
                await pilot.pause()
            shot(view)
            if view == "ces":
                table = app.query_one("#ces DataTable")
                table.move_cursor(row=table.get_row_index("CE4"))  # type: ignore[attr-defined]
                await pilot.press("e")
                await settle(app)
                shot("ces-confirm")
                await pilot.press("escape")  # cancelled: nothing is written
                await settle(app)
                await pilot.press("s")  # the switch's plan (a dry run: nothing changes); closed without y
                for _ in range(300):
                    await asyncio.sleep(0.1)
                    if getattr(app.screen, "plan", None) is not None:
                        break
                await pilot.pause()
                shot("switch-plan")
                await pilot.press("escape")
                await settle(app)
            if view == "profile":
                await pilot.press("e")
                await settle(app)
                shot("profile-form")
                await pilot.press("escape")
        await pilot.press("1")
        await settle(app)
        shot("overview")
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--size", default="100x30", help="COLSxROWS (default 100x30)")
    args = parser.parse_args()
    cols, rows = (int(n) for n in args.size.split("x"))
    for path in asyncio.run(capture(Lab(args.dir or default_dir()), (cols, rows))):
        print(path)


if __name__ == "__main__":
    main()
