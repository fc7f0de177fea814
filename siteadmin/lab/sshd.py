"""The lab's sshd component: one private OpenSSH server per lab WN.

Preparing and running are separate so the lab can run the argv wherever it likes (inside
``ip netns exec NS`` as root, or straight on loopback in tests):

- ``make_admin_keypair(dir)`` makes the ed25519 key the admin (siteadmin) logs in with;
- ``prepare_sshd(workdir, ...)`` writes a WN's own host key and sshd_config and returns an
  ``SshdSpec`` whose ``argv`` runs sshd in the foreground, logging to stderr;
- ``write_known_hosts(path, specs)`` writes the known_hosts the admin side verifies against;
- ``start_sshd``/``wait_ready``/``stop_sshd`` run a spec as a child process (loopback use).

The config reads nothing from /etc/ssh: no PAM, no DNS, public keys only, root may log in by key,
keys come from the lab's own authorized_keys file. As root the privilege-separation directory
/run/sshd must exist (``prepare_sshd`` creates it). As non-root sshd still runs on an
unprivileged port, with PAM (see ``prepare_sshd``), and only the user running it can log in.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from siteadmin.errors import LabError

SSHD = "/usr/sbin/sshd"
"""sshd must be started by absolute path (it re-executes itself)."""

PRIVSEP_DIR = Path("/run/sshd")
"""Privilege-separation chroot directory sshd insists on when run as root."""


@dataclasses.dataclass(frozen=True)
class SshdSpec:
    """Everything needed to run one lab WN's sshd and to trust it.

    ``argv`` runs sshd in the foreground (``-D``) with its log on stderr (``-e``); prefix it
    with ``ip netns exec NS`` to run it in a namespace.
    """

    name: str
    """The WN name this sshd stands for (e.g. ``wn001.lab``)."""
    argv: tuple[str, ...]
    host: str
    """Address sshd listens on."""
    port: int
    host_key_pub_line: str
    """The host's public key as ``ssh-ed25519 AAAA...`` (no comment)."""
    config_path: Path
    host_key_path: Path
    pid_path: Path
    log_path: Path
    """Where ``start_sshd`` sends sshd's stderr."""
    workdir: Path


