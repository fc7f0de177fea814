"""The lab's worker nodes: each one an aria2c daemon, supervised by a small service script, and an sshd.

Every WN has its own files under ``wns/<name>/fs/``, laid out as on a real WN:
``etc/aria2/aria2c.conf`` (0600; holds the RPC secret), ``etc/init.d/aria2c`` (the service
script), ``var/lib/aria2/`` (data dir, DHT table, session, pid), ``var/log/aria2/`` and
``root/`` (root's home with a minimal shell rc).

- netns mode (root): each WN runs in its own mount namespace too (``LAUNCHER``): ``fs/etc`` and
  ``fs/var`` are the upper layers of overlays over the host's ``/etc`` and ``/var``, and
  ``fs/root`` is mounted on ``/root``. So inside the WN those files are at the real paths
  (``/etc/aria2/aria2c.conf`` ...), the same on every WN, and nothing is created on the host;
  the mounts live as long as the WN's processes and vanish with them. The launcher starts the
  WN's aria2c with its service script, then becomes the WN's sshd, so everything run over SSH
  (a rollout's restart command) sees the WN's own files.
- loopback mode (no root): the WNs share the host's filesystem, so the same files keep their
  host paths under ``fs/`` and the site config names each WN's ``config_path``.

The RPC secret lives only in the conf file aria2c reads through ``--conf-path``; argv holds no secret.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path, PurePosixPath

from siteadmin.errors import LabError
from siteadmin.secrets import write_private_file

RPC_PORT = 6800
BT_PORT = 6881
CONFIG_PATH = "/etc/aria2/aria2c.conf"
"""Where a WN's aria2c reads its profile (the rollout's ``config_path`` in netns mode)."""
SERVICE_PATH = "/etc/init.d/aria2c"
"""The WN's aria2c service script: ``start|stop|restart|status [CONFIG]``."""
STATE_DIR = "/var/lib/aria2"
LOG_DIR = "/var/log/aria2"
HOME_DIR = "/root"
WN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SHELL_RC = """\
# root's shell rc on a lab WN: minimal on purpose, like a WN's. Nothing here may cost time:
# every command siteadmin runs over SSH reads it.
"""

SERVICE_SCRIPT = r"""#!/bin/sh
# aria2c on a lab WN, supervised without systemd (written by siteadmin lab).
# usage: aria2c start|stop|restart|status [CONFIG]
# CONFIG (default /etc/aria2/aria2c.conf) must end in /etc/aria2/aria2c.conf; what comes before
# it is the WN's root, where the pid file (var/lib/aria2/aria2c.pid) and log (var/log/aria2) live.
# Exit status: 0 done (status: running), 1 failed or not up, 2 usage, 3 not running (status).
CONF=${2:-/etc/aria2/aria2c.conf}
case $CONF in
    */etc/aria2/aria2c.conf) ROOT=${CONF%/etc/aria2/aria2c.conf} ;;
    *) echo "aria2c: $CONF: the config must be <root>/etc/aria2/aria2c.conf" >&2; exit 2 ;;
esac
STATE=$ROOT/var/lib/aria2
PIDFILE=$STATE/aria2c.pid
LOG=$ROOT/var/log/aria2/aria2c.log

alive() {
    [ -r "$PIDFILE" ] || return 1
    pid=$(cat "$PIDFILE" 2>/dev/null)
    case $pid in ''|*[!0-9]*) return 1 ;; esac
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    [ -n "$state" ] && [ "$state" != Z ]
}

running() {
    alive || return 1
    # the pid must still be this WN's aria2c (not a reused pid)
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = aria2c ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "--conf-path=$CONF "
}

listening() {
    port=$(sed -n 's/^rpc-listen-port=//p' "$CONF" | tail -n 1)
    hex=$(printf '%04X' "${port:-6800}")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$2 ~ p"$" && $4 == "0A" { found = 1 } END { exit !found }'
}

start() {
    if running; then echo "aria2c is running (pid $pid)"; return 0; fi
    [ -r "$CONF" ] || { echo "aria2c: cannot read $CONF" >&2; return 1; }
    mkdir -p "$STATE" "${LOG%/*}" || return 1
    home=$ROOT/root
    [ -n "$ROOT" ] || home=/root
    # a subshell, so aria2c is nobody's child once started; its own session, so an SSH session
    # ending or `lab down` signalling a group never hits it by accident
    (
        cd / && env -i HOME="$home" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
            setsid aria2c --conf-path="$CONF" </dev/null >>"$LOG" 2>&1 &
        echo $! >"$PIDFILE"
    )
    i=0
    while [ $i -lt 200 ]; do
        # (until env and setsid have exec'd it, the pid is not yet called aria2c)
        if ! alive; then
            echo "aria2c did not start: $(tail -n 1 "$LOG" 2>/dev/null)" >&2
            return 1
        fi
        if listening && running; then echo "aria2c started (pid $pid)"; return 0; fi
        sleep 0.05
        i=$((i + 1))
    done
    echo "aria2c (pid $pid) does not listen for RPC after 10 s" >&2
    return 1
}

stop() {
    if ! running; then rm -f "$PIDFILE"; echo "aria2c is not running"; return 0; fi
    kill -TERM "$pid" 2>/dev/null
    # aria2c sees SIGTERM on its one-second tick, then saves its session and DHT table
    i=0
    while running && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    if running; then kill -KILL "$pid" 2>/dev/null; sleep 0.1; fi
    rm -f "$PIDFILE"
    echo "aria2c stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    restart) stop >/dev/null && start ;;
    status) if running; then echo "aria2c is running (pid $pid)"; else echo "aria2c is not running"; exit 3; fi ;;
    *) echo "usage: $0 start|stop|restart|status [CONFIG]" >&2; exit 2 ;;
esac
"""

