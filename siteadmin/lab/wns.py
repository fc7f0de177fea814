"""The lab's worker nodes: each one an aria2c daemon (and an sshd from ``siteadmin.lab.sshd``).

Every WN gets its own directory (``wns/<name>/``) used as HOME, data dir, DHT file and session
file, so nothing lands in the real home. The RPC secret lives only in the 0600 conf file that
aria2c reads through ``--conf-path``; argv holds no secret.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from siteadmin.lab.central import write_private_file

RPC_PORT = 6800
BT_PORT = 6881


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


def wn_name(index: int) -> str:
    return f"wn{index:03d}.lab"


SITE_OPTIONS: dict[str, str] = {
    "enable-dht": "true",
    "enable-peer-exchange": "true",
    "bt-enable-lpd": "true",
    "bt-lpd-interface": "eth0",
    "seed-ratio": "0.0",
    "file-allocation": "none",
}
"""aria2c options every lab WN shares (also written to site.toml's [aria2c] options)."""


def wn_conf_text(wn: WNLayout, rpc_secret: str, *, loopback: bool) -> str:
    """The aria2c.conf of one lab WN (the one place the lab renders WN configs)."""
    options = dict(SITE_OPTIONS)
    options.update({
        "disable-ipv6": "true",
        "dir": str(wn.path / "data"),
        "enable-rpc": "true",
        "rpc-listen-all": "false",
        "rpc-listen-port": str(wn.rpc_port),
        "rpc-secret": rpc_secret,
        "listen-port": str(wn.bt_port),
        "dht-listen-port": str(wn.bt_port),
        "dht-file-path": str(wn.path / "dht.dat"),
        "save-session": str(wn.path / "aria2c.session"),
        "console-log-level": "warn",
        "summary-interval": "0",
        "show-console-readout": "false",
    })
    if loopback:
        # no multicast on the host's real network; bind sockets to the WN's own 127.x address
        options["bt-enable-lpd"] = "false"
        del options["bt-lpd-interface"]
        options["interface"] = wn.address
    return "".join(f"{key}={value}\n" for key, value in options.items())


def prepare_aria2c(wn: WNLayout, rpc_secret: str, *, loopback: bool) -> tuple[list[str], dict[str, str]]:
    """Write the WN's 0600 conf (fresh DHT state) and return (argv, environment) to run aria2c."""
    (wn.path / "data").mkdir(parents=True, exist_ok=True)
    (wn.path / "dht.dat").unlink(missing_ok=True)  # stale DHT peers slow a fresh lab down
    conf = wn.path / "aria2c.conf"
    write_private_file(conf, wn_conf_text(wn, rpc_secret, loopback=loopback))
    env = {"HOME": str(wn.path), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return ["aria2c", f"--conf-path={conf}"], env
