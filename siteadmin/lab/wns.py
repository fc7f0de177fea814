"""The lab's worker nodes: each one an aria2c daemon (and an sshd from ``siteadmin.lab.sshd``).

Every WN gets its own directory (``wns/<name>/``) used as HOME, data dir, DHT file and session
file, so nothing lands in the real home. The RPC secret lives only in the 0600 conf file that
aria2c reads through ``--conf-path``; argv holds no secret.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from siteadmin.secrets import write_private_file

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
    "disable-ipv6": "true",
    "console-log-level": "warn",
    "summary-interval": "0",
    "show-console-readout": "false",
}
"""aria2c options every lab WN shares: the site layer of the lab's profile in site.toml."""


def node_options(wn: WNLayout, *, loopback: bool) -> dict[str, str]:
    """The host layer of one lab WN's profile (``[wns.nodes."<wn>"] aria2c`` in site.toml)."""
    options = {
        "dir": str(wn.path / "data"),
        "dht-file-path": str(wn.path / "dht.dat"),
        "save-session": str(wn.path / "aria2c.session"),
        "listen-port": str(wn.bt_port),
        "dht-listen-port": str(wn.bt_port),
    }
    if loopback:
        # every WN shares the host's loopback: own RPC port, sockets bound to the WN's 127.x
        # address, and no multicast on the host's real network
        options.update({"rpc-listen-port": str(wn.rpc_port), "interface": wn.address, "bt-enable-lpd": "false"})
    return options


def prepare_aria2c(wn: WNLayout, conf_text: str) -> tuple[list[str], dict[str, str]]:
    """Write the WN's 0600 conf (as ``siteadmin render`` made it; fresh DHT state) and return (argv, environment)."""
    (wn.path / "data").mkdir(parents=True, exist_ok=True)
    (wn.path / "dht.dat").unlink(missing_ok=True)  # stale DHT peers slow a fresh lab down
    conf = wn.path / "aria2c.conf"
    write_private_file(conf, conf_text)
    env = {"HOME": str(wn.path), "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return ["aria2c", f"--conf-path={conf}"], env
