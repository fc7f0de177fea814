"""The pure half of a rollout: what a WN's new file changes and how it reaches aria2c.

Nothing here touches a WN or the network; the rollout service (``siteadmin.rollout.service``)
feeds it the bytes it read and acts on the answers. Unit tested in ``tests/unit/test_rollout_pure.py``.

- ``classify``: a WN's file is ``unchanged``, ``changed`` or ``new``.
- ``option_changes``: each changed option with its change class from the aria2c option catalogue
  (``live``, ``new-downloads``, ``restart``); ``reload_kind`` decides RPC or restart.
- ``masked_diff``: a unified diff of the two files with every secret value masked.
- ``start_checks`` / ``split_checks``: what aria2c checks only when it starts, as tests for the WN's shell.
"""

from __future__ import annotations

import dataclasses
import difflib
import posixpath
import shlex
from collections.abc import Iterable, Mapping

from siteadmin.aria2conf.catalogue import CATALOGUE, HIDDEN_OVER_RPC, aria2_form, mask_value
from siteadmin.aria2conf.conffile import parse_conf
from siteadmin.secrets import MASK

UNCHANGED = "unchanged"
CHANGED = "changed"
NEW = "new"

LIVE = "live"
"""aria2.changeGlobalOption applies it to the running daemon."""
NEW_DOWNLOADS = "new-downloads"
"""aria2.changeGlobalOption applies it to downloads added afterwards."""
RESTART = "restart"
"""aria2c reads it at start only."""

RELOAD_NONE = "none"
"""No option changed (comments only, or nothing at all)."""
RELOAD_RPC = "rpc"
"""Every changed option can be changed over RPC: changeGlobalOption, then read back."""
RELOAD_RESTART = "restart"
"""At least one changed option needs aria2c restarted."""


@dataclasses.dataclass(frozen=True)
class OptionChange:
    """One option whose value differs between the WN's file and the new one."""

    name: str
    before: str | None
    """The value in the WN's file; None when it did not set the option."""
    after: str | None
    """The value in the new file; None when the new file leaves it to aria2's default."""
    applies: str
    """``live``, ``new-downloads`` or ``restart``: how the new value reaches a running aria2c."""

    @property
    def rpc_value(self) -> str | None:
        """The value to send over RPC: the new one, or aria2's default for a removed option (None: unknown, restart)."""
        if self.after is not None:
            return self.after
        spec = CATALOGUE.get(self.name)
        return spec.default if spec is not None else None

    def masked(self) -> dict[str, str | None]:
        """As shown to the admin and written to JSON: secret values masked."""
        return {
            "option": self.name,
            "before": None if self.before is None else mask_value(self.name, self.before, MASK),
            "after": None if self.after is None else mask_value(self.name, self.after, MASK),
            "applies": self.applies,
        }


def classify(current: bytes | None, new: bytes) -> str:
    """``new`` when the WN has no file, ``unchanged`` when it holds exactly ``new``, else ``changed``."""
    if current is None:
        return NEW
    return UNCHANGED if current == new else CHANGED


def read_options(data: bytes | None) -> dict[str, str]:
    """The options a conf file sets, as aria2c reads it (leniently: a WN's file may be hand-written)."""
    if not data:
        return {}
    return parse_conf(data.decode("utf-8", "replace"), strict=False)


def applies_for(name: str) -> str:
    """How a change of option ``name`` reaches a running aria2c; an option siteadmin does not know needs a restart."""
    spec = CATALOGUE.get(name)
    return spec.applies.value if spec is not None else RESTART


def option_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[OptionChange]:
    """Options set, removed or given another value, in the new file's order, removed ones last."""
    changes: list[OptionChange] = []
    for name, value in after.items():
        if before.get(name) != value:
            changes.append(OptionChange(name, before.get(name), value, applies_for(name)))
    for name, value in before.items():
        if name not in after:
            # back to aria2's default: live only when the catalogue knows that default
            kind = applies_for(name)
            if kind != RESTART and (CATALOGUE.get(name) is None or CATALOGUE[name].default is None):
                kind = RESTART
            changes.append(OptionChange(name, value, None, kind))
    return changes


