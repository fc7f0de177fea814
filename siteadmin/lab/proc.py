"""Processes of the lab: start with a log file, remember by pid and start time, stop in parallel.

A process is identified by its pid *and* its kernel start time (field 22 of /proc/<pid>/stat),
so a pid reused after a crash is never mistaken for ours. ``ip netns exec`` replaces itself
with the command, so the pid we get is the service's own.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from siteadmin.errors import LabError

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Popen handles of processes started by this interpreter, kept so they can be reaped."""


@dataclasses.dataclass(frozen=True)
class ProcRecord:
    """One started process, as stored in lab.json."""

    name: str
    pid: int
    start_time: int
    argv: list[str]
    log: str


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a pid, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _reap(pid: int) -> None:
    popen = _CHILDREN.get(pid)
    if popen is not None and popen.poll() is not None:
        del _CHILDREN[pid]


def alive(record: ProcRecord) -> bool:
    """Whether the recorded process still runs (a zombie or a reused pid counts as gone)."""
    _reap(record.pid)
    stat = _stat(record.pid)
    return stat is not None and stat[0] not in ("Z", "X") and stat[1] == record.start_time


def spawn(name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None, netns: str | None = None) -> ProcRecord:
    """Start ``argv`` (inside ``netns`` when given) in its own session, output to ``log``.

    Raises:
        LabError: when the program cannot be started.
    """
    full = (["ip", "netns", "exec", netns] if netns else []) + list(argv)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        try:
            popen = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise LabError(f"{name}: cannot start {full[0]}: {exc.strerror}") from None
    _CHILDREN[popen.pid] = popen
    stat = _stat(popen.pid)
    return ProcRecord(name=name, pid=popen.pid, start_time=stat[1] if stat else 0, argv=full, log=str(log))


def record_of(name: str, pid: int, *, log: Path) -> ProcRecord | None:
    """A record of a running process the lab did not start itself (a WN's aria2c, started by its
    service script); None when there is no such process."""
    stat = _stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return None
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").rstrip("\0").split("\0")
    except OSError:
        argv = []
    return ProcRecord(name=name, pid=pid, start_time=stat[1], argv=argv, log=str(log))


def exited_early(record: ProcRecord) -> str | None:
    """A one-line reason when the process is gone: its exit status and the last log line."""
    if alive(record):
        return None
    popen = _CHILDREN.get(record.pid)
    status = f"exit status {popen.returncode}" if popen is not None and popen.returncode is not None else "exited"
    last = ""
    try:
        lines = [line for line in Path(record.log).read_text(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip()[:200] if lines else ""
    except OSError:
        pass
    return f"{record.name} {status}" + (f": {last}" if last else "")


def _signal(pid: int, sig: int) -> None:
    """Signal a process, and its whole group when it leads one (sshd's session children)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        leader = int(text[text.rindex(")") + 2 :].split()[2]) == pid
    except (OSError, ValueError, IndexError):
        leader = False
    try:
        if leader:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_pids(pids: Iterable[int], *, term_timeout: float = 0.4, kill_timeout: float = 3.0) -> list[int]:
    """SIGTERM every pid at once, SIGKILL whatever still runs after ``term_timeout``.

    Returns:
        pids still running after the kill timeout (empty when all are gone).
    """
    records = []
    for pid in set(pids):
        stat = _stat(pid)
        if stat is not None:
            records.append(ProcRecord("", pid, stat[1], [], ""))
    return [r.pid for r in stop(records, term_timeout=term_timeout, kill_timeout=kill_timeout)]


def stop(records: Iterable[ProcRecord], *, term_timeout: float = 0.4, kill_timeout: float = 3.0) -> list[ProcRecord]:
    """Stop recorded processes in parallel: SIGTERM, then SIGKILL after ``term_timeout``.

    Everything but aria2c exits within ~20 ms of SIGTERM; aria2c only notices it on its
    one-second tick, and its graceful exit (dht.dat, "stopped" announces) is worthless to a
    lab being torn down, so the SIGKILL deadline is short.

    Returns:
        records still alive after the kill timeout (empty when all are gone).
    """
    pending = [r for r in records if alive(r)]
    for record in pending:
        _signal(record.pid, signal.SIGTERM)
    for sig, timeout in ((signal.SIGKILL, term_timeout), (None, kill_timeout)):
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            time.sleep(0.02)
            pending = [r for r in pending if alive(r)]
        if sig is not None:
            for record in pending:
                _signal(record.pid, sig)
    return [r for r in pending if alive(r)]


def _ancestors() -> set[int]:
    pids, pid = {os.getpid()}, os.getpid()
    while pid > 1:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(text[text.rindex(")") + 2 :].split()[1])
        pids.add(pid)
    return pids


LAB_PROGRAMS = re.compile(r"(aria2c|slapd|sshd|opentracker|python3?(\.\d+)?)")
"""Program names (``comm``, matched whole) the lab runs; only these are stopped when found by command line."""


def pids_mentioning(*needles: str, programs: re.Pattern[str] = LAB_PROGRAMS) -> list[int]:
    """Pids of lab programs whose command line contains one of ``needles`` (this process and its ancestors excluded).

    Restricted to ``programs`` (whole names) so an admin's ``less <lab dir>/cern/seeder.log`` or
    ``ipython`` survives ``lab down``; callers pass the lab's own folders (``<dir>/cern/``,
    ``<dir>/wns/``) so a lab in a sub-directory of another is not taken for part of it.
    """
    mine = _ancestors()
    found = []
    keys = [needle.encode() for needle in needles]
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:
            continue
        if not programs.fullmatch(comm):
            continue
        if any(key in cmdline for key in keys):
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found
