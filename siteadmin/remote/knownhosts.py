"""known_hosts: reading the files, looking a host's keys up, refusing unknown and revoked keys.

The server's key must be in ``ssh.known_hosts`` (or /etc/ssh/ssh_known_hosts, or a
``UserKnownHostsFile`` the ssh config names). The entry is looked up under ``HostKeyAlias``,
then the WN name, then its address, each as ``[name]:port`` off port 22; the first name with an
entry decides. Unknown and changed keys are refused (paramiko ``RejectPolicy``). Only with
``AcceptNew`` (``--accept-new``, as OpenSSH's ``StrictHostKeyChecking accept-new``) is the key of
a host that has no entry at all appended to ``ssh.known_hosts``; a changed key is still refused.

The files are parsed here, line by line as OpenSSH does, not by paramiko's ``HostKeys.load``
(which fails the whole file, and so every WN, on one ``@cert-authority`` or corrupt line):

- an unreadable line is skipped and named once per file (``file:line``), never per host;
- ``@revoked`` keys are refused for the hosts their line matches, even if also listed as known;
- ``@cert-authority`` lines are named once per file: paramiko cannot verify host certificates,
  so the hosts they cover need a plain key line;
- host patterns: ``*`` and ``?`` wildcards, ``!`` negation, hashed ``|1|salt|hash`` names;
  host names compare without case.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import fcntl
import functools
import hmac
import os
import re
import struct
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import paramiko
from paramiko.hostkeys import HostKeys
from paramiko.pkey import UnknownKeyType

from siteadmin import trust
from siteadmin.errors import ConfigError, warn
from siteadmin.remote.errors import HostKeyRevoked, HostKeyUnknown
from siteadmin.remote.target import Target

GLOBAL_KNOWN_HOSTS: tuple[Path, ...] = (Path("/etc/ssh/ssh_known_hosts"),)
"""System-wide known_hosts read after ``ssh.known_hosts`` (grid sites often manage this one)."""

MARKERS = ("cert-authority", "revoked")
"""The ``@`` markers OpenSSH knows; a line with any other is unreadable."""

_LISTED_LINES = 10
"""Line numbers named in one "unreadable lines" warning before the rest are counted only."""


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


# ---------------------------------------------------------------- parsing (pure)


@dataclasses.dataclass(frozen=True)
class HostLine:
    """One readable known_hosts line."""

    lineno: int
    marker: str
    """``""`` for a plain key line, else ``cert-authority`` or ``revoked``."""
    patterns: tuple[str, ...]
    """The host field split at commas, as written (``!`` negations and hashed names included)."""
    key: paramiko.PKey

    @functools.cached_property
    def blob(self) -> bytes:
        """The key's wire form, made once (comparing keys by it is what revocation needs)."""
        return self.key.asbytes()

    @functools.cached_property
    def plain_names(self) -> tuple[str, ...] | None:
        """The names this line lists, lower case, when every pattern is a plain name; None when one
        is a wildcard, negated or hashed (such a line must be matched name by name)."""
        if any(p.startswith(("!", "|")) or "*" in p or "?" in p for p in self.patterns):
            return None
        return tuple(p.lower() for p in self.patterns)

    def matches(self, name: str) -> bool:
        """Whether this line applies to ``name`` (a ``known_hosts_name``), as OpenSSH decides.

        A matching negated pattern excludes the name whatever else matches.
        """
        name = name.lower()
        hit = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            body = pattern[1:] if negated else pattern
            if body.startswith("|1|"):
                ok = hmac.compare_digest(HostKeys.hash_host(name, body), body)
            else:
                ok = _glob(body.lower()).fullmatch(name) is not None
            if ok and negated:
                return False
            hit = hit or ok
        return hit


@dataclasses.dataclass(frozen=True)
class BadLine:
    """A known_hosts line that cannot be used, and why (one line, no newline)."""

    lineno: int
    reason: str


@dataclasses.dataclass(frozen=True)
class KnownHostsFile:
    """A parsed known_hosts file: its readable lines in order and the unreadable ones."""

    path: Path
    entries: tuple[HostLine, ...]
    bad: tuple[BadLine, ...]


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's host pattern: ``*`` any run, ``?`` one character, everything else literal."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.DOTALL)