LAUNCHER = r"""set -eu
fs=$1/fs
work=$1/overlay-work
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$fs/etc,workdir=$work/etc" /etc
mount -t overlay overlay -o "lowerdir=/var,upperdir=$fs/var,workdir=$work/var" /var
mount --bind "$fs/root" /root
cd /
/etc/init.d/aria2c start
exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
"""
"""Run by ``ip netns exec NS unshare --mount --propagation private sh -c LAUNCHER sh <wn dir>``:
the WN's mounts, its aria2c, then its sshd (same pid as the launcher) in one mount namespace."""

OVERLAY_UNSAFE = frozenset(",:\\\n")
"""Characters overlayfs options cannot hold in a path."""


@dataclasses.dataclass(frozen=True)
class WNLayout:
    """Where one lab WN lives and listens (stored in lab.json)."""

    name: str
    index: int
    ns: str | None
    address: str
    ssh_port: int
    rpc_port: int
    bt_port: int
    dir: str

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def fs(self) -> Path:
        """The WN's own files, laid out as its ``/`` (``fs/etc/aria2/aria2c.conf`` ...)."""
        return self.path / "fs"

    def host_path(self, wn_path: str) -> Path:
        """Where a WN-side path (``/etc/aria2/aria2c.conf``, ``/var/lib/aria2/...``) is on the host.

        Raises:
            LabError: for a path outside what the WN keeps of its own (/etc, /var, /root).
        """
        pure = PurePosixPath(wn_path)
        if not pure.is_absolute() or pure.parts[1:2] not in (("etc",), ("var",), ("root",)) or ".." in pure.parts:
            raise LabError(f"{self.name}: {wn_path}: not a file the WN keeps of its own (/etc, /var, /root)")
        return self.fs / Path(*pure.parts[1:])

    def seen_path(self, wn_path: str, *, loopback: bool) -> str:
        """A WN-side path as siteadmin must name it: the path itself in netns mode, its host path in loopback mode."""
        return str(self.host_path(wn_path)) if loopback else wn_path


def wn_name(index: int) -> str:
    return f"wn{index:03d}.lab"


SITE_OPTIONS: dict[str, str] = {
    "enable-dht": "true",
    "enable-peer-exchange": "true",
    "bt-enable-lpd": "true",
    "bt-lpd-interface": "eth0",
    "seed-ratio": "0.0",
    "file-allocation": "none",
    "disable-ipv6": "true",
    "console-log-level": "warn",
    "summary-interval": "0",
    "show-console-readout": "false",
}
"""aria2c options every lab WN shares: the site layer of the lab's profile in site.toml."""


