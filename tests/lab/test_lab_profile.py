"""The lab's WNs run exactly the aria2c profile `siteadmin render` gives for them."""

from __future__ import annotations

import io
import stat
from pathlib import Path

from siteadmin.aria2conf import aria2_form, lint, render
from siteadmin.aria2conf.catalogue import HIDDEN_OVER_RPC
from siteadmin.cli import main
from siteadmin.lab import Lab


def test_every_wn_runs_its_rendered_profile(lab: Lab) -> None:
    for name in lab.wn_names:
        rendered = render(lab.site, name, create_secret=False)
        conf = Path(lab.wn(name).dir) / "aria2c.conf"
        assert conf.read_text() == rendered.text
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        live = lab.rpc(name, "aria2.getGlobalOption")
        expected = {k: aria2_form(k, v) for k, v in rendered.options.items() if k not in HIDDEN_OVER_RPC}
        assert {k: live.get(k) for k in expected} == expected, name
        assert rendered.options["dir"].startswith(str(lab.dir))


def test_the_lab_profile_is_lint_clean(lab: Lab) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(lab.site_path), "lint"], out=out, err=err) == 0, out.getvalue() + err.getvalue()
    for name in lab.wn_names:
        findings = lint(lab.site, render(lab.site, name, create_secret=False).options, host=name, interfaces=["eth0"])
        assert [f for f in findings if f.level == "error"] == []
