"""Profile rendering for 500 WNs: render + re-parse + validate + lint per WN, against one aria2c check.

siteadmin validates every WN's profile itself on every plan, and runs aria2c's own parser only
once per distinct option set. That is only sound if its own checks cost a small fraction of
an aria2c run: the baseline is `check_with_aria2c` on one rendered profile, measured here.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

from _common import best_of, report  # noqa: E402

from siteadmin.aria2conf import check_with_aria2c, lint, render  # noqa: E402
from siteadmin.inventory import Inventory  # noqa: E402
from siteadmin.site import load_site  # noqa: E402

SITE = """
[site]
name = "BENCH"
[wns]
hosts = ["wn[001-500].example.org"]
[wns.groups.big]
hosts = ["wn[001-100].example.org"]
aria2c = { max-overall-upload-limit = "100M" }
[aria2c.options]
seed-ratio = 0.0
bt-max-peers = 80
all-proxy = "proxy.example.org:3128"
all-proxy-user = "alice"
all-proxy-passwd = "proxy-password"
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.toml"
        path.write_text(SITE)
        site = load_site(path)
        hosts = Inventory(site).select()
        sample = render(site, hosts[0])  # creates the site's secret once

        def full() -> None:
            for host in hosts:
                rendered = render(site, host)
                lint(site, rendered.options, host=host, interfaces=["eth0"])

        def aria2c_check() -> None:
            problems = check_with_aria2c(sample.text, secrets=sample.secrets)
            if problems:
                raise SystemExit(f"aria2c refuses the sample profile: {problems}")

        per_wn = best_of(3, full) / len(hosts)
        baseline = best_of(5, aria2c_check)
    print(f"render+validate+lint: {per_wn * 1000:.2f} ms per WN ({per_wn * len(hosts):.2f} s for {len(hosts)} WNs); "
          f"one aria2c check: {baseline * 1000:.1f} ms")
    report("render per WN vs one aria2c check", per_wn, baseline, "own checks >= 5x cheaper than running aria2c", baseline / per_wn >= 5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
