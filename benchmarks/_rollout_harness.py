"""The rollout benchmark's fake site: many WNs served by a few real sshd on loopback addresses.

Each WN is one loopback address (``127.42.<i // 200>.<i % 200 + 1>``) on one shared port; an sshd
instance listens on at most ``ADDRESSES_PER_SSHD`` of them, with its own host key, so 200 WNs
take 13 sshd. Keys, sshd_config and known_hosts come from the lab's sshd component
(``siteadmin.lab.sshd``); only the ListenAddress lines are added here.

The WNs are logged in to as a dedicated unprivileged user (``NODE_USER``) whose shell is bash with
a minimal rc: root's ``.bashrc`` on this machine runs ``pyenv init`` (~140 ms of CPU per SSH
command), which would be measured instead of the tools. ``node_shell_cost`` says what each costs.

Every WN has its own folder (``wn/<name>/``) and every tool its own file in it, so one tool's run
never changes what another finds. The CPU the WNs spend (every sshd, the shells and commands they
ran, sftp-server) is read from /proc as the sshd processes' own and reaped children's CPU time.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import resource
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from siteadmin.lab.sshd import SshdSpec, known_hosts_line, make_admin_keypair, prepare_sshd, start_sshd, stop_sshd

ADDRESSES_PER_SSHD = 16
NODE_USER = "siteadmin-bench"
"""The WNs' login user: bash, a minimal rc, home under the benchmark's cache dir."""
MINIMAL_RC = "# the benchmark WN's whole shell rc: nothing to run per command\nexport PATH=/usr/local/bin:/usr/bin:/bin\n"
DOMAIN = "bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Node:
    """One fake WN: its name, the address and port its sshd answers on, and its folder."""

    name: str
    address: str
    port: int
    dir: Path

    def config_path(self, tool: str) -> Path:
        """The aria2c profile ``tool`` keeps on this WN (each tool its own)."""
        return self.dir / tool / "aria2c.conf"


def node_name(index: int) -> str:
    """``wn001.bench`` for index 1."""
    return f"wn{index:03d}.{DOMAIN}"


def node_address(index: int) -> str:
    """A loopback address of its own for WN ``index`` (1-based)."""
    return f"127.42.{(index - 1) // 200}.{(index - 1) % 200 + 1}"


def _free_port_on(addresses: Sequence[str], first: int = 22022) -> int:
    """A TCP port free on every one of ``addresses``."""
    for port in range(first, first + 2000):
        socks: list[socket.socket] = []
        try:
            for address in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no TCP port free on all {len(addresses)} addresses from {first}")


def ensure_node_user(home: Path) -> pwd.struct_passwd:
    """Create ``NODE_USER`` when missing (bash, home ``home`` holding only the minimal rc).

    Its password field is ``*`` (no password, not locked): sshd without PAM refuses a locked
    (``!``) account even for key logins.
    """
    home.mkdir(parents=True, exist_ok=True)
    try:
        entry = pwd.getpwnam(NODE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--shell", "/bin/bash", "--home-dir", str(home), "--no-create-home", NODE_USER],
            check=True,
        )
        entry = pwd.getpwnam(NODE_USER)
    if entry.pw_dir != str(home):
        subprocess.run(["usermod", "--home", str(home), NODE_USER], check=True)
    subprocess.run(["usermod", "--password", "*", NODE_USER], check=True)
    entry = pwd.getpwnam(NODE_USER)
    for name, text in ((".bashrc", MINIMAL_RC), (".profile", MINIMAL_RC)):
        (home / name).write_text(text, encoding="ascii")
    for path in (home, home / ".bashrc", home / ".profile"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    home.chmod(0o755)
    return entry


def node_shell_cost(user: pwd.struct_passwd | None, runs: int = 20) -> float:
    """CPU seconds one SSH command's shell costs on a WN: ``bash -c true`` as sshd starts it.

    bash reads ``~/.bashrc`` for a command when it sees it was started by sshd (SSH_CLIENT set),
    so this runs it with the same environment, as ``user`` (root when None).
    """
    home = user.pw_dir if user is not None else pwd.getpwuid(0).pw_dir
    env = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin", "SSH_CLIENT": "127.0.0.1 40000 22", "SHELL": "/bin/bash"}
    env["USER"] = env["LOGNAME"] = user.pw_name if user is not None else "root"
    creds: dict[str, object] = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run(["/bin/bash", "-c", "true"], env=env, cwd=home, check=True, **creds)  # type: ignore[call-overload]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / runs


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children (utime, stime, cutime, cstime from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the name: state is field 3; utime..cstime are fields 14-17
    return sum(int(v) for v in fields[11:15]) / _CLK_TCK


def machine_busy() -> float:
    """CPU seconds this machine has been busy (all processes, all cores) since boot, from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


