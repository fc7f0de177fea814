"""File steps on a WN over SFTP: read, back up, write a private temp file, validate, install, restore.

Each step is its own function, in the order a careful admin (and Ansible's copy module) follows::

    current = read_file(session, path)               # bytes, sha256, owner, group, mode; or absent
    backup(session, current, keep=5)                 # <path>.siteadmin-<UTC time>-<hash>, pruned to 5
    with staged(session, path, data) as temp:        # .<name>.siteadmin-<random>.tmp beside the target,
        validate(session, temp, "my-check {path}")   # 0600 from its first byte, fsynced
        install(session, temp, current)              # owner, group, mode of the old file (0600 if new),
                                                     # set on the temp file, then posix-rename
    restore(session, list_backups(session, path)[0]) # a generation back, byte for byte, owner and mode

A rollout, holding the WN's lock, lists the folder once (``list_folder``: stale temp files,
backups, the file's link count) and takes the backup last, right before ``install``, as a hard
link of the file in place (``link_backup``: the rename leaves the old inode to the backup's name
alone, byte for byte with owner and mode; a copy as ``backup`` makes where a link would not be
the same thing).

A failing step removes the temp file before it raises; ``staged`` removes it when the block is
left any other way. Only a cut connection can leave one behind: ``remove_stale_temps`` (called
while holding the WN's lock) clears those. Everything runs as SFTP requests on the session's
connection; ``validate`` alone runs a command.

Why these choices:

- The temp file is created by an SFTP open carrying mode 0600 with O_EXCL (paramiko's ``open``
  sends no attributes), so it is never readable by others, not even empty.
- It is flushed to disk with OpenSSH's ``fsync@openssh.com`` extension (paramiko has no fsync);
  a server without it gets ``sync -- <temp>`` run as a command instead.
- Every write request's answer is read and checked: paramiko's pipelined writes drop a refused
  write, which on a full disk would leave a truncated file to be renamed into place.
- SFTP v3 reports a read-only or full filesystem only as "Failure"; on such a failure the
  directory's ``statvfs@openssh.com`` answer tells the two apart, so the admin reads
  ``read-only`` or ``disk full`` instead.

Every failure is a ``FileStepError`` (an ``SshError``, exit status 1) whose one line names the host
and path and whose ``outcome`` says what happened: ``bad path``, ``not a regular file``,
``permission denied``, ``no such directory``, ``read-only``, ``disk full``, ``write failed``,
``read failed``, ``validation failed``, ``validation timed out``, ``backup damaged``,
``no such backup``, ``connection lost``, ``sftp timed out``. Starting SFTP can also fail with the
session's own ``SshError`` (``sftp failed``, ``sftp timed out``).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import posixpath
import re
import secrets
import shlex
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence

import paramiko
from paramiko import sftp as sftp_proto

from siteadmin.errors import ExitCode
from siteadmin.remote.errors import CommandTimeout, SshError
from siteadmin.remote.session import CommandResult, Session
from siteadmin.secrets import MASK

NEW_FILE_MODE = 0o600
"""Mode of a file that did not exist before: aria2c configs carry ``rpc-secret``."""
PATH_PLACEHOLDER = "{path}"
"""Where a validation command takes the temp file's path (shell-quoted)."""
BACKUP_MARK = ".siteadmin-"
HASH_CHARS = 12
"""Hex digits of the content's sha256 in a backup's name."""
_TIME_FORMAT = "%Y%m%dT%H%M%S"
_ID_RE = re.compile(r"(\d{8}T\d{6})\.(\d{3})Z-([0-9a-f]{" + str(HASH_CHARS) + "})")
_TEMP_TOKEN_RE = re.compile(r"[0-9a-f]{8}\.tmp")
HELD_TOKEN = "0" * 8
"""The temp file token of a writer holding the WN's lock (``write_temp(held=True)``); a random one otherwise."""
_WRITE_CHUNK = 32768
"""Bytes per SFTP write request (what OpenSSH's sftp-server and paramiko use)."""
_WRITE_WINDOW = 64
"""Write requests in flight at most: 2 MiB, enough to keep a link busy."""
_ST_RDONLY = 1
"""statvfs f_flag bit of a read-only mount (POSIX ST_RDONLY)."""
_SFTP_ERRORS = (OSError, EOFError, paramiko.SSHException)


class FileStepError(SshError):
    """A file step failed on a WN; ``outcome`` says how (``disk full``, ``validation failed``, ...)."""

    category = "file"
    outcome = "write failed"
    exit_code = ExitCode.FAILED


# ---------------------------------------------------------------- pure parts


