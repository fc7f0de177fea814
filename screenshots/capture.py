"""Save an SVG screenshot of each console tab on a running lab site.

    .venv/bin/siteadmin lab up && .venv/bin/python screenshots/capture.py [--dir LAB_DIR]

Screens are taken with Textual's own renderer (no terminal needed) into screenshots/*.svg.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from textual.widgets import DataTable

from siteadmin.cli.lab import default_dir
from siteadmin.lab import Lab
from siteadmin.tui.app import SiteadminApp

TABS = ["tab-site", "tab-ces", "tab-wns", "tab-profile", "tab-audit", "tab-lab"]
HERE = Path(__file__).resolve().parent


async def settle(app: SiteadminApp) -> None:
    for _ in range(100):
        await asyncio.sleep(0.05)
        if not any(w.is_running for w in app.workers):
            break


async def capture(lab: Lab) -> list[Path]:
    """One screenshot per tab; on the way, CE4 is switched to torrent (shown) and back (audited)."""
    app = SiteadminApp(lab.site)
    saved = []
    async with app.run_test(size=(130, 38)) as pilot:
        for tab in TABS:
            app.action_show_tab(tab)
            await settle(app)
            if tab == "tab-ces":
                table = app.query_one("#ces DataTable", DataTable)
                table.move_cursor(row=table.get_row_index("CE4"))
                await pilot.press("e")  # enable torrent on CE4: the screenshot shows it and the notice
                await settle(app)
                await settle(app)
            if tab == "tab-wns":
                app.action_show_tab("tab-ces")
                await pilot.press("d")  # CE4 back to its earlier method, before the audit screenshot
                await settle(app)
                await settle(app)
                app.action_show_tab(tab)
                await pilot.press("c")  # check every WN over SSH
                await settle(app)
            await pilot.pause()
            name = f"console-{tab.removeprefix('tab-')}.svg"
            app.save_screenshot(filename=name, path=str(HERE))
            saved.append(HERE / name)
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    for path in asyncio.run(capture(Lab(args.dir or default_dir()))):
        print(path)


if __name__ == "__main__":
    main()
