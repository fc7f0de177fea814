"""Which files siteadmin trusts: owner and mode checks in the spirit of OpenSSH's StrictModes.

siteadmin runs as root on a VoBox, holds the LDAP bind password and every WN's RPC secret, and
acts on what its files say. A file that someone else can change is someone else's instructions,
so the site config, a site template folder, secret files, the audit log and known_hosts files
are read only when the file **and the directory holding it** are

- owned by the user running siteadmin (its effective uid) or by root, and
- not writable by group or others.

A directory writable by others is accepted when it has the sticky bit (``/tmp``): there only a
file's owner can rename or remove it, and the file itself is checked. A file reached through a
symbolic link is checked where the link points, and the folders holding the link and the target
both are. Anything else is refused with one line naming the file and the command that fixes it.

The templates built into the installed package are trusted as they are (their callers never
pass them here). ``config_in_cwd`` tells whether a config was found in the current directory,
so that commands about to change something or send a secret can say so.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from siteadmin.errors import ConfigError, UntrustedFile, warn

WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
"""Mode bits that let someone other than the owner change a file or a folder's entries."""

MAX_FOLDER_ENTRIES = 10_000
"""Entries checked in one template folder; a folder with more is refused (templates are few)."""


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def trusted_owner(uid: int) -> bool:
    """True when ``uid`` is the effective user running siteadmin or root."""
    return uid in (os.geteuid(), 0)


def _check_stat(path: Path, info: os.stat_result, what: str, folder: bool) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if not trusted_owner(info.st_uid):
        me = _user_name(os.geteuid())
        allowed = "root" if os.geteuid() == 0 else f"{me} or root"
        raise UntrustedFile(
            f"{path}: {what} is owned by {_user_name(info.st_uid)}, not by {allowed}; siteadmin does not trust it",
            f"check its content, then `chown {me} {path}`",
        )
    if mode & WRITABLE_BY_OTHERS and not (folder and mode & stat.S_ISVTX):
        raise UntrustedFile(
            f"{path}: {what} is writable by group or others (mode {mode:04o}); siteadmin does not trust it",
            f"check its content, then `chmod go-w {path}`",
        )


def check_opened_file(path: Path, fd: int, what: str, hint: str, *, key: str | None = None) -> None:
    """Check a file just opened (with ``O_NOFOLLOW``): a regular file, trusted; closes ``fd`` when not.

    Args:
        path: the file's name, for the message.
        fd: the open descriptor; ``os.fstat`` of it is judged, so the check is about the file used.
        what: what the file is for, in the admin's words ("audit.path").
        hint: what to do when it is not a regular file.
        key: the config key naming the file, when there is one ("audit.path"), for that message.

    Raises:
        ConfigError: not a regular file (a FIFO, a device, a folder).
        UntrustedFile: owned by someone else than the user or root, or writable by group/others.
    """
    try:
        _check_regular_and_trusted(path, os.fstat(fd), what, hint, key)
    except BaseException:
        os.close(fd)
        raise


def _check_regular_and_trusted(path: Path, info: os.stat_result, what: str, hint: str, key: str | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key or what} {path}: not a regular file", hint)
    check_stat(path, info, what)


def check_stat(path: Path, info: os.stat_result, what: str) -> None:
    """Check an already opened file's ``fstat`` result (owner and mode only, not its folder).

    Args:
        path: the file's name, for the message.
        info: ``os.fstat`` of the open file (so the check is about the file actually read).
        what: what the file is for, in the admin's words ("LDAP password file").

    Raises:
        UntrustedFile: owned by someone else than the user or root, or writable by group/others.
    """
    _check_stat(path, info, what, stat.S_ISDIR(info.st_mode))


def check_folder_of(path: Path, what: str) -> None:
    """Check the directory holding ``path`` (as named, and where a link at ``path`` points).

    Args:
        path: a file or folder; it need not exist (the audit log is created on first use).
        what: what ``path`` is for, named in the message.

    Raises:
        UntrustedFile: a folder holding it is not the user's or root's, or others can write to it.
    """
    named = Path(os.path.abspath(path))
    folders = [named.parent]
    real = Path(os.path.realpath(named))
    if real.parent not in folders:
        folders.append(real.parent)
    for folder in folders:
        try:
            info = os.stat(folder)
        except FileNotFoundError:
            continue  # created by siteadmin itself (0700) when it writes there
        except OSError as exc:
            raise UntrustedFile(f"{folder}: cannot check the folder holding the {what} {path}: {exc.strerror}") from None
        _check_stat(folder, info, f"folder holding the {what} {path}", folder=True)


def check_path(path: Path, what: str, *, missing_ok: bool = False) -> None:
    """Check a file or folder and the directory holding it before reading it.

    Args:
        path: the file or folder (``~`` already expanded by the caller).
        what: what it is for, in the admin's words ("site config", "known_hosts").
        missing_ok: a missing ``path`` is fine (only its folder is checked); else it is refused.

    Raises:
        UntrustedFile: ``path`` or its folder is owned by another user, or writable by group/others;
            ``path`` is missing (unless ``missing_ok``) or cannot be examined.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if not missing_ok:
            raise UntrustedFile(f"{path}: no such {what}") from None
        check_folder_of(path, what)
        return
    except OSError as exc:
        raise UntrustedFile(f"{path}: cannot check the {what}: {exc.strerror}") from None
    check_folder_of(path, what)
    _check_stat(path, info, what, stat.S_ISDIR(info.st_mode))


def check_folder_tree(path: Path, what: str) -> None:
    """Check a folder of files siteadmin reads (a site template folder): the folder, the
    directory holding it, and every file and folder inside it.

    A missing folder is fine (a template search path may name folders not made yet), but the
    directory that would hold it is checked.

    Raises:
        UntrustedFile: any of them is owned by another user or writable by group/others, or the
            folder holds more than ``MAX_FOLDER_ENTRIES`` entries.
    """
    check_path(path, what, missing_ok=True)
    if not path.is_dir():
        return
    seen = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise UntrustedFile(f"{path}: {what} holds more than {MAX_FOLDER_ENTRIES} entries", "point it at a folder of templates only")
            entry = Path(root, name)
            try:
                info = os.stat(entry)
            except OSError:
                continue  # a dangling link: the template loader cannot read it either
            _check_stat(entry, info, f"file in the {what}", stat.S_ISDIR(info.st_mode))


def config_in_cwd(source: Path | None) -> bool:
    """True when the config was read from the current directory (a ``./site.toml``).

    Such a config is picked before the admin's own and the system one, from wherever they stand.
    """
    if source is None:
        return False
    try:
        return Path(os.path.realpath(source)).parent == Path(os.path.realpath(os.getcwd()))
    except OSError:
        return False


def note_cwd_config(source: Path | None, action: str) -> None:
    """Name a config from the current directory on the warning channel before ``action``.

    Called by services about to change something or to send a secret over the network (an LDAP
    bind, an RPC call), so that a ``./site.toml`` planted where the admin stands never acts unseen.

    Args:
        source: where the site config was read from (``Site.source``).
        action: what is about to happen, e.g. "an LDAP bind to ldap.example.org:389".
    """
    if config_in_cwd(source):
        warn(f"using {source} from the current directory for {action}")