@dataclasses.dataclass(frozen=True)
class FileState:
    """A file on a WN as read: its bytes, owner, group and permission bits; ``data`` None when absent."""

    path: str
    data: bytes | None
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    """Permission bits only (``stat.S_IMODE``)."""
    mtime: int | None = dataclasses.field(default=None, compare=False)
    """Modification time as the server gave it (whole seconds), for ``link_backup``'s check of the inode it
    links; not part of equality (two reads of the same bytes, owner and mode are the same state)."""

    @property
    def exists(self) -> bool:
        return self.data is not None

    @property
    def sha256(self) -> str | None:
        """Hex sha256 of the content, None when the file is absent."""
        return None if self.data is None else hashlib.sha256(self.data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Backup:
    """One backup generation of a file, as ``list_backups`` finds it beside the file."""

    id: str
    """``<UTC time>-<hash>``, e.g. ``20261201T140915.123Z-3f2a9c01d4e5``: what ``rollback --to`` takes."""
    path: str
    """The backup file's absolute path on the WN."""
    target: str
    """The file it is a backup of."""
    time: dt.datetime
    """When it was taken (UTC, from its name)."""
    hash: str
    """The first ``HASH_CHARS`` hex digits of the content's sha256."""
    size: int = 0
    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


@dataclasses.dataclass(frozen=True)
class TempFile:
    """A private temp file written beside its target, not yet installed."""

    host: str
    path: str
    target: str
    sha256: str
    size: int
    uid: int
    gid: int
    """Owner and group the server gave it (the SSH user's)."""


def split_target(path: str) -> tuple[str, str]:
    """``(directory, name)`` of an absolute file path.

    Raises:
        ValueError: naming the path and the accepted form.
    """
    directory, _, name = path.rpartition("/")
    if not path.startswith("/") or not name or name in (".", "..") or "\x00" in path:
        raise ValueError(f"{path!r}: the path must be absolute and name a file, like /etc/aria2/aria2c.conf")
    return directory or "/", name


def temp_name(target_name: str, token: str | None = None) -> str:
    """Name of a temp file for ``target_name``: hidden, marked as ours, random (``.aria2c.conf.siteadmin-1a2b3c4d.tmp``)."""
    return f".{target_name}{BACKUP_MARK}{token or secrets.token_hex(4)}.tmp"


def is_temp_name(target_name: str, name: str) -> bool:
    """Whether ``name`` is one of our temp files for ``target_name`` or for one of its backups (and nobody else's)."""
    prefix = f".{target_name}{BACKUP_MARK}"
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    head, mark, tail = rest.rpartition(BACKUP_MARK)
    if mark and _ID_RE.fullmatch(head) is None:
        return False
    return _TEMP_TOKEN_RE.fullmatch(tail if mark else rest) is not None


def backup_id(when: dt.datetime, sha256: str) -> str:
    """The id of a backup taken at ``when`` of content with hex digest ``sha256``: time to the millisecond, then hash."""
    utc = when.astimezone(dt.UTC)
    return f"{utc.strftime(_TIME_FORMAT)}.{utc.microsecond // 1000:03d}Z-{sha256[:HASH_CHARS]}"


def backup_name(target_name: str, when: dt.datetime, sha256: str) -> str:
    """File name of a backup of ``target_name`` (beside it): ``aria2c.conf.siteadmin-20261201T140915.123Z-3f2a9c01d4e5``."""
    return f"{target_name}{BACKUP_MARK}{backup_id(when, sha256)}"


def parse_backup_name(target_name: str, name: str) -> tuple[str, dt.datetime, str] | None:
    """``(id, time, hash)`` when ``name`` is a backup of ``target_name``, else None."""
    prefix = f"{target_name}{BACKUP_MARK}"
    if not name.startswith(prefix):
        return None
    found = _ID_RE.fullmatch(name[len(prefix) :])
    if found is None:
        return None
    try:
        when = dt.datetime.strptime(found[1], _TIME_FORMAT).replace(tzinfo=dt.UTC, microsecond=int(found[2]) * 1000)
    except ValueError:
        return None
    return name[len(prefix) :], when, found[3]


def newest_first(backups: Sequence[Backup]) -> list[Backup]:
    """Backups sorted newest first (ties, within one millisecond, by id)."""
    return sorted(backups, key=lambda b: (b.time, b.id), reverse=True)


def find_backup(backups: Sequence[Backup], wanted: str) -> Backup:
    """The backup whose id is ``wanted``, or the only one it is a prefix of (``20261201T1409``).

    Raises:
        LookupError: no such backup, or a prefix matching several (the message lists them).
    """
    exact = [b for b in backups if b.id == wanted]
    if exact:
        return exact[0]
    matches = [b for b in backups if wanted and b.id.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        known = ", ".join(b.id for b in newest_first(backups)) or "none"
        raise LookupError(f"no backup {wanted!r} (there are: {known})")
    raise LookupError(f"backup {wanted!r} is ambiguous: " + ", ".join(b.id for b in newest_first(matches)))


def validation_command(template: str, path: str) -> str:
    """``template`` with every ``{path}`` replaced by the shell-quoted ``path`` (other braces left alone).

    Raises:
        ValueError: the template has no ``{path}``.
    """
    if PATH_PLACEHOLDER not in template:
        raise ValueError(f"validation command {template!r} must contain {PATH_PLACEHOLDER} where the file to check goes")
    return template.replace(PATH_PLACEHOLDER, shlex.quote(path))


def output_tail(*texts: str, width: int = 200) -> str:
    """The last non-blank line of the first text that has one, cut to ``width`` (an error in one line)."""
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][:width]
    return ""


# ---------------------------------------------------------------- SFTP plumbing


@contextlib.contextmanager
def _using(session: Session, sftp: paramiko.SFTPClient | None) -> Iterator[paramiko.SFTPClient]:
    """The caller's SFTP client (several steps, one channel), else one of our own for this step."""
    if sftp is not None:
        yield sftp
    else:
        with session.sftp() as own:
            yield own


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _detail(exc: BaseException) -> str:
    text = _why(exc)
    return "" if text == type(exc).__name__ else f" ({text})"


def _stalled(sftp: paramiko.SFTPClient) -> str:
    """What a request that timed out means, with the limit the client's channel was given (as ``Session.sftp`` says it)."""
    channel = sftp.get_channel()
    limit = channel.gettimeout() if channel is not None else None
    within = f"within {limit:g} s" if limit else "within the time limit"
    return f"no SFTP answer {within}; the WN or its sshd is stalled"


def _lost(exc: BaseException) -> bool:
    """An error of the connection rather than of the file (nothing more can be asked over it)."""
    if isinstance(exc, EOFError | paramiko.SSHException | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno is None and "closed" in str(exc).lower()


@dataclasses.dataclass(frozen=True)
class _Statvfs:
    frsize: int
    avail_blocks: int
    avail_files: int
    flag: int


def _statvfs(sftp: paramiko.SFTPClient, path: str) -> _Statvfs | None:
    """OpenSSH's ``statvfs@openssh.com`` for the filesystem holding ``path``; None when unavailable."""
    try:
        kind, msg = sftp._request(sftp_proto.CMD_EXTENDED, "statvfs@openssh.com", path)  # type: ignore[attr-defined]  # no public API
    except _SFTP_ERRORS:
        return None
    if kind != sftp_proto.CMD_EXTENDED_REPLY:
        return None
    # f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_fsid f_flag f_namemax
    values = [msg.get_int64() for _ in range(11)]
    return _Statvfs(frsize=values[1], avail_blocks=values[4], avail_files=values[7], flag=values[9])


def _failure(session: Session, sftp: paramiko.SFTPClient, exc: BaseException, doing: str, directory: str, need: int) -> FileStepError:
    """The one-line error for a failed write-side request, its outcome found from errno or the filesystem."""
    if isinstance(exc, TimeoutError):
        return FileStepError(session.host, f"{doing}: {_stalled(sftp)}", outcome="sftp timed out")
    if _lost(exc):
        return FileStepError(session.host, f"{doing}: the connection was lost{_detail(exc)}", outcome="connection lost")
    code = exc.errno if isinstance(exc, OSError) else None
    if code == errno.EACCES:
        return FileStepError(session.host, f"{doing}: permission denied", f"may {session.target.user} write in {directory}?", outcome="permission denied")
    if code == errno.ENOENT:
        return FileStepError(session.host, f"{doing}: no such directory {directory}", outcome="no such directory")
    fs = _statvfs(sftp, directory)
    if fs is not None and fs.flag & _ST_RDONLY:
        return FileStepError(session.host, f"{doing}: {directory} is on a read-only filesystem", outcome="read-only")
    if fs is not None and (fs.avail_files == 0 or fs.avail_blocks * fs.frsize < need):
        free = fs.avail_blocks * fs.frsize
        return FileStepError(session.host, f"{doing}: no space left on the filesystem of {directory} ({free} bytes free, {need} needed)", outcome="disk full")
    return FileStepError(session.host, f"{doing}: {_why(exc)}", outcome="write failed")


def _remove(sftp: paramiko.SFTPClient, path: str) -> None:
    """Remove a file of ours, quietly: this runs on failure paths, where the first error is the one to report."""
    with contextlib.suppress(*_SFTP_ERRORS):
        sftp.remove(path)


def create_exclusive(sftp: paramiko.SFTPClient, path: str) -> paramiko.SFTPFile:
    """Create ``path`` for writing (O_EXCL) asking for mode 0600 in the open request, without checking what the server made of it.

    For files with nothing secret in them (the WN lock); ``create_private`` checks.

    Raises:
        OSError, paramiko.SSHException: as ``create_private``.
    """
    attrs = paramiko.SFTPAttributes()
    attrs.st_mode = NEW_FILE_MODE
    flags = sftp_proto.SFTP_FLAG_WRITE | sftp_proto.SFTP_FLAG_CREATE | sftp_proto.SFTP_FLAG_EXCL
    kind, msg = sftp._request(sftp_proto.CMD_OPEN, path, flags, attrs)  # type: ignore[attr-defined]  # no public API takes attrs
    if kind != sftp_proto.CMD_HANDLE:
        raise paramiko.SSHException(f"SFTP server answered open with message type {kind}")
    return paramiko.SFTPFile(sftp, msg.get_binary(), "wb")


def create_private(sftp: paramiko.SFTPClient, path: str) -> tuple[paramiko.SFTPFile, paramiko.SFTPAttributes]:
    """Create ``path`` for writing with mode 0600 set by the open request itself (O_EXCL).

    ``SFTPClient.open`` sends no attributes, so the server creates the file with its default mode
    (0644 after umask) and a chmod afterwards leaves a window; OpenSSH's sftp-server passes the
    requested permissions to open(2). paramiko has no public call for this, hence ``_request``.
    For a server that ignores them the handle is chmodded to 0600 and checked, still empty.

    Returns:
        The open handle and the file's attributes (its owner and group).

    Raises:
        OSError: the server refused (exists, no such directory, permission denied, read-only), or
            the file cannot be made private; paramiko.SSHException: the connection failed.
    """
    handle = create_exclusive(sftp, path)
    try:
        info = handle.stat()
        if stat.S_IMODE(info.st_mode or 0) & 0o077:
            handle.chmod(NEW_FILE_MODE)
            info = handle.stat()
        private = not stat.S_IMODE(info.st_mode or 0) & 0o077
    except BaseException:
        handle.close()
        raise
    if not private:
        handle.close()
        raise OSError(errno.EPERM, "the server does not keep the temp file private (mode 0600)")
    return handle, info


def _write_all(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, data: bytes) -> None:
    """Write ``data`` through an open handle, pipelined, and raise the first write the server refused.

    paramiko's own pipelined writes register their answers with no file object, so a refused
    write (a full disk, a short write) is dropped and the file ends up truncated without an
    error. Here every answer is read and checked, with at most ``_WRITE_WINDOW`` in flight.
    """
    pending: collections.deque[int] = collections.deque()
    for offset in range(0, len(data), _WRITE_CHUNK):
        chunk = data[offset : offset + _WRITE_CHUNK]
        pending.append(sftp._async_request(type(None), sftp_proto.CMD_WRITE, handle.handle, sftp_proto.int64(offset), chunk))  # type: ignore[attr-defined]
        if len(pending) >= _WRITE_WINDOW:
            sftp._read_response(pending.popleft())  # type: ignore[attr-defined]  # raises the server's refusal
    while pending:
        sftp._read_response(pending.popleft())  # type: ignore[attr-defined]


def _fsync(session: Session, sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, path: str) -> None:
    """Flush a written file to disk: OpenSSH's ``fsync@openssh.com``, else ``sync -- <path>`` run on the WN."""
    try:
        sftp._request(sftp_proto.CMD_EXTENDED, "fsync@openssh.com", handle.handle)  # type: ignore[attr-defined]  # no public API
    except OSError as exc:
        if "unsupported" not in str(exc).lower():
            raise
        # coreutils sync(1) fsyncs a named file; every write has been answered, so the server holds all of it
        result = session.run(f"sync -- {shlex.quote(path)}")
        if not result.ok:
            raise OSError(f"sync failed: {output_tail(result.stderr, result.stdout)}") from None


# ---------------------------------------------------------------- the steps


def read_file(session: Session, path: str, *, sftp: paramiko.SFTPClient | None = None) -> FileState:
    """Read a file on the WN with its owner, group and mode. An absent file is an answer, not an error.

    Args:
        session: an open session to the WN.
        path: absolute path of the file.
        sftp: a client from ``session.sftp()`` to share between steps; one of its own when None.

    Returns:
        The file's state; ``data`` None (and no owner or mode) when there is no file.

    Raises:
        FileStepError: ``bad path``; ``not a regular file`` (a directory, a symlink: we never write
            through one); ``permission denied``; ``read failed``; ``connection lost``; ``sftp timed out``.
        SshError: SFTP cannot be started.
    """
    _check_path(session, path, "read")
    with _using(session, sftp) as client:
        try:
            info = client.lstat(path)
        except FileNotFoundError:
            return FileState(path, None)
        except _SFTP_ERRORS as exc:
            raise _read_error(session, client, path, exc) from None
        mode = info.st_mode or 0
        if not stat.S_ISREG(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise FileStepError(session.host, f"cannot use {path}: it is {kind}", "name the file itself", outcome="not a regular file")
        try:
            with client.open(path, "rb") as handle:
                data = _read_whole(client, handle, info.st_size or 0)
                if data is None:
                    if (info.st_size or 0) > _WRITE_CHUNK:
                        handle.prefetch(info.st_size)
                    data = handle.read()
        except _SFTP_ERRORS as exc:
            raise _read_error(session, client, path, exc) from None
    return FileState(path, data, info.st_uid, info.st_gid, stat.S_IMODE(mode), info.st_mtime)


def _read_whole(sftp: paramiko.SFTPClient, handle: paramiko.SFTPFile, size: int) -> bytes | None:
    """A small file in one read request: ask for one byte more than ``lstat`` said it holds; a short
    answer of exactly that size is the whole file (the server's read stopped at its end), which
    saves the request paramiko sends to learn that. None when the answer says anything else
    (grown, shrunk, empty or large): read it the usual way. The position of ``handle`` is untouched.
    """
    if not 0 < size < _WRITE_CHUNK:
        return None
    try:
        kind, msg = sftp._request(sftp_proto.CMD_READ, handle.handle, sftp_proto.int64(0), size + 1)  # type: ignore[attr-defined]  # no public API
    except EOFError:
        return None  # at its end already (it shrank to nothing), or the connection: the usual read says which
    if kind != sftp_proto.CMD_DATA:
        return None
    chunk: bytes = msg.get_string()
    return chunk if len(chunk) == size else None


def _read_error(session: Session, sftp: paramiko.SFTPClient, path: str, exc: BaseException) -> FileStepError:
    if isinstance(exc, TimeoutError):
        return FileStepError(session.host, f"cannot read {path}: {_stalled(sftp)}", outcome="sftp timed out")
    if _lost(exc):
        return FileStepError(session.host, f"cannot read {path}: the connection was lost{_detail(exc)}", outcome="connection lost")
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return FileStepError(session.host, f"cannot read {path}: permission denied", outcome="permission denied")
    return FileStepError(session.host, f"cannot read {path}: {_why(exc)}", outcome="read failed")


def _check_path(session: Session, path: str, verb: str) -> tuple[str, str]:
    try:
        return split_target(path)
    except ValueError as exc:
        raise FileStepError(session.host, f"cannot {verb} {exc}", outcome="bad path") from None


def write_temp(session: Session, path: str, data: bytes, *, sftp: paramiko.SFTPClient | None = None, held: bool = False) -> TempFile:
    """Write ``data`` to a new temp file beside ``path``: mode 0600 from its first byte, fsynced.

    Args:
        session: an open session to the WN.
        path: absolute path of the file the temp file will replace.
        data: the whole new content.
        sftp: as ``read_file``.
        held: the caller holds the WN's lock: the temp file gets the one name ``held_temp_path``
            gives, which the next lock holder removes with one request (``remove_held_temp``)
            where a cut connection left it, instead of listing the folder. Never without the lock:
            two writers would meet on that name.

    Returns:
        The temp file (name ``.<name>.siteadmin-<random>.tmp``), to validate and install.

    Raises:
        FileStepError: ``bad path``, ``no such directory``, ``permission denied``, ``read-only``,
            ``disk full``, ``write failed``, ``connection lost``, ``sftp timed out``. The temp file
            is removed first (unless the connection is gone: ``remove_stale_temps`` is for that).
    """
    return _write_temp(session, path, data, sftp, f"cannot write {path}", HELD_TOKEN if held else None)


def held_temp_path(path: str) -> str:
    """The temp file of ``path`` that a holder of the WN's lock writes (``write_temp(held=True)``).

    Raises:
        ValueError: as ``split_target``.
    """
    directory, name = split_target(path)
    return posixpath.join(directory, temp_name(name, HELD_TOKEN))


def remove_held_temp(session: Session, path: str, *, sftp: paramiko.SFTPClient | None = None) -> None:
    """Remove the temp file a lock holder's cut connection left beside ``path``, if any (one request).

    Call it only while holding the WN's lock. ``remove_stale_temps`` removes it too, with the others.

    Raises:
        FileStepError: ``bad path``, ``connection lost``, ``sftp timed out`` (a missing file, or one that cannot be
            removed, is not an error here: the next write says what is wrong).
    """
    _check_path(session, path, "clean up beside")
    with _using(session, sftp) as client:
        try:
            client.remove(held_temp_path(path))
        except FileNotFoundError:
            return
        except _SFTP_ERRORS as exc:
            if _lost(exc) or isinstance(exc, TimeoutError):
                raise _read_error(session, client, path, exc) from None


def _write_temp(session: Session, path: str, data: bytes, sftp: paramiko.SFTPClient | None, doing: str, token: str | None = None) -> TempFile:
    directory, name = _check_path(session, path, "write")
    tmp = posixpath.join(directory, temp_name(name, token))
    with _using(session, sftp) as client:
        created = False
        try:
            handle, info = create_private(client, tmp)
            created = True
            try:
                _write_all(client, handle, data)
                _fsync(session, client, handle, tmp)
            finally:
                handle.close()
        except BaseException as exc:
            # measure the filesystem before the partial temp file is gone: it is what filled it
            failure = _failure(session, client, exc, doing, directory, len(data)) if isinstance(exc, _SFTP_ERRORS) else None
            if created and not _lost(exc):
                _remove(client, tmp)
            if failure is None:
                raise
            raise failure from None
    return TempFile(session.host, tmp, path, hashlib.sha256(data).hexdigest(), len(data), info.st_uid or 0, info.st_gid or 0)


def discard(session: Session, temp: TempFile, *, sftp: paramiko.SFTPClient | None = None) -> None:
    """Remove a temp file that will not be installed (quietly: it may be gone already, or the connection)."""
    with contextlib.suppress(SshError), _using(session, sftp) as client:
        _remove(client, temp.path)


@contextlib.contextmanager
def staged(session: Session, path: str, data: bytes, *, sftp: paramiko.SFTPClient | None = None, held: bool = False) -> Iterator[TempFile]:
    """``write_temp``; the temp file is removed when the block is left without ``install`` (any error, Ctrl-C)."""
    temp = write_temp(session, path, data, sftp=sftp, held=held)
    installed = False
    try:
        yield temp
        installed = True
    finally:
        if not installed:
            discard(session, temp, sftp=sftp)


def exit_status_judge(result: CommandResult) -> str | None:
    """The default judge of a validation: a non-zero exit status refuses, with the last line it wrote."""
    if result.ok:
        return None
    tail = output_tail(result.stderr, result.stdout)
    return f"exit status {result.exit_status}" + (f": {tail}" if tail else "")


def validate(
    session: Session,
    temp: TempFile,
    command: str,
    *,
    timeout: float | None = None,
    judge: Callable[[CommandResult], str | None] = exit_status_judge,
    mask: Iterable[str] = (),
    sftp: paramiko.SFTPClient | None = None,
) -> None:
    """Run a check of the temp file on the WN; the file is refused when the judge says why.

    Args:
        session: an open session to the WN.
        temp: from ``write_temp``.
        command: a shell command with ``{path}`` where the temp file's path goes (shell-quoted),
            e.g. ``aria2c --conf-path={path} --enable-rpc=false ...``; it must not change anything.
        timeout: seconds; ``ssh.command_timeout`` when None.
        judge: reads the command's result and returns None to accept, or one line saying why not;
            by default a non-zero exit status refuses (aria2c, which exits 1 on a good file, needs its own).
        mask: secret values to hide if the command echoes them in its reason.
        sftp: used only to remove the temp file on failure.

    Raises:
        FileStepError: ``validation failed`` (with the judge's reason), ``validation timed out``,
            ``connection lost``; the temp file is removed.
        ValueError: the command has no ``{path}`` (a config error: nothing was run; the temp file is removed).
    """
    try:
        line = validation_command(command, temp.path)
    except ValueError:
        discard(session, temp, sftp=sftp)
        raise
    what = f"new {temp.target} refused by `{_short(command)}`"
    failure: FileStepError | None = None
    try:
        result = session.run(line, timeout=timeout)
    except CommandTimeout as exc:
        failure = FileStepError(session.host, f"{what}: still running after its time limit; stopped", exc.hint, outcome="validation timed out")
    except SshError as exc:
        why = exc.message.removeprefix(session.host + ": ")
        failure = FileStepError(session.host, f"cannot validate new {temp.target}: {why}", outcome="connection lost")
    else:
        reason = judge(result)
        if reason is not None:
            line = f"{what}: {' '.join(reason.split())}"
            for value in sorted((v for v in mask if v), key=len, reverse=True):
                line = line.replace(value, MASK)
            failure = FileStepError(session.host, line, outcome="validation failed")
    if failure is not None:
        discard(session, temp, sftp=sftp)
        raise failure


def install(
    session: Session,
    temp: TempFile,
    current: FileState,
    *,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    sftp: paramiko.SFTPClient | None = None,
) -> FileState:
    """Give the temp file the old file's owner, group and mode, then rename it over the target atomically.

    A new file gets mode 0600 and the SSH user as owner. The attributes are set on the temp file
    before the rename, so the target path never holds the new content with another owner or mode.

    Args:
        session: an open session to the WN.
        temp: from ``write_temp`` (and ``validate``).
        current: the target as ``read_file`` found it.
        mode, uid, gid: set these instead of the old file's (``restore`` passes the backup's).
        sftp: as ``read_file``.

    Returns:
        The target's new owner, group and mode (``data`` None: it is the temp file's content).

    Raises:
        FileStepError: ``permission denied``, ``read-only``, ``write failed``, ``connection lost``,
            ``sftp timed out``; the temp file is removed and the old file is untouched.
    """
    return _install(session, temp, current, mode, uid, gid, sftp, f"cannot write {temp.target}")


def _install(
    session: Session,
    temp: TempFile,
    current: FileState,
    mode: int | None,
    uid: int | None,
    gid: int | None,
    sftp: paramiko.SFTPClient | None,
    doing: str,
) -> FileState:
    directory, _ = split_target(temp.target)
    want_mode = mode if mode is not None else current.mode if current.mode is not None else NEW_FILE_MODE
    want_uid = uid if uid is not None else current.uid if current.uid is not None else temp.uid
    want_gid = gid if gid is not None else current.gid if current.gid is not None else temp.gid
    with _using(session, sftp) as client:
        try:
            if (want_uid, want_gid) != (temp.uid, temp.gid):
                client.chown(temp.path, want_uid, want_gid)  # before chmod: a chown by root clears set-id bits
            if want_mode != NEW_FILE_MODE:
                client.chmod(temp.path, want_mode)
            client.posix_rename(temp.path, temp.target)
        except _SFTP_ERRORS as exc:
            failure = _failure(session, client, exc, doing, directory, 0)
            if not _lost(exc):
                _remove(client, temp.path)
            raise failure from None
    return FileState(temp.target, None, want_uid, want_gid, want_mode)


def _backup_place(
    session: Session, current: FileState, keep: int, now: dt.datetime | None
) -> tuple[str, dt.datetime, str, str, bytes] | None:
    """(target's name, time, the new generation's path, what a failure says, the bytes) for a backup of ``current``; None with no file."""
    if keep < 1:
        raise ValueError(f"keep = {keep}: at least one backup generation must be kept")
    if current.data is None:
        return None
    directory, name = _check_path(session, current.path, "back up")
    digest = hashlib.sha256(current.data).hexdigest()
    when = now or dt.datetime.now(dt.UTC)
    return name, when, posixpath.join(directory, backup_name(name, when, digest)), f"cannot back up {current.path}", current.data


def backup(session: Session, current: FileState, *, keep: int, now: dt.datetime | None = None, sftp: paramiko.SFTPClient | None = None) -> Backup | None:
    """Copy the file as read, with its owner, group and mode, to a new generation beside it; keep the newest ``keep``.

    The copy is written like any file here (private temp file, fsynced, renamed), so a
    generation is never partial and never more open than the file it copies.

    Args:
        session: an open session to the WN.
        current: the file as ``read_file`` found it (its bytes are what is saved).
        keep: generations to keep, at least 1; older ones of this file are removed.
        now: the backup's time (UTC now when None).
        sftp: as ``read_file``.

    Returns:
        The new generation, or None when there was no file to back up.

    Raises:
        FileStepError: as ``write_temp`` and ``install``, the message saying ``cannot back up``.
        ValueError: ``keep`` below 1.
    """
    where = _backup_place(session, current, keep, now)
    if where is None:
        return None
    name, when, path, doing, data = where
    with _using(session, sftp) as client:
        temp = _write_temp(session, path, data, client, doing)
        _install(session, temp, current, None, None, None, client, doing)
        prune_backups(session, current.path, keep, sftp=client)
    found = parse_backup_name(name, posixpath.basename(path))
    assert found is not None  # we just made the name
    return Backup(found[0], path, current.path, found[1], found[2], len(data), current.uid, current.gid, current.mode)


@dataclasses.dataclass(frozen=True)
class Folder:
    """What one listing of a file's folder says about it: its backups, our temp files, its hard links.

    A write needs all three (``remove_stale_temps``, ``link_backup`` and its pruning): one listing
    serves them, taken while holding the WN's lock, so nothing of ours changes the folder meanwhile.
    """

    path: str
    """The file the listing is about."""
    backups: tuple[Backup, ...]
    """Its backup generations, newest first."""
    temps: tuple[str, ...]
    """Paths of temp files of it (and of its backups) that are ours (``is_temp_name``)."""
    links: int | None
    """Hard links of the file itself (from the listing's long name), None when absent or not said."""


def _links(entry: paramiko.SFTPAttributes) -> int | None:
    """The link count an ``ls -l`` style long name gives (OpenSSH's sftp-server writes one), else None."""
    fields = (getattr(entry, "longname", None) or "").split()
    return int(fields[1]) if len(fields) > 2 and fields[1].isdigit() else None


def list_folder(session: Session, path: str, *, sftp: paramiko.SFTPClient | None = None) -> Folder:
    """List the folder of ``path`` once: its backups, our left temp files and its link count.

    Raises:
        FileStepError: ``permission denied``, ``read failed``, ``connection lost``, ``sftp timed out``.
    """
    directory, name = _check_path(session, path, "list backups of")
    with _using(session, sftp) as client:
        try:
            entries = client.listdir_attr(directory)
        except FileNotFoundError:
            return Folder(path, (), (), None)
        except _SFTP_ERRORS as exc:
            raise _read_error(session, client, directory, exc) from None
    found: list[Backup] = []
    temps: list[str] = []
    links: int | None = None
    for entry in entries:
        if entry.filename == name:
            links = _links(entry)
            continue
        if is_temp_name(name, entry.filename):
            temps.append(posixpath.join(directory, entry.filename))
            continue
        parsed = parse_backup_name(name, entry.filename)
        if parsed is None or not stat.S_ISREG(entry.st_mode or 0):
            continue
        where = posixpath.join(directory, entry.filename)
        found.append(Backup(parsed[0], where, path, parsed[1], parsed[2], entry.st_size or 0, entry.st_uid, entry.st_gid, stat.S_IMODE(entry.st_mode or 0)))
    return Folder(path, tuple(newest_first(found)), tuple(temps), links)


def list_backups(session: Session, path: str, *, sftp: paramiko.SFTPClient | None = None) -> list[Backup]:
    """The backup generations of ``path`` on the WN, newest first (none when the directory is missing).

    Raises:
        FileStepError: ``permission denied``, ``read failed``, ``connection lost``, ``sftp timed out``.
    """
    return list(list_folder(session, path, sftp=sftp).backups)


def prune_backups(session: Session, path: str, keep: int, *, sftp: paramiko.SFTPClient | None = None, folder: Folder | None = None) -> list[Backup]:
    """Remove all but the newest ``keep`` generations of ``path``.

    Args:
        folder: the folder as listed (``list_folder``) while holding the WN's lock, instead of listing it again.

    Returns:
        The generations removed, newest first.

    Raises:
        FileStepError: as ``list_backups``; ``permission denied``, ``read-only``, ``write failed``
            when one cannot be removed.
    """
    with _using(session, sftp) as client:
        listed = folder.backups if folder is not None else list_folder(session, path, sftp=client).backups
        old = list(listed[max(keep, 0) :])
        for generation in old:
            try:
                client.remove(generation.path)
            except FileNotFoundError:
                continue  # removed meanwhile: the outcome is the same
            except _SFTP_ERRORS as exc:
                raise _failure(session, client, exc, f"cannot remove old backup {generation.path}", posixpath.dirname(path), 0) from None
    return old


def remove_stale_temps(session: Session, path: str, *, sftp: paramiko.SFTPClient | None = None, folder: Folder | None = None) -> list[str]:
    """Remove temp files of ``path`` (and of its backups) left by a connection cut mid-write.

    Call it only while holding the WN's lock: another writer's temp file looks the same.

    Args:
        folder: the folder as listed (``list_folder``) while holding the lock, instead of listing it again.

    Returns:
        The paths removed.

    Raises:
        FileStepError: as ``list_backups``.
    """
    with _using(session, sftp) as client:
        removed = list((folder if folder is not None else list_folder(session, path, sftp=client)).temps)
        for stale in removed:
            _remove(client, stale)
    return removed


def link_backup(
    session: Session, current: FileState, folder: Folder, *, keep: int, now: dt.datetime | None = None, sftp: paramiko.SFTPClient | None = None
) -> Backup | None:
    """``backup``, taken as a second name of the file in place (OpenSSH's ``hardlink@openssh.com``) where that is the same thing.

    Call it right before ``install``, holding the WN's lock: ``install`` renames a new inode over the
    file's name, so the old inode lives on under the backup's name alone, byte for byte with its
    owner and mode, with no copy written (one request instead of a private temp file, its fsync
    and rename). Until then the two names share one inode, so do not call it when nothing will be
    installed. The linked inode is checked against the file as read (size, modification time,
    owner, group, mode); a copy is written as ``backup`` does instead when the file has other
    links already (a change through one of them would change the backup), when the server has
    no hard links or refuses one (``fs.protected_hardlinks``), or when the check fails.

    Args:
        session: an open session to the WN.
        current: the file as ``read_file`` found it.
        folder: its folder as ``list_folder`` listed it, holding the lock (the pruning works from it).
        keep: generations to keep, at least 1.
        now: the backup's time (UTC now when None).
        sftp: as ``read_file``.

    Returns:
        The new generation, or None when there was no file to back up.

    Raises:
        FileStepError: as ``backup``.
        ValueError: ``keep`` below 1.
    """
    where = _backup_place(session, current, keep, now)
    if where is None:
        return None
    name, when, path, doing, data = where
    with _using(session, sftp) as client:
        if folder.links != 1 or current.mtime is None or not _hardlink(session, client, current, path, doing):
            return backup(session, current, keep=keep, now=when, sftp=client)
        found = parse_backup_name(name, posixpath.basename(path))
        assert found is not None  # we just made the name
        made = Backup(found[0], path, current.path, found[1], found[2], len(data), current.uid, current.gid, current.mode)
        prune_backups(session, current.path, keep, sftp=client, folder=dataclasses.replace(folder, backups=tuple(newest_first([made, *folder.backups]))))
    return made


def _hardlink(session: Session, sftp: paramiko.SFTPClient, current: FileState, path: str, doing: str) -> bool:
    """Link ``current``'s file to ``path`` and check it is the inode read; False (nothing left) when it is not done."""
    directory = posixpath.dirname(path)
    try:
        sftp._request(sftp_proto.CMD_EXTENDED, "hardlink@openssh.com", current.path, path)  # type: ignore[attr-defined]  # no public API
    except _SFTP_ERRORS as exc:
        if _lost(exc) or isinstance(exc, TimeoutError):
            raise _failure(session, sftp, exc, doing, directory, 0) from None
        return False  # unsupported, refused, or the name taken: a copy will say what is wrong, if anything
    try:
        info = sftp.lstat(path)
    except _SFTP_ERRORS as exc:
        if _lost(exc) or isinstance(exc, TimeoutError):
            raise _failure(session, sftp, exc, doing, directory, 0) from None
        info = None
    data = current.data or b""
    if info is not None and (info.st_size, info.st_mtime, info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode or 0)) == (
        len(data), current.mtime, current.uid, current.gid, current.mode
    ):
        return True
    _remove(sftp, path)  # the file in place is not the one read: its copy is the backup
    return False


def restore(
    session: Session,
    generation: Backup,
    *,
    validate_command: str | None = None,
    timeout: float | None = None,
    judge: Callable[[CommandResult], str | None] = exit_status_judge,
    mask: Iterable[str] = (),
    sftp: paramiko.SFTPClient | None = None,
) -> FileState:
    """Put a backup generation back in place, byte for byte, with its owner, group and mode.

    The generation is read and its hash checked against its name, then written like any new
    content (private temp file, fsynced, optionally validated, renamed). The generation stays;
    the file it replaces is not backed up here (call ``backup`` first to keep it).

    Args:
        session: an open session to the WN.
        generation: from ``list_backups`` (or ``find_backup``).
        validate_command: as ``validate``; None skips validation.
        timeout, judge, mask: for the validation, as ``validate``.
        sftp: as ``read_file``.

    Returns:
        The target's new state, with the restored bytes.

    Raises:
        FileStepError: ``no such backup`` (gone meanwhile), ``backup damaged`` (content does not
            match the hash in its name), and those of ``read_file``, ``write_temp``, ``validate``, ``install``.
    """
    with _using(session, sftp) as client:
        saved = read_file(session, generation.path, sftp=client)
        if saved.data is None:
            raise FileStepError(session.host, f"cannot restore {generation.target}: backup {generation.id} is gone", outcome="no such backup")
        digest = saved.sha256 or ""
        if not digest.startswith(generation.hash):
            raise FileStepError(
                session.host,
                f"cannot restore {generation.target}: backup {generation.id} holds content with sha256 {digest[:HASH_CHARS]}, not {generation.hash}",
                "it was changed after it was taken; pick another generation",
                outcome="backup damaged",
            )
        with staged(session, generation.target, saved.data, sftp=client) as temp:
            if validate_command is not None:
                validate(session, temp, validate_command, timeout=timeout, judge=judge, mask=mask, sftp=client)
            state = install(session, temp, saved, sftp=client)
    return dataclasses.replace(state, data=saved.data)


def _short(command: str, width: int = 60) -> str:
    one = " ".join(command.split())
    return one if len(one) <= width else one[: width - 3] + "..."
