"""Sessions against real sshd: commands, host keys, auth, timeouts, jump hosts, files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from siteadmin.errors import ConfigError, warnings_to
from siteadmin.lab.sshd import known_hosts_line, make_admin_keypair
from siteadmin.remote import (
    AuthFailed,
    CommandFailed,
    CommandTimeout,
    ConnectFailed,
    HostKeyChanged,
    HostKeyRevoked,
    HostKeyUnknown,
    Session,
    SessionPool,
    SshError,
)

pytestmark = pytest.mark.lab

HOSTS = ["wn001.lab", "wn002.lab", "wn003.lab"]


def test_run_on_every_host(ssh_lab: Any) -> None:
    with SessionPool(ssh_lab.site()) as pool:
        for host in HOSTS:
            session = pool.session(host)
            result = session.run("echo $SSH_CONNECTION; id -un; echo oops >&2; exit 3")
            assert result.exit_status == 3
            connection, user = result.stdout.splitlines()
            client_ip, _, server_ip, server_port = connection.split()
            assert (client_ip, server_ip, int(server_port)) == ("127.0.0.1", "127.0.0.1", ssh_lab.spec(host).port)
            assert user == ssh_lab.user
            assert result.stderr == "oops\n"
            assert not result.ok
            # the pool hands back the same live session for repeated commands
            assert pool.session(host) is session


def test_stdin_is_fed_and_closed(ssh_lab: Any) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, larger than one channel window chunk
    with SessionPool(ssh_lab.site()) as pool:
        result = pool.session("wn001.lab").run("sha256sum | cut -d' ' -f1; wc -c < /dev/null", stdin=data)
    import hashlib

    assert result.stdout.split() == [hashlib.sha256(data).hexdigest(), "0"]


def test_check_raises_with_status_and_stderr(ssh_lab: Any) -> None:
    with SessionPool(ssh_lab.site()) as pool, pytest.raises(CommandFailed) as info:
        pool.session("wn002.lab").run("echo first >&2; echo 'no such thing' >&2; exit 7", check=True)
    assert info.value.one_line() == "wn002.lab: `echo first >&2; echo 'no such thing' >&2; exit 7` exited with status 7: no such thing"
    assert info.value.outcome == "command failed (status 7)"


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_command_timeout_is_enforced_and_the_command_killed(ssh_lab: Any) -> None:
    marker = f"{time.time_ns() % 1000}.{os.getpid()}"
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn003.lab")
        start = time.monotonic()
        with pytest.raises(CommandTimeout) as info:
            session.run(f"sleep {marker}; echo never", timeout=0.5)
        took = time.monotonic() - start
        assert 0.5 <= took < 1.5
        assert info.value.message == f"wn003.lab: `sleep {marker}; echo never` still running after 0.5 s; stopped"
        # the WN (here: this machine) kills it shortly after we gave up
        deadline = time.monotonic() + 5
        while _processes_with(f"sleep {marker}") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_with(f"sleep {marker}") == []
        # the session survives a timed-out command
        assert session.run("echo still here").stdout == "still here\n"


def test_unknown_host_key_is_refused(ssh_lab: Any, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    spec = ssh_lab.spec("wn001.lab")
    known.write_text(known_hosts_line(["127.0.0.1"], ssh_lab.spec("wn002.lab").port, ssh_lab.spec("wn002.lab").host_key_pub_line) + "\n")
    site = ssh_lab.site(ssh_lab.write_site("unknown", {"wn001.lab": spec.port}, known_hosts=known))
    with SessionPool(site, global_known_hosts=()) as pool, pytest.raises(HostKeyUnknown) as info:
        pool.session("wn001.lab")
    text = info.value.one_line()
    assert text.startswith(f"wn001.lab: host key not in known_hosts {known} (looked up [wn001.lab]:{spec.port}, [127.0.0.1]:{spec.port};")
    assert f"ssh-keyscan -p {spec.port} -t ssh-ed25519 127.0.0.1 >> {known}" in text
    assert info.value.category == "hostkey"
    assert known.read_text().count("\n") == 1  # nothing was added


def test_changed_host_key_is_refused_loudly(ssh_lab: Any, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    spec = ssh_lab.spec("wn001.lab")
    impostor = ssh_lab.spec("wn002.lab").host_key_pub_line  # a real ed25519 key, just not wn001's
    known.write_text(known_hosts_line(["wn001.lab"], spec.port, impostor) + "\n")
    site = ssh_lab.site(ssh_lab.write_site("changed", {"wn001.lab": spec.port}, known_hosts=known))
    with SessionPool(site, global_known_hosts=()) as pool, pytest.raises(HostKeyChanged) as info:
        pool.session("wn001.lab")
    text = info.value.one_line()
    assert text.startswith(f"wn001.lab: HOST KEY CHANGED for [wn001.lab]:{spec.port}: it offers ssh-ed25519 SHA256:")
    assert f"{known} holds ssh-ed25519" in text
    assert f"ssh-keygen -R '[wn001.lab]:{spec.port}' -f {known}" in text
    assert info.value.outcome == "HOST KEY CHANGED"


def test_hashed_known_hosts_entry_is_accepted(ssh_lab: Any, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    spec = ssh_lab.spec("wn002.lab")
    known.write_text(known_hosts_line(["wn002.lab"], spec.port, spec.host_key_pub_line, hashed=True) + "\n")
    assert "wn002" not in known.read_text()
    site = ssh_lab.site(ssh_lab.write_site("hashed", {"wn002.lab": spec.port}, known_hosts=known))
    with SessionPool(site, global_known_hosts=()) as pool:
        assert pool.session("wn002.lab").run("true").ok


def test_known_hosts_with_cert_authority_and_corrupt_lines_still_reaches_the_wns(ssh_lab: Any, tmp_path: Path) -> None:
    """One @cert-authority or corrupt line (in any file read, the system one too) must not fail every WN."""
    wn1, wn2, wn3 = (ssh_lab.spec(h) for h in HOSTS)
    known = tmp_path / "known_hosts"
    known.write_text(
        f"@cert-authority [127.0.0.1]:{wn2.port} {wn3.host_key_pub_line}\n"
        "corrupt-line\n"
        + known_hosts_line(["127.0.0.1"], wn1.port, wn1.host_key_pub_line)
        + "\n"
        + known_hosts_line(["127.0.0.1"], wn3.port, wn3.host_key_pub_line, hashed=True)
        + "\n"
    )
    system = tmp_path / "ssh_known_hosts"  # stands in for /etc/ssh/ssh_known_hosts, always read
    system.write_text("[127.0.0.1]:1 ssh-ed25519 AAAA!!!\n")
    site = ssh_lab.site(ssh_lab.write_site("ca", {h: ssh_lab.spec(h).port for h in HOSTS}, known_hosts=known))
    seen: list[str] = []
    with warnings_to(seen.append), SessionPool(site, global_known_hosts=(system,)) as pool:
        assert pool.session("wn001.lab").run("true").ok
        assert pool.session("wn003.lab").run("true").ok  # hashed entry
        with pytest.raises(HostKeyUnknown) as info:  # only a CA line covers it: said so, not "unknown" alone
            pool.session("wn002.lab")
    assert f"{known}:1 (@cert-authority) covers [127.0.0.1]:{wn2.port}, but host certificates are not supported" in info.value.one_line()
    assert seen == [
        f"{known}:2: unreadable known_hosts line skipped (expected hosts, key type and key)",
        f"{known}: host certificates (@cert-authority) are not supported, so hosts matching [127.0.0.1]:{wn2.port} (line 1) need a plain key line",
        f"{system}:1: unreadable known_hosts line skipped (key is not valid base64)",
    ]


def test_revoked_host_key_fails_its_host_loudly(ssh_lab: Any, tmp_path: Path) -> None:
    wn1, wn2, wn3 = (ssh_lab.spec(h) for h in HOSTS)
    known = tmp_path / "known_hosts"
    # wn001's key is listed as known and as revoked (revoked wins, as in OpenSSH); wn002 is fine;
    # wn003's key is revoked in the system file only, with no plain entry at all
    known.write_text(
        "".join(known_hosts_line(["127.0.0.1"], s.port, s.host_key_pub_line) + "\n" for s in (wn1, wn2))
        + f"@revoked [127.0.0.1]:{wn1.port} {wn1.host_key_pub_line}\n"
    )
    system = tmp_path / "ssh_known_hosts"
    system.write_text(f"@revoked * {wn3.host_key_pub_line}\n")
    site = ssh_lab.site(ssh_lab.write_site("revoked", {h: ssh_lab.spec(h).port for h in HOSTS}, known_hosts=known))
    with SessionPool(site, global_known_hosts=(system,)) as pool:
        with pytest.raises(HostKeyRevoked) as first:
            pool.session("wn001.lab")
        assert pool.session("wn002.lab").run("true").ok
        with pytest.raises(HostKeyRevoked) as third:
            pool.session("wn003.lab")
    text = first.value.one_line()
    assert text.startswith(f"wn001.lab: HOST KEY REVOKED: [127.0.0.1]:{wn1.port} offers ssh-ed25519 SHA256:")
    assert f"which {known}:3 marks @revoked; refusing to connect" in text
    assert f"which {system}:1 marks @revoked" in third.value.one_line()
    assert first.value.outcome == third.value.outcome == "HOST KEY REVOKED"
    assert first.value.category == "hostkey"


def test_wrong_key_is_auth_failed(ssh_lab: Any, tmp_path: Path) -> None:
    other, _ = make_admin_keypair(tmp_path / "other")
    site = ssh_lab.site(ssh_lab.write_site("auth", {"wn001.lab": ssh_lab.spec("wn001.lab").port}, key_file=other))
    with SessionPool(site, global_known_hosts=()) as pool, pytest.raises(AuthFailed) as info:
        pool.session("wn001.lab")
    assert info.value.message.startswith(f"wn001.lab: authentication failed as {ssh_lab.user}@127.0.0.1:{ssh_lab.spec('wn001.lab').port} (key {other})")
    assert info.value.outcome == "auth failed"


def test_key_file_readable_by_others_is_refused(ssh_lab: Any, tmp_path: Path) -> None:
    loose = tmp_path / "loose_key"
    loose.write_bytes(ssh_lab.key.read_bytes())
    loose.chmod(0o644)
    site = ssh_lab.site(ssh_lab.write_site("loose", {"wn001.lab": ssh_lab.spec("wn001.lab").port}, key_file=loose))
    with pytest.raises(ConfigError, match=r"readable by others \(mode 0644\)"):
        SessionPool(site)


def test_connection_refused(ssh_lab: Any) -> None:
    port = ssh_lab.free_port()
    site = ssh_lab.site(ssh_lab.write_site("refused", {"wn001.lab": port}))
    with SessionPool(site) as pool, pytest.raises(ConnectFailed) as info:
        pool.session("wn001.lab")
    assert info.value.message == f"wn001.lab: connection refused by 127.0.0.1:{port}"
    assert info.value.outcome == "connection refused"


def test_silent_server_times_out(ssh_lab: Any) -> None:
    # the kernel completes the TCP handshake, but nobody ever sends an SSH banner
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        site = ssh_lab.site(ssh_lab.write_site("silent", {"wn001.lab": port}, ssh={"connect_timeout": 0.4}))
        start = time.monotonic()
        with SessionPool(site) as pool, pytest.raises(ConnectFailed) as info:
            pool.session("wn001.lab")
        assert time.monotonic() - start < 2.5
    assert info.value.message.startswith(f"wn001.lab: SSH handshake with {ssh_lab.user}@127.0.0.1:{port} failed")
    assert info.value.outcome == "ssh handshake failed"


def test_dns_failure_names_the_host(ssh_lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # no DNS traffic leaves the machine: the resolver itself is replaced by one that fails
    def no_such_name(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    site = ssh_lab.site(ssh_lab.write_site("dns", {"wn001.lab": 22}, addresses={"wn001.lab": "wn001.nowhere.invalid"}))
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with SessionPool(site) as pool, pytest.raises(ConnectFailed) as info:
        pool.session("wn001.lab")
    assert info.value.message == "wn001.lab: cannot resolve wn001.nowhere.invalid: Name or service not known"
    assert info.value.outcome == "name not resolved"


def test_jump_host(ssh_lab: Any) -> None:
    jump = ssh_lab.spec("wn001.lab")
    target = ssh_lab.spec("wn002.lab")
    nodes = {"wn002.lab": target.port, "wn003.lab": ssh_lab.spec("wn003.lab").port}
    site = ssh_lab.site(ssh_lab.write_site("jump", nodes, ssh={"jump_host": f"{ssh_lab.user}@127.0.0.1:{jump.port}"}))
    procs = {spec.name: proc for spec, proc in zip(ssh_lab.specs, ssh_lab.procs, strict=True)}
    with SessionPool(site) as pool:
        for host in ("wn002.lab", "wn003.lab"):
            result = pool.session(host).run("echo $SSH_CONNECTION")
            client_ip, client_port, server_ip, server_port = result.stdout.split()
            assert (server_ip, int(server_port)) == ("127.0.0.1", ssh_lab.spec(host).port)
            # the TCP connection into the WN's sshd was made by the jump host's sshd, not by us
            chains = ssh_lab.socket_owner_chains(int(client_port))
            assert chains, f"no process holds the client end 127.0.0.1:{client_port}"
            for chain in chains:
                assert chain[0] != os.getpid()
                assert procs["wn001.lab"].pid in chain[1:]


def test_jump_host_down_fails_every_host_with_its_own_line(ssh_lab: Any) -> None:
    port = ssh_lab.free_port()
    site = ssh_lab.site(ssh_lab.write_site("jumpdown", {"wn002.lab": ssh_lab.spec("wn002.lab").port}, ssh={"jump_host": f"127.0.0.1:{port}"}))
    with SessionPool(site) as pool, pytest.raises(ConnectFailed) as info:
        pool.session("wn002.lab")
    assert info.value.message == f"wn002.lab: via jump host 127.0.0.1:{port}: connection refused by 127.0.0.1:{port}"
    assert info.value.outcome == "jump host: connection refused"


def test_ssh_config_alias(ssh_lab: Any, tmp_path: Path) -> None:
    spec = ssh_lab.spec("wn003.lab")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host wn9*.lab\n    HostName 127.0.0.1\n    Port {spec.port}\n    User {ssh_lab.user}\n")
    site_path = ssh_lab.dir / "alias.toml"
    site_path.write_text(
        '[wns]\nhosts = ["wn901.lab"]\n\n[ssh]\n'
        f'user = "nobody-here"\nkey_file = "{ssh_lab.key}"\nknown_hosts = "{ssh_lab.known_hosts}"\nconfig_file = "{config}"\n'
    )
    with SessionPool(ssh_lab.site(site_path)) as pool:
        target = pool.target("wn901.lab")
        assert (target.address, target.port, target.user) == ("127.0.0.1", spec.port, ssh_lab.user)
        assert pool.session("wn901.lab").run("echo $SSH_CONNECTION").stdout.split()[3] == str(spec.port)


def test_put_and_read_file(ssh_lab: Any, tmp_path: Path) -> None:
    target = tmp_path / "aria2c.conf"
    data = b"max-connection-per-server=4\n\x00binary\xff\n"
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn001.lab")
        session.put_file(str(target), data, mode=0o640)
        assert session.read_file(str(target)) == data
    assert target.read_bytes() == data
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aria2c.conf"]  # no temp file left


def test_sftp_client_of_a_session(ssh_lab: Any, tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_bytes(b"x=1\n")
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn001.lab")
        with session.sftp(timeout=5.0) as sftp:
            assert sftp.listdir(str(tmp_path)) == ["a.conf"]
            assert sftp.get_channel() is not None
            assert sftp.get_channel().gettimeout() == 5.0  # type: ignore[union-attr]
            channel = sftp.get_channel()
        assert channel is not None and channel.closed  # closed with the block
        assert session.run("true").ok  # the session itself stays open


@contextlib.contextmanager
def _stalled(pid: int) -> Iterator[None]:
    """The process stopped (as a hung WN would be) for the block, then let go."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_sftp_on_a_stalled_wn_fails_within_the_timeout(ssh_lab: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as handle:
        handle.truncate(4 << 30)  # sparse: far more than can cross in the test's time
    out = tmp_path / "out.bin"
    spec = ssh_lab.spec("wn002.lab")
    site = ssh_lab.site(ssh_lab.write_site("stall", {"wn002.lab": spec.port}, ssh={"command_timeout": 2.0}))
    errors: dict[str, SshError] = {}
    first_chunk = threading.Event()
    stopped = threading.Event()

    def attempt(name: str, step: Callable[[], object]) -> threading.Thread:
        def work() -> None:
            try:
                step()
            except SshError as exc:
                errors[name] = exc

        thread = threading.Thread(target=work, name=name, daemon=True)
        thread.start()
        return thread

    def read_in_chunks(session: Session) -> None:
        with session.sftp() as sftp, sftp.open(str(big), "rb") as handle:
            handle.read(65536)
            first_chunk.set()
            stopped.wait(5.0)
            while handle.read(1 << 20):
                pass

    with SessionPool(site) as pool:
        sessions = {name: pool.connect("wn002.lab") for name in ("sftp", "read_file", "put_file")}
        steps: dict[str, Callable[[], object]] = {
            "sftp": lambda: read_in_chunks(sessions["sftp"]),
            "read_file": lambda: sessions["read_file"].read_file(str(big)),
            "put_file": lambda: sessions["put_file"].put_file(str(out), bytes(1 << 30)),
        }
        # the sshd process serving each connection (the shell's parent) stops mid-transfer
        serving = {name: int(session.run("echo $PPID", remote_kill=False).stdout) for name, session in sessions.items()}
        for name in sessions:
            stopped.clear()
            thread = attempt(name, steps[name])
            if name == "sftp":
                assert first_chunk.wait(5.0)
            else:
                time.sleep(0.5)  # the transfer is under way (it would take far longer than this)
            with _stalled(serving[name]):
                stopped.set()
                started = time.monotonic()
                thread.join(6.0)
                assert not thread.is_alive(), f"{name} on a stalled WN hung"
                assert time.monotonic() - started < 5.0
    stall = "no SFTP answer within 2 s; the WN or its sshd is stalled"
    assert errors["sftp"].one_line() == f"wn002.lab: {stall}"
    # the file steps word it themselves: one line naming the file and the stall
    assert errors["read_file"].one_line().startswith(f"wn002.lab: cannot read {big}: no SFTP answer within")
    assert errors["put_file"].one_line().startswith(f"wn002.lab: cannot write {out}")
    assert "no SFTP answer within" in errors["put_file"].one_line()
    assert all("\n" not in e.one_line() for e in errors.values())
    assert {e.outcome for e in errors.values()} == {"sftp timed out"}


