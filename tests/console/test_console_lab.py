"""The console on the lab site: toggling a CE with the keyboard changes the real LDAP entry."""

from __future__ import annotations

from typing import Any

import pytest
from textual.widgets import DataTable, Static

from siteadmin.directory import Directory
from siteadmin.lab import Lab
from siteadmin.tui.app import SiteadminApp
from siteadmin.tui.screens import ConfirmScreen
from siteadmin.tui.switch_screen import SwitchScreen

from .test_console_frame import row_text, settle

pytestmark = pytest.mark.lab


def method_of(lab: Lab, ce: str) -> tuple[str, ...]:
    with Directory(lab.site) as directory:
        return directory.show(ce).install_methods


async def test_enable_then_disable_a_ce_from_the_console(lab: Lab) -> None:
    assert method_of(lab, "CE4") == ("Parrot",)
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(140, 45)) as pilot:
        app.show_view("ces")
        await settle(app, pilot)
        table = app.query_one("#ces DataTable", DataTable)
        names = [row_text(table, i)[0] for i in range(table.row_count)]
        assert {"CE1", "CE2", "CE3", "CE4"} <= set(names)
        table.focus()
        table.move_cursor(row=names.index("CE4"))
        # e asks first, showing the LDIF; Escape cancels and LDAP is untouched
        await pilot.press("e")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "installMethod: Torrent" in str(app.screen.query_one("#confirm-body", Static).render())
        await pilot.press("escape")
        await settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert method_of(lab, "CE4") == ("Parrot",)
        assert "cancelled, nothing written" in str(app.query_one("#ces .status", Static).render())
        await pilot.press("e")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        await settle(app, pilot)
        assert method_of(lab, "CE4") == ("Torrent",)
        row = row_text(table, table.get_row_index("CE4"))
        assert row[1:3] == ["Torrent", "yes"]

        await pilot.press("d")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        await settle(app, pilot)
        assert method_of(lab, "CE4") == ("Parrot",)

        app.show_view("audit")
        await settle(app, pilot)
        audit = app.query_one("#audit DataTable", DataTable)
        newest = [row_text(audit, i) for i in range(2)]
        assert [r[2:7] for r in newest] == [
            ["disable", "CE4", "Torrent", "Parrot", "ok"],
            ["enable", "CE4", "Parrot", "Torrent", "ok"],
        ]


async def test_a_toggle_after_someone_else_changed_the_ce_is_refused(lab: Lab) -> None:
    assert method_of(lab, "CE1") == ("CVMFS",)
    app = SiteadminApp(lab.site)
    try:
        async with app.run_test(size=(140, 45)) as pilot:
            app.show_view("ces")
            await settle(app, pilot)
            table = app.query_one("#ces DataTable", DataTable)
            table.move_cursor(row=table.get_row_index("CE1"))
            # another admin switches CE1 while this console still shows CVMFS
            with Directory(lab.site) as other:
                other.set_method("CE1", "Parrot")
            await pilot.press("e")
            await settle(app, pilot)
            await pilot.press("y")
            await settle(app, pilot)
            status = str(app.query_one("#ces .status", Static).render())
            assert "conflict" in status
            assert "Parrot" in status
            assert method_of(lab, "CE1") == ("Parrot",)  # the other admin's change stands
    finally:
        with Directory(lab.site) as directory:
            directory.set_method("CE1", "CVMFS")


