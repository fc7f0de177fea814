"""Rollout of aria2c profiles to the WNs: plan, apply, roll back (``siteadmin apply``, ``siteadmin rollback``, the console).

``service`` does the work on the WNs over the one WN service; ``changes`` holds the pure parts
(classification, masked diff, live-or-restart marking, the lock's content, what aria2c checks only
at start). Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

from siteadmin.rollout.changes import CHANGED, NEW, UNCHANGED, LockInfo, OptionChange
from siteadmin.rollout.service import (
    BUSY,
    LOCKED,
    PROFILE,
    READ_BACK,
    RESTART_FAILED,
    STALE_LOCK,
    VALIDATION,
    HostReport,
    RolloutError,
    RolloutRun,
    apply,
    config_path_for,
    describe,
    list_generations,
    lock_path,
    plan,
    report_of,
    restart_command_for,
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
    "config_path_for",
    "describe",
    "list_generations",
    "lock_path",
    "plan",
    "report_of",
    "restart_command_for",
    "rollback",
]