def test_sftp_on_a_wn_stalled_before_the_step_fails_within_the_timeout(ssh_lab: Any) -> None:
    spec = ssh_lab.spec("wn003.lab")
    site = ssh_lab.site(ssh_lab.write_site("stall-early", {"wn003.lab": spec.port}, ssh={"command_timeout": 2.0, "connect_timeout": 2.0}))
    errors: list[SshError] = []

    def step(session: Session) -> None:
        try:
            with session.sftp() as sftp:
                sftp.listdir("/")
        except SshError as exc:
            errors.append(exc)

    with SessionPool(site) as pool:
        session = pool.connect("wn003.lab")
        serving = int(session.run("echo $PPID", remote_kill=False).stdout)
        with _stalled(serving):
            started = time.monotonic()
            thread = threading.Thread(target=step, args=(session,), daemon=True)
            thread.start()
            thread.join(6.0)
            assert not thread.is_alive(), "starting SFTP on a stalled WN hung"
            assert time.monotonic() - started < 5.0
        assert not session.is_active()  # given up: nothing else waits on a wedged connection
    assert [e.one_line() for e in errors] == ["wn003.lab: no answer opening an SSH channel within 2 s; the WN or its sshd is stalled"]
    assert errors[0].outcome == "sftp timed out"


def test_sessions_send_keepalives(ssh_lab: Any) -> None:
    from siteadmin.remote.pool import KEEPALIVE_INTERVAL

    with SessionPool(ssh_lab.site()) as pool:
        packetizer = pool.session("wn001.lab").transport.packetizer
        assert getattr(packetizer, "_Packetizer__keepalive_interval") == KEEPALIVE_INTERVAL > 0  # noqa: B009 - paramiko keeps it private


