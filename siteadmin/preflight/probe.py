"""The preflight probe: one script in the Python standard library alone, run on a WN (or on the
host outside the site) to test the network paths torrent mode needs.

The VoBox sends this file over SSH to ``python3 -`` (the ``[ssh] python`` key) with one line
appended that calls ``main(plan)``; nothing is installed on the WN and nothing is left behind.
It must run on the python3 of the oldest WNs still in service: Python 3.6 and later, with no
third-party module (the quality tests check the floor with vermin and run it under a real 3.6).

Three modes, chosen by ``plan["mode"]``; each writes JSON to standard output:

- ``facts``: interfaces and their IPv4 addresses, the default-route interface, the interface
  and source address the kernel uses for the LPD group (a route for 224.0.0.0/4), the sockets
  listening on the ports asked about (from /proc/net, with the program holding each), and the
  central checks: TCP to the tracker and the seeder (refused, timed out and name-lookup failure
  told apart), then an HTTP announce answered with a bencoded reply and a BitTorrent handshake.
- ``respond``: binds a TCP listener and a UDP socket on every port of the plan that is free
  (a port another program such as aria2c holds is reported as held, never taken), joins the LPD
  group, prints ``READY {json}``, then accepts TCP connections, echoes UDP probes back to their
  sender and reports each LPD announce it hears as ``HEARD <source> <infohash>``. It writes a
  heartbeat line four times a second and ends when that write fails (the VoBox closed the channel),
  at the plan's deadline, or on SIGTERM (after answering what already arrived), whichever comes first.
- ``probe``: for each target, TCP connects and UDP probes over the given ports, paced at
  ``rate`` packets per second. A UDP port is ``open`` only when the answer carries this probe's
  nonce (the responder's echo, or aria2c's DHT answering a ping with our transaction id);
  otherwise it is ``filtered`` after the retries: never guessed. A TCP port is ``open``
  (connection accepted), ``refused`` (reset: a REJECT rule, or nothing listening),
  ``unreachable`` (an ICMP error) or ``filtered`` (no answer within the timeout). It also sends
  LPD announces as aria2 does (239.192.152.143:6771, IPv4, TTL 1, BT-SEARCH).
"""

import errno
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

MAGIC = b"SAPF1 "
"""First bytes of a UDP probe; the responder echoes only datagrams that start with them."""
LPD_GROUP = "239.192.152.143"
LPD_PORT = 6771
BT_PROTOCOL = b"\x13BitTorrent protocol"
HEARTBEAT = 0.25
"""Seconds between the responder's heartbeat lines: it notices a closed channel this soon."""


def _now() -> float:
    return time.monotonic()


# ---------------------------------------------------------------- bencoding (answers only)


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value (byte strings stay bytes); ValueError when malformed."""

    def one(pos: int) -> Tuple[Any, int]:
        kind = data[pos : pos + 1]
        if kind == b"i":
            end = data.index(b"e", pos)
            return int(data[pos + 1 : end]), end + 1
        if kind == b"l":
            pos += 1
            items = []
            while data[pos : pos + 1] != b"e":
                item, pos = one(pos)
                items.append(item)
            return items, pos + 1
        if kind == b"d":
            pos += 1
            table = {}
            while data[pos : pos + 1] != b"e":
                key, pos = one(pos)
                table[key], pos = one(pos)
            return table, pos + 1
        if kind.isdigit():
            colon = data.index(b":", pos)
            length = int(data[pos:colon])
            if colon + 1 + length > len(data):
                raise ValueError("short string")
            return data[colon + 1 : colon + 1 + length], colon + 1 + length
        raise ValueError("bad bencoding at byte %d" % pos)

    try:
        value, end = one(0)
    except (IndexError, ValueError) as exc:
        raise ValueError("not bencoded: %s" % exc) from None
    if end != len(data):
        raise ValueError("trailing data after the bencoded value")
    return value


def dht_ping(tid: bytes, node_id: bytes) -> bytes:
    """A KRPC ping query (BEP 5) with transaction id ``tid``."""
    return b"d1:ad2:id20:" + node_id + b"e1:q4:ping1:t" + str(len(tid)).encode() + b":" + tid + b"1:y1:qe"


def is_dht_answer(data: bytes, tid: bytes) -> bool:
    """Whether ``data`` is a KRPC reply (or error) to the query with transaction id ``tid``."""
    try:
        answer = bdecode(data)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get(b"t") == tid and answer.get(b"y") in (b"r", b"e")


def handshake(info_hash: bytes, peer_id: bytes) -> bytes:
    """A BitTorrent handshake (BEP 3)."""
    return BT_PROTOCOL + b"\x00" * 8 + info_hash + peer_id


def lpd_announce(port: int, infohash_hex: str) -> bytes:
    """An LPD announce (BEP 14) as aria2 sends it."""
    text = "BT-SEARCH * HTTP/1.1\r\nHost: %s:%d\r\nPort: %d\r\nInfohash: %s\r\n\r\n\r\n" % (LPD_GROUP, LPD_PORT, port, infohash_hex)
    return text.encode("ascii")


def parse_lpd(data: bytes) -> Optional[Tuple[int, List[str]]]:
    """(port, infohashes) of an LPD announce, or None when ``data`` is not one."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if not lines or not lines[0].startswith("BT-SEARCH * HTTP/1."):
        return None
    port = -1
    hashes = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "port" and value.strip().isdigit():
            port = int(value.strip())
        elif name == "infohash":
            hashes.append(value.strip().lower())
    return port, hashes


