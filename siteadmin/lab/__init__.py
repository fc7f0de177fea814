"""A real local ALICE site for demos, staging and tests: ``siteadmin lab up|status|down``.

As root, every component lives in its own network namespace, wired like a real site: worker
nodes (sshd + aria2c) on one bridged LAN, a router namespace where firewall rules can be
rehearsed, and a "cern" namespace with slapd, opentracker, a seeding aria2c and an HTTP
fallback. The VoBox is the root namespace, linked to the router, with routes for the lab
subnet only. Without root, the same processes run on 127.x addresses with free ports.

Modules: ``netns`` (topology, namespaces, nftables), ``proc`` (processes by pid),
``central`` (package, torrent, tracker, seeder, HTTP), ``wns`` (per-WN aria2c and sshd),
``sitefile`` (the generated site.toml), ``health`` (real checks), ``lab`` (``Lab`` orchestration).
The lab is used by tests and the demo, never by the core.
"""

from __future__ import annotations

from siteadmin.lab.lab import Lab, LabStatus

__all__ = ["Lab", "LabStatus"]