def test_proxy_command_is_refused_in_one_line_never_ignored(ssh_lab: Any, tmp_path: Path) -> None:
    spec = ssh_lab.spec("wn003.lab")
    ran = tmp_path / "proxy-command-ran"
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host wn9*.lab\n    HostName 127.0.0.1\n    Port {spec.port}\n    ProxyCommand touch {ran}\n\n"
        f"Host wn8*.lab\n    HostName 127.0.0.1\n    Port {spec.port}\n    ProxyCommand none\n"
    )

    def site_with(name: str, extra: str = "") -> Path:
        path: Path = ssh_lab.dir / f"{name}.toml"
        path.write_text(
            '[wns]\nhosts = ["wn901.lab", "wn801.lab"]\n\n[ssh]\n'
            f'user = "{ssh_lab.user}"\nkey_file = "{ssh_lab.key}"\nknown_hosts = "{ssh_lab.known_hosts}"\nconfig_file = "{config}"\n{extra}'
        )
        return path

    with SessionPool(ssh_lab.site(site_with("proxycommand"))) as pool:
        with pytest.raises(SshError) as info:
            pool.session("wn901.lab")
        assert pool.session("wn801.lab").run("true").ok  # "ProxyCommand none" connects directly
    assert info.value.one_line() == (
        f"wn901.lab: ProxyCommand in {config} is not supported, and connecting directly could reach another host; refusing "
        "(use ProxyJump or [ssh] jump_host for a bastion, or 'ProxyCommand none' in a Host block for these WNs)"
    )
    assert info.value.outcome == "ProxyCommand not supported"
    assert not ran.exists()
    # a jump host in site.toml overrides the ssh config's ProxyCommand, as `ssh -J` does
    jump = ssh_lab.spec("wn001.lab")
    with SessionPool(ssh_lab.site(site_with("proxycommand-jump", f'jump_host = "127.0.0.1:{jump.port}"\n'))) as pool:
        assert pool.session("wn901.lab").run("true").ok
    assert not ran.exists()