async def test_checking_wns_over_ssh_shows_each_wns_own_result(lab: Lab) -> None:
    import dataclasses

    from siteadmin.site import NodeSection

    from .test_console_frame import closed_port

    # the lab's WNs plus one that refuses connections
    wns = dataclasses.replace(
        lab.site.wns,
        hosts=[*lab.site.wns.hosts, "wn099.lab"],
        nodes={**lab.site.wns.nodes, "wn099.lab": NodeSection(address="127.0.0.1", port=closed_port())},
    )
    app = SiteadminApp(dataclasses.replace(lab.site, wns=wns))
    async with app.run_test(size=(160, 45)) as pilot:
        app.show_view("wns")
        await settle(app, pilot)
        await pilot.press("c")
        await settle(app, pilot)
        table = app.query_one("#wns DataTable", DataTable)
        reach = {row[0]: row[4] for row in (row_text(table, i) for i in range(table.row_count))}
        assert {host: reach[host] for host in lab.wn_names} == dict.fromkeys(lab.wn_names, "ok")
        assert reach["wn099.lab"].startswith("connection refused"), reach["wn099.lab"]
        status = str(app.query_one("#wns .status", Static).render())
        assert status == f"{len(lab.wn_names)} of {len(lab.wn_names) + 1} WNs reached; 1 failed"


async def test_the_lab_tab_shows_the_labs_real_health(lab: Lab) -> None:
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(160, 45)) as pilot:
        app.show_view("lab")
        await settle(app, pilot)
        table = app.query_one("#lab DataTable", DataTable)
        rows = [row_text(table, i) for i in range(table.row_count)]
        assert {row[0] for row in rows} == {"ldap", "ssh", "rpc", "tracker", "seeder", "http"}
        assert all(row[2] == "ok" for row in rows), rows
        assert str(app.query_one("#lab .status", Static).render()).startswith(f"healthy: {len(rows)} checks passed")


async def test_keys_in_the_footer_work_right_after_switching_views_by_keyboard(lab: Lab) -> None:
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")  # WNs, by its number key: no Tab, no click
        await settle(app, pilot)
        footer_keys = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show}
        assert "c" in footer_keys
        await pilot.press("c")
        await settle(app, pilot)
        table = app.query_one("#wns DataTable", DataTable)
        reach = [row_text(table, i)[4] for i in range(table.row_count)]
        assert reach == ["ok"] * len(lab.wn_names)
        # a second c while the first check runs cancels it; only the newest fills the rows
        await pilot.press("c")
        await pilot.press("c")
        await settle(app, pilot)
        assert [row_text(table, i)[4] for i in range(table.row_count)] == ["ok"] * len(lab.wn_names)
        await pilot.press("2")
        await settle(app, pilot)
        assert {"e", "d"} <= {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show}


async def test_rollout_plan_then_apply_from_the_console(lab: Lab) -> None:
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("5")
        await settle(app, pilot)
        await pilot.press("a")  # apply before a plan: refused, nothing runs
        await settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("p")
        await settle(app, pilot)
        table = app.query_one("#rollout DataTable", DataTable)
        plans = {row_text(table, i)[0]: row_text(table, i)[1] for i in range(table.row_count)}
        assert set(plans) == set(lab.wn_names)
        assert set(plans.values()) <= {"unchanged", "changed", "new"}
        status = str(app.query_one("#rollout .status", Static).render())
        assert status.startswith("plan done"), status
        if set(plans.values()) == {"unchanged"}:
            await pilot.press("a")
            await settle(app, pilot)
            assert "nothing to apply" in str(app.query_one("#rollout .status", Static).render())
            return
        await pilot.press("a")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        await settle(app, pilot)
        status = str(app.query_one("#rollout .status", Static).render())
        assert status.startswith("apply done"), status


async def test_preflight_run_shows_the_matrix(lab: Lab) -> None:
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await settle(app, pilot)
        await pilot.press("c")
        for _ in range(30):
            await settle(app, pilot)
            if "checking" not in str(app.query_one("#preflight .status", Static).render()):
                break
        matrix = app.query_one("#preflight-matrix", DataTable)
        rows = {row_text(matrix, i)[0]: row_text(matrix, i)[1].strip() for i in range(matrix.row_count)}
        assert list(rows) == ["local", "central", "ports", "multicast", "inbound", "exposure"]
        assert rows["inbound"] == "not run"
        assert rows["ports"] == "pass", rows
        assert "all checks passed" in str(app.query_one("#preflight .status", Static).render())


