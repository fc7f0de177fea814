"""Editing the site's aria2c profile in site.toml, keeping the administrator's comments and layout.

The console's profile form saves through ``plan_profile_edit`` then ``write_site_text``:
``plan_profile_edit`` computes the new text of site.toml with tomlkit (only the changed keys of
``[aria2c] options`` are touched; comments, order, blank lines and the other tables stay as the
administrator wrote them), checks every changed value with the option catalogue and the whole
new file with the site config's own loader, and gives a diff with secrets masked;
``write_site_text`` writes it atomically (a synced temp file beside it, renamed over it),
keeping the file's mode (0600 stays 0600) and owner.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import stat
import threading
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import InlineTable, Table

from siteadmin.aria2conf.catalogue import CATALOGUE, mask_value
from siteadmin.aria2conf.validate import check_option
from siteadmin.errors import ConfigError, ConflictError, printable
from siteadmin.secrets import MASK
from siteadmin.site import Site, secrets_held, site_from_mapping

OPTIONS_KEY = "aria2c.options"
"""Where the site-wide profile lives in site.toml (``[aria2c] options = {...}`` or ``[aria2c.options]``)."""


@dataclasses.dataclass(frozen=True)
class ProfileEdit:
    """A planned change of ``[aria2c] options`` in one site.toml."""

    path: Path
    before: str
    """The file's text now."""
    after: str
    """The file's text once saved (real values: never shown as is)."""
    changed: tuple[str, ...]
    """Option names whose value is set, changed or removed."""
    diff: str
    """Unified diff of the file, secrets masked."""
    site: Site
    """The site config the new text gives (already checked)."""

    @property
    def empty(self) -> bool:
        return self.before == self.after


def read_options(text: str) -> dict[str, str]:
    """``[aria2c] options`` of a site.toml text, values as aria2 conf text ("" for a missing table).

    Raises:
        ConfigError: the text is not TOML.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"site.toml: not valid TOML: {printable(str(exc))}") from None
    table = data.get("aria2c", {}).get("options", {})
    if not isinstance(table, dict):
        return {}
    return {str(k): _text(v) for k, v in table.items()}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_value(name: str, value: str) -> str | None:
    """Why an option value cannot be saved (one line, naming the option and what is allowed), None when it can.

    Args:
        name: the aria2c option name.
        value: the value as typed (aria2 conf text).
    """
    if name not in CATALOGUE:
        return f"{name}: not an option siteadmin knows"
    try:
        check_option(name, value, OPTIONS_KEY)
    except ConfigError as exc:
        return exc.one_line()
    return None


def _options_table(doc: tomlkit.TOMLDocument) -> Table | InlineTable:
    aria2c = doc.get("aria2c")
    if aria2c is None:
        aria2c = tomlkit.table()
        doc["aria2c"] = aria2c
    if not isinstance(aria2c, (Table, InlineTable)):
        raise ConfigError("aria2c: must be a table ([aria2c])")
    options = aria2c.get("options")
    if options is None:
        options = tomlkit.table()
        aria2c["options"] = options
    if not isinstance(options, (Table, InlineTable)):
        raise ConfigError(f"{OPTIONS_KEY}: must be a table of aria2c options")
    return options


def edited_text(text: str, changes: Mapping[str, str | None]) -> str:
    """site.toml text with ``[aria2c] options`` changed, everything else byte for byte as it was.

    Args:
        text: the file's text.
        changes: option name -> new value (aria2 conf text), None to remove the option.

    Returns:
        The new text (values written as TOML strings, as aria2c reads them).

    Raises:
        ConfigError: the text is not TOML, or ``aria2c``/``aria2c.options`` is not a table.
    """
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"site.toml: not valid TOML: {printable(str(exc))}") from None
    options = _options_table(doc)
    for name, value in changes.items():
        if value is None:
            if name in options:
                del options[name]
        elif name not in options or _text(options[name]) != value:
            options[name] = value
    return tomlkit.dumps(doc)


def _secret_values(*option_sets: Mapping[str, str]) -> list[str]:
    values: set[str] = set()
    for options in option_sets:
        for name, value in options.items():
            if not value:
                continue
            shown = mask_value(name, value)
            if shown == MASK:
                values.add(value)
            elif shown != value:
                # a proxy URL with a password: hide the password wherever it appears
                values |= {part for part in _userinfo_passwords(value) if part}
    return sorted(values, key=len, reverse=True)


def _userinfo_passwords(url: str) -> Iterable[str]:
    head = url.split("://", 1)[-1].split("@", 1)
    if len(head) == 2 and ":" in head[0]:
        yield head[0].split(":", 1)[1]


def masked_diff(before: str, after: str, path: str, secrets: Iterable[str] = ()) -> str:
    """Unified diff of two site.toml texts with every secret value written as ``********``."""
    hidden = list(secrets)

    def mask(line: str) -> str:
        for value in hidden:
            line = line.replace(value, MASK)
        return line

    lines = difflib.unified_diff(
        [mask(x) for x in before.splitlines(keepends=True)],
        [mask(x) for x in after.splitlines(keepends=True)],
        fromfile=f"{path} (now)", tofile=f"{path} (saved)",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def plan_profile_edit(path: Path, changes: Mapping[str, str | None]) -> ProfileEdit:
    """What saving these profile changes would do to site.toml, checked; nothing is written.

    Args:
        path: the site.toml.
        changes: option name -> new value (aria2 conf text), None to remove it.

    Returns:
        The ProfileEdit (``empty`` when nothing would change).

    Raises:
        ConfigError: the file cannot be read; a value the catalogue refuses (naming the option
            and what is allowed); the new file would not be a valid site config.
    """
    for name, value in changes.items():
        if value is not None:
            why = check_value(name, value)
            if why is not None:
                raise ConfigError(why)
    try:
        before = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{printable(str(path))}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    after = edited_text(before, changes)
    try:
        site = site_from_mapping(tomllib.loads(after), source=path.resolve())
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc.message}", exc.hint) from None
    old, new = read_options(before), read_options(after)
    changed = tuple(sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k)))
    diff = masked_diff(before, after, str(path), _secret_values(old, new))
    return ProfileEdit(path=path, before=before, after=after, changed=changed, diff=diff, site=site)


_write_lock = threading.Lock()


def write_site_text(edit: ProfileEdit) -> Path:
    """Save a planned edit: atomic, the file's mode and owner kept, refused when the file changed meanwhile.

    A file that now holds a secret (a proxy password) and was open to group or others is
    written 0600, as the loader would refuse it otherwise.

    Returns:
        The path written.

    Raises:
        ConflictError: the file is no longer the text the edit was planned on (someone else saved).
        ConfigError: the folder cannot be written.
    """
    path = edit.path
    with _write_lock:
        try:
            now = path.read_text(encoding="utf-8")
            info = path.stat()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{printable(str(path))}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
        if now != edit.before:
            raise ConflictError(f"{printable(str(path))}: changed since the edit was planned; nothing written", "reload and edit again")
        mode = stat.S_IMODE(info.st_mode)
        if secrets_held(edit.site) and mode & 0o077:
            mode = 0o600
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(edit.after)
                    handle.flush()
                    if os.geteuid() == 0 and (info.st_uid, info.st_gid) != (0, 0):
                        os.fchown(handle.fileno(), info.st_uid, info.st_gid)
                    os.fchmod(handle.fileno(), mode)
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise ConfigError(f"{printable(str(path))}: cannot write: {exc.strerror}") from None
    return path
