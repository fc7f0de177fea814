"""``Lab``: bring a whole local site up, check it, and take it down again without leftovers.

State lives in ``<lab dir>/lab.json`` (mode, tag, subnet, namespaces, links, processes by pid
and start time, ports, package facts); ``status`` and ``down`` work from it, and ``up`` first
cleans whatever an earlier run left, from lab.json and by name tag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from siteadmin.aria2conf import render
from siteadmin.errors import LabError, SiteadminError
from siteadmin.inventory import fold
from siteadmin.lab import bencode, central, health, netns, proc, sitefile, wns
from siteadmin.lab.central import CentralLayout
from siteadmin.lab.health import HealthCheck
from siteadmin.lab.netns import MAX_WNS, Topology
from siteadmin.lab.wns import WNLayout
from siteadmin.secrets import generate_secret, read_secret_file, write_secret_file
from siteadmin.site import Site, load_site

STATE_FILE = "lab.json"
SITE_FILE = "site.toml"
CACHE_DIR = "cache"
MADE_ENTRIES = (STATE_FILE, SITE_FILE, "audit.jsonl", "cern", "wns", "ssh", "secrets")
"""What ``down`` removes from the lab dir (the package cache stays)."""
DEFAULT_PACKAGE_MB = 32
LAB_PROCESS_FOLDERS = ("cern", "wns")
"""Lab dir folders every lab process names in its command line (configs, data, chroot)."""

NETNS_PORTS = {"ldap": 389, "ldaps": 636, "tracker": 8088, "seeder": 8092, "seeder_rpc": 6800, "http": 8080}


@dataclasses.dataclass(frozen=True)
class LabStatus:
    """Every check of a lab; healthy when all passed."""

    checks: list[HealthCheck]

    @property
    def healthy(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self) -> list[HealthCheck]:
        return [c for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "checks": [dataclasses.asdict(c) for c in self.checks]}

    def text(self) -> str:
        """Human summary: one line per component and outcome, WNs folded (``wn[001-004].lab: ok``)."""
        lines = []
        order: list[str] = []
        groups: dict[tuple[str, bool, str], list[str]] = {}
        for check in self.checks:
            wn_like = check.target.endswith(".lab")
            detail = "" if (check.ok and wn_like) else check.detail
            key = (check.component, check.ok, detail)
            if key not in groups:
                groups[key] = []
                order.append(check.component)
            groups[key].append(check.target)
        for component in dict.fromkeys(order):
            for (comp, ok, detail), targets in groups.items():
                if comp != component:
                    continue
                wn_targets = [t for t in targets if t.endswith(".lab")]
                shown = fold(wn_targets) if wn_targets else ", ".join(targets)
                lines.append(f"{comp:8} {shown}: {'ok' if ok else 'FAILED'}" + (f" - {detail}" if detail else ""))
        lines.append("healthy" if self.healthy else f"UNHEALTHY: {len(self.failed())} of {len(self.checks)} checks failed")
        return "\n".join(lines)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class Lab:
    """A local lab site in one directory.

    Args:
        lab_dir: where the lab keeps its state, configs, logs and package cache.
        mode: "netns" (root only), "loopback", or None for netns when root else loopback.
        cache_dir: where generated packages are kept across runs (default ``<lab_dir>/cache``).
    """

    def __init__(self, lab_dir: str | os.PathLike[str], mode: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(lab_dir).absolute()
        self.cache_dir = Path(cache_dir).absolute() if cache_dir is not None else self.dir / CACHE_DIR
        if mode not in (None, "netns", "loopback"):
            raise LabError(f"lab mode {mode!r}: must be netns or loopback")
        self.requested_mode = mode
        self.tag = netns.lab_tag(self.dir)
        self._state: dict[str, Any] | None = None
        self._site: Site | None = None

    # ------------------------------------------------------------ state and handles

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def site_path(self) -> Path:
        return self.dir / SITE_FILE

    @property
    def state(self) -> dict[str, Any]:
        """lab.json of the running lab.

        Raises:
            LabError: when there is no lab in the directory.
        """
        if self._state is None:
            try:
                self._state = json.loads(self.state_path.read_text())
            except FileNotFoundError:
                raise LabError(f"no lab in {self.dir}", f"start one with `siteadmin lab up --dir {self.dir}`") from None
            except (OSError, ValueError) as exc:
                raise LabError(f"{self.state_path}: unreadable lab state: {exc}") from None
        return self._state

    def _save(self) -> None:
        if self._state is not None:
            _write_json(self.state_path, self._state)

    @property
    def site(self) -> Site:
        """The lab's site.toml, loaded (and cached until the next up or down)."""
        if self._site is None:
            self._site = load_site(self.site_path)
        return self._site

    @property
    def mode(self) -> str:
        return str(self.state["mode"])

    @property
    def topology(self) -> Topology:
        s = self.state
        return Topology(mode=s["mode"], tag=s["tag"], subnet=s["subnet"], wns=len(s["wn_list"]), lans=int(s.get("lans", 1)))

    @property
    def wn_layouts(self) -> list[WNLayout]:
        return [WNLayout(**wn) for wn in self.state["wn_list"]]

    @property
    def wn_names(self) -> list[str]:
        return [wn.name for wn in self.wn_layouts]

    @property
    def namespaces(self) -> list[str]:
        return list(self.state["namespaces"])

    @property
    def outside_target(self) -> str | None:
        """``root@<cern address>`` when the lab runs an sshd in cern (``up(outside_ssh=True)``), else None."""
        outside = self.state.get("outside")
        return f"{self.state['ssh']['user']}@{outside['host']}" if outside else None

    @property
    def router_ns(self) -> str | None:
        return self.topology.router_ns if self.mode == "netns" else None

    @property
    def cern_ns(self) -> str | None:
        return self.topology.cern_ns if self.mode == "netns" else None

    def wn(self, name: str) -> WNLayout:
        for wn in self.wn_layouts:
            if wn.name == name:
                return wn
        raise LabError(f"{name}: not a WN of this lab", f"WNs: {fold(self.wn_names)}")

    def wn_ns(self, name: str) -> str | None:
        return self.wn(name).ns

    @property
    def processes(self) -> list[proc.ProcRecord]:
        return [proc.ProcRecord(**p) for p in self.state["processes"]]

    def rpc_secret(self) -> str:
        return read_secret_file(Path(self.state["rpc_secret_file"]), "aria2c RPC secret")

    def rpc(self, name: str, method: str, params: list[Any] | None = None) -> Any:
        """Call an aria2c RPC method on a WN (from inside its namespace)."""
        wn = self.wn(name)
        return health.rpc_call(wn.ns, wn.rpc_port, self.rpc_secret(), method, params)

    def apply_nft(self, ns: str, ruleset_text: str) -> None:
        """Load nftables rules into a lab namespace (netns mode only)."""
        self._own_ns(ns)
        netns.apply_nft(ns, ruleset_text)

    def flush_nft(self, ns: str) -> None:
        """Remove every nftables rule of a lab namespace."""
        self._own_ns(ns)
        netns.flush_nft(ns)

    def cut_cern(self, wns: Iterable[str] = (), *, allow_tcp_ports: Iterable[int] = ()) -> None:
        """Cut WNs (all of the LAN when none are named) off from cern in the router, both ways.

        Tracker, seeder, LDAP and HTTP become unreachable for them, except new connections to
        ``allow_tcp_ports`` on cern (e.g. the HTTP port). Replaces an earlier cut; the rules live
        in their own table, so other rules in the router stay. Undo with ``flush_nft`` on the
        router. Netns mode only.
        """
        router = self._router()
        sources = [self.wn(name).address for name in wns]
        netns.apply_nft(router, netns.cern_cut_ruleset(self.topology, sources, list(allow_tcp_ports)))

    def _router(self) -> str:
        router = self.router_ns
        if router is None:
            raise LabError("cutting cern off needs a netns-mode lab", "run the lab as root")
        return router

    def exec_in(self, ns: str | None, argv: list[str], input_text: str | None = None) -> Any:
        """Run a command inside a lab namespace (or here for None); output captured."""
        if ns is not None:
            self._own_ns(ns)
        return netns.run_in(ns, argv, input_text=input_text)

    def _own_ns(self, ns: str) -> None:
        if ns not in self.namespaces:
            raise LabError(f"{ns}: not a namespace of this lab", f"namespaces: {', '.join(self.namespaces) or 'none (loopback mode)'}")

    # ------------------------------------------------------------ up

    def up(
        self, wns: int = 4, *, package_mb: int = DEFAULT_PACKAGE_MB, timeout: float = 60.0, lans: int = 1, outside_ssh: bool = False
    ) -> dict[str, float]:
        """Start the whole lab; clean what an earlier run left first.

        Args:
            wns: number of worker nodes (1-200).
            package_mb: size of the generated package (cached per size in ``<dir>/cache``).
            timeout: seconds every component gets to answer.
            lans: WN subnets behind the router (netns mode; 1-4): WNs are split over them in order.
            outside_ssh: also run an sshd in the cern namespace (netns mode), trusted in the lab's
                known_hosts: a host outside the site for ``siteadmin check --outside``
                (``outside_target``).

        Returns:
            Wall times of the phases, seconds ("total" among them).

        Raises:
            LabError: bad arguments, a tool missing, or a component that did not come up
                (everything started is stopped again; logs stay in the lab dir).
        """
        if not 1 <= wns <= MAX_WNS:
            raise LabError(f"--wns {wns}: must be 1-{MAX_WNS}")
        if not 1 <= package_mb <= 4096:
            raise LabError(f"package size {package_mb} MB: must be 1-4096")
        if not 1 <= lans <= min(4, wns):
            raise LabError(f"lans {lans}: must be 1-4 and at most the number of WNs")
        mode = self.requested_mode or ("netns" if health.is_root() else "loopback")
        if mode == "netns" and not health.is_root():
            raise LabError("netns mode needs root", "run as root or use loopback mode")
        for tool in ("aria2c", "opentracker", "mktorrent", "slapd", "ssh", "ip"):
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
                raise LabError(f"{tool} not found", "install aria2 opentracker mktorrent slapd openssh-client iproute2")
        started = time.monotonic()
        times: dict[str, float] = {}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise LabError(f"--dir {self.dir}: not a writable directory ({exc.strerror})") from None
        self._cleanup(remove_files=False)
        times["cleanup"] = time.monotonic() - started
        try:
            self._up(mode, wns, package_mb, timeout, times, lans=lans, outside_ssh=outside_ssh)
        except BaseException:
            with contextlib.suppress(Exception):
                self._cleanup(remove_files=False)
            raise
        times["total"] = time.monotonic() - started
        self.state["timings"] = {k: round(v, 3) for k, v in times.items()}
        self._save()
        return times

    def _up(self, mode: str, n_wns: int, package_mb: int, timeout: float, times: dict[str, float], *, lans: int = 1,
            outside_ssh: bool = False) -> None:
        from siteadmin.lab import sshd
        from siteadmin.lab.slapd import prepare_slapd

        t0 = time.monotonic()
        loopback = mode == "loopback"
        subnet = netns.loopback_subnet(self.tag) if loopback else netns.choose_subnet(self.tag)
        if loopback and (lans > 1 or outside_ssh):
            raise LabError("several WN subnets and an outside sshd need a netns-mode lab", "run the lab as root")
        topo = Topology(mode=mode, tag=self.tag, subnet=subnet, wns=n_wns, lans=lans)
        for entry in MADE_ENTRIES[3:]:
            shutil.rmtree(self.dir / entry, ignore_errors=True)
        cern_dir = self.dir / "cern"
        cern_dir.mkdir(parents=True)
        ports = dict(NETNS_PORTS)
        if loopback:
            ports = {key: netns.free_port() for key in NETNS_PORTS}
        layout = CentralLayout(host=topo.cern_addr, tracker_port=ports["tracker"], seeder_port=ports["seeder"],
                               seeder_rpc_port=ports["seeder_rpc"], http_port=ports["http"], dir=cern_dir)
        wn_list = []
        for i in range(1, n_wns + 1):
            wn_list.append(WNLayout(
                name=wns.wn_name(i), index=i, ns=None if loopback else topo.wn_ns(i), address=topo.wn_addr(i),
                ssh_port=netns.free_port() if loopback else 22,
                rpc_port=netns.free_port() if loopback else wns.RPC_PORT,
                bt_port=netns.free_port() if loopback else wns.BT_PORT,
                dir=str(self.dir / "wns" / wns.wn_name(i)),
            ))
        self._state = {
            "version": 1, "dir": str(self.dir), "mode": mode, "tag": self.tag, "subnet": subnet, "lans": lans,
            "namespaces": topo.namespaces, "links": [topo.vobox_if] if not loopback else [],
            "routes": [subnet] if not loopback else [], "processes": [], "ports": ports,
            "central": {"host": layout.host, "tracker_port": layout.tracker_port, "seeder_port": layout.seeder_port,
                        "seeder_rpc_port": layout.seeder_rpc_port, "http_port": layout.http_port},
            "wn_list": [dataclasses.asdict(wn) for wn in wn_list],
            "started": time.time(),
        }
        self._save()

        # ---- prepare everything in parallel: network, package, LDAP, keys, WN configs
        secrets_dir = self.dir / "secrets"
        rpc_secret_file = secrets_dir / "aria2c-rpc-secret"
        write_secret_file(rpc_secret_file, generate_secret())
        rpc_secret = read_secret_file(rpc_secret_file)
        self.state["rpc_secret_file"] = str(rpc_secret_file)
        ssh_dir = self.dir / "ssh"
        key, pub = sshd.make_admin_keypair(ssh_dir)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(pub.read_text())
        ssh_user = "root" if health.is_root() else getpass.getuser()

        with ThreadPoolExecutor(max_workers=8) as pool:
            net_f = pool.submit(netns.build, topo) if not loopback else None
            pkg_f = pool.submit(self._package, layout, package_mb)
            ldap_f = pool.submit(
                prepare_slapd, cern_dir / "ldap", site_name=sitefile.SITE_NAME, listen_host=layout.host,
                ldap_port=ports["ldap"], ldaps_port=ports["ldaps"], server_names=[layout.host],
            )
            ssh_fs = [
                # loopback: sshd's files in the WN dir; netns: the WN's own /etc/ssh and /root/.ssh, as on a site
                pool.submit(sshd.prepare_sshd, wn.path / "ssh", name=wn.name, listen_host=wn.address, port=wn.ssh_port,
                            authorized_keys=authorized, check=(wn.index == 1))
                if loopback else
                pool.submit(sshd.prepare_sshd, wn.host_path("/etc/ssh"), name=wn.name, listen_host=wn.address, port=wn.ssh_port,
                            authorized_keys=wn.host_path(f"{wns.HOME_DIR}/.ssh/authorized_keys"), seen_from=wn.fs)
                for wn in wn_list
            ]
            if net_f is not None:
                net_f.result()
            package, torrent, package_facts = pkg_f.result()
            ldap = ldap_f.result()
            ssh_specs = [f.result() for f in ssh_fs]
        outside_spec = None
        if outside_ssh:
            outside_spec = sshd.prepare_sshd(cern_dir / "ssh", name="cern", listen_host=topo.cern_addr, port=22, authorized_keys=authorized)
            self.state["outside"] = {"host": topo.cern_addr, "port": 22}
        self.state["package"] = package_facts
        known_hosts = ssh_dir / "known_hosts"
        sshd.write_known_hosts(known_hosts, [*ssh_specs, *([outside_spec] if outside_spec is not None else [])])
        self.state["ssh"] = {"user": ssh_user, "key_file": str(key), "known_hosts": str(known_hosts)}
        self.state["ldap"] = {
            "ldaps_url": ldap.ldaps_url, "ldap_url": ldap.ldap_url, "ca_file": str(ldap.ca_file), "base": ldap.base,
            "admin_dn": ldap.admin_dn, "admin_password_file": str(ldap.admin_password_file),
            "reader_dn": ldap.reader_dn, "reader_password_file": str(ldap.reader_password_file),
        }

        # ---- the site config, then each WN's aria2c conf rendered from it exactly as `siteadmin render` does
        service_script = None
        if loopback:
            # the WNs share the host's filesystem: one service script for all, told each WN's config path
            service_script = self.dir / "wns" / "aria2c-service"
            service_script.parent.mkdir(parents=True, exist_ok=True)
            service_script.write_text(wns.SERVICE_SCRIPT)
            service_script.chmod(0o755)
        facts = sitefile.SiteFacts(
            ldaps_url=ldap.ldaps_url, ca_file=ldap.ca_file, bind_dn=ldap.admin_dn, password_file=ldap.admin_password_file,
            base=ldap.base, tracker_host=layout.host, tracker_port=layout.tracker_port, seeder_host=layout.host,
            seeder_port=layout.seeder_port, http_fallback=layout.http_base, wns=wn_list, ssh_user=ssh_user, ssh_key=key,
            known_hosts=known_hosts, rpc_secret_file=rpc_secret_file, rpc_port=wns.RPC_PORT if not loopback else wn_list[0].rpc_port,
            loopback=loopback, restart_command=wns.restart_command(service_script),
        )
        self.site_path.write_text(sitefile.site_toml_text(facts, self.dir))
        self._site = None
        site = load_site(self.site_path)
        for wn in wn_list:
            wns.prepare(wn, render(site, wn.name, create_secret=False).text, authorized_keys=authorized, loopback=loopback)
        self.state["service_script"] = str(service_script) if service_script is not None else None
        times["prepare"] = time.monotonic() - t0

        # ---- start every process, then wait for all of them at once
        t1 = time.monotonic()
        cern_ns = None if loopback else topo.cern_ns
        records: list[proc.ProcRecord] = []

        def start(name: str, argv: Iterable[str], log: Path, ns: str | None, env: dict[str, str] | None = None) -> proc.ProcRecord:
            record = proc.spawn(name, list(argv), log=log, env=env, netns=ns)
            records.append(record)
            return record

        try:
            slapd_rec = start("slapd", ldap.argv, cern_dir / "slapd.log", cern_ns)
            start("tracker", central.tracker_argv(layout), cern_dir / "tracker.log", cern_ns)
            start("http", central.http_argv(layout), cern_dir / "http.log", cern_ns)
            seeder_conf = central.seeder_conf(layout, package, loopback)
            seeder_env = {"HOME": str(cern_dir), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
            start("seeder", central.seeder_argv(seeder_conf, torrent), cern_dir / "seeder.log", cern_ns, seeder_env)
            if outside_spec is not None:
                start("sshd cern", outside_spec.argv, cern_dir / "sshd.log", cern_ns)
            for wn, spec in zip(wn_list, ssh_specs, strict=True):
                if loopback:
                    start(f"sshd {wn.name}", spec.argv, wn.path / "sshd.log", None)
                else:
                    # one launcher per WN: its mount namespace, its aria2c (service script), then its sshd
                    start(f"sshd {wn.name}", wns.launcher_argv(wn), wn.path / "sshd.log", wn.ns, wns.LAUNCH_ENV)
            if loopback:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(lambda wn: self._service(wn, "start"), wn_list))
        finally:
            self.state["processes"] = [dataclasses.asdict(r) for r in records]
            self._save()
        times["spawn"] = time.monotonic() - t1

        t2 = time.monotonic()
        waits: list[tuple[str, Callable[[], bool]]] = [
            ("slapd", lambda: _quiet(lambda: ldap.wait_ready(0.0))),
            ("tracker", lambda: _quiet(lambda: _tracker_answers(layout, package_facts["infohash"]))),
            ("http", lambda: _quiet(lambda: health.http_request(None, layout.host, layout.http_port, "/", timeout=1.0)[0] == 200)),
            ("seeder", lambda: health.check_seeder(None, layout.host, layout.tracker_port, package_facts["infohash"]).ok),
        ]
        if outside_spec is not None:
            waits.append(("sshd cern", _banner(topo.cern_addr, 22)))
        for wn in wn_list:
            waits.append((f"sshd {wn.name}", _banner(wn.address, wn.ssh_port)))
            waits.append((f"aria2c {wn.name}", _rpc_ready(wn, rpc_secret)))
        try:
            _wait_all(waits, records, timeout)
        finally:
            # aria2c was started by each WN's service script: remember it by the pid the script wrote
            for wn in wn_list:
                record = _service_record(wn)
                if record is not None:
                    records.append(record)
            self.state["processes"] = [dataclasses.asdict(r) for r in records]
            self._save()
        del slapd_rec
        times["ready"] = time.monotonic() - t2

        self._save()

    def _service(self, wn: WNLayout, action: str) -> str:
        """Run a WN's aria2c service script (start, stop, restart, status) as the WN would.

        Returns:
            What the script printed.

        Raises:
            LabError: the script failed (its message; for ``status``, aria2c not running).
        """
        script = self.state.get("service_script")
        argv = wns.service_command(wn, action, Path(script) if script else None)
        done = self.wn_exec(wn.name, argv, timeout=30.0)
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
            raise LabError(f"{wn.name}: aria2c {action}: {why}")
        return str(done.stdout)

    def aria2c_service(self, name: str, action: str) -> str:
        """Run WN ``name``'s aria2c service script with ``action`` (start, stop, restart, status) on that WN.

        Returns:
            What the script printed.

        Raises:
            LabError: the script failed.
        """
        return self._service(self.wn(name), action)

    def aria2c_pid(self, name: str) -> int | None:
        """The pid of WN ``name``'s aria2c as its service script recorded it, None when it is not running."""
        record = _service_record(self.wn(name))
        return record.pid if record is not None and proc.alive(record) else None

    def wn_exec(self, name: str, argv: list[str], *, input_text: str | None = None, timeout: float = 30.0) -> Any:
        """Run a command on WN ``name`` as its sshd would: in its network and mount namespaces
        (netns mode; the WN's /etc, /var and /root), or here (loopback mode). Output captured.

        Raises:
            LabError: when the WN's sshd (whose namespaces the command enters) is not running.
        """
        wn = self.wn(name)
        if wn.ns is None:
            return netns.run_in(None, argv, input_text=input_text, timeout=timeout)
        record = next((r for r in self.processes if r.name == f"sshd {name}"), None)
        if record is None or not proc.alive(record):
            raise LabError(f"{name}: its sshd is not running", "run `siteadmin lab up` again")
        full = ["nsenter", f"--target={record.pid}", "--mount", "--net", "--", "env", "-i", *(f"{k}={v}" for k, v in wns.LAUNCH_ENV.items()), *argv]
        return netns.run_in(None, full, input_text=input_text, timeout=timeout)

    def _package(self, layout: CentralLayout, package_mb: int) -> tuple[Path, Path, dict[str, Any]]:
        package = central.make_package(self.cache_dir, package_mb)
        torrent = central.make_torrent(package, layout.dir / (package.name + ".torrent"), layout.announce)
        central.publish(layout, package, torrent)
        facts = {
            "path": str(package), "name": package.name, "size": package.stat().st_size, "sha1": central.sha1_file(package),
            "torrent": str(torrent), "torrent_name": torrent.name, "infohash": central.infohash(torrent),
        }
        return package, torrent, facts

    # ------------------------------------------------------------ status

    def status(self) -> LabStatus:
        """Check every component for real (see ``siteadmin.lab.health``).

        Raises:
            LabError: when there is no lab in the directory.
        """
        s = self.state
        if "ldap" not in s or "package" not in s:
            raise LabError(f"the lab in {self.dir} never finished starting", "run `siteadmin lab up` again")
        ldap, pkg, c = s["ldap"], s["package"], s["central"]
        checks = [health.check_ldap(ldap["ldaps_url"], Path(ldap["ca_file"]), ldap["reader_dn"], Path(ldap["reader_password_file"]), ldap["base"])]
        try:
            secret = self.rpc_secret()
        except LabError as exc:
            secret = ""
            checks.append(HealthCheck("rpc", "secret", False, exc.message))
        wn_list = self.wn_layouts

        def guarded(component: str, target: str, check: Callable[..., HealthCheck], *args: Any) -> HealthCheck:
            # a namespace deleted by hand fails that one check, not the whole status
            try:
                return check(*args)
            except SiteadminError as exc:
                return HealthCheck(component, target, False, exc.one_line())

        with ThreadPoolExecutor(max_workers=min(32, 4 + 2 * len(wn_list))) as pool:
            futures: list[Future[HealthCheck]] = []
            futures += [pool.submit(guarded, "tracker", wn.name, health.check_announce, wn.name, wn.ns, c["host"], c["tracker_port"],
                                    pkg["infohash"], wn.bt_port, pkg["size"])
                        for wn in wn_list]
            futures.append(pool.submit(guarded, "seeder", c["host"], health.check_seeder, None, c["host"], c["tracker_port"], pkg["infohash"]))
            first = wn_list[0]
            futures.append(pool.submit(guarded, "http", first.name, health.check_http, first.ns, c["host"], c["http_port"], pkg["name"],
                                       pkg["size"], pkg["sha1"], first.name))
            try:
                checks += health.check_wns_over_ssh(self.site, wn_list, secret)
            except SiteadminError as exc:
                checks.append(HealthCheck("ssh", "site", False, exc.one_line()))
            checks += [f.result() for f in futures]
        return LabStatus(checks)

    # ------------------------------------------------------------ down

    def down(self) -> float:
        """Stop every lab process, remove namespaces, links, routes and files (the package cache stays).

        Returns:
            Seconds it took.

        Raises:
            LabError: when something could not be removed.
        """
        started = time.monotonic()
        self._cleanup(remove_files=True)
        return time.monotonic() - started

    def _cleanup(self, *, remove_files: bool) -> None:
        state: dict[str, Any] = {}
        with contextlib.suppress(LabError):
            state = self.state
        records = [proc.ProcRecord(**p) for p in state.get("processes", [])]
        namespaces = list(state.get("namespaces", []))
        found_ns, found_links = netns.leftovers(self.tag) if health.is_root() else ([], [])
        all_ns = sorted(set(namespaces) | set(found_ns))
        stray = set(netns.namespace_pids(all_ns))
        if state.get("mode") != "netns":
            # loopback labs run in this namespace; and with no lab.json, what ran is unknown. Look
            # for lab programs working in this lab's own folders (not a nested lab, not an admin's tools)
            stray |= set(proc.pids_mentioning(*(f"{self.dir}/{folder}/" for folder in LAB_PROCESS_FOLDERS)))
        stray -= {r.pid for r in records}
        left = proc.stop(records) + [proc.ProcRecord("stray", p, 0, [], "") for p in proc.stop_pids(stray)]
        if left:
            raise LabError(f"could not stop pids {', '.join(str(r.pid) for r in left)}")
        if health.is_root():
            netns.destroy(self.tag, state.get("subnet"), all_ns, list(state.get("links", [])) + found_links)
            still_ns, still_links = netns.leftovers(self.tag)
            if still_ns or still_links:
                raise LabError(f"could not remove {', '.join(still_ns + still_links)}")
        self._state = None
        self._site = None
        if remove_files:
            for entry in MADE_ENTRIES:
                path = self.dir / entry
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        else:
            self.state_path.unlink(missing_ok=True)