# ---------------------------------------------------------------- local facts


def ipv4_interfaces() -> List[Dict[str, Any]]:
    """[{"name", "addrs": ["10.0.0.5/24", ...]}] from ``ip -o -4 addr show`` (names only without ``ip``)."""
    try:
        proc = subprocess.Popen(["ip", "-o", "-4", "addr", "show"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out, _ = proc.communicate(timeout=10)
    except (OSError, subprocess.SubprocessError):
        return [{"name": name, "addrs": []} for _, name in socket.if_nameindex()]
    table: Dict[str, List[str]] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[2] != "inet":
            continue
        table.setdefault(fields[1].split("@", 1)[0], []).append(fields[3])
    return [{"name": name, "addrs": addrs} for name, addrs in table.items()]


def default_route_interface() -> Optional[str]:
    """The interface of the IPv4 default route (/proc/net/route), or None."""
    try:
        with open("/proc/net/route") as handle:
            rows = handle.read().splitlines()[1:]
    except OSError:
        return None
    for row in rows:
        fields = row.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def route_source(address: str) -> Optional[str]:
    """The source address the kernel picks to send to ``address`` (None: no route)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((address, LPD_PORT))
        return str(sock.getsockname()[0])
    except OSError:
        return None
    finally:
        sock.close()


def interface_of(source: Optional[str], interfaces: List[Dict[str, Any]]) -> Optional[str]:
    if source is None:
        return None
    for item in interfaces:
        if any(addr.split("/")[0] == source for addr in item["addrs"]):
            return str(item["name"])
    return None


def _proc_sockets(port_set: List[int]) -> List[Dict[str, Any]]:
    """Listening TCP and bound UDP sockets on the given ports, from /proc/net/{tcp,udp}{,6}."""
    wanted = set(port_set)
    found = []  # type: List[Dict[str, Any]]
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/" + proto) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10:
                continue
            local, state, inode = fields[1], fields[3], fields[9]
            addr_hex, _, port_hex = local.partition(":")
            port = int(port_hex, 16)
            if port not in wanted:
                continue
            if proto.startswith("tcp") and state != "0A":  # LISTEN
                continue
            if proto.startswith("udp") and state != "07":  # unconnected
                continue
            found.append({"proto": proto[:3], "addr": _hex_addr(addr_hex), "port": port, "inode": inode, "program": ""})
    if found:
        names = _socket_owners({s["inode"] for s in found})
        for item in found:
            item["program"] = names.get(item["inode"], "")
    return found


def _hex_addr(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _socket_owners(inodes: Any) -> Dict[str, str]:
    """socket inode -> program name, for the processes we may look into."""
    owners: Dict[str, str] = {}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return owners
    for pid in pids:
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                try:
                    with open("/proc/%s/comm" % pid) as handle:
                        owners[link[8:-1]] = handle.read().strip()
                except OSError:
                    owners[link[8:-1]] = "?"
    return owners


# ---------------------------------------------------------------- central services


def tcp_verdict(host: str, port: int, timeout: float) -> Tuple[str, str, Optional[socket.socket]]:
    """("ok"|"refused"|"timeout"|"name"|"unreachable"|"error", detail, connected socket or None)."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return "name", "name lookup of %s failed: %s" % (host, exc.strerror or exc), None
    last = ("error", "no address for %s" % host, None)  # type: Tuple[str, str, Optional[socket.socket]]
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return "ok", "connected to %s port %d" % (address[0], port), sock
        except socket.timeout:
            last = ("timeout", "no answer from %s port %d within %g s" % (address[0], port, timeout), None)
        except ConnectionRefusedError:
            last = ("refused", "%s port %d refused the connection" % (address[0], port), None)
        except OSError as exc:
            kind_name = "unreachable" if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH) else "error"
            last = (kind_name, "%s port %d: %s" % (address[0], port, exc.strerror or exc), None)
        sock.close()
    return last


def _quote(raw: bytes) -> str:
    safe = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(chr(b) if b in safe else "%%%02X" % b for b in raw)


def check_tracker(host: str, port: int, timeout: float) -> Dict[str, Any]:
    """TCP to the tracker, then an HTTP announce whose answer must be a bencoded dictionary."""
    tcp, detail, sock = tcp_verdict(host, port, timeout)
    result = {"service": "tracker", "host": host, "port": port, "tcp": tcp, "detail": detail, "protocol": "not tried"}
    if sock is None:
        return result
    sock.close()
    info_hash = os.urandom(20)
    peer_id = b"-SP0001-" + os.urandom(6).hex().encode()
    path = "/announce?info_hash=%s&peer_id=%s&port=6881&uploaded=0&downloaded=0&left=0&compact=1&numwant=0&event=stopped" % (
        _quote(info_hash),
        _quote(peer_id),
    )
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read(65536)
    except (OSError, http.client.HTTPException) as exc:
        result.update(protocol="failed", detail="announce sent, no HTTP answer: %s" % (exc or type(exc).__name__))
        return result
    finally:
        conn.close()
    try:
        answer = bdecode(body)
    except ValueError:
        result.update(protocol="failed", detail="HTTP %d answer to the announce is not bencoded" % response.status)
        return result
    if not isinstance(answer, dict):
        result.update(protocol="failed", detail="HTTP %d answer to the announce is not a bencoded dictionary" % response.status)
        return result
    said = answer.get(b"failure reason")
    note = " (it says: %s)" % said.decode("utf-8", "replace")[:80] if isinstance(said, bytes) else ""
    result.update(protocol="ok", detail="announce answered with a bencoded reply%s" % note)
    return result


def check_seeder(host: str, port: int, timeout: float, info_hash: Optional[bytes]) -> Dict[str, Any]:
    """TCP to the seeder, then a BitTorrent handshake: answered, or read and the connection closed."""
    tcp, detail, sock = tcp_verdict(host, port, timeout)
    result = {"service": "seeder", "host": host, "port": port, "tcp": tcp, "detail": detail, "protocol": "not tried"}
    if sock is None:
        return result
    try:
        sock.settimeout(timeout)
        sock.sendall(handshake(info_hash or os.urandom(20), b"-SP0001-" + os.urandom(6).hex().encode()))
        reply = b""
        while len(reply) < 20:
            block = sock.recv(68)
            if not block:
                break
            reply += block
    except socket.timeout:
        result.update(protocol="failed", detail="handshake sent, no answer within %g s" % timeout)
        return result
    except OSError as exc:
        if isinstance(exc, ConnectionResetError):
            reply = b""
        else:
            result.update(protocol="failed", detail="handshake: %s" % (exc.strerror or exc))
            return result
    finally:
        sock.close()
    if reply.startswith(BT_PROTOCOL):
        result.update(protocol="ok", detail="the seeder answered the BitTorrent handshake")
    elif not reply:
        # a BitTorrent peer reads the handshake and hangs up on a torrent it does not seed
        result.update(protocol="ok", detail="the seeder read the handshake and closed (not a torrent it seeds)")
    else:
        result.update(protocol="failed", detail="the answer to the handshake is not BitTorrent")
    return result


# ---------------------------------------------------------------- modes


def facts(plan: Dict[str, Any]) -> Dict[str, Any]:
    interfaces = ipv4_interfaces()
    source = route_source(LPD_GROUP)
    out = {
        "python": sys.version.split()[0],
        "interfaces": [i for i in interfaces if i["name"] != "lo"],
        "default_if": default_route_interface(),
        "mcast_source": source,
        "mcast_if": interface_of(source, interfaces),
        "listening": _proc_sockets(list(plan.get("ports", []))),
        "central": [],
    }  # type: Dict[str, Any]
    timeout = float(plan.get("timeout", 3.0))
    for item in plan.get("central", []):
        if item["service"] == "tracker":
            out["central"].append(check_tracker(item["host"], int(item["port"]), timeout))
        else:
            raw = item.get("info_hash")
            out["central"].append(check_seeder(item["host"], int(item["port"]), timeout, bytes.fromhex(raw) if raw else None))
    return out


def _say(line: str) -> bool:
    """Write one line to standard output; False when nobody reads it any more."""
    try:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        return False


def _raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit of open files towards ``wanted`` (within the hard one); the limit now."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        return wanted if soft == resource.RLIM_INFINITY else int(soft)
    except (ImportError, ValueError, OSError):
        return 256


def respond(plan: Dict[str, Any]) -> int:
    tcp_ports = [int(p) for p in plan.get("tcp", [])]
    udp_ports = [int(p) for p in plan.get("udp", [])]
    _raise_fd_limit(len(tcp_ports) + len(udp_ports) + 64)
    listeners: Dict[int, socket.socket] = {}
    echoes: Dict[int, socket.socket] = {}
    held_tcp = []  # type: List[int]
    held_udp = []  # type: List[int]
    errors = []  # type: List[str]
    for port in tcp_ports:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            errors.append("tcp %d: %s" % (port, exc.strerror or exc))
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", port))
            sock.listen(128)
            sock.setblocking(False)
            listeners[sock.fileno()] = sock
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                held_tcp.append(port)
            else:
                errors.append("tcp %d: %s" % (port, exc.strerror or exc))
    for port in udp_ports:
        # no SO_REUSEADDR: a port aria2c's DHT holds must fail here, never be shared
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            errors.append("udp %d: %s" % (port, exc.strerror or exc))
            continue
        try:
            sock.bind(("", port))
            sock.setblocking(False)
            echoes[sock.fileno()] = sock
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                held_udp.append(port)
            else:
                errors.append("udp %d: %s" % (port, exc.strerror or exc))
    lpd = None  # type: Optional[socket.socket]
    lpd_state = "off"
    token = str(plan.get("token", ""))
    if plan.get("lpd"):
        try:
            lpd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            lpd.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lpd.bind(("", LPD_PORT))
            local = plan.get("lpd_addr") or "0.0.0.0"  # noqa: S104 - INADDR_ANY: the kernel picks the interface, as aria2 does
            lpd.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(LPD_GROUP) + socket.inet_aton(local))
            lpd.setblocking(False)
            lpd_state = "listening"
        except OSError as exc:
            if lpd is not None:
                lpd.close()
            lpd = None
            lpd_state = "cannot listen: %s" % (exc.strerror or exc)
    ready = {"held_tcp": held_tcp, "held_udp": held_udp, "errors": errors, "lpd": lpd_state, "pid": os.getpid()}
    if not _say("READY " + json.dumps(ready)):
        return 0
    deadline = _now() + float(plan.get("lifetime", 120.0))
    beat = _now() + HEARTBEAT
    readable = list(listeners.values()) + list(echoes.values()) + ([lpd] if lpd is not None else [])
    stopping = []  # type: List[int]

    def stop(signum: int, frame: Any) -> None:
        stopping.append(signum)

    # SIGTERM from the VoBox: answer what already arrived (late LPD announces included), then end
    signal.signal(signal.SIGTERM, stop)

    def serve(sock: socket.socket) -> bool:
        fileno = sock.fileno()
        try:
            if fileno in listeners:
                conn, _ = sock.accept()
                conn.close()
            elif fileno in echoes:
                data, source = sock.recvfrom(2048)
                if data.startswith(MAGIC):
                    sock.sendto(data, source)
            else:
                data, source = sock.recvfrom(2048)
                parsed = parse_lpd(data)
                if parsed is not None:
                    for infohash in parsed[1]:
                        if token and infohash.startswith(token) and not _say("HEARD %s %s" % (source[0], infohash)):
                            return False
        except OSError:
            pass
        return True

    while _now() < deadline and not stopping:
        try:
            ready_now, _, _ = select.select(readable, [], [], 0.25)
        except InterruptedError:
            continue
        for sock in ready_now:
            if not serve(sock):
                return 0
        if _now() >= beat:
            beat = _now() + HEARTBEAT
            if not _say("."):
                return 0  # the VoBox closed the channel: stop now
    while stopping:
        try:
            ready_now, _, _ = select.select(readable, [], [], 0.0)
        except InterruptedError:
            continue
        if not ready_now:
            break
        for sock in ready_now:
            if not serve(sock):
                return 0
    _say("DONE")
    return 0