def test_closed_pool_refuses(ssh_lab: Any) -> None:
    pool = SessionPool(ssh_lab.site())
    session = pool.session("wn001.lab")
    pool.close()
    assert not session.is_active()
    with pytest.raises(SshError, match="^wn001.lab: the session pool is closed$"):
        pool.session("wn001.lab")


def test_passphrase_key_is_refused_with_advice(ssh_lab: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    locked = tmp_path / "locked_key"
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.BestAvailableEncryption(b"not-a-real-secret")
    )
    locked.touch(mode=0o600)
    locked.write_bytes(pem)
    site = ssh_lab.site(ssh_lab.write_site("locked", {"wn001.lab": ssh_lab.spec("wn001.lab").port}, key_file=locked))
    with pytest.raises(ConfigError) as info:
        SessionPool(site)
    assert info.value.message == f"ssh.key_file = {locked}: protected by a passphrase"
    assert info.value.hint == f"load it into ssh-agent (ssh-add {locked}) and leave ssh.key_file empty"


def test_jump_host_key_is_verified_too(ssh_lab: Any, tmp_path: Path) -> None:
    jump, target = ssh_lab.spec("wn001.lab"), ssh_lab.spec("wn002.lab")
    known = tmp_path / "known_hosts"  # trusts the target but not the jump host
    known.write_text(known_hosts_line(["127.0.0.1"], target.port, target.host_key_pub_line) + "\n")
    site = ssh_lab.site(ssh_lab.write_site("jumpkey", {"wn002.lab": target.port}, known_hosts=known, ssh={"jump_host": f"127.0.0.1:{jump.port}"}))
    with SessionPool(site, global_known_hosts=()) as pool, pytest.raises(HostKeyUnknown) as info:
        pool.session("wn002.lab")
    expected = f"wn002.lab: via jump host 127.0.0.1:{jump.port}: host key not in known_hosts {known} (looked up [127.0.0.1]:{jump.port};"
    assert info.value.message.startswith(expected)
    assert info.value.outcome == "jump host: host key unknown"


