"""Rollout of aria2c profiles to the WNs: plan, apply, roll back (``siteadmin apply``, ``siteadmin rollback``, the console).

``service`` does the work on the WNs over the one WN service; ``changes`` holds the pure parts
(classification, masked diff, live-or-restart marking, what aria2c checks only at start). The WN
lock a rollout takes is the remote layer's (``siteadmin.remote.wnlock``); its outcomes (``LOCKED``,
``STALE_LOCK``), ``LockInfo`` and ``lock_path`` are re-exported here. A WN's config path and restart
command are the inventory's (``siteadmin.inventory.config_path_for``, ``restart_command_for``).
Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

from siteadmin.remote.wnlock import LOCKED, STALE_LOCK, LockInfo, lock_path
from siteadmin.rollout.changes import CHANGED, NEW, UNCHANGED, OptionChange
from siteadmin.rollout.service import (
    BUSY,
    PROFILE,
    READ_BACK,
    RESTART_FAILED,
    VALIDATION,
    HostReport,
    RolloutError,
    RolloutRun,
    apply,
    describe,
    list_generations,
    plan,
    report_of,
    rollback,
)

__all__ = [
    "BUSY",
    "CHANGED",
    "LOCKED",
    "NEW",
    "PROFILE",
    "READ_BACK",
    "RESTART_FAILED",
    "STALE_LOCK",
    "UNCHANGED",
    "VALIDATION",
    "HostReport",
    "LockInfo",
    "OptionChange",
    "RolloutError",
    "RolloutRun",
    "apply",
    "describe",
    "list_generations",
    "lock_path",
    "plan",
    "report_of",
    "rollback",
]