def _hashed_ok(pattern: str) -> bool:
    parts = pattern.split("|")
    if len(parts) != 4 or parts[0] or parts[1] != "1":
        return False
    try:
        base64.b64decode(parts[2], validate=True)
        return len(base64.b64decode(parts[3], validate=True)) == 20  # HMAC-SHA1
    except binascii.Error:
        return False


def _blob_type(blob: bytes) -> str | None:
    """The key type an SSH public key blob names in its first field, or None if it names none."""
    try:
        (size,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + size].decode("ascii")
    except (struct.error, UnicodeDecodeError):
        return None
    return inner if inner and len(inner) == size else None


def _parse_line(line: str, lineno: int) -> HostLine | BadLine:
    fields = line.split()
    marker = ""
    if fields[0].startswith("@"):
        if fields[0][1:] not in MARKERS:
            return BadLine(lineno, f"unknown marker {fields[0][:40]} (known: @cert-authority, @revoked)")
        marker, fields = fields[0][1:], fields[1:]
    if len(fields) < 3:
        return BadLine(lineno, "expected hosts, key type and key")
    hosts, kind, text = fields[:3]  # the rest is a comment
    kind = kind[:60]
    patterns = tuple(hosts.split(","))
    if any(not p.removeprefix("!") for p in patterns):
        return BadLine(lineno, "empty host pattern")
    if any(p.startswith("|") and not _hashed_ok(p) for p in patterns):
        return BadLine(lineno, "hashed host name is not |1|salt|hash")
    try:
        blob = base64.b64decode(text, validate=True)
    except binascii.Error:
        return BadLine(lineno, "key is not valid base64")
    inner = _blob_type(blob)
    if inner is None:
        return BadLine(lineno, f"not a valid {kind} key")
    if inner != kind:
        return BadLine(lineno, f"the key is {inner[:60]}, not {kind}")
    try:
        key = paramiko.PKey.from_type_string(kind, blob)
    except UnknownKeyType:
        return BadLine(lineno, f"key type {kind} is not supported")
    except Exception:  # noqa: BLE001 - paramiko's key classes raise several types on a bad blob
        return BadLine(lineno, f"not a valid {kind} key")
    return HostLine(lineno, marker, patterns, key)


def parse_known_hosts(data: str | bytes, path: Path) -> KnownHostsFile:
    """Parse a known_hosts file as OpenSSH reads it, keeping the unreadable lines apart.

    Args:
        data: the file's content (bytes: a line that is not UTF-8 is an unreadable line).
        path: the file's path, kept for messages.

    Returns:
        The readable lines in file order and the unreadable ones with a one-line reason each.
    """
    entries: list[HostLine] = []
    bad: list[BadLine] = []
    raw_lines: list[bytes] = (data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data).split(b"\n")
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            bad.append(BadLine(lineno, "not UTF-8 text"))
            continue
        if not line or line.startswith("#"):
            continue
        parsed = _parse_line(line, lineno)
        (entries if isinstance(parsed, HostLine) else bad).append(parsed)  # type: ignore[arg-type]
    return KnownHostsFile(path, tuple(entries), tuple(bad))


def file_warnings(parsed: KnownHostsFile) -> list[str]:
    """The warnings (one line each) a parsed file earns: its unreadable lines, then its CA lines."""
    out: list[str] = []
    path, bad = parsed.path, parsed.bad
    if len(bad) == 1:
        out.append(f"{path}:{bad[0].lineno}: unreadable known_hosts line skipped ({bad[0].reason})")
    elif bad:
        listed = ", ".join(str(b.lineno) for b in bad[:_LISTED_LINES]) + (", ..." if len(bad) > _LISTED_LINES else "")
        out.append(f"{path}: {len(bad)} unreadable known_hosts lines skipped (lines {listed}; line {bad[0].lineno}: {bad[0].reason})")
    authorities = [e for e in parsed.entries if e.marker == "cert-authority"]
    if authorities:
        covered = ", ".join(f"{', '.join(e.patterns)} (line {e.lineno})" for e in authorities)
        out.append(f"{path}: host certificates (@cert-authority) are not supported, so hosts matching {covered} need a plain key line")
    return out


# ---------------------------------------------------------------- lookups


@dataclasses.dataclass(frozen=True)
class KnownKey:
    """A host's known keys under one known_hosts name, and the file holding them."""

    name: str
    path: Path
    keys: dict[str, paramiko.PKey]


