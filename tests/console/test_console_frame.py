"""The console opens on a site config and shows its views (driven with Pilot)."""

from __future__ import annotations

import socket
from pathlib import Path

from textual.app import App
from textual.widgets import DataTable, Static

from siteadmin.site import load_site
from siteadmin.tui.app import SiteadminApp


async def settle(app: App[int], pilot: object) -> None:
    """Wait until every worker has finished, failed or not."""
    import asyncio

    for _ in range(200):
        if not any(not w.is_finished for w in app.workers):  # pending ones too
            break
        await asyncio.sleep(0.02)
    await pilot.pause()  # type: ignore[attr-defined]


def row_text(table: DataTable[object], index: int) -> list[str]:
    """A table row as the strings it shows."""
    return [str(cell) for cell in table.get_row_at(index)]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_console_shows_site_wns_and_ldap_errors(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    port = closed_port()
    path.write_text(
        f'[site]\nname = "TESTSITE"\n[wns]\nhosts = ["wn[001-003].example.org"]\n'
        f'[ldap]\nurl = "ldaps://127.0.0.1:{port}"\ntimeout = 2\n[audit]\npath = "audit.jsonl"\n'
    )
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(120, 40)) as pilot:
        app.show_view("config")
        await settle(app, pilot)
        config = app.query_one("#config DataTable", DataTable)
        cells = dict(row_text(config, i)[:2] for i in range(config.row_count))
        assert cells["site"] == "TESTSITE"
        assert cells["WNs"].startswith("wn[001-003].example.org")
        app.show_view("ces")
        await settle(app, pilot)
        app.show_view("wns")
        await pilot.pause()
        wns = app.query_one("#wns DataTable", DataTable)
        assert wns.row_count == 3
        assert row_text(wns, 0)[0] == "wn001.example.org"
        # LDAP is down: the CE view says so on its status line, the console keeps running
        status = app.query_one("#ces .status", Static)
        assert "unreachable" in str(status.render())
        assert status.has_class("-error")


async def test_console_profile_is_rendered_masked(tmp_path: Path) -> None:
    from siteadmin.aria2conf import rpc_secret_path

    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nname = "TESTSITE"\n[wns]\nhosts = ["wn[001-002].example.org"]\n'
        f'[ldap]\nurl = "ldaps://127.0.0.1:{closed_port()}"\ntimeout = 2\n'
        '[aria2c.options]\nenable-rpc = true\n'
    )
    site = load_site(path)
    app = SiteadminApp(site)
    async with app.run_test(size=(140, 50)) as pilot:
        app.show_view("profile")
        await settle(app, pilot)
        table = app.query_one("#profile DataTable", DataTable)
        assert [row_text(table, i)[0] for i in range(table.row_count)] == ["wn001.example.org", "wn002.example.org"]
        text = str(app.query_one("#profile-text", Static).render())
        assert "rpc-secret=********" in text
        secret = rpc_secret_path(site).read_text().strip()
        assert secret and secret not in text


async def test_text_that_looks_like_markup_is_shown_as_it_is(tmp_path: Path) -> None:
    from siteadmin import audit

    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "TESTSITE"\n[ldap]\nurl = "ldaps://127.0.0.1:{closed_port()}"\ntimeout = 2\n[audit]\npath = "audit.jsonl"\n')
    site = load_site(path)
    audit.record(site.audit.path, {"action": "enable", "ce": "[/oops]", "before": "[bold]x", "after": "Torrent", "outcome": "refused"})
    app = SiteadminApp(site)
    async with app.run_test(size=(140, 40)) as pilot:
        app.show_view("audit")
        await settle(app, pilot)
        table = app.query_one("#audit DataTable", DataTable)
        assert row_text(table, 0)[2:5] == ["enable", "[/oops]", "[bold]x"]


async def test_view_hints_are_shown_as_written(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "TESTSITE"\n[ldap]\nurl = "ldaps://127.0.0.1:{closed_port()}"\ntimeout = 2\n')
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(140, 40)) as pilot:
        app.show_view("wns")
        await settle(app, pilot)
        hint = str(app.query_one("#wns .hint", Static).render())
        assert "from [wns] in site.toml" in hint
        # not a lab site: no Lab tab, and its key does nothing
        assert not app.query("#lab")
        app.show_view("lab")
        assert app.current == "wns"