def node_options(wn: WNLayout, *, loopback: bool) -> dict[str, str]:
    """The host layer of one lab WN's profile (``[wns.nodes."<wn>"] aria2c`` in site.toml)."""
    options = {
        "dir": wn.seen_path(f"{STATE_DIR}/data", loopback=loopback),
        "dht-file-path": wn.seen_path(f"{STATE_DIR}/dht.dat", loopback=loopback),
        "save-session": wn.seen_path(f"{STATE_DIR}/aria2c.session", loopback=loopback),
        "listen-port": str(wn.bt_port),
        "dht-listen-port": str(wn.bt_port),
    }
    if loopback:
        # every WN shares the host's loopback: own RPC port, sockets bound to the WN's 127.x
        # address, and no multicast on the host's real network
        options.update({"rpc-listen-port": str(wn.rpc_port), "interface": wn.address, "bt-enable-lpd": "false"})
    return options


def config_path(wn: WNLayout, *, loopback: bool) -> str:
    """The path of the WN's aria2c config as siteadmin names it (the rollout's target)."""
    return wn.seen_path(CONFIG_PATH, loopback=loopback)


def service_command(wn: WNLayout, action: str, lab_service: Path | None) -> list[str]:
    """argv running the WN's service script with ``action``: in loopback mode the lab's one
    script (``lab_service``) told the WN's config path, else the WN's own ``SERVICE_PATH``."""
    if lab_service is not None:
        return ["sh", str(lab_service), action, config_path(wn, loopback=True)]
    return [SERVICE_PATH, action]


def restart_command(lab_service: Path | None) -> str:
    """``[rollout] restart_command`` of the lab: the service script, per WN through ``{config_path}`` in loopback mode."""
    if lab_service is None:
        return f"{SERVICE_PATH} restart"
    return f"sh {shlex.quote(str(lab_service))} restart {{config_path}}"


def prepare(wn: WNLayout, conf_text: str, *, authorized_keys: Path, loopback: bool) -> None:
    """Lay out the WN's own files: its 0600 conf (as ``siteadmin render`` made it), the service
    script, fresh state and log folders (no stale DHT table), root's home with a minimal rc.

    Raises:
        LabError: for a lab directory overlayfs cannot mount (a comma, colon or backslash in it).
    """
    if not loopback and OVERLAY_UNSAFE & set(str(wn.path)):
        raise LabError(f"{wn.path}: a lab directory for netns mode must not hold , : or \\ (overlay mounts)")
    for folder in (f"{STATE_DIR}/data", LOG_DIR, "/etc/aria2", "/etc/init.d", "/etc/ssh", f"{HOME_DIR}/.ssh"):
        wn.host_path(folder).mkdir(parents=True, exist_ok=True)
    for folder in ("etc", "var"):
        (wn.path / "overlay-work" / folder).mkdir(parents=True, exist_ok=True)
    wn.host_path(f"{STATE_DIR}/dht.dat").unlink(missing_ok=True)  # stale DHT peers slow a fresh lab down
    write_private_file(wn.host_path(CONFIG_PATH), conf_text)
    if not loopback:  # loopback WNs share the lab's one script (they share the host's filesystem)
        service = wn.host_path(SERVICE_PATH)
        service.write_text(SERVICE_SCRIPT)
        service.chmod(0o755)
    for folder in ("etc", "var"):
        (wn.fs / folder).chmod(0o755)  # the upper layer's folder lends its mode to the WN's /etc and /var
    home = wn.host_path(HOME_DIR)
    home.chmod(0o700)
    for rc in (".bashrc", ".profile"):
        (home / rc).write_text(SHELL_RC)
    (home / ".ssh" / "authorized_keys").write_text(authorized_keys.read_text())


def launcher_argv(wn: WNLayout) -> list[str]:
    """argv (to run inside the WN's network namespace) of the WN's launcher, see ``LAUNCHER``."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", LAUNCHER, "sh", str(wn.path)]


LAUNCH_ENV = {"HOME": HOME_DIR, "PATH": WN_PATH, "LANG": "C.UTF-8"}
"""The environment a WN's launcher (and so its aria2c and sshd) starts with: nothing of the caller's."""