# ---------------------------------------------------------------- keys


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key with mode 0600 from its first byte (refuses to overwrite)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _new_ed25519(private_path: Path, comment: str) -> str:
    """Make an ed25519 key pair in OpenSSH format; returns the public line ``ssh-ed25519 AAAA...``."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    private_path.unlink(missing_ok=True)
    _write_private(private_path, private)
    pub_path = private_path.with_name(private_path.name + ".pub")
    pub_path.write_text(f"{public} {comment}\n", encoding="ascii")
    return public


def make_admin_keypair(dir: Path, name: str = "admin_ed25519") -> tuple[Path, Path]:  # noqa: A002 - the brief's name
    """Make the admin's ed25519 key pair in ``dir``.

    Returns:
        (private key path, public key path); the private file is 0600 from creation.
    """
    dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    private = dir / name
    _new_ed25519(private, "siteadmin-lab-admin")
    return private, private.with_name(private.name + ".pub")


# ---------------------------------------------------------------- preparing


def _arg(path: Path) -> str:
    """A path as one sshd_config argument: quoted when it holds blanks.

    Raises:
        LabError: for a path sshd_config cannot express (quotes, newlines).
    """
    text = str(path)
    if any(c in text for c in '"\n\r\0'):
        raise LabError(f"{text!r}: sshd_config cannot hold a path with quotes or newlines")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def _config_text(*, listen_host: str, port: int, host_key: Path, authorized_keys: Path, pid_path: Path, log_level: str, use_pam: bool) -> str:
    lines = [
        "# written by siteadmin.lab.sshd; reads nothing from /etc/ssh",
        f"ListenAddress {listen_host}",
        f"Port {port}",
        "AddressFamily any",
        f"HostKey {_arg(host_key)}",
        f"PidFile {_arg(pid_path)}",
        f"AuthorizedKeysFile {_arg(authorized_keys)}",
        "AuthorizedPrincipalsFile none",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        f"UsePAM {'yes' if use_pam else 'no'}",
        "UseDNS no",
        "PermitRootLogin prohibit-password",
        # lab files live in temp dirs that StrictModes would reject
        "StrictModes no",
        "AllowTcpForwarding yes",
        "AllowStreamLocalForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "PermitUserEnvironment no",
        "PrintMotd no",
        "PrintLastLog no",
        # the admin fans out to many WNs, and through a jump WN many channels at once
        "MaxStartups 200:30:400",
        "MaxSessions 100",
        "LoginGraceTime 30",
        "Subsystem sftp internal-sftp",
        f"LogLevel {log_level}",
    ]
    return "\n".join(lines) + "\n"


def _ensure_privsep_dir() -> None:
    if os.geteuid() != 0 or PRIVSEP_DIR.is_dir():
        return
    try:
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create sshd's privilege-separation directory {PRIVSEP_DIR}: {exc.strerror}") from None


def prepare_sshd(
    workdir: Path,
    *,
    name: str,
    listen_host: str,
    port: int,
    authorized_keys: Path,
    log_level: str = "VERBOSE",
    check: bool = True,
    use_pam: bool | None = None,
    seen_from: Path | None = None,
) -> SshdSpec:
    """Write one WN's host key and sshd_config under ``workdir`` and say how to run it.

    Args:
        workdir: the WN's own directory (created if needed); holds key, config, pid and log.
        name: the WN name, used for the host key comment and in messages.
        listen_host: address to listen on (127.0.0.1 on loopback, the WN's address in a netns).
        port: TCP port to listen on.
        authorized_keys: the lab's authorized_keys file (absolute or made absolute here).
        log_level: sshd LogLevel (VERBOSE logs each key accepted).
        check: run ``sshd -t`` on the result so a bad config fails here, not at start.
        use_pam: None decides by who runs it: no PAM as root; PAM as non-root, because an
            unprivileged sshd without PAM cannot read /etc/shadow and refuses every account as
            "locked" (measured on Debian 12); with PAM only the user running sshd can log in.
        seen_from: the host folder that is ``/`` for this sshd (a lab WN's own files, mounted in
            its mount namespace): ``workdir`` and ``authorized_keys`` must lie inside it, and the
            config names them as the WN sees them (``/etc/ssh/...``), so it reads nothing of the
            lab directory once running. ``check`` is skipped then (the paths exist only inside).

    Returns:
        The frozen ``SshdSpec``.

    Raises:
        LabError: sshd missing, /run/sshd not creatable, or the config refused by ``sshd -t``.
    """
    if not Path(SSHD).is_file():
        raise LabError(f"{SSHD} not found", "install openssh-server")
    workdir = workdir.absolute()
    for path in (workdir, authorized_keys.absolute()):
        _arg(path)  # refuse paths sshd_config cannot hold before writing anything
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _ensure_privsep_dir()

    def seen(path: Path) -> Path:
        if seen_from is None:
            return path
        try:
            return Path("/") / path.absolute().relative_to(seen_from.absolute())
        except ValueError:
            raise LabError(f"{name}: {path} is not inside {seen_from}") from None

    host_key = workdir / "ssh_host_ed25519_key"
    pub_line = _new_ed25519(host_key, f"root@{name}")
    config_path = workdir / "sshd_config"
    pid_path = workdir / "sshd.pid"
    config_path.write_text(
        _config_text(
            listen_host=listen_host,
            port=port,
            host_key=seen(host_key),
            authorized_keys=seen(authorized_keys.absolute()),
            pid_path=seen(pid_path),
            log_level=log_level,
            use_pam=os.geteuid() != 0 if use_pam is None else use_pam,
        ),
        encoding="utf-8",
    )
    spec = SshdSpec(
        name=name,
        argv=(SSHD, "-D", "-e", "-f", str(seen(config_path))),
        host=listen_host,
        port=port,
        host_key_pub_line=pub_line,
        config_path=config_path,
        host_key_path=host_key,
        pid_path=pid_path,
        log_path=workdir / "sshd.log",
        workdir=workdir,
    )
    if check and seen_from is None:
        check_sshd_config(spec)
    return spec


def check_sshd_config(spec: SshdSpec) -> None:
    """Run ``sshd -t`` on a spec's config.

    Raises:
        LabError: with sshd's own complaint when it refuses the config.
    """
    proc = subprocess.run([SSHD, "-t", "-f", str(spec.config_path)], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise LabError(f"{spec.name}: sshd refuses {spec.config_path}: {why}")


def known_hosts_pattern(host: str, port: int) -> str:
    """The known_hosts host field OpenSSH uses: ``host`` on port 22, else ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_line(names: Iterable[str], port: int, key_line: str, *, hashed: bool = False) -> str:
    """One known_hosts line (no newline) for several names of the same host.

    Hashed lines get one line per name (OpenSSH's hashed form holds a single name).
    """
    patterns = [known_hosts_pattern(n, port) for n in dict.fromkeys(names)]
    if not hashed:
        return f"{','.join(patterns)} {key_line}"
    from paramiko.hostkeys import HostKeys

    return "\n".join(f"{HostKeys.hash_host(p)} {key_line}" for p in patterns)


def write_known_hosts(path: Path, specs: Iterable[SshdSpec], *, hashed: bool = False, include_names: bool = False) -> None:
    """Write a known_hosts file trusting the host key of each spec.

    Args:
        path: the file to (over)write.
        specs: the sshds to trust, each under ``[host]:port`` (plain ``host`` on port 22).
        hashed: write OpenSSH's hashed form (``|1|salt|hash``) instead of plain names.
        include_names: also list the WN name (``[wn001.lab]:port``) for each spec.
    """
    lines = []
    for spec in specs:
        names = [spec.host, spec.name] if include_names else [spec.host]
        lines.append(known_hosts_line(names, spec.port, spec.host_key_pub_line, hashed=hashed))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")


# ---------------------------------------------------------------- running (loopback)


def start_sshd(spec: SshdSpec, *, ready_timeout: float | None = 10.0) -> subprocess.Popen[bytes]:
    """Start a spec's sshd as a child process, stderr to ``spec.log_path``.

    Args:
        spec: what ``prepare_sshd`` returned.
        ready_timeout: wait this long for the SSH banner; None returns at once.

    Raises:
        LabError: sshd exited or did not answer in time (the message quotes its log).
    """
    with spec.log_path.open("ab") as log:
        proc = subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    if ready_timeout is None:
        return proc
    try:
        wait_ready(spec.host, spec.port, ready_timeout, proc=proc)
    except LabError as exc:
        stop_sshd(proc)
        tail = _log_tail(spec.log_path)
        raise LabError(f"{spec.name}: {exc.message}" + (f"; sshd says: {tail}" if tail else "")) from None
    return proc


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def wait_ready(host: str, port: int, timeout: float, *, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll until an SSH server on host:port sends its banner.

    Returns:
        Seconds it took.

    Raises:
        LabError: the banner did not come within ``timeout`` or ``proc`` exited first.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise LabError(f"sshd on {host}:{port} exited with status {proc.returncode}")
        try:
            # short attempts, so a dead sshd (``proc``) is noticed even if something else holds the port
            with socket.create_connection((host, port), timeout=min(0.25, max(0.05, deadline - time.monotonic()))) as sock:
                if sock.recv(256).startswith(b"SSH-"):
                    return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise LabError(f"no SSH banner from {host}:{port} within {timeout:g} s")
        time.sleep(0.01)


def stop_sshd(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop an sshd: SIGTERM, then SIGKILL after ``timeout`` (idempotent).

    When sshd leads its own process group (``start_sshd`` starts it so) the whole group is
    signalled, so the per-connection monitors go too and logged-in sessions end.
    """
    if proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()


def sshd_available() -> bool:
    """Whether this machine has an sshd binary the lab can run."""
    return Path(SSHD).is_file()
