"""Real OpenSSH servers for the SSH layer's tests: three sshd on 127.0.0.1, from siteadmin.lab.sshd.

Nothing is faked: the servers are /usr/sbin/sshd with their own host keys and config, the client
is siteadmin.remote over paramiko, and the only traffic is to 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from siteadmin.lab.netns import free_port
from siteadmin.lab.sshd import SshdSpec, make_admin_keypair, prepare_sshd, sshd_available, start_sshd, stop_sshd, write_known_hosts
from siteadmin.site import Site, load_site


@dataclasses.dataclass
class SshLab:
    """Three running sshd (wn001-wn003.lab) and the admin's key and known_hosts for them."""

    dir: Path
    user: str
    key: Path
    pub: Path
    authorized_keys: Path
    specs: list[SshdSpec]
    procs: list[subprocess.Popen[bytes]]
    known_hosts: Path
    """Trusts all three, under [127.0.0.1]:port."""
    site_path: Path
    """site.toml with wns wn[001-003].lab mapped to the three ports."""

    free_port = staticmethod(free_port)

    @staticmethod
    def socket_owner_chains(local_port: int) -> list[list[int]]:
        return socket_owner_chains(local_port)

    def spec(self, host: str) -> SshdSpec:
        return next(s for s in self.specs if s.name == host)

    def write_site(
        self,
        name: str,
        nodes: Mapping[str, int],
        *,
        known_hosts: Path | None = None,
        key_file: Path | None = None,
        ssh: Mapping[str, object] | None = None,
        addresses: Mapping[str, str] | None = None,
    ) -> Path:
        """A site.toml in the lab dir: ``nodes`` maps WN name to the sshd port it reaches."""
        settings: dict[str, object] = {
            "user": self.user,
            "key_file": str(key_file or self.key),
            "known_hosts": str(known_hosts or self.known_hosts),
            "connect_timeout": 3.0,
            "auth_timeout": 5.0,
            "command_timeout": 10.0,
        }
        settings.update(ssh or {})
        lines = ["[site]", 'name = "LAB"', "", "[wns]", "hosts = [" + ", ".join(f'"{n}"' for n in nodes) + "]", ""]
        for node, port in nodes.items():
            address = (addresses or {}).get(node, "127.0.0.1")
            lines += [f'[wns.nodes."{node}"]', f'address = "{address}"', f"port = {port}", ""]
        lines.append("[ssh]")
        for key, value in settings.items():
            lines.append(f"{key} = {_toml(value)}")
        path = self.dir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    def site(self, path: Path | None = None) -> Site:
        return load_site(path or self.site_path)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    if not sshd_available():
        # never a silent skip (as for the lab): the README's test command installs openssh-server
        pytest.fail("/usr/sbin/sshd missing: install openssh-server (run `bash .ci/setup.sh`)")
    root = tmp_path_factory.mktemp("sshlab")
    key, pub = make_admin_keypair(root / "admin")
    authorized = root / "authorized_keys"
    authorized.write_text(pub.read_text(encoding="ascii"), encoding="ascii")
    specs = [
        prepare_sshd(root / name, name=name, listen_host="127.0.0.1", port=free_port(), authorized_keys=authorized)
        for name in ("wn001.lab", "wn002.lab", "wn003.lab")
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for spec in specs:
            procs.append(start_sshd(spec))
        known = root / "known_hosts"
        write_known_hosts(known, specs)
        lab = SshLab(root, getpass.getuser(), key, pub, authorized, specs, procs, known, root / "site.toml")
        lab.write_site("site", {s.name: s.port for s in specs})
        yield lab
    finally:
        for proc in procs:
            stop_sshd(proc)


def socket_owner_chains(local_port: int) -> list[list[int]]:
    """For each process holding the TCP socket with this local port: [pid, parent, grandparent, ...] (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for row in list(handle)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(fields[9])
    owners: list[int] = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        if any(link == f"socket:[{inode}]" for link in links for inode in inodes):
            owners.append(int(entry))
    chains: list[list[int]] = []
    for owner in owners:
        chain: list[int] = []
        pid = owner
        while pid > 1 and pid not in chain:
            chain.append(pid)
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                    pid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                break
        chains.append(chain)
    return chains
