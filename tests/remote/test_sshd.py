"""The lab's sshd component on its own: keys, config, known_hosts, start/ready/stop."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest

from siteadmin.errors import LabError
from siteadmin.lab.sshd import make_admin_keypair, prepare_sshd, start_sshd, stop_sshd, wait_ready, write_known_hosts


def test_admin_keypair(tmp_path: Path) -> None:
    private, public = make_admin_keypair(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = paramiko.Ed25519Key.from_private_key_file(str(private))
    kind, blob, comment = public.read_text().split()
    assert (kind, blob, comment) == ("ssh-ed25519", key.get_base64(), "siteadmin-lab-admin")


@pytest.mark.lab
def test_prepare_writes_a_private_config(tmp_path: Path, ssh_lab: Any) -> None:
    port = ssh_lab.free_port()
    spec = prepare_sshd(tmp_path / "wn042", name="wn042.lab", listen_host="127.0.0.1", port=port, authorized_keys=ssh_lab.authorized_keys)
    assert spec.argv == ("/usr/sbin/sshd", "-D", "-e", "-f", str(spec.config_path))
    assert (spec.host, spec.port, spec.name) == ("127.0.0.1", port, "wn042.lab")
    assert stat.S_IMODE(spec.host_key_path.stat().st_mode) == 0o600
    assert spec.host_key_pub_line == "ssh-ed25519 " + paramiko.Ed25519Key.from_private_key_file(str(spec.host_key_path)).get_base64()
    config = spec.config_path.read_text().splitlines()
    for line in [
        "ListenAddress 127.0.0.1",
        f"Port {port}",
        f"HostKey {spec.host_key_path}",
        f"PidFile {spec.pid_path}",
        f"AuthorizedKeysFile {ssh_lab.authorized_keys}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no" if os.geteuid() == 0 else "UsePAM yes",  # an unprivileged sshd needs PAM to let its user in
        "UseDNS no",
        "PermitRootLogin prohibit-password",
        "AllowTcpForwarding yes",
    ]:
        assert line in config
    assert not any("/etc/ssh" in line for line in config if not line.startswith("#"))
    if os.geteuid() == 0:
        assert Path("/run/sshd").is_dir()


@pytest.mark.lab
def test_start_ready_stop(tmp_path: Path, ssh_lab: Any) -> None:
    spec = prepare_sshd(tmp_path / "wn043", name="wn043.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=ssh_lab.authorized_keys)
    start = time.monotonic()
    proc = start_sshd(spec)
    started = time.monotonic() - start
    try:
        assert started < 2
        assert wait_ready("127.0.0.1", spec.port, 1) < 1
        assert int(spec.pid_path.read_text()) == proc.pid
        # the host key it serves is the one the spec says
        with socket.create_connection(("127.0.0.1", spec.port)) as sock, paramiko.Transport(sock) as transport:
            transport.start_client(timeout=5)
            assert "ssh-ed25519 " + transport.get_remote_server_key().get_base64() == spec.host_key_pub_line
    finally:
        stop_sshd(proc)
    assert proc.returncode is not None
    stop_sshd(proc)  # idempotent
    with pytest.raises(LabError, match=f"no SSH banner from 127.0.0.1:{spec.port} within 0.2 s"):
        wait_ready("127.0.0.1", spec.port, 0.2)


@pytest.mark.lab
def test_start_failure_quotes_sshd(tmp_path: Path, ssh_lab: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        spec = prepare_sshd(tmp_path / "wn044", name="wn044.lab", listen_host="127.0.0.1", port=port, authorized_keys=ssh_lab.authorized_keys)
        with pytest.raises(LabError) as info:
            start_sshd(spec, ready_timeout=5)
    assert info.value.message.startswith(f"wn044.lab: sshd on 127.0.0.1:{port} exited with status 255; sshd says: ")
    assert "Address already in use" in info.value.message or "Cannot bind any address" in info.value.message


@pytest.mark.lab
def test_bad_config_fails_at_prepare(tmp_path: Path, ssh_lab: Any) -> None:
    with pytest.raises(LabError, match=r"wn045.lab: sshd refuses .*sshd_config: .*"):
        prepare_sshd(
            tmp_path / "wn045", name="wn045.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=ssh_lab.authorized_keys, log_level="LOUD"
        )


@pytest.mark.lab
def test_known_hosts_file(tmp_path: Path, ssh_lab: Any) -> None:
    path = tmp_path / "kh"
    write_known_hosts(path, ssh_lab.specs, include_names=True)
    lines = path.read_text().splitlines()
    assert lines == [f"[127.0.0.1]:{s.port},[{s.name}]:{s.port} {s.host_key_pub_line}" for s in ssh_lab.specs]
    write_known_hosts(path, ssh_lab.specs, hashed=True)
    keys = paramiko.HostKeys(str(path))
    for spec in ssh_lab.specs:
        entry = keys.lookup(f"[127.0.0.1]:{spec.port}")
        assert entry is not None
        assert "ssh-ed25519 " + entry["ssh-ed25519"].get_base64() == spec.host_key_pub_line
    assert "127.0.0.1" not in path.read_text()


@pytest.mark.lab
def test_paths_with_blanks(tmp_path: Path, ssh_lab: Any) -> None:
    from siteadmin.remote import SessionPool

    authorized = tmp_path / "lab dir" / "authorized keys"
    authorized.parent.mkdir()
    authorized.write_bytes(ssh_lab.authorized_keys.read_bytes())
    spec = prepare_sshd(tmp_path / "lab dir" / "wn 046", name="wn046.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=authorized)
    assert f'AuthorizedKeysFile "{authorized}"' in spec.config_path.read_text().splitlines()
    known = tmp_path / "lab dir" / "known hosts"
    write_known_hosts(known, [spec])
    proc = start_sshd(spec)
    try:
        site = ssh_lab.site(ssh_lab.write_site("blanks", {"wn046.lab": spec.port}, known_hosts=known))
        with SessionPool(site, global_known_hosts=()) as pool:
            assert pool.session("wn046.lab").run("echo in").stdout == "in\n"
    finally:
        stop_sshd(proc)
    with pytest.raises(LabError, match="cannot hold a path with quotes"):
        prepare_sshd(tmp_path / 'say "hi"', name="wn047.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=authorized)
    assert not (tmp_path / 'say "hi"').exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to run sshd as another, unprivileged user")
@pytest.mark.lab
def test_unprivileged_sshd_lets_its_own_user_in(ssh_lab: Any) -> None:
    import pwd

    from siteadmin.remote import SessionPool

    nobody = pwd.getpwnam("nobody")
    work = Path(tempfile.mkdtemp(prefix="sshd-nobody-"))  # not under pytest's 0700 tmp: nobody must read it
    try:
        work.chmod(0o755)
        authorized = work / "authorized_keys"
        authorized.write_bytes(ssh_lab.authorized_keys.read_bytes())
        spec = prepare_sshd(
            work / "wn048", name="wn048.lab", listen_host="127.0.0.1", port=ssh_lab.free_port(), authorized_keys=authorized, use_pam=True
        )
        assert "UsePAM yes" in spec.config_path.read_text().splitlines()
        for path in [spec.workdir, *spec.workdir.iterdir(), authorized]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        known = work / "known_hosts"
        write_known_hosts(known, [spec])
        with spec.log_path.open("wb") as log:
            proc = subprocess.Popen(
                ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", *spec.argv], stdout=log, stderr=log
            )
        try:
            wait_ready(spec.host, spec.port, 5, proc=proc)
            as_nobody = ssh_lab.site(ssh_lab.write_site("nobody", {"wn048.lab": spec.port}, known_hosts=known, ssh={"user": "nobody"}))
            with SessionPool(as_nobody, global_known_hosts=()) as pool:
                # logged in: nobody's shell is nologin, so the command itself is refused by the shell
                result = pool.session("wn048.lab").run("true", remote_kill=False)
                assert (result.exit_status, result.stdout) == (1, "This account is currently not available.\n")
            as_root = ssh_lab.site(ssh_lab.write_site("nobody-root", {"wn048.lab": spec.port}, known_hosts=known, ssh={"user": "root"}))
            with SessionPool(as_root, global_known_hosts=()) as pool:
                # an unprivileged sshd cannot become anyone else: root's key is accepted, its session is not
                refused = pool.session("wn048.lab").run("true")
                assert (refused.exit_status, refused.stderr.strip()) == (255, "Failed to set uids to 0.")
        finally:
            stop_sshd(proc)
        assert "Accepted publickey for nobody from 127.0.0.1" in spec.log_path.read_text()
    finally:
        shutil.rmtree(work)
