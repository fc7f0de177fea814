"""The console opens on a site config and shows its views (driven with Pilot)."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, TabbedContent

from siteadmin.site import load_site
from siteadmin.tui.app import SiteadminApp


async def test_console_shows_site_and_wns(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "TESTSITE"\n[wns]\nhosts = ["wn[001-003].example.org"]\n')
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(120, 40)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        overview = app.query_one("#overview DataTable", DataTable)
        cells = {overview.get_row_at(i)[0]: overview.get_row_at(i)[1] for i in range(overview.row_count)}
        assert cells["site"] == "TESTSITE"
        assert cells["WNs"].startswith("wn[001-003].example.org")
        app.query_one(TabbedContent).active = "tab-wns"
        await pilot.pause()
        wns = app.query_one("#wns DataTable", DataTable)
        assert wns.row_count == 3
        assert wns.get_row_at(0)[0] == "wn001.example.org"
