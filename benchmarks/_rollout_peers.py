"""The rollout benchmark's peers: the same work done by pyinfra, ansible-playbook and parallel-ssh.

They are installed by the benchmark itself into a venv of its own under its cache folder (pip),
never as dependencies of siteadmin. Each runs as a subprocess of that venv, so its wall time
includes its own start-up (imports, inventory), as an admin running it would see.

- pyinfra: ``files.template`` (mode 0600; it has no backup option), ``--parallel 50``.
- ansible-playbook: the ``template`` module with ``backup: true`` and mode 0600, 50 forks,
  pipelining on, host keys checked against the harness's known_hosts, no fact gathering, the
  WN's python named (no interpreter discovery); a fresh ControlPath folder per run, so no run
  reuses an earlier run's SSH connections.
- parallel-ssh (``_rollout_pssh.py``): hash each WN's file with a command, then for those that
  differ copy a temp file over SFTP and move it into place; it checks no host keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _rollout_harness import NODE_USER, Harness

PEER_PACKAGES = ("pyinfra==3.10.*", "ansible-core", "parallel-ssh")
NODE_PYTHON = "/usr/bin/python3"
"""The WNs' python, named to ansible so it runs no interpreter discovery."""


def peers_venv(cache: Path) -> Path:
    """The peers' venv under ``cache``, made and filled with pip on first use; returns its bin folder."""
    venv = cache / "peers-venv"
    stamp = venv / ".peers-installed"
    if not stamp.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", *PEER_PACKAGES], check=True)
        stamp.write_text("\n".join(PEER_PACKAGES) + "\n", encoding="utf-8")
    return venv / "bin"


def versions(bin_dir: Path) -> dict[str, str]:
    """Installed versions of the peers, as pip reports them."""
    out = subprocess.run([str(bin_dir / "pip"), "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    wanted = {"pyinfra", "ansible-core", "parallel-ssh", "paramiko"}
    return {p["name"]: p["version"] for p in json.loads(out) if p["name"] in wanted}


def _run(argv: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{Path(argv[0]).name} exited {proc.returncode}; {log} ends:\n" + "\n".join(tail))


class Pyinfra:
    """pyinfra ``files.template`` to every WN, 50 in parallel."""

    name = "pyinfra"

    def __init__(self, harness: Harness, bin_dir: Path, template: Path, work: Path) -> None:
        self.bin = bin_dir
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "pyinfra.log"
        hosts = [
            (n.name, {"ssh_hostname": n.address, "ssh_port": n.port, "wn": n.name, "path": str(n.config_path(self.name))}) for n in harness.nodes
        ]
        shared = {
            "ssh_user": NODE_USER,
            "ssh_key": str(harness.key_path),
            "ssh_known_hosts_file": str(harness.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "ssh_allow_agent": False,
            "ssh_look_for_keys": False,
        }
        (work / "inventory.py").write_text(f"wns = ({hosts!r}, {shared!r})\n", encoding="utf-8")
        (work / "deploy.py").write_text(
            "from pyinfra import host\n"
            "from pyinfra.operations import files\n"
            f"files.template(name='aria2c profile', src={str(template)!r}, dest=host.data.path, mode='600',\n"
            "               wn=host.data.wn, generation=host.data.generation)\n",
            encoding="utf-8",
        )
        list(harness.tool_dirs(self.name))

    def run(self, generation: int, parallel: int) -> None:
        env = {**os.environ, "HOME": str(self.work)}
        argv = [str(self.bin / "pyinfra"), "inventory.py", "deploy.py", "--parallel", str(parallel), "--yes", "--data", f"generation={generation}"]
        env["PWD"] = str(self.work)
        with self.log.open("ab") as out:
            proc = subprocess.run(argv, env=env, cwd=self.work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0:
            tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
            raise RuntimeError(f"pyinfra exited {proc.returncode}; {self.log} ends:\n" + "\n".join(tail))


class Ansible:
    """ansible-playbook with the template module (backup, mode 0600) to every WN, 50 forks."""

    name = "ansible"

    def __init__(self, harness: Harness, bin_dir: Path, template: Path, work: Path) -> None:
        self.bin = bin_dir
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "ansible.log"
        self.harness = harness
        lines = ["[wns]"]
        lines += [f"{n.name} ansible_host={n.address} ansible_port={n.port} wn={n.name} path={n.config_path(self.name)}" for n in harness.nodes]
        lines += [
            "[wns:vars]",
            f"ansible_user={NODE_USER}",
            f"ansible_ssh_private_key_file={harness.key_path}",
            f"ansible_python_interpreter={NODE_PYTHON}",
        ]
        (work / "inventory.ini").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (work / "playbook.yml").write_text(
            "- hosts: wns\n"
            "  gather_facts: false\n"
            "  tasks:\n"
            "    - name: aria2c profile\n"
            "      ansible.builtin.template:\n"
            f"        src: {template}\n"
            '        dest: "{{ path }}"\n'
            '        mode: "0600"\n'
            "        backup: true\n",
            encoding="utf-8",
        )
        list(harness.tool_dirs(self.name))

    def _config(self, forks: int, control_dir: Path) -> Path:
        ssh_args = (
            "-o ControlMaster=auto -o ControlPersist=5s -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={self.harness.known_hosts} -o GlobalKnownHostsFile=/dev/null"
        )
        path = self.work / "ansible.cfg"
        path.write_text(
            "[defaults]\n"
            f"forks = {forks}\n"
            "host_key_checking = True\n"
            "gathering = explicit\n"
            "retry_files_enabled = False\n"
            "interpreter_python = " + NODE_PYTHON + "\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            f"ssh_args = {ssh_args}\n"
            f"control_path_dir = {control_dir}\n",
            encoding="utf-8",
        )
        return path

    def run(self, generation: int, parallel: int) -> None:
        control_dir = Path(tempfile.mkdtemp(prefix="cp-", dir=self.work))
        config = self._config(parallel, control_dir)
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": str(self.work / "home"),
            "ANSIBLE_LOCAL_TEMP": str(self.work / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
        }
        argv = [str(self.bin / "ansible-playbook"), "-i", str(self.work / "inventory.ini"), str(self.work / "playbook.yml"), "-e", f"generation={generation}"]
        _run(argv, env, self.log)


class ParallelSsh:
    """parallel-ssh: hash by command, then SFTP a temp file and move it into place where it differs."""

    name = "pssh"

    def __init__(self, harness: Harness, bin_dir: Path, template: Path, work: Path) -> None:
        self.bin = bin_dir
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.log = work / "pssh.log"
        self.template = template
        spec = {
            "user": NODE_USER,
            "key": str(harness.key_path),
            "hosts": [{"wn": n.name, "address": n.address, "port": n.port, "path": str(n.config_path(self.name))} for n in harness.nodes],
        }
        self.spec = work / "hosts.json"
        self.spec.write_text(json.dumps(spec), encoding="utf-8")
        list(harness.tool_dirs(self.name))

    def run(self, generation: int, parallel: int) -> None:
        script = Path(__file__).with_name("_rollout_pssh.py")
        argv = [str(self.bin / "python"), str(script), str(self.spec), str(self.template), str(generation), str(parallel), str(self.work / "render")]
        _run(argv, dict(os.environ), self.log)