def _service_record(wn: WNLayout) -> proc.ProcRecord | None:
    """The WN's aria2c as a process record, from the pid file its service script keeps."""
    pid_file = wn.host_path(f"{wns.STATE_DIR}/aria2c.pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return proc.record_of(f"aria2c {wn.name}", pid, log=wn.host_path(f"{wns.LOG_DIR}/aria2c.log"))


def _quiet(fn: Callable[[], object]) -> bool:
    try:
        return bool(fn())
    except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
        return False


def _banner(host: str, port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            return sock.recv(64).startswith(b"SSH-")

    return lambda: _quiet(probe)


def _tracker_answers(layout: CentralLayout, infohash_hex: str) -> bool:
    path = "/scrape?info_hash=" + health.quote(bytes.fromhex(infohash_hex))
    status, data = health.http_request(None, layout.host, layout.tracker_port, path, timeout=1.0)
    return status == 200 and isinstance(bencode.decode(data), dict)


def _rpc_ready(wn: WNLayout, secret: str) -> Callable[[], bool]:
    return lambda: _quiet(lambda: health.rpc_call(wn.ns, wn.rpc_port, secret, "aria2.getVersion", timeout=1.0))


def _wait_all(waits: list[tuple[str, Callable[[], bool]]], records: list[proc.ProcRecord], timeout: float) -> None:
    """Poll every readiness probe in parallel until all pass; fail fast when a process died.

    Raises:
        LabError: naming the first component that exited or did not answer in time.
    """
    deadline = time.monotonic() + timeout
    pending = dict(waits)
    by_name = {r.name: r for r in records}
    with ThreadPoolExecutor(max_workers=16) as pool:
        while pending:
            for name in list(pending):
                record = by_name.get(name)
                reason = proc.exited_early(record) if record is not None else None
                if reason:
                    raise LabError(reason)
            results = dict(zip(pending, pool.map(lambda fn: fn(), pending.values()), strict=True))
            pending = {name: fn for name, fn in pending.items() if not results[name]}
            if not pending:
                return
            if time.monotonic() > deadline:
                names = fold(n.split()[-1] for n in pending if n.endswith(".lab"))
                others = [n for n in pending if not n.endswith(".lab")]
                raise LabError(f"not ready after {timeout:g} s: {', '.join(others + ([names] if names else []))}")
            time.sleep(0.05)
