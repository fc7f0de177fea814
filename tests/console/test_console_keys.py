"""Keys and commands on the recorded site (fast tier): every view's keys are in the footer and work as
soon as its number key is pressed, every action is in the command palette, a write asks first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from textual.binding import Binding
from textual.widgets import Static

from siteadmin.tui.app import ENTRIES, SiteadminApp
from siteadmin.tui.screens import ConfirmScreen
from siteadmin.tui.views.base import View

from .recorded import RecordedServices, recorded_site


def app_for(tmp_path: Path) -> tuple[SiteadminApp, RecordedServices]:
    shown, real = recorded_site(tmp_path)
    services = RecordedServices(shown, real)
    return SiteadminApp(shown, services), services


async def quiet(app: SiteadminApp, pilot: Any) -> None:
    for _ in range(200):
        await pilot.pause()
        if not any(not w.is_finished for w in app.workers):  # pending ones too
            return
        await asyncio.sleep(0.02)


async def test_each_views_keys_are_in_the_footer_right_after_its_number_key(tmp_path: Path) -> None:
    app, _ = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        for entry in ENTRIES:
            if entry.id == "lab":
                continue  # not a lab site
            await pilot.press(entry.key)
            await quiet(app, pilot)
            assert app.current == entry.id
            view = app.view(entry.id)
            assert view is not None
            wanted = {b.key for b in view.BINDINGS if isinstance(b, Binding) and b.show}
            shown = {b.binding.key for b in app.screen.active_bindings.values() if b.binding.show}
            assert wanted <= shown, (entry.id, wanted - shown)
            assert app.query_one(f"#nav-{entry.id}").has_class("-active")


async def test_every_action_has_a_palette_entry_that_runs_it(tmp_path: Path) -> None:
    app, _ = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await quiet(app, pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for view in app.query(View):
            for binding in view.BINDINGS:
                if isinstance(binding, Binding) and binding.description:
                    title = next(e.label for e in ENTRIES if e.id == view.id) + f": {binding.description} ({binding.key})"
                    assert title in commands, title
        commands["Rollout: Plan (p)"].callback()
        await quiet(app, pilot)
        assert app.current == "rollout"
        status = str(app.query_one("#rollout .status", Static).render())
        assert status.startswith("plan done"), status


async def test_a_ce_toggle_shows_its_ldif_and_escape_writes_nothing(tmp_path: Path) -> None:
    app, services = app_for(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await quiet(app, pilot)
        await pilot.press("e")  # CE1, the first row: CVMFS -> Torrent
        await quiet(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#confirm-body", Static).render())
        assert "delete: installMethod\ninstallMethod: CVMFS" in body and "add: installMethod\ninstallMethod: Torrent" in body
        await pilot.press("escape")
        await quiet(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert services.writes == []
        assert "cancelled, nothing written" in str(app.query_one("#ces .status", Static).render())


async def test_a_second_check_cancels_the_first_and_quitting_cancels_and_closes(tmp_path: Path) -> None:
    app, services = app_for(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await quiet(app, pilot)
        view = app.view("wns")
        assert view is not None
        first = view.start_job("check")
        second = view.start_job("check")
        assert first.cancel.is_set() and not second.cancel.is_set()
        assert not view.current("check", first) and view.current("check", second)
    assert second.cancel.is_set()  # leaving the console stopped what was running
    assert services._closed  # and closed the kept sessions


async def test_the_profile_form_checks_as_you_type_and_saves_after_the_diff(tmp_path: Path) -> None:
    import stat

    from siteadmin.site import load_site
    from siteadmin.tui.profile_form import ProfileForm

    path = tmp_path / "site.toml"
    original = ('# our site, by hand\n[site]\nname = "TESTSITE"\n[wns]\nhosts = ["wn[001-002].example.org"]\n'
                '[ldap]\nurl = "ldaps://127.0.0.1:1"\ntimeout = 1\n[aria2c]\n# agreed with the network team\n'
                'options = { "seed-time" = "10" }\n[audit]\npath = "audit.jsonl"\n')
    path.write_text(original)
    path.chmod(0o600)
    app = SiteadminApp(load_site(path))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await quiet(app, pilot)
        await pilot.press("e")
        await quiet(app, pilot)
        form = app.screen
        assert isinstance(form, ProfileForm)
        form.query_one("#opt-listen-port").focus()
        await pilot.press(*"80")
        await quiet(app, pilot)
        why = form.query_one("#why-listen-port", Static)
        assert "1024-65535" in str(why.render()) and why.has_class("-error")
        await pilot.press("ctrl+s")
        await quiet(app, pilot)
        assert isinstance(app.screen, ProfileForm)  # refused: nothing to confirm
        assert path.read_text() == original
        await pilot.press("backspace", "backspace", *"6881-6899")
        form.query_one("#opt-all-proxy-passwd").focus()
        await pilot.press(*"s3cr3t-pass")
        await quiet(app, pilot)
        assert not form.problems
        await pilot.press("ctrl+s")
        await quiet(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        diff = str(app.screen.query_one("#confirm-body", Static).render())
        assert "listen-port" in diff and "s3cr3t-pass" not in diff and "********" in diff
        await pilot.press("escape")  # not saved
        await quiet(app, pilot)
        assert path.read_text() == original
        await pilot.press("ctrl+s")
        await quiet(app, pilot)
        await pilot.press("y")
        await quiet(app, pilot)
        assert not isinstance(app.screen, ProfileForm)
    text = path.read_text()
    assert "# our site, by hand" in text and "# agreed with the network team" in text
    saved = load_site(path).aria2c.options
    assert saved["listen-port"] == "6881-6899" and saved["seed-time"] == "10" and saved["all-proxy-passwd"] == "s3cr3t-pass"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
