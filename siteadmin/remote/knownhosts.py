"""known_hosts: reading the files, looking a host's keys up, refusing unknown keys.

The server's key must be in ``ssh.known_hosts`` (or /etc/ssh/ssh_known_hosts, or a
``UserKnownHostsFile`` the ssh config names). The entry is looked up under ``HostKeyAlias``,
then the WN name, then its address, each as ``[name]:port`` off port 22; the first name with an
entry decides. Unknown and changed keys are refused (paramiko ``RejectPolicy``); nothing is ever
added to a known_hosts file.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import paramiko
from paramiko.hostkeys import HostKeys

from siteadmin.errors import ConfigError
from siteadmin.remote.errors import HostKeyUnknown
from siteadmin.remote.target import Target

GLOBAL_KNOWN_HOSTS: tuple[Path, ...] = (Path("/etc/ssh/ssh_known_hosts"),)
"""System-wide known_hosts read after ``ssh.known_hosts`` (grid sites often manage this one)."""


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names a host: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"



@dataclasses.dataclass(frozen=True)
class KnownKey:
    """A host's known keys under one known_hosts name, and the file holding them."""

    name: str
    path: Path
    keys: dict[str, paramiko.PKey]


class KnownHosts:
    """known_hosts files, each read once, asked in order."""

    def __init__(self) -> None:
        self._files: dict[Path, HostKeys | None] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> HostKeys | None:
        with self._lock:
            if path not in self._files:
                keys: HostKeys | None = None
                if path.is_file():
                    keys = HostKeys()
                    try:
                        keys.load(str(path))
                    except (OSError, UnicodeDecodeError) as exc:
                        raise ConfigError(f"{path}: cannot read known_hosts: {exc}") from None
                self._files[path] = keys
            return self._files[path]

    def lookup(self, names: Sequence[str], port: int, files: Sequence[Path]) -> KnownKey | None:
        """The first name (in order) any file knows, with that file's keys for it."""
        for name in names:
            pattern = known_hosts_name(name, port)
            for path in files:
                keys = self._load(path)
                entry = keys.lookup(pattern) if keys is not None else None
                if entry:
                    return KnownKey(pattern, path, {kt: entry[kt] for kt in entry.keys()})
        return None


class RefuseUnknown(paramiko.RejectPolicy):
    """paramiko's RejectPolicy, raising our one-line error instead of a bare SSHException."""

    def __init__(self, target: Target, files: Sequence[Path]) -> None:
        self.target = target
        self.files = files

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        t = self.target
        where = " or ".join(str(p) for p in self.files)
        looked = ", ".join(known_hosts_name(n, t.port) for n in t.key_names)
        port = f"-p {t.port} " if t.port != 22 else ""
        raise HostKeyUnknown(
            t.label,
            f"host key not in known_hosts {where} (looked up {looked}; offered {key.get_name()} {key.fingerprint})",
            f"check the fingerprint out of band, then: ssh-keyscan {port}-t {key.get_name()} {t.address} >> {self.files[0]}",
        )


