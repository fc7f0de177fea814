"""The swarm table with 1,000 WNs (synthetic rows), and the lab keeping an admin's profile edit."""

from __future__ import annotations

import dataclasses
import time
import tomllib
from pathlib import Path

from textual.widgets import DataTable

from siteadmin.lab import sitefile, wns
from siteadmin.site import site_from_mapping
from siteadmin.siteedit import plan_profile_edit, write_site_text
from siteadmin.swarm import Share, SwarmReport, WNState
from siteadmin.tui.app import SiteadminApp

from .recorded import RecordedServices, recorded_site
from .test_console_frame import row_text


def synthetic(count: int, tick: int) -> SwarmReport:
    """``count`` WNs whose speeds move with ``tick``; every tenth is flagged unreachable."""
    states = tuple(
        WNState(f"wn{i:04d}.example.org", True, None, "", "1.36.0", i % 3, 0, i % 2, 0, (i * 1000 + tick * 7919) % 5_000_000, (i * 37 + tick) % 900_000)
        if i % 10 else WNState(f"wn{i:04d}.example.org", False, "refused", "connection refused")
        for i in range(count)
    )
    return SwarmReport(time.time(), 0.1, states, (), (), Share(0, 0, False))


async def test_a_thousand_rows_update_in_place_and_sort_and_filter(tmp_path: Path) -> None:
    shown, real = recorded_site(tmp_path)
    app = SiteadminApp(shown, RecordedServices(shown, real, swarm=synthetic(6, 0)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("7")
        await pilot.pause()
        view = app.query_one("#swarm")
        table = app.query_one("#swarm-table", DataTable)
        view.show_report(synthetic(1000, 1))  # type: ignore[attr-defined]
        assert table.row_count == 1000
        assert row_text(table, 0)[0] == "wn0000.example.org"
        started = time.perf_counter()
        view.show_report(synthetic(1000, 2))  # type: ignore[attr-defined]
        update = time.perf_counter() - started
        assert table.row_count == 1000
        # the cells show the new poll's values
        from siteadmin.tui.views.swarm import rate

        assert row_text(table, 1)[4] == rate(synthetic(1000, 2).wns[1].download_speed)
        assert update < 1.0, update
        await pilot.press("s")  # sort by flags: the unreachable (refused) rows first
        await pilot.pause()
        assert view.sort_by == "flags"  # type: ignore[attr-defined]
        assert [row_text(table, i)[0] for i in range(3)] == ["wn0000.example.org", "wn0010.example.org", "wn0020.example.org"]
        view.filter_text = "wn099"  # type: ignore[attr-defined]
        view.show_report(synthetic(1000, 3))  # type: ignore[attr-defined]
        assert sorted(row_text(table, i)[0] for i in range(table.row_count)) == [f"wn099{d}.example.org" for d in range(10)]


def drawn(table: DataTable[object], y: int) -> str:
    """Line ``y`` of the table as drawn (header at 0), not as stored."""
    return "".join(segment.text for segment in table.render_line(y))


async def test_a_poll_redraws_the_changed_cells_and_keeps_the_others_drawn(tmp_path: Path) -> None:
    from siteadmin.tui.views.swarm import rate

    shown, real = recorded_site(tmp_path)
    app = SiteadminApp(shown, RecordedServices(shown, real, swarm=synthetic(6, 0)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("7")
        await pilot.pause()
        view = app.query_one("#swarm")
        table = app.query_one("#swarm-table", DataTable)
        view.paused = True  # type: ignore[attr-defined]
        view.show_report(synthetic(1000, 1))  # type: ignore[attr-defined]
        await pilot.pause()
        before = [drawn(table, y) for y in range(1, 12)]  # drawn once: every row's render is cached now
        assert rate(synthetic(1000, 1).wns[1].download_speed) in before[1]
        for tick in (2, 3):
            view.show_report(synthetic(1000, tick))  # type: ignore[attr-defined]
            await pilot.pause()
            now = synthetic(1000, tick).wns
            for y in range(1, 12):
                line, wn = drawn(table, y), now[y - 1]
                assert wn.host in line
                if wn.reachable:  # the changed speeds are drawn, not the cached ones
                    assert f" {rate(wn.download_speed)} " in line, (line, rate(wn.download_speed))
                    assert f" {rate(wn.upload_speed)} " in line, (line, rate(wn.upload_speed))
                else:  # unchanged rows are drawn as before
                    assert line == before[y - 1]
        await pilot.press("down")
        await pilot.pause()
        assert table.cursor_row == 1
        assert f" {rate(now[1].download_speed)} " in drawn(table, 2)


def test_lab_up_keeps_the_profile_an_admin_edited_there(tmp_path: Path) -> None:
    wn = wns.WNLayout(name="wn001.lab", index=1, ns="sl000000-wn001", address="10.200.2.11", ssh_port=22, rpc_port=6800, bt_port=6881,
                      dir=str(tmp_path / "wns" / "wn001.lab"))
    facts = sitefile.SiteFacts(
        ldaps_url="ldaps://10.200.1.2:636", ca_file=tmp_path / "ca.pem", bind_dn="cn=admin,o=alice,dc=cern,dc=ch",
        password_file=tmp_path / "pw", base="o=alice,dc=cern,dc=ch", tracker_host="10.200.1.2", tracker_port=8088,
        seeder_host="10.200.1.2", seeder_port=8092, http_fallback="http://10.200.1.2:8080/", wns=[wn], ssh_user="root",
        ssh_key=tmp_path / "key", known_hosts=tmp_path / "kh", rpc_secret_file=tmp_path / "secret", rpc_port=6800,
        loopback=False, restart_command="/etc/init.d/aria2c restart",
    )
    path = tmp_path / "site.toml"
    path.write_text(sitefile.site_toml_text(facts, tmp_path))
    first = site_from_mapping(tomllib.loads(path.read_text()))
    assert first.aria2c.options["seed-ratio"] == "0.0"
    write_site_text(plan_profile_edit(path, {"max-overall-upload-limit": "5M", "seed-ratio": "1.0"}))
    again = site_from_mapping(tomllib.loads(sitefile.site_toml_text(dataclasses.replace(facts, rpc_port=6801), tmp_path)))
    assert again.wns.rpc_port == 6801  # the rest is the lab's, rewritten
    assert again.aria2c.options["max-overall-upload-limit"] == "5M"
    assert again.aria2c.options["seed-ratio"] == "1.0"
    assert again.aria2c.options["enable-dht"] == "true"