def reload_kind(changes: Iterable[OptionChange]) -> str:
    """``none`` (no option changed), ``rpc`` (every change can go over RPC) or ``restart``."""
    changes = list(changes)
    if not changes:
        return RELOAD_NONE
    if any(c.applies == RESTART or c.rpc_value is None for c in changes):
        return RELOAD_RESTART
    return RELOAD_RPC


def expected_over_rpc(options: Mapping[str, str]) -> dict[str, str]:
    """What aria2.getGlobalOption must report for these options (sizes in bytes...); hidden ones left out."""
    return {name: aria2_form(name, value) for name, value in options.items() if name not in HIDDEN_OVER_RPC}


def mismatches(expected: Mapping[str, str], reported: Mapping[str, object]) -> list[str]:
    """Options whose reported value differs from the expected one: ``name`` for each (never the values: some are secret)."""
    return [name for name, value in expected.items() if str(reported.get(name, "")) != value]


def mask_conf(text: str, secrets: Iterable[str] = ()) -> str:
    """A conf text with every secret option's value, and every known secret value, as ``********``."""
    lines = []
    for line in text.split("\n"):
        name, eq, value = line.partition("=")
        key = name.strip(" \t")
        if eq and not line.startswith("#") and key in CATALOGUE:
            shown = mask_value(key, value.strip(" \t\r"), MASK)
            if shown != value.strip(" \t\r"):
                line = f"{name}={shown}"
        lines.append(line)
    masked = "\n".join(lines)
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        masked = masked.replace(value, MASK)
    return masked


def masked_diff(before: bytes | None, after: bytes, path: str, secrets: Iterable[str] = ()) -> str:
    """A unified diff from the WN's file to the new one, secrets masked on both sides ("" when equal).

    Args:
        before: the WN's file (None when absent: the diff is from /dev/null).
        after: the new file.
        path: the file's path on the WN, for the headers.
        secrets: values to mask wherever they appear (the rendered profile's secrets).
    """
    secrets = list(secrets)
    old = mask_conf(before.decode("utf-8", "replace"), secrets) if before is not None else ""
    new = mask_conf(after.decode("utf-8", "replace"), secrets)
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=path if before is not None else "/dev/null",
        tofile=path,
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# ---------------------------------------------------------------- what aria2c checks only at start

CHECK_MARK = "siteadmin-check: "
"""Start of the line a failed ``start_checks`` test prints on stderr."""


def start_checks(options: Mapping[str, str]) -> list[str]:
    """POSIX sh tests, run on the WN beside its aria2c's reading of a new file, of what aria2c checks only when it starts.

    aria2c reads ``log`` and ``input-file`` without a word in the mode that starts nothing, then
    refuses to start when it cannot open them; it even takes a new ``log`` over RPC, answers OK
    and reads it back while logging nothing. A ``save-session`` in a missing folder is lost at
    exit. Each test prints one ``CHECK_MARK`` line on stderr when it fails; none for options not set.

    Args:
        options: the new file's options (``read_options``).

    Returns:
        Shell commands, one per option to check.
    """
    tests: list[str] = []

    def folder_test(name: str, what: str) -> None:
        value = options.get(name, "")
        if not value.startswith("/"):
            return  # unset, "-" (stdout) or not a path aria2c would open
        folder = posixpath.dirname(value) or "/"
        line = f"{CHECK_MARK}{name}: folder {folder} does not exist on the WN; {what}"
        tests.append(f"[ -d {shlex.quote(folder)} ] || echo {shlex.quote(line)} >&2")

    folder_test("log", "aria2c cannot open its log there and would refuse to start")
    folder_test("save-session", "aria2c could not save its session there")
    source = options.get("input-file", "")
    if source.startswith("/"):
        line = f"{CHECK_MARK}input-file: {source} is not a readable file on the WN; aria2c would refuse to start"
        tests.append(f"[ -f {shlex.quote(source)} ] && [ -r {shlex.quote(source)} ] || echo {shlex.quote(line)} >&2")
    return tests


def split_checks(text: str) -> tuple[list[str], str]:
    """The failed ``start_checks`` (without their mark) and the rest of ``text`` (aria2c's own output)."""
    found: list[str] = []
    rest: list[str] = []
    for line in text.splitlines():
        if line.startswith(CHECK_MARK):
            found.append(line.removeprefix(CHECK_MARK))
        else:
            rest.append(line)
    return found, "\n".join(rest)