@dataclasses.dataclass(frozen=True)
class MarkedLine:
    """A ``@revoked`` or ``@cert-authority`` line that applies to a host, and where it is."""

    name: str
    """The host's known_hosts name the line matched."""
    path: Path
    lineno: int
    key: paramiko.PKey


def _read_known_hosts(path: Path) -> bytes | None:
    """The content of one known_hosts file; None when there is no such regular file.

    The one place known_hosts files are opened (checks on the file itself belong here).

    Raises:
        ConfigError: the file exists but cannot be read.
        UntrustedFile: the file or its folder is owned by another user or writable by others.
    """
    if not path.is_file():
        return None
    trust.check_path(path, "known_hosts")  # who can write here decides which WN keys are believed
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read known_hosts: {exc.strerror or exc}") from None


@dataclasses.dataclass(frozen=True)
class _Index:
    """A parsed file's lines arranged for lookups: plain key lines by name, the rest to be matched one by one.

    A site's known_hosts holds a line per WN; matching every line for every connection made a
    lookup cost O(lines), so hundreds of WNs cost O(WNs²). Lines whose patterns are all plain
    names are found by name; wildcard, negated and hashed ones (a hashed name needs its own
    HMAC per line) are still matched in full, as are the few ``@`` lines.
    """

    by_name: dict[str, tuple[HostLine, ...]]
    matched: tuple[HostLine, ...]
    """Plain key lines with a wildcard, negated or hashed pattern."""
    marked: tuple[HostLine, ...]
    """``@revoked`` and ``@cert-authority`` lines."""

    @classmethod
    def of(cls, parsed: KnownHostsFile) -> _Index:
        by_name: dict[str, list[HostLine]] = {}
        matched: list[HostLine] = []
        for entry in parsed.entries:
            if entry.marker:
                continue
            names = entry.plain_names
            if names is None:
                matched.append(entry)
                continue
            for name in dict.fromkeys(names):
                by_name.setdefault(name, []).append(entry)
        return cls({k: tuple(v) for k, v in by_name.items()}, tuple(matched), tuple(e for e in parsed.entries if e.marker))

    def key_lines(self, name: str) -> list[HostLine]:
        """The plain key lines that apply to ``name`` (a ``known_hosts_name``), in file order."""
        found = [*self.by_name.get(name.lower(), ()), *(e for e in self.matched if e.matches(name))]
        return sorted(found, key=lambda e: e.lineno) if self.matched else found


class KnownHosts:
    """known_hosts files, each read once (and its warnings given once), asked in order. Thread-safe."""

    def __init__(self) -> None:
        self._files: dict[Path, _Index | None] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> _Index | None:
        with self._lock:
            if path not in self._files:
                data = _read_known_hosts(path)
                parsed = parse_known_hosts(data, path) if data is not None else None
                self._files[path] = _Index.of(parsed) if parsed is not None else None
                for message in file_warnings(parsed) if parsed is not None else ():
                    warn(message)
            return self._files[path]

    def _marked(self, marker: str, names: Sequence[str], port: int, files: Sequence[Path]) -> list[MarkedLine]:
        found: list[MarkedLine] = []
        for path in files:
            index = self._load(path)
            for entry in index.marked if index is not None else ():
                if entry.marker != marker:
                    continue
                name = next((n for n in (known_hosts_name(h, port) for h in names) if entry.matches(n)), None)
                if name is not None:
                    found.append(MarkedLine(name, path, entry.lineno, entry.key))
        return found

    def forget(self, path: Path) -> None:
        """Read ``path`` again on its next use (a key was appended to it)."""
        with self._lock:
            self._files.pop(path, None)

    def revoked(self, names: Sequence[str], port: int, files: Sequence[Path]) -> list[MarkedLine]:
        """Every ``@revoked`` line, in any file, matching any of the host's names."""
        return self._marked("revoked", names, port, files)

    def cert_authorities(self, names: Sequence[str], port: int, files: Sequence[Path]) -> list[MarkedLine]:
        """Every ``@cert-authority`` line, in any file, matching any of the host's names."""
        return self._marked("cert-authority", names, port, files)

    def lookup(self, names: Sequence[str], port: int, files: Sequence[Path]) -> KnownKey | None:
        """The first name (in order) any file knows, with that file's keys for it.

        Keys a ``@revoked`` line names for the host are left out (revoked wins, as in OpenSSH);
        per key type the first line wins.
        """
        revoked = {m.key.asbytes() for m in self.revoked(names, port, files)}
        for name in names:
            pattern = known_hosts_name(name, port)
            for path in files:
                index = self._load(path)
                keys: dict[str, paramiko.PKey] = {}
                for entry in index.key_lines(pattern) if index is not None else ():
                    if not revoked or entry.blob not in revoked:
                        keys.setdefault(entry.key.get_name(), entry.key)
                if keys:
                    return KnownKey(pattern, path, keys)
        return None


