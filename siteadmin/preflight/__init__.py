"""The firewall preflight for torrent mode (``siteadmin check``): the checks, the probe sent to
the WNs, the report and the rules a site's network team needs.

- ``service.run_check(site, hosts, only=..., outside=...)`` runs the checks on the WN service
  and returns a ``report.CheckReport``;
- ``probe.py`` is the standard-library script (Python 3.6+) each WN runs as ``python3 -``;
- ``rules.firewall_rules(site, fmt)`` gives the nftables, iptables or firewalld rules.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

from siteadmin.preflight.report import CHECKS, CheckReport, Finding, load_last, save_last
from siteadmin.preflight.rules import FORMATS, firewall_rules
from siteadmin.preflight.service import run_check

__all__ = ["CHECKS", "FORMATS", "CheckReport", "Finding", "firewall_rules", "load_last", "run_check", "save_last"]
