"""Files holding secrets (LDAP bind password, aria2c rpc-secret, proxy credentials).

A secret file is 0600 from its first byte: it is created with that mode by ``os.open`` and
written through a temp file in the same directory, then renamed, so no reader ever sees a
half-written or wider-open file. Reading refuses what is not a regular file (a FIFO, a device,
a symbolic link), files that group or others can read, and files or folders that someone other
than the user (or root) owns or can write to (``siteadmin.trust``). Secrets never go into argv,
logs or screens; ``MASK`` is what displays show instead.
"""

from __future__ import annotations

import os
import secrets
import stat
import threading
from pathlib import Path

from siteadmin import trust
from siteadmin.errors import ConfigError

MASK = "********"


def _private_temp(path: Path, text: str) -> Path:
    """A synced temp file beside ``path`` holding ``text``, created 0600 with O_EXCL (whatever the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 from the first byte (any file holding secrets).

    The text goes to a 0600 temp file in the same directory, synced, then renamed over ``path``,
    so no reader ever sees a partial or wider-open file; the temp file is removed when anything fails.

    Raises:
        OSError: the directory is missing or not writable (callers say what the file was for).
    """
    tmp = _private_temp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_secret_file(path: Path, value: str) -> str:
    """Create a one-line secret file unless one exists; return the secret the file holds.

    Two siteadmin runs creating the site's secret at once both end up with the same secret:
    the file is linked into place only if absent (never replaced), and the loser reads the winner's.

    Raises:
        ConfigError: the value holds a control character, or the file cannot be created or read.
    """
    if any(c in value for c in "\n\r\0"):
        raise ConfigError(f"{path}: a secret must be one line without control characters")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = _private_temp(path, value + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create secret file: {exc.strerror}") from None
    return read_secret_file(path)


def write_secret_file(path: Path, value: str) -> None:
    """Atomically write a one-line secret to ``path`` with mode 0600 from the first byte.

    Raises:
        ConfigError: when the value holds a newline or NUL, or the file cannot be written.
    """
    if any(c in value for c in "\n\r\0"):
        raise ConfigError(f"{path}: a secret must be one line without control characters")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private_file(path, value + "\n")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write secret file: {exc.strerror}") from None


MAX_SECRET_BYTES = 64 * 1024
"""A secret file larger than this is refused unread (secrets are one short line)."""


def read_secret_file(path: Path, what: str = "secret") -> str:
    """Read a one-line secret, refusing files that are not private, trusted regular files.

    The file is opened without following a symbolic link and without blocking (a FIFO never
    hangs the read), then checked on the open descriptor: a regular file, mode 0600/0400,
    owned by the user or root; the folder holding it must be trusted too.

    Raises:
        ConfigError: missing, unreadable, not a regular file, a symbolic link, too open
            (not 0600/0400), owned by another user (``UntrustedFile``), too large or not one line.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(f"{path}: {what} file is a symbolic link; siteadmin does not follow it", "name the file itself") from None
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: {what} file is not a regular file", "name a file holding the secret on one line")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: {what} file is readable by others (mode {stat.S_IMODE(info.st_mode):04o})", f"chmod 600 {path}")
        trust.check_stat(path, info, f"{what} file")
        trust.check_folder_of(path, f"{what} file")
        data = os.read(fd, MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(f"{path}: {what} file is larger than {MAX_SECRET_BYTES // 1024} KiB; a secret is one short line")
    try:
        value = data.decode("utf-8").strip("\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read {what} file: {exc.reason}") from None
    if not value or any(c in value for c in "\n\r\0"):
        raise ConfigError(f"{path}: {what} file must hold exactly one non-empty line")
    return value


def generate_secret(bits: int = 256) -> str:
    """A random URL-safe secret of at least ``bits`` bits of entropy."""
    return secrets.token_urlsafe((bits + 7) // 8)


def mask_userinfo(text: str) -> str:
    """Mask the password of ``[scheme://]user:password@host`` anywhere it may be (a proxy URL).

    Works on malformed values too (no scheme, ``@`` or ``/`` inside the password): everything
    between the first ``:`` of the user part and the last ``@`` is the password.
    """
    if "@" not in text:
        return text
    head, _, host = text.rpartition("@")
    scheme, sep, credentials = head.partition("://")
    if not sep:
        scheme, credentials = "", head
    user, colon, _password = credentials.partition(":")
    if not colon:
        return text
    return f"{scheme}{sep}{user}:{MASK}@{host}"
