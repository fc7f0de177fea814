"""The site's swarm, live: each WN's aria2c read over its SSH tunnel, per WN, per package, and how much came from the site itself.

``model`` holds the pure reading (types, peer classification, shares, problem flags, the
per-package view, memory between polls); ``rpc`` the kept-alive JSON-RPC over a WN's tunnel;
``service`` the ``SwarmMonitor`` that polls through the WN service; ``accounting`` the nftables
byte-accounting rule (``set_accounting``); ``outputs`` the Nagios line and the Prometheus
textfile. Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

from siteadmin.swarm.accounting import accounting_ruleset, describe, removal_ruleset, set_accounting
from siteadmin.swarm.model import (
    CENTRAL,
    OTHER,
    PROBLEMS,
    SITE,
    Addresses,
    Limits,
    PackageView,
    Peer,
    Problem,
    Share,
    SourceBytes,
    SwarmReport,
    Torrent,
    WNState,
)
from siteadmin.swarm.outputs import NagiosState, nagios, prometheus_text, write_prometheus
from siteadmin.swarm.service import ACCOUNTING_TABLE, SwarmMonitor, poll_once, site_addresses

__all__ = [
    "ACCOUNTING_TABLE",
    "CENTRAL",
    "OTHER",
    "PROBLEMS",
    "SITE",
    "Addresses",
    "Limits",
    "NagiosState",
    "PackageView",
    "Peer",
    "Problem",
    "Share",
    "SourceBytes",
    "SwarmMonitor",
    "SwarmReport",
    "Torrent",
    "WNState",
    "accounting_ruleset",
    "describe",
    "nagios",
    "poll_once",
    "prometheus_text",
    "removal_ruleset",
    "set_accounting",
    "site_addresses",
    "write_prometheus",
]