class _Item:
    __slots__ = ("target", "proto", "port", "payload", "tid", "kind", "state", "tries")

    def __init__(self, target: int, proto: str, port: int, kind: str) -> None:
        self.target = target
        self.proto = proto
        self.port = port
        self.kind = kind
        self.payload = b""
        self.tid = b""
        self.state = ""
        self.tries = 0


def probe(plan: Dict[str, Any]) -> Dict[str, Any]:
    """Probe every target's ports (paced), send LPD announces; the verdict of every port."""
    rate = max(1.0, float(plan.get("rate", 500.0)))
    timeout = float(plan.get("timeout", 1.0))
    attempts = max(1, int(plan.get("attempts", 2)))
    token = str(plan.get("token", ""))
    targets = plan.get("targets", [])
    # sockets in flight stay well under the open-files limit (TCP probes of filtered ports wait out the timeout)
    max_in_flight = max(16, min(900, _raise_fd_limit(1024 + 64) - 64))
    addresses = []  # type: List[Optional[str]]
    results = []  # type: List[Dict[str, Any]]
    for target in targets:
        result = {"host": target["host"], "address": None, "tcp": {}, "udp": {}, "error": None, "rpc": bool(target.get("rpc"))}  # type: Dict[str, Any]
        address = None  # type: Optional[str]
        try:
            address = str(socket.getaddrinfo(target["address"], None, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])
            result["address"] = address
        except socket.gaierror as exc:
            address = None
            result["error"] = "name lookup of %s failed: %s" % (target["address"], exc.strerror or exc)
        addresses.append(address)
        results.append(result)
    # interleaved by target, so no one WN sees a burst
    queues = []
    for index, target in enumerate(targets):
        if addresses[index] is None:
            continue
        held_tcp = set(target.get("held_tcp", []))
        held_udp = set(target.get("held_udp", []))
        mine = [_Item(index, "tcp", p, "bt" if p in held_tcp else "echo") for p in target.get("tcp", [])]
        mine += [_Item(index, "udp", p, "dht" if p in held_udp else "echo") for p in target.get("udp", [])]
        queues.append(mine)
    order = []  # type: List[_Item]
    longest = max([len(q) for q in queues] or [0])
    for i in range(longest):
        order.extend(q[i] for q in queues if i < len(q))

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("", 0))
    udp.setblocking(False)
    node_id = os.urandom(20)
    waiting_udp: Dict[Tuple[str, int], _Item] = {}
    in_flight: Dict[int, Tuple[socket.socket, _Item, float]] = {}
    lpd_plan = plan.get("lpd") or {}
    lpd_times = []  # type: List[float]
    lpd_sock = None  # type: Optional[socket.socket]
    lpd_sent = 0
    if lpd_plan:
        lpd_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lpd_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        if lpd_plan.get("addr"):
            try:
                lpd_sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(lpd_plan["addr"]))
            except OSError:
                pass
        count = max(1, int(lpd_plan.get("count", 3)))
        spacing = float(lpd_plan.get("spacing", 0.3))
        lpd_times = [_now() + i * spacing for i in range(count)]
    lpd_errors = []

    def send_lpd() -> None:
        nonlocal lpd_sent
        while lpd_times and lpd_times[0] <= _now() and lpd_sock is not None:
            lpd_times.pop(0)
            infohash = (token + "%02x" % lpd_sent + plan.get("self_tag", "")).ljust(40, "0")[:40]
            try:
                lpd_sock.sendto(lpd_announce(int(lpd_plan.get("port", 6881)), infohash), (LPD_GROUP, LPD_PORT))
                lpd_sent += 1
            except OSError as exc:
                lpd_errors.append(exc.strerror or str(exc))
                lpd_sent += 1

    def start(item: _Item) -> None:
        address = addresses[item.target]
        assert address is not None
        item.tries += 1
        if item.proto == "udp":
            # the same nonce on a retry, so a late answer to the first datagram still counts
            item.payload = item.payload or MAGIC + ("%s %s %d" % (token, os.urandom(8).hex(), item.port)).encode()
            datagrams = [item.payload]
            if item.kind == "dht":
                # held by another program: aria2c's DHT answers a ping; another check's responder echoes
                item.tid = item.tid or os.urandom(4)
                datagrams.append(dht_ping(item.tid, node_id))
            waiting_udp[(address, item.port)] = item
            for data in datagrams:
                try:
                    udp.sendto(data, (address, item.port))
                except OSError:
                    pass  # no route now: no answer will come, so it stays filtered
            return
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            item.state = "error %s" % (exc.strerror or exc)  # shown as it is: never a verdict made up
            return
        sock.setblocking(False)
        code = sock.connect_ex((address, item.port))
        if code in (0, errno.EINPROGRESS):
            in_flight[sock.fileno()] = (sock, item, _now() + timeout)
            return
        finish_tcp(sock, item, code)

    def finish_tcp(sock: socket.socket, item: _Item, code: int) -> None:
        if code == 0:
            item.state = "open"
        elif code == errno.ECONNREFUSED:
            item.state = "refused"
        elif code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            item.state = "unreachable"
        elif code in (errno.ETIMEDOUT,):
            item.state = "filtered"
        else:
            item.state = "error %s" % errno.errorcode.get(code, code)
        sock.close()

    def collect(wait: float) -> None:
        """Take TCP completions and UDP answers for up to ``wait`` seconds."""
        end = _now() + wait
        while True:
            writers = [entry[0] for entry in in_flight.values()]
            remaining = max(0.0, end - _now())
            try:
                readable, writable, _ = select.select([udp], writers, [], remaining)
            except InterruptedError:
                readable, writable = [], []
            for sock in writable:
                entry = in_flight.pop(sock.fileno(), None)
                if entry is not None:
                    finish_tcp(sock, entry[1], sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            if readable:
                while True:
                    try:
                        data, source = udp.recvfrom(4096)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        continue
                    item = waiting_udp.get((source[0], source[1]))
                    if item is None:
                        continue
                    good = data == item.payload or (item.kind == "dht" and is_dht_answer(data, item.tid))
                    if good:
                        item.state = "open"
                        del waiting_udp[(source[0], source[1])]
            now = _now()
            for fileno, (sock, item, limit) in list(in_flight.items()):
                if now >= limit:
                    del in_flight[fileno]
                    item.state = "filtered"
                    sock.close()
            if _now() >= end:
                return

    interval = 1.0 / rate
    started = _now()
    next_at = started
    for round_number in range(attempts):
        # again: UDP probes with no echo, and TCP connects with no answer (a SYN lost while the
        # neighbour's address was being resolved looks like a firewall's drop)
        todo = order if round_number == 0 else [i for i in order if not i.state or (i.proto == "tcp" and i.state == "filtered")]
        if not todo:
            break
        for item in todo:
            item.state = "" if round_number else item.state
        for item in todo:
            send_lpd()
            # never more sockets in flight than the fd limit allows
            while len(in_flight) >= max_in_flight:
                collect(0.01)
            now = _now()
            if next_at > now:
                collect(next_at - now)
            start(item)
            next_at = max(next_at + interval, _now() - 0.05)
            collect(0.0)
        collect(timeout)
    while in_flight:
        collect(0.05)
    while lpd_times:
        send_lpd()
        time.sleep(0.02)
    for item in order:
        state = item.state or "filtered"
        results[item.target][item.proto][str(item.port)] = state
    udp.close()
    if lpd_sock is not None:
        lpd_sock.close()
    return {"targets": results, "lpd_sent": lpd_sent, "lpd_errors": lpd_errors, "elapsed": round(_now() - started, 3), "rate": rate}


def main(plan: Dict[str, Any]) -> int:
    """Run the mode ``plan["mode"]`` names; 0 when it ran (verdicts are in the output), 2 on a bad plan."""
    mode = plan.get("mode")
    if mode == "facts":
        _say(json.dumps(facts(plan)))
        return 0
    if mode == "respond":
        return respond(plan)
    if mode == "probe":
        _say(json.dumps(probe(plan)))
        return 0
    sys.stderr.write("probe: unknown mode %r\n" % (mode,))
    return 2


if __name__ == "__main__" and len(sys.argv) > 1:
    sys.exit(main(json.loads(sys.argv[1])))
