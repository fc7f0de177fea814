"""The probe runs on the python3 of the oldest WNs still in service (3.6+), with nothing installed.

Statically: vermin finds nothing newer than 3.6 in probe.py. For real: under a Python 3.6 where
the machine has one (pyenv), the probe sent as ``python3 -`` answers facts, and a responder and
a prober on loopback give exact verdicts: echoed UDP open, a UDP port nobody echoes filtered, a
port another program holds tested by protocol, a closed TCP port refused.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from siteadmin.preflight import probe
from siteadmin.preflight.service import probe_script

PROBE = Path(probe.__file__)


def python36() -> str | None:
    """A real Python 3.6: pyenv's own build (its shim on PATH may refuse to run it), else one on PATH."""
    candidates = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python3.6")) + glob.glob("/root/.pyenv/versions/3.6*/bin/python3.6"))
    if candidates:
        return candidates[0]
    found = shutil.which("python3.6")
    return found if found and "/shims/" not in found else None


def test_vermin_finds_nothing_newer_than_36() -> None:
    vermin = Path(sys.executable).with_name("vermin")
    assert vermin.exists(), "vermin missing: install the test extras (pip install -e .[test])"
    done = subprocess.run([str(vermin), "-t=3.6-", "--no-tips", "--violations", "--no-parse-comments", str(PROBE)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_vermin_would_catch_a_newer_construct(tmp_path: Path) -> None:
    newer = tmp_path / "probe.py"
    newer.write_text(PROBE.read_text() + "\nif (n := 1):\n    pass\n")  # 3.8 syntax
    vermin = Path(sys.executable).with_name("vermin")
    done = subprocess.run([str(vermin), "-t=3.6-", "--no-tips", "--violations", str(newer)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0


def test_the_probe_imports_the_standard_library_only() -> None:
    names = set()
    for line in PROBE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["import"]:
            names.add(words[1].split(".")[0])
        elif words[:1] == ["from"] and "import" in words:
            names.add(words[1].split(".")[0])
    assert names <= set(sys.stdlib_module_names), names - set(sys.stdlib_module_names)


def free_block(count: int) -> int:
    """The first of ``count`` consecutive ports free for TCP and UDP on this machine."""
    for base in range(21000, 40000, 97):
        socks = []
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    sock = socket.socket(socket.AF_INET, kind)
                    socks.append(sock)
                    sock.bind(("", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.fail("no block of free ports")


def run_probe(python: str, plan: dict[str, object], timeout: float = 60.0) -> dict[str, object]:
    done = subprocess.run([python, "-"], input=probe_script(plan), capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr.decode()
    data: dict[str, object] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return data


@pytest.fixture(params=["3.6", "current"])
def interpreter(request: pytest.FixtureRequest) -> str:
    if request.param == "current":
        return sys.executable
    found = python36()
    if found is None:
        pytest.skip("no Python 3.6 on this machine (pyenv versions 3.6.x not installed); vermin still checks the floor")
    return found


def test_facts_under_the_interpreter(interpreter: str) -> None:
    facts = run_probe(interpreter, {"mode": "facts", "ports": [], "central": []})
    assert str(facts["python"]).startswith("3.6" if interpreter != sys.executable else f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert isinstance(facts["interfaces"], list)


def test_responder_and_prober_give_exact_verdicts(interpreter: str) -> None:
    base = free_block(12)
    ports = list(range(base, base + 10))  # responder ports; base+10 and base+11 have no responder
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # another program holds one UDP port and says nothing
    held.bind(("", ports[3]))
    plan = {"mode": "respond", "tcp": ports, "udp": ports, "lifetime": 30, "lpd": False, "token": "t0"}
    try:
        responder = subprocess.Popen([interpreter, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except BaseException:
        held.close()
        raise
    try:
        assert responder.stdin is not None and responder.stdout is not None
        responder.stdin.write(probe_script(plan))
        responder.stdin.close()
        line = responder.stdout.readline().decode()
        assert line.startswith("READY "), line + (responder.stderr.read().decode() if responder.stderr else "")
        ready = json.loads(line[6:])
        assert ready["held_udp"] == [ports[3]] and ready["held_tcp"] == []
        every = [*ports, base + 10, base + 11]
        started = time.monotonic()
        result = run_probe(interpreter, {
            "mode": "probe", "rate": 2000, "timeout": 0.5, "token": "t0",
            "targets": [{"host": "me", "address": "127.0.0.1", "tcp": every, "udp": every, "held_udp": ready["held_udp"]}],
        })
        took = time.monotonic() - started
    finally:
        responder.kill()
        responder.wait()
        for stream in (responder.stdout, responder.stderr):
            if stream is not None:
                stream.close()
        held.close()
    target = result["targets"][0]  # type: ignore[index]
    udp = {int(p): s for p, s in target["udp"].items()}
    tcp = {int(p): s for p, s in target["tcp"].items()}
    assert [p for p, s in udp.items() if s == "open"] == [p for p in ports if p != ports[3]]
    assert udp[ports[3]] == "filtered"  # held by a silent program: no DHT answer, never guessed open
    assert udp[base + 10] == udp[base + 11] == "filtered"
    assert all(tcp[p] == "open" for p in ports)
    assert tcp[base + 10] == tcp[base + 11] == "refused"
    assert took < 10


def test_ports_the_responder_cannot_listen_on_are_reported(interpreter: str) -> None:
    import resource

    base = free_block(40)
    ports = list(range(base, base + 40))

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    plan = {"mode": "respond", "tcp": ports, "udp": ports, "lifetime": 30, "lpd": False, "token": "t0"}
    done = subprocess.Popen([interpreter, "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=few_files)  # noqa: PLW1509
    try:
        assert done.stdin is not None and done.stdout is not None
        done.stdin.write(probe_script(plan))
        done.stdin.close()
        # READY comes after every bind was tried, so its errors are complete: no need to sit out the lifetime
        out = b""
        while b"READY " not in out or not out.endswith(b"\n"):
            assert select.select([done.stdout], [], [], 30)[0], "the responder said nothing within 30 s"
            chunk = os.read(done.stdout.fileno(), 65536)
            assert chunk, "the responder ended without READY: " + (done.stderr.read().decode() if done.stderr else "")
            out += chunk
        done.terminate()
        done.wait(timeout=30)
        err = done.stderr.read() if done.stderr else b""
    finally:
        if done.poll() is None:
            done.kill()
            done.wait()
        for stream in (done.stdout, done.stderr):
            if stream is not None:
                stream.close()
    line = next(text for text in out.decode().splitlines() if text.startswith("READY "))
    ready = json.loads(line[6:])
    assert ready["errors"], err.decode()
    # the core reads "<proto> <port>: <why>" to leave those ports out of the matrix
    for item in ready["errors"]:
        proto, port, _ = item.split(" ", 2)
        assert proto in ("tcp", "udp") and int(port.rstrip(":")) in ports