async def test_the_swarm_table_fills_from_the_wns_aria2c(lab: Lab) -> None:
    app = SiteadminApp(lab.site)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("7")
        view = app.query_one("#swarm")
        for _ in range(300):
            await pilot.pause(0.1)
            if getattr(view, "polls", 0):
                break
        table = app.query_one("#swarm-table", DataTable)
        rows = {row_text(table, i)[0]: row_text(table, i) for i in range(table.row_count)}
        assert set(rows) == set(lab.wn_names), str(app.query_one("#swarm .status", Static).render())
        assert all(row[1].startswith("1.") for row in rows.values()), rows  # aria2c's version, read over RPC


async def wait_switch(app: SiteadminApp, pilot: object, rounds: int = 600) -> SwitchScreen:
    import asyncio

    screen = app.screen
    assert isinstance(screen, SwitchScreen)
    for _ in range(rounds):
        await asyncio.sleep(0.1)
        if not screen.running and (screen.plan is not None or "error" in screen.query_one("#switch-state", Static).classes):
            break
    await pilot.pause()  # type: ignore[attr-defined]
    return screen


async def test_switch_a_ce_to_torrent_and_back_from_the_console(lab: Lab) -> None:
    assert method_of(lab, "CE1") == ("CVMFS",)
    app = SiteadminApp(lab.site)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            await settle(app, pilot)
            table = app.query_one("#ces DataTable", DataTable)
            table.move_cursor(row=table.get_row_index("CE1"))
            await pilot.press("s")
            screen = await wait_switch(app, pilot)
            assert screen.plan is not None and screen.plan.to == "Torrent"
            body = str(screen.query_one("#switch-body", Static).render())
            assert "preflight" in body and "installMethod: Torrent" in body
            assert method_of(lab, "CE1") == ("CVMFS",)  # the plan changed nothing
            await pilot.press("y")
            for _ in range(1200):
                await pilot.pause(0.1)
                if screen.result is not None:
                    break
            assert screen.result is not None
            assert screen.result.outcome == "ok", [s.as_dict() for s in screen.result.steps]
            assert [s.step for s in screen.result.steps] == ["preflight", "rollout", "ldap", "wait"]
            assert method_of(lab, "CE1") == ("Torrent",)
            assert "600" in str(screen.query_one("#switch-state", Static).render())  # AliEn's cache delay
            await pilot.press("escape")
            await settle(app, pilot)
            await pilot.press("s")  # back: LDAP first, to the method it had before
            screen = await wait_switch(app, pilot)
            assert screen.plan is not None and screen.plan.to == "CVMFS"
            await pilot.press("y")
            for _ in range(600):
                await pilot.pause(0.1)
                if screen.result is not None:
                    break
            assert screen.result is not None and screen.result.outcome == "ok"
            assert method_of(lab, "CE1") == ("CVMFS",)
    finally:
        with Directory(lab.site) as directory:
            if directory.show("CE1").install_methods != ("CVMFS",):
                directory.set_method("CE1", "CVMFS")


async def run_switch_of_ce1(app: SiteadminApp, pilot: Any) -> SwitchScreen:
    await pilot.press("2")
    await settle(app, pilot)
    table = app.query_one("#ces DataTable", DataTable)
    table.move_cursor(row=table.get_row_index("CE1"))
    await pilot.press("s")
    screen = await wait_switch(app, pilot)
    assert screen.plan is not None and screen.plan.to == "Torrent"
    await pilot.press("y")
    for _ in range(1200):
        await pilot.pause(0.1)
        if screen.result is not None:
            break
    assert screen.result is not None
    return screen


def switch_log(screen: SwitchScreen) -> str:
    return "\n".join(line for line, _ in screen.log_lines)


