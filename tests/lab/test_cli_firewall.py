"""`siteadmin lab firewall`: the admin rehearses a firewall change in the lab's router."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest

from siteadmin.cli import main
from siteadmin.lab import Lab

pytestmark = pytest.mark.lab

DROP_TRACKER = """table inet rehearse {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 8088 drop
  }
}
"""


def run(*argv: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    code = main(list(argv), out=out, err=err)
    assert "Traceback" not in err.getvalue()
    return code, out.getvalue(), err.getvalue()


def test_apply_show_status_flush(lab: Lab, tmp_path: Path) -> None:
    rules = tmp_path / "drop-tracker.nft"
    rules.write_text(DROP_TRACKER)
    d = str(lab.dir)
    try:
        assert run("lab", "firewall", "apply", str(rules), "--dir", d)[0] == 0
        code, out, _ = run("lab", "firewall", "show", "--dir", d)
        assert code == 0 and "tcp dport 8088 drop" in out
        failed = {c.component for c in lab.status().checks if not c.ok}
        # exactly what the rule blocks: the announces, and the seeder check (a scrape of the tracker)
        assert failed == {"tracker", "seeder"}
    finally:
        assert run("lab", "firewall", "flush", "--dir", d)[0] == 0
    code, out, _ = run("lab", "firewall", "show", "--dir", d)
    assert code == 0 and "8088" not in out
    assert lab.status().healthy


def test_a_bad_ruleset_changes_nothing_and_is_one_line(lab: Lab, tmp_path: Path) -> None:
    good = tmp_path / "good.nft"
    good.write_text(DROP_TRACKER)
    bad = tmp_path / "bad.nft"
    bad.write_text("table inet broken {\n  chain y { tcp dport 80 dorp }\n}\n")
    d = str(lab.dir)
    try:
        assert run("lab", "firewall", "apply", str(good), "--dir", d)[0] == 0
        code, _, err = run("lab", "firewall", "apply", str(bad), "--dir", d)
        assert code == 2
        assert len(err.splitlines()) == 1
        assert err.startswith(f"siteadmin: config: {bad}: nft refused the ruleset, nothing changed: line 2")
        _, out, _ = run("lab", "firewall", "show", "--dir", d)
        assert "tcp dport 8088 drop" in out and "broken" not in out  # the earlier rules stand
        code, _, err = run("lab", "firewall", "apply", str(tmp_path / "missing.nft"), "--dir", d)
        assert code == 2 and "cannot read" in err
    finally:
        run("lab", "firewall", "flush", "--dir", d)