class Harness:
    """``hosts`` fake WNs under ``root``: ``up()`` starts them, ``down()`` stops them.

    Args:
        root: an empty folder of the benchmark's own (made world-traversable for the WN user).
        hosts: how many WNs.
        cache: the benchmark's cache folder (the WN user's home lives there).
    """

    def __init__(self, root: Path, hosts: int, cache: Path) -> None:
        self.root = root
        self.count = hosts
        self.cache = cache
        self.nodes: list[Node] = []
        self.specs: list[SshdSpec] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self.user: pwd.struct_passwd | None = None
        self.key_path = root / "admin" / "admin_ed25519"
        self.known_hosts = root / "known_hosts"
        self.port = 0

    def up(self) -> None:
        """Create the WN user, keys, WN folders and sshd instances; return when all answer."""
        self.root.chmod(0o755)
        self.user = ensure_node_user(self.cache / "node-home")
        self.key_path, _ = make_admin_keypair(self.root / "admin")
        authorized = self.root / "authorized_keys"
        shutil.copyfile(self.key_path.with_name(self.key_path.name + ".pub"), authorized)
        authorized.chmod(0o644)
        addresses = [node_address(i) for i in range(1, self.count + 1)]
        self.port = _free_port_on(addresses)
        wn_root = self.root / "wn"
        wn_root.mkdir(mode=0o755)
        for i, address in enumerate(addresses, start=1):
            node = Node(node_name(i), address, self.port, wn_root / node_name(i))
            node.dir.mkdir(mode=0o755)
            os.chown(node.dir, self.user.pw_uid, self.user.pw_gid)
            self.nodes.append(node)
        lines = []
        for first in range(0, self.count, ADDRESSES_PER_SSHD):
            group = self.nodes[first : first + ADDRESSES_PER_SSHD]
            spec = prepare_sshd(
                self.root / "sshd" / f"sshd{first // ADDRESSES_PER_SSHD:02d}",
                name=group[0].name,
                listen_host=group[0].address,
                port=self.port,
                authorized_keys=authorized,
                log_level="ERROR",
                check=False,
                use_pam=False,
            )
            text = spec.config_path.read_text(encoding="utf-8")
            listen = "".join(f"ListenAddress {n.address}\n" for n in group)
            spec.config_path.write_text(text.replace(f"ListenAddress {group[0].address}\n", listen), encoding="utf-8")
            self.specs.append(spec)
            lines += [known_hosts_line([n.address, n.name], self.port, spec.host_key_pub_line) for n in group]
        self.known_hosts.write_text("".join(line + "\n" for line in lines), encoding="ascii")
        for spec in self.specs:
            self._procs.append(start_sshd(spec))

    def down(self) -> None:
        """Stop every sshd (idempotent)."""
        for proc in self._procs:
            stop_sshd(proc)
        self._procs = []

    def node_cpu(self) -> float:
        """CPU seconds the WNs have spent so far: every sshd and what it ran (reaped sessions)."""
        return sum(process_cpu(p.pid) for p in self._procs)

    def own(self, path: Path) -> None:
        """Give ``path`` (a file or folder on a WN) to the WN user."""
        assert self.user is not None
        os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def tool_dirs(self, tool: str) -> Iterator[Path]:
        """Create (owned by the WN user) and yield each WN's folder for ``tool``."""
        for node in self.nodes:
            folder = node.config_path(tool).parent
            if not folder.is_dir():
                folder.mkdir(mode=0o755)
                self.own(folder)
            yield folder

    def wait_idle(self, settle: float = 0.3) -> None:
        """Give the WNs time to reap the last sessions so the next CPU reading is complete."""
        time.sleep(settle)
