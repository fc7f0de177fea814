"""Rendering from many threads at once, as the rollout does: one Inventory per site, right answers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from siteadmin.aria2conf import render
from siteadmin.aria2conf.render import _inventory
from siteadmin.inventory import Inventory
from siteadmin.site import Site

SiteFactory = Callable[[str], Site]

# 3000 separate patterns take about 0.1 s to parse: threads released together overlap in the build
MANY = "[wns]\nhosts = [" + ", ".join(f'"wn{i}.rack{i}.example.org"' for i in range(3000)) + "]\n"


def test_threads_rendering_one_site_share_one_inventory(make_site: SiteFactory) -> None:
    site = make_site(MANY)
    start = threading.Barrier(8)

    def build(_: int) -> Inventory:
        start.wait()
        return _inventory(site)

    with ThreadPoolExecutor(8) as pool:
        inventories = list(pool.map(build, range(8)))
    assert all(inv is inventories[0] for inv in inventories), "each thread expanded the hostlists again"
    assert inventories[0].site is site


def test_threads_rendering_two_sites_each_get_their_own(make_site: SiteFactory) -> None:
    one = make_site('[wns]\nhosts = ["wn[001-040].one.org"]\n[wns.nodes."wn007.one.org"]\naria2c = { bt-max-peers = 7 }\n')
    two = make_site('[wns]\nhosts = ["wn[001-040].two.org"]\n[wns.nodes."wn007.two.org"]\naria2c = { bt-max-peers = 9 }\n')
    expected = {site.wns.hosts[0]: render(site, f"wn007.{site.wns.hosts[0].split('.', 1)[1]}", create_secret=True).options for site in (one, two)}
    start = threading.Barrier(16)

    def job(i: int) -> tuple[str, dict[str, str]]:
        site = (one, two)[i % 2]
        start.wait()
        host = f"wn007.{site.wns.hosts[0].split('.', 1)[1]}"
        return site.wns.hosts[0], render(site, host, create_secret=False).options

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(64)))
    for key, options in results:
        assert options == expected[key]
    assert {options["bt-max-peers"] for _, options in results} == {"7", "9"}
