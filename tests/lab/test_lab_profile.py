"""The lab's WNs run exactly the aria2c profile `siteadmin render` gives for them."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest

from siteadmin.aria2conf import aria2_form, lint, render
from siteadmin.aria2conf.catalogue import HIDDEN_OVER_RPC
from siteadmin.cli import main
from siteadmin.inventory import config_path_for
from siteadmin.lab import Lab
from siteadmin.remote import WNService

pytestmark = pytest.mark.lab


def test_every_wn_runs_its_rendered_profile(lab: Lab) -> None:
    # each WN's own config, read where the rollout writes it (its /etc/aria2/aria2c.conf in netns mode), over SSH
    paths = {name: config_path_for(lab.site, name) for name in lab.wn_names}
    with WNService(lab.site) as service:
        results = service.run(lab.wn_names, lambda s: s.run(f"stat -c %a {shlex.quote(paths[s.host])} && cat {shlex.quote(paths[s.host])}",
                                                             check=True).stdout)
    for name, result in zip(lab.wn_names, results, strict=True):
        assert result.ok, result
        rendered = render(lab.site, name, create_secret=False)
        mode, _, text = str(result.value).partition("\n")
        assert text == rendered.text
        assert mode == "600"
        if lab.mode == "netns":
            assert paths[name] == "/etc/aria2/aria2c.conf"
        live = lab.rpc(name, "aria2.getGlobalOption")
        expected = {k: aria2_form(k, v) for k, v in rendered.options.items() if k not in HIDDEN_OVER_RPC}
        assert {k: live.get(k) for k in expected} == expected, name
        # the WN's data dir is its own, backed by its folder in the lab dir
        data = lab.wn(name).host_path(rendered.options["dir"]) if lab.mode == "netns" else Path(rendered.options["dir"])
        assert data.is_dir() and data.resolve().is_relative_to(lab.wn(name).path.resolve())


def test_the_lab_profile_is_lint_clean(lab: Lab) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--site", str(lab.site_path), "lint"], out=out, err=err) == 0, out.getvalue() + err.getvalue()
    for name in lab.wn_names:
        findings = lint(lab.site, render(lab.site, name, create_secret=False).options, host=name, interfaces=["eth0"])
        assert [f for f in findings if f.level == "error"] == []


def test_lint_probe_judges_lpd_by_each_wns_own_interfaces(lab: Lab) -> None:
    import json

    text = lab.site_path.read_text()
    assert '"bt-lpd-interface" = "eth0", ' in text
    variant = lab.dir / "site-lpd-any-interface.toml"  # beside site.toml: its relative paths hold
    variant.write_text(text.replace('"bt-lpd-interface" = "eth0", ', ""))
    ns = lab.wn_ns("wn002.lab")
    assert ns is not None
    extra = ["ip", "-n", ns]
    try:
        # wn002 gets a second IPv4 interface: a veth pair inside its own namespace (no dummy module here)
        steps = (
            ["link", "add", "extra0", "type", "veth", "peer", "name", "extra1"],
            ["addr", "add", "10.99.0.1/32", "dev", "extra0"],
            ["link", "set", "extra0", "up"],
        )
        for argv in steps:
            lab.exec_in(None, [*extra, *argv]).check_returncode()
        out, err = io.StringIO(), io.StringIO()
        code = main(["--site", str(variant), "lint", "--probe", "--json"], out=out, err=err)
        assert code == 0, err.getvalue()
        rows = json.loads(out.getvalue())["findings"]
        assert [(r["hosts"], r["rule"]) for r in rows] == [("wn002.lab", "lpd-no-interface")]
        assert "eth0, extra0" in rows[0]["message"]
    finally:
        lab.exec_in(None, [*extra, "link", "del", "extra0"])
        variant.unlink()


def test_lint_probe_reports_a_wn_it_cannot_reach(lab: Lab) -> None:
    import json
    import socket

    text = lab.site_path.read_text()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    variant = lab.dir / "site-unreachable-wn.toml"
    variant.write_text(text.replace('hosts = ["wn[001-004].lab"]', 'hosts = ["wn[001-004,099].lab"]')
                       + f'\n[wns.nodes."wn099.lab"]\naddress = "127.0.0.1"\nport = {port}\n')
    try:
        out, err = io.StringIO(), io.StringIO()
        assert main(["--site", str(variant), "lint", "--probe", "--json"], out=out, err=err) == 1
        rows = json.loads(out.getvalue())["findings"]
        assert [(r["hosts"], r["level"], r["rule"]) for r in rows] == [("wn099.lab", "error", "probe")]
        assert "Traceback" not in err.getvalue()
    finally:
        variant.unlink()