async def test_a_switch_the_preflight_stops_shows_why_and_changes_nothing(lab: Lab) -> None:
    if lab.mode != "netns" or lab.router_ns is None:
        pytest.skip("cutting the tracker off needs the lab's router namespace (run the tests as root)")
    assert method_of(lab, "CE1") == ("CVMFS",)
    table_name = "siteadmin_console_switch"
    port = lab.site.central.tracker_port
    lab.apply_nft(lab.router_ns, f"table inet {table_name} {{}}\ndelete table inet {table_name}\ntable inet {table_name} {{\n"
                                 f"    chain forward {{\n        type filter hook forward priority 0; policy accept;\n"
                                 f"        tcp dport {port} drop\n    }}\n}}\n")
    app = SiteadminApp(lab.site)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await run_switch_of_ce1(app, pilot)
            assert screen.result is not None and screen.result.outcome == "blocked"
            assert [s.outcome for s in screen.result.steps] == ["blocked", "not run", "not run", "not run"]
            log = switch_log(screen)
            assert "preflight: blocked" in log
            assert f"{lab.site.central.tracker_host}:{port}" in log  # the finding that stopped it
            assert "blocked" in str(screen.query_one("#switch-state", Static).render())
            assert method_of(lab, "CE1") == ("CVMFS",)
    finally:
        lab.apply_nft(lab.router_ns, f"table inet {table_name} {{}}\ndelete table inet {table_name}\n")


async def test_a_switch_whose_rollout_fails_is_undone_and_says_so(lab: Lab) -> None:
    import dataclasses
    import posixpath

    from siteadmin.inventory import config_path_for

    if lab.mode != "netns":
        pytest.skip("a read-only config folder on one WN needs its own mount namespace (run the tests as root)")
    assert method_of(lab, "CE1") == ("CVMFS",)
    # a profile change, so the rollout really writes every WN's file
    from siteadmin.site import CeSection

    served = lab.wn_names[:-1]  # CE1 serves all WNs but the last: the switch leaves that one alone
    site = dataclasses.replace(
        lab.site, aria2c=dataclasses.replace(lab.site.aria2c, options={**lab.site.aria2c.options, "max-overall-upload-limit": "3M"}),
        ces={"CE1": CeSection(wns=[",".join(served)])},
    )
    broken = lab.wn_names[1]
    path = config_path_for(lab.site, broken)
    folder = posixpath.dirname(path)

    def cat(host: str) -> str:
        done = lab.wn_exec(host, ["cat", config_path_for(lab.site, host)])
        assert done.returncode == 0, done.stderr
        return str(done.stdout)

    def sh(host: str, script: str, input_text: str | None = None) -> None:
        done = lab.wn_exec(host, ["sh", "-c", script], input_text=input_text)
        assert done.returncode == 0, done.stderr

    before = {h: cat(h) for h in lab.wn_names}
    sh(broken, f"mount -t tmpfs -o size=256k,mode=0755 siteadmin-console {folder}")
    app = SiteadminApp(site)
    try:
        sh(broken, f"umask 077; cat > {path}; chmod 600 {path}; mount -o remount,ro {folder}", input_text=before[broken])
        async with app.run_test(size=(120, 40)) as pilot:
            screen = await run_switch_of_ce1(app, pilot)
            assert screen.result is not None and screen.result.outcome == "failed", switch_log(screen)
            assert [(s.step, s.outcome) for s in screen.result.steps][:2] == [("preflight", "ok"), ("rollout", "failed")]
            assert [(u.step, u.outcome) for u in screen.result.undone] == [("rollout", "undone")]
            log = switch_log(screen)
            assert "read-only" in log and "undo rollout: undone" in log
            assert "undone: rollout" in str(screen.query_one("#switch-state", Static).render())
    finally:
        sh(broken, f"umount {folder} || umount -l {folder}")
    assert method_of(lab, "CE1") == ("CVMFS",)
    assert {h: cat(h) for h in lab.wn_names} == before  # every WN's file back, byte for byte
