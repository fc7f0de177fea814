"""The console shows names holding terminal escapes or bidi controls written out, and core warnings as notices."""

from __future__ import annotations

import socket
from pathlib import Path

from textual.app import App
from textual.widgets import DataTable

from siteadmin import audit
from siteadmin.errors import warnings_to
from siteadmin.site import load_site
from siteadmin.tui.app import SiteadminApp

HOSTILE_CE = "CE\x1b[2J\x1b]0;owned\x07\u202eevil"


async def settle(app: App[int], pilot: object) -> None:
    import asyncio

    for _ in range(200):
        if not any(w.is_running for w in app.workers):
            break
        await asyncio.sleep(0.02)
    await pilot.pause()  # type: ignore[attr-defined]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_site(tmp_path: Path, ldap: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "T"\n[ldap]\n{ldap}\ntimeout = 2\n[audit]\npath = "audit.jsonl"\n')
    return path


async def test_the_audit_view_shows_escapes_written_out(tmp_path: Path) -> None:
    path = write_site(tmp_path, f'url = "ldaps://127.0.0.1:{closed_port()}"')
    audit.record(tmp_path / "audit.jsonl", {"action": "enable", "ce": HOSTILE_CE, "before": "CVMFS", "after": "Torrent", "outcome": "ok"})
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(160, 40)) as pilot:
        await settle(app, pilot)
        app.show_view("audit")
        await pilot.pause()
        table = app.query_one("#audit DataTable", DataTable)
        shown = [str(cell) for cell in table.get_row_at(0)]
        assert shown[3] == "CE\\x1b[2J\\x1b]0;owned\\x07\\u202eevil"
        assert not any(c in "".join(shown) for c in "\x1b\x07\u202e")


async def test_core_warnings_become_notices_once(tmp_path: Path) -> None:
    port = closed_port()
    path = write_site(tmp_path, f'url = "ldap://127.0.0.1:{port}"\nstarttls = false\ninsecure = true')
    app = SiteadminApp(load_site(path))
    with warnings_to(app.warning):
        async with app.run_test(size=(160, 40)) as pilot:
            app.show_view("ces")
            await settle(app, pilot)
            app.query_one("#ces").reload()  # type: ignore[attr-defined]
            await settle(app, pilot)
            messages = [n.message for n in app._notifications]
    warnings = [m for m in messages if m.startswith("warning: ")]
    assert warnings == [
        f"warning: ldap.insecure = true: plain LDAP to 127.0.0.1:{port} is allowed (for a lab or debugging only)",
        f"warning: LDAP to 127.0.0.1:{port} in clear text (ldap:// without StartTLS): "
        "CE entries cross the network unencrypted",
    ]


async def test_the_audit_view_keeps_the_last_records_and_counts_all(tmp_path: Path) -> None:
    from siteadmin.tui.views.audit import SHOWN

    path = write_site(tmp_path, f'url = "ldaps://127.0.0.1:{closed_port()}"')
    log = tmp_path / "audit.jsonl"
    log.write_text("".join(f'{{"action": "enable", "ce": "CE{n}", "outcome": "ok"}}\n' for n in range(SHOWN + 10)))
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(160, 40)) as pilot:
        app.show_view("audit")
        await settle(app, pilot)
        table = app.query_one("#audit DataTable", DataTable)
        assert table.row_count == SHOWN
        assert str(table.get_row_at(0)[3]) == f"CE{SHOWN + 9}"  # newest first
        assert str(app.query_one("#audit .status").render()).startswith(f"{SHOWN + 10} records in ")