def test_agent_then_default_keys_when_no_key_file(ssh_lab: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("HOME", str(home))  # no default keys yet
    site = ssh_lab.site(ssh_lab.write_site("agent", {"wn001.lab": ssh_lab.spec("wn001.lab").port}, ssh={"key_file": ""}))
    assert site.ssh.key_file is None
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        # an empty agent and no default keys: refused
        with SessionPool(site, global_known_hosts=()) as pool, pytest.raises(AuthFailed, match="ssh agent and default keys"):
            pool.session("wn001.lab")
        subprocess.run(["ssh-add", "-q", str(ssh_lab.key)], env=env, check=True, capture_output=True)
        with SessionPool(site, global_known_hosts=()) as pool:
            assert pool.session("wn001.lab").run("true").ok
    finally:
        agent.terminate()
        agent.wait(5)
    # no agent, the key as ~/.ssh/id_ed25519
    monkeypatch.delenv("SSH_AUTH_SOCK")
    default = home / ".ssh" / "id_ed25519"
    default.touch(mode=0o600)
    default.write_bytes(ssh_lab.key.read_bytes())
    with SessionPool(site, global_known_hosts=()) as pool:
        assert pool.session("wn001.lab").run("true").ok


def test_wn_down_behind_a_working_jump_host(ssh_lab: Any) -> None:
    jump = ssh_lab.spec("wn001.lab")
    down = ssh_lab.free_port()
    nodes = {"wn002.lab": down, "wn003.lab": ssh_lab.spec("wn003.lab").port}
    site = ssh_lab.site(ssh_lab.write_site("jumpwn", nodes, ssh={"jump_host": f"127.0.0.1:{jump.port}"}))
    with SessionPool(site) as pool:
        with pytest.raises(ConnectFailed) as info:
            pool.session("wn002.lab")
        assert info.value.message == f"wn002.lab: jump host 127.0.0.1:{jump.port} cannot reach 127.0.0.1:{down}: Connect failed"
        assert info.value.outcome == "unreachable from jump host"
        # the shared jump session still carries the others
        assert pool.session("wn003.lab").run("true").ok


def test_connect_to_a_wn_given_directly(ssh_lab: Any) -> None:
    from siteadmin.inventory import WN

    spec = ssh_lab.spec("wn003.lab")
    with SessionPool(ssh_lab.site()) as pool, pool.connect(WN("wn777.lab", "127.0.0.1", spec.port, ())) as session:
        assert session.host == "wn777.lab"
        assert session.run("echo $SSH_CONNECTION").stdout.split()[3] == str(spec.port)


def test_put_file_temp_file_is_private_while_written(ssh_lab: Any, tmp_path: Path) -> None:
    # the sshd is on this machine: watch the target directory while a large secret file is written
    target = tmp_path / "aria2c.conf"
    data = b"rpc-secret=" + os.urandom(24).hex().encode() + b"\n" + b"#" * (48 << 20)
    observed: set[tuple[str, int, int]] = set()  # name, mode, size
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            for entry in os.scandir(tmp_path):
                if entry.name.startswith(".aria2c.conf."):
                    with contextlib.suppress(FileNotFoundError):
                        info = entry.stat(follow_symlinks=False)
                        observed.add((entry.name, stat.S_IMODE(info.st_mode), info.st_size))

    watcher = threading.Thread(target=watch, daemon=True)
    with SessionPool(ssh_lab.site()) as pool:
        session = pool.session("wn001.lab")
        watcher.start()
        try:
            session.put_file(str(target), data, mode=0o644)
        finally:
            done.set()
            watcher.join(5)
    # until the last byte is in, nobody else may read it; the final mode comes just before the rename
    partial = [(name, oct(mode), size) for name, mode, size in observed if size < len(data)]
    assert any(0 < size for _, _, size in partial), f"the temp file was never seen half-written ({len(observed)} observations)"
    assert [row for row in partial if int(row[1], 8) & 0o077] == []
    assert target.read_bytes() == data
    assert oct(stat.S_IMODE(target.stat().st_mode)) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aria2c.conf"]


@pytest.mark.parametrize("path", ["aria2c.conf", "etc/aria2c.conf", "", "/tmp/", "/tmp/.."])
def test_put_file_refuses_a_path_that_is_not_absolute(ssh_lab: Any, path: str) -> None:
    with SessionPool(ssh_lab.site()) as pool, pytest.raises(SshError) as info:
        pool.session("wn001.lab").put_file(path, b"secret\n")
    assert info.value.one_line() == f"wn001.lab: cannot write {path!r}: the path must be absolute and name a file, like /etc/aria2/aria2c.conf"
    assert info.value.outcome == "bad path"
    assert not os.path.exists("/.aria2c.conf") and not any(p.startswith(".aria2c.conf.siteadmin-") for p in os.listdir("/"))


def test_put_file_failure_removes_the_temp_file(ssh_lab: Any, tmp_path: Path) -> None:
    target = tmp_path / "conf.d"
    (target / "keep").mkdir(parents=True)  # a non-empty directory: the rename over it fails
    with SessionPool(ssh_lab.site()) as pool, pytest.raises(SshError) as info:
        pool.session("wn001.lab").put_file(str(target), b"secret\n", mode=0o600)
    assert info.value.one_line().startswith(f"wn001.lab: cannot write {target}: ")
    assert "\n" not in info.value.one_line()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conf.d"]


@pytest.mark.parametrize("server", ["blackhole", "silent"])
def test_closing_the_pool_aborts_connects_in_flight(ssh_lab: Any, server: str) -> None:
    # blackhole: the accept queue is full, so the SYN goes unanswered; silent: accepted, no banner
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        held = [socket.create_connection(("127.0.0.1", port), timeout=2)] if server == "blackhole" else []
        try:
            site = ssh_lab.site(ssh_lab.write_site(f"hang-{server}", {"wn001.lab": port}, ssh={"connect_timeout": 30.0}))
            pool = SessionPool(site)
            errors: list[SshError] = []

            def connect() -> None:
                try:
                    pool.connect("wn001.lab")
                except SshError as exc:
                    errors.append(exc)

            worker = threading.Thread(target=connect)
            worker.start()
            time.sleep(0.5)
            assert worker.is_alive()
            start = time.monotonic()
            pool.close()
            worker.join(5)
            took = time.monotonic() - start
        finally:
            for sock in held:
                sock.close()
    assert not worker.is_alive()
    assert took < 1.0
    assert [(e.one_line(), e.outcome) for e in errors] == [("wn001.lab: the session pool was closed while connecting", "cancelled")]


def test_cancelling_reach_aborts_a_hanging_wn_and_keeps_the_others(ssh_lab: Any) -> None:
    from siteadmin.remote.reach import reach_wns

    with socket.socket() as listener:  # accepts, never sends an SSH banner
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        nodes = {spec.name: spec.port for spec in ssh_lab.specs}
        site = ssh_lab.site(ssh_lab.write_site("reach-cancel", {**nodes, "wn002.lab": port}, ssh={"connect_timeout": 30.0}))
        cancel = threading.Event()
        seen: list[str] = []

        def progress(result: Any) -> None:
            seen.append(result.host)
            if len(seen) == len(nodes) - 1:  # every WN but the hanging one has answered
                cancel.set()

        start = time.monotonic()
        results = reach_wns(site, sorted(nodes), parallelism=8, cancel=cancel, progress=progress)
        took = time.monotonic() - start
    assert took < 5.0
    by_host = {r.host: r for r in results}
    assert by_host["wn002.lab"].outcome == "cancelled"
    assert all(r.ok for host, r in by_host.items() if host != "wn002.lab")
