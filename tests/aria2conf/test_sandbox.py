"""A site template is data, not code: it is rendered in jinja2's immutable sandbox.

A template that reaches for Python internals (``cycler.__init__.__globals__.os``) must stop
with one line naming the template and the line, and must run nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from siteadmin.aria2conf import render
from siteadmin.cli import main
from siteadmin.errors import ConfigError
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

BODY = "{% for name, value in options %}\n{{ name }}={{ value }}\n{% endfor %}\n"


def _hostile(folder: Path, marker: Path) -> Path:
    """A site template whose third line would create ``marker`` if it could run a shell."""
    folder.mkdir()
    template = folder / "aria2c.conf.j2"
    template.write_text("# host {{ host }}\n# ok\n# {{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}\n" + BODY)
    return template


def test_a_template_cannot_run_a_command(make_site: SiteFactory, tmp_path: Path) -> None:
    marker = tmp_path / "ran-a-command"
    _hostile(tmp_path / "own", marker)
    site = make_site(f'[aria2c]\ntemplate_path = ["{tmp_path / "own"}"]\n')
    with pytest.raises(ConfigError) as caught:
        render(site, "wn1")
    assert not marker.exists()
    line = caught.value.one_line()
    assert "\n" not in line
    assert "aria2c.conf.j2" in line and "line 3" in line, line
    assert "unsafe" in line or "not allowed" in line, line


def test_a_template_cannot_change_what_it_is_given(make_site: SiteFactory, tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    # the immutable sandbox refuses to mutate a list or dict handed to the template
    (own / "aria2c.conf.j2").write_text("{{ origin.clear() }}" + BODY)
    site = make_site(f'[aria2c]\ntemplate_path = ["{own}"]\n')
    with pytest.raises(ConfigError, match=r"aria2c\.conf\.j2.* line 1"):
        render(site, "wn1")


def test_the_builtin_template_renders_in_the_sandbox(make_site: SiteFactory) -> None:
    rendered = render(make_site('[aria2c.options]\nseed-ratio = 0.0\n'), "wn1")
    assert "seed-ratio=0.0" in rendered.text


def test_render_of_a_hostile_template_exits_2_with_one_line(tmp_path: Path) -> None:
    marker = tmp_path / "ran-a-command"
    _hostile(tmp_path / "own", marker)
    site_file = tmp_path / "site.toml"
    site_file.write_text(f'[site]\nname = "T"\n[aria2c]\ntemplate_path = ["{tmp_path / "own"}"]\n')
    out, err = io.StringIO(), io.StringIO()
    code = main(["--site", str(site_file), "render", "--no-aria2c-check"], out=out, err=err)
    assert code == 2, err.getvalue()
    assert not marker.exists()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("siteadmin: config: ") and "line 3" in lines[0]
    assert "Traceback" not in err.getvalue() and out.getvalue() == ""