# ---------------------------------------------------------------- the policy


class RefuseUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising our one-line errors instead of a bare SSHException.

    Args:
        target: the connection's target (names, address, port for the messages).
        files: the known_hosts files read, in order.
        revoked: the ``@revoked`` lines that apply to the host.
        authorities: the ``@cert-authority`` lines that apply to the host (named in the error).
    """

    def __init__(
        self, target: Target, files: Sequence[Path], revoked: Sequence[MarkedLine] = (), authorities: Sequence[MarkedLine] = ()
    ) -> None:
        self.target = target
        self.files = files
        self.revoked = tuple(revoked)
        self.authorities = tuple(authorities)

    def refuse_revoked(self, key: paramiko.PKey) -> None:
        """Raise if ``key`` (what the host offers) is revoked for it.

        Raises:
            HostKeyRevoked: naming the file and line that revoke it.
        """
        offered = key.asbytes()
        for line in self.revoked:
            if line.key.asbytes() == offered:
                raise HostKeyRevoked(
                    self.target.label,
                    f"HOST KEY REVOKED: {line.name} offers {key.get_name()} {key.fingerprint}, "
                    f"which {line.path}:{line.lineno} marks @revoked; refusing to connect",
                    "that key was retired or compromised: find out why before touching this WN; "
                    "if it was reinstalled, verify its new key out of band and add a line for it",
                )

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        self.refuse_revoked(key)
        t = self.target
        where = " or ".join(str(p) for p in self.files)
        looked = ", ".join(known_hosts_name(n, t.port) for n in t.key_names)
        port = f"-p {t.port} " if t.port != 22 else ""
        ca = "".join(
            f"; {a.path}:{a.lineno} (@cert-authority) covers {a.name}, but host certificates are not supported" for a in self.authorities[:1]
        )
        raise HostKeyUnknown(
            t.label,
            f"host key not in known_hosts {where} (looked up {looked}; offered {key.get_name()} {key.fingerprint}){ca}",
            f"check the fingerprint out of band, then: ssh-keyscan {port}-t {key.get_name()} {t.address} >> {self.files[0]}",
        )


AcceptedKey = Callable[[str, str, str, str, str], None]
"""Told of each key ``AcceptNew`` wrote: (WN, known_hosts name, key type, fingerprint, file)."""

_APPEND_LOCK = threading.Lock()


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append ``name keytype base64`` to a known_hosts file (created 0600), one whole line under a lock.

    Raises:
        ConfigError: the file cannot be written.
    """
    line = f"{name} {key.get_name()} {key.get_base64()}\n".encode("ascii")
    with _APPEND_LOCK:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot add a host key to known_hosts: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another siteadmin (or ssh) appending at the same time
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


class AcceptNew(RefuseUnknown):
    """OpenSSH's ``accept-new``: a host with no key in any known_hosts file gets its key written; a changed key is refused.

    Args:
        target, files, revoked, authorities: as ``RefuseUnknown``.
        write_to: the known_hosts file new keys go to (``ssh.known_hosts``).
        known: the pool's reader, told to read ``write_to`` again.
        on_accept: told of each key written (the rollout audits it).
    """

    def __init__(
        self,
        target: Target,
        files: Sequence[Path],
        revoked: Sequence[MarkedLine] = (),
        authorities: Sequence[MarkedLine] = (),
        *,
        write_to: Path,
        known: KnownHosts | None = None,
        on_accept: AcceptedKey | None = None,
    ) -> None:
        super().__init__(target, files, revoked, authorities)
        self.write_to = write_to
        self.known = known
        self.on_accept = on_accept

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:  # type: ignore[override]
        self.refuse_revoked(key)
        name = known_hosts_name(self.target.key_names[0], self.target.port)
        append_known_host(self.write_to, name, key)
        if self.known is not None:
            self.known.forget(self.write_to)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.on_accept is not None:
            self.on_accept(self.target.label, name, key.get_name(), key.fingerprint, str(self.write_to))
