"""Editing [aria2c] options in site.toml: comments and layout kept, values checked, atomic write, mode kept."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from siteadmin.errors import ConfigError, ConflictError
from siteadmin.site import load_site
from siteadmin.siteedit import edited_text, plan_profile_edit, read_options, write_site_text

SITE = """\
# Our site: edited by hand, keep this comment.
[site]
name = "TESTSITE"   # the LDAP name

[wns]
hosts = ["wn[001-004].example.org"]

[aria2c]
# the profile every WN gets
options = { "enable-dht" = "true", "seed-time" = "10" }

[audit]
path = "audit.jsonl"
"""

TABLE_SITE = """\
[site]
name = "TESTSITE"

[aria2c.options]
# bandwidth agreed with the network team
max-overall-download-limit = "10M"   # per WN
enable-dht = true
"""


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_an_inline_options_table_is_edited_in_place_and_everything_else_kept() -> None:
    after = edited_text(SITE, {"seed-time": "0", "listen-port": "6881-6999"})
    assert read_options(after) == {"enable-dht": "true", "seed-time": "0", "listen-port": "6881-6999"}
    before_lines, after_lines = SITE.splitlines(), after.splitlines()
    changed = [i for i, (a, b) in enumerate(zip(before_lines, after_lines, strict=True)) if a != b]
    assert [before_lines[i] for i in changed] == ['options = { "enable-dht" = "true", "seed-time" = "10" }']
    assert "# Our site: edited by hand, keep this comment." in after
    assert 'name = "TESTSITE"   # the LDAP name' in after


def test_a_table_keeps_its_comments_and_an_option_can_be_removed() -> None:
    after = edited_text(TABLE_SITE, {"max-overall-download-limit": "20M", "enable-dht": None})
    assert "# bandwidth agreed with the network team" in after
    assert 'max-overall-download-limit = "20M"   # per WN' in after
    assert "enable-dht" not in after
    assert edited_text(TABLE_SITE, {}) == TABLE_SITE


def test_a_missing_table_is_added() -> None:
    after = edited_text('[site]\nname = "X"\n', {"seed-time": "0"})
    assert read_options(after) == {"seed-time": "0"}
    assert after.startswith('[site]\nname = "X"\n')


def test_plan_refuses_a_bad_value_naming_option_and_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, SITE)
    with pytest.raises(ConfigError, match=r"listen-port = .*1024-65535"):
        plan_profile_edit(path, {"listen-port": "80"})
    with pytest.raises(ConfigError, match="no-such-option"):
        plan_profile_edit(path, {"no-such-option": "1"})
    assert path.read_text() == SITE


def test_plan_shows_a_diff_with_secrets_masked(tmp_path: Path) -> None:
    path = write(tmp_path, SITE)
    edit = plan_profile_edit(path, {"all-proxy": "http://proxy.example.org:3128", "all-proxy-passwd": "s3cr3t-pass"})
    assert edit.changed == ("all-proxy", "all-proxy-passwd")
    assert "s3cr3t-pass" not in edit.diff
    assert "********" in edit.diff
    assert "+options = " in edit.diff
    assert "s3cr3t-pass" in edit.after  # the file itself gets the real value
    assert path.read_text() == SITE  # planning writes nothing


def test_write_is_atomic_keeps_mode_and_the_loader_reads_it(tmp_path: Path) -> None:
    path = write(tmp_path, SITE, 0o640)
    edit = plan_profile_edit(path, {"seed-time": "0"})
    write_site_text(edit)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert load_site(path).aria2c.options["seed-time"] == "0"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_0600_file_stays_0600_and_a_secret_makes_an_open_file_0600(tmp_path: Path) -> None:
    path = write(tmp_path, SITE, 0o600)
    write_site_text(plan_profile_edit(path, {"seed-time": "5"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    write_site_text(plan_profile_edit(path, {"all-proxy-passwd": "s3cr3t-pass"}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_site(path).aria2c.options["all-proxy-passwd"] == "s3cr3t-pass"


def test_a_file_changed_since_the_plan_is_not_overwritten(tmp_path: Path) -> None:
    path = write(tmp_path, SITE)
    edit = plan_profile_edit(path, {"seed-time": "0"})
    path.write_text(SITE + "\n# another admin was here\n")
    with pytest.raises(ConflictError):
        write_site_text(edit)
    assert path.read_text().endswith("# another admin was here\n")
