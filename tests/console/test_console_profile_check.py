"""The console's Profile tab and ``siteadmin lint`` run one profile check: same site, same verdicts."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

from textual.widgets import DataTable, Static

from siteadmin.cli import main
from siteadmin.site import load_site
from siteadmin.tui.app import SiteadminApp
from siteadmin.tui.views.profile import ProfileView

SITE = """
[site]
name = "TESTSITE"
[ldap]
url = "ldaps://127.0.0.1:{port}"
timeout = 2
[wns]
hosts = ["wn[001-005].example.org"]
[wns.groups.open]
hosts = ["wn002.example.org"]
aria2c = {{ rpc-listen-all = true }}
[wns.nodes."wn003.example.org"]
aria2c = {{ listen-port = "7000" }}
[wns.nodes."wn004.example.org"]
aria2c = {{ rpc-allow-origin-all = true }}
[wns.nodes."wn005.example.org"]
aria2c = {{ enable-rpc = false }}
[aria2c]
allow = ["rpc-allow-origin-all"]
[aria2c.options]
bt-lpd-interface = "eth0"
"""

EXPECTED = {
    "wn001.example.org": "ok",
    "wn002.example.org": "error",  # rpc-listen-all
    "wn003.example.org": "warning",  # listen-port outside wns.ports
    "wn004.example.org": "ok",  # rpc-allow-origin-all, allowed by the site
    "wn005.example.org": "warning",  # RPC off
}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_console_and_lint_give_the_same_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE.format(port=closed_port()))
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(path), "lint", "--json"], out=out, err=err) == 1, err.getvalue()
    report = json.loads(out.getvalue())
    assert report["verdicts"] == EXPECTED
    assert "aria2c not installed" not in err.getvalue()

    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(160, 50)) as pilot:
        app.show_view("profile")
        for _ in range(300):
            await pilot.pause(0.02)
            if "profiles" in str(app.query_one("#profile-status", Static).render()):
                break
        view = app.query_one(ProfileView)
        table = app.query_one("#profile DataTable", DataTable)
        shown = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert shown == view.verdicts == report["verdicts"]
        status = str(app.query_one("#profile-status", Static).render())
        assert status.startswith("5 profiles, 1 with errors"), status
        # the console's check includes aria2c's own reading of each profile, as lint's does
        assert all(p.aria2c_checked for p in view._profiles.values())
        lint_rules = {(r["hosts"], r["rule"]) for r in report["findings"]}
        console_rules = {(h, f.rule) for h, p in view._profiles.items() for f in p.findings}
        assert console_rules == {
            (h, rule) for hosts, rule in lint_rules for h in _expand(hosts)
        }


def _expand(folded: str) -> list[str]:
    from siteadmin.inventory import parse_hostlist

    return list(parse_hostlist(folded))
