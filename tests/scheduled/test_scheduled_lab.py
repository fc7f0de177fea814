"""apply, check and status as cron and systemd timers run them, on the real lab: no terminal at all.

Each run is a child ``siteadmin`` process with stdin from /dev/null and stdout and stderr pipes
(what cron and a timer give it), its state directory in tmp, and the lab's site.toml with a
``[syslog]`` table pointing at this test's own Unix datagram socket, which plays the local syslog.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from siteadmin import runlock
from siteadmin.lab import Lab
from siteadmin.site import load_site

pytestmark = pytest.mark.lab

SITEADMIN = Path(sys.executable).parent / "siteadmin"
LOCAL5 = 21
SYSLOG_LINE = re.compile(r"<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d siteadmin\[(\d+)\]: (.*)")


@pytest.fixture
def syslog(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "log"))
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[tuple[int, str]]:
    """Every syslog line the runs sent so far: (priority, message)."""
    lines: list[tuple[int, str]] = []
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return lines
        match = SYSLOG_LINE.fullmatch(data.decode())
        assert match, data
        lines.append((int(match[1]), match[3]))


def variant(lab: Lab, tmp_path: Path, name: str, port_of: str | None = None) -> Path:
    """The lab's site.toml beside it, sending syslog to the test's socket; ``port_of``: that WN's SSH port made a closed one."""
    text = re.sub(r"\n\[syslog\]\n[^\[]*", "\n", lab.site_path.read_text(encoding="utf-8"))
    text += f'\n[syslog]\naddress = "{tmp_path / "log"}"\nfacility = "local5"\n'
    if port_of is not None:
        text, n = re.subn(rf'(\[wns\.nodes\."{re.escape(port_of)}"\]\naddress = "[^"]*"\nport = )\d+', r"\g<1>1", text)
        assert n == 1
    path = lab.site_path.parent / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def scheduled(state: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """One run as cron starts it: no terminal anywhere."""
    env = {**os.environ, runlock.STATE_ENV: str(state)}
    env.pop("SITEADMIN_SITE", None)
    return subprocess.run([str(SITEADMIN), *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=240, check=False)


def test_apply_from_cron_prints_no_progress_quiet_prints_only_failures_and_a_held_lock_exits_4(
    lab: Lab, tmp_path: Path, syslog: socket.socket
) -> None:
    state = tmp_path / "state"
    site = variant(lab, tmp_path, "scheduled")
    wns = lab.wn_names

    # 1. a plain run: the folded result and the closing note, no progress line, no escape
    first = scheduled(state, "--site", str(site), "apply", "--restart-now")
    assert first.returncode == 0, first.stderr
    assert "\r" not in first.stderr + first.stdout and "\x1b" not in first.stderr + first.stdout
    assert re.search(rf"^siteadmin: {len(wns)} WNs applied in \d+\.\d s$", first.stderr, re.M), first.stderr
    assert all(re.fullmatch(r"\S+ (unchanged|changed|new)", line) for line in first.stdout.splitlines() if " " in line and ":" not in line)
    # every change reached syslog too (the run's own record at least), at notice
    sent = received(syslog)
    assert any(pri == LOCAL5 * 8 + 5 and msg.startswith("rollout.apply.run hosts=wn[") and "outcome=ok" in msg for pri, msg in sent), sent

    # 2. --quiet, nothing to do: not a byte on either stream
    quiet = scheduled(state, "--quiet", "--site", str(site), "apply")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert [msg for _, msg in received(syslog) if msg.startswith("rollout.apply.run ")], "the quiet run's change record reached syslog"

    # 3. --quiet (after the command) with one WN that cannot be reached: only that failure, exit 1
    broken = variant(lab, tmp_path, "scheduled-broken", port_of=wns[-1])
    failing = scheduled(state, "--site", str(broken), "apply", "--quiet")
    assert failing.returncode == 1, failing.stderr
    assert failing.stdout == ""
    lines = failing.stderr.splitlines()
    assert lines and all(wns[-1] in line for line in lines), lines
    assert any(f"1 of {len(wns)} WNs failed" in line for line in lines)
    assert not any(w in failing.stderr for w in wns[:-1]), "quiet named WNs that did not fail"
    assert any(pri == LOCAL5 * 8 + 4 and "outcome=failed" in msg for pri, msg in received(syslog))  # a failed run: warning

    # 4. a second run while the first holds the site lock: exit 4 at once, naming the holder, nothing done
    audit_before = (lab.site_path.parent / "audit.jsonl").read_bytes()
    with runlock.hold(load_site(site), "siteadmin --quiet apply (nightly)", state):
        busy = scheduled(state, "--quiet", "--site", str(site), "apply")
        assert busy.returncode == 4 and busy.stdout == ""
        assert re.fullmatch(
            rf"siteadmin: busy: site lock {re.escape(str(state))}/\S+\.lock is held by pid {os.getpid()} \(\S+ on \S+\) running "
            r"`siteadmin --quiet apply \(nightly\)`, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(this run did nothing; .*\)\n",
            busy.stderr,
        ), busy.stderr
        # check answers Nagios with UNKNOWN naming the holder; reading the swarm takes no lock
        nagios = scheduled(state, "--site", str(site), "check", "--nagios")
        assert nagios.returncode == 3 and nagios.stdout.startswith("SITEADMIN CHECK UNKNOWN - site lock ") and f"pid {os.getpid()}" in nagios.stdout
        plain = scheduled(state, "--site", str(site), "check", "--quiet")
        assert plain.returncode == 4 and plain.stdout == "" and "busy" in plain.stderr
        status = scheduled(state, "--site", str(site), "status", "--nagios")
        assert status.returncode in (0, 1, 2) and status.stdout.startswith("SWARM "), status.stdout + status.stderr
    assert (lab.site_path.parent / "audit.jsonl").read_bytes() == audit_before, "a busy run wrote to the audit log"


def test_status_and_check_quiet_from_a_timer(lab: Lab, tmp_path: Path, syslog: socket.socket) -> None:
    state = tmp_path / "state"
    site = variant(lab, tmp_path, "scheduled-read")
    status = scheduled(state, "--site", str(site), "status")
    assert status.returncode in (0, 1), status.stderr
    problems = [line for line in status.stdout.splitlines() if re.match(r"(warning|critical): ", line)]
    quiet = scheduled(state, "--site", str(site), "status", "-q")
    assert quiet.returncode == status.returncode and quiet.stderr == ""
    assert [line.split(": ")[:3] for line in quiet.stdout.splitlines()] == [line.split(": ")[:3] for line in problems]

    check = scheduled(state, "--site", str(site), "check", "--only", "local,central")
    assert check.returncode in (0, 1), check.stderr
    assert "\r" not in check.stderr and "facts from" not in check.stderr  # check's progress notes ("facts from 4 WNs") need a terminal
    quiet_check = scheduled(state, "--site", str(site), "--quiet", "check", "--only", "local,central")
    assert quiet_check.returncode == check.returncode
    assert all(line.startswith(("error: ", "    why: ", "    fix: ")) for line in quiet_check.stdout.splitlines()), quiet_check.stdout
    assert (quiet_check.stdout == "") == (check.returncode == 0)
    assert received(syslog) == []  # reading changes nothing, so nothing reaches syslog
