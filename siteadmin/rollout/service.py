"""The rollout service: plan, apply and roll back aria2c profiles on many WNs over SSH.

``plan``, ``apply``, ``rollback`` and ``list_generations`` run their per-WN work on the one WN
service (``siteadmin.remote.WNService``) and return a ``RolloutRun``: one ``HostResult`` per WN,
whose value is a ``HostReport`` when the WN succeeded, and whose exception (a ``RolloutError``,
a file step's ``FileStepError`` or an SSH error) says why when it did not.

Per WN, in this order (``apply``):

1. connect (host keys as everywhere; ``accept_new`` accepts an unknown key as OpenSSH's
   ``accept-new`` does and the run audits it);
2. lock: the WN lock (``siteadmin.remote.wnlock``): ``<config>.siteadmin-lock`` beside the config,
   hard-linked into place from a private temp file (never seen empty; O_EXCL where the server has
   no hard links), holding who, since when and the run's random token. A held lock fails the WN at once (``locked``, saying when its holder is
   a siteadmin of this VoBox no longer running) unless ``wait_lock`` gives it time; one older than
   ``[rollout] lock_stale_after`` is reported (``stale lock``), never taken. A run removes its own
   lock when the WN is done; locks a cancel, Ctrl-C or cut connection left behind are removed
   afterwards over new connections, only while they still hold the run's token (``_release_left``);
   one it cannot reach stays, named in that WN's line and in a ``warn`` line;
3. plan: the profile check (run on the VoBox while the WNs are connected to; each WN waits for
   its own before it is touched), the WN's current file and its hash: ``unchanged``, ``changed``
   (masked diff, each option marked live / new-downloads / restart) or ``new``. A dry run stops
   here, having written nothing anywhere;
4. write: private temp file, validate it with the WN's own aria2c (``NO_START_ARGS``: it starts
   nothing) and the WN's shell (what aria2c checks only at start: ``changes.start_checks``), back
   up (``[rollout] backups_kept``; right before the rename, as a hard link of the file in place
   where that is safe: ``files.link_backup``), rename it into place keeping owner and mode. One
   folder listing, holding the lock, serves the stale temp files and the backups;
5. reload: every changed option changeable over RPC -> ``changeGlobalOption`` then
   ``getGlobalOption``, whose read-back decides; else wait for aria2c to have no download in
   flight (``[rollout] drain_timeout``; then ``busy``, the new file kept with
   ``<config>.siteadmin-restart`` beside it so the next apply restarts it even unchanged, unless
   ``restart_now``), run ``[rollout] restart_command`` and confirm over RPC a new aria2c session
   with the new values. A failed restart or read-back puts the backup back and reloads it the
   same way; the WN fails with the reason.

The RPC goes through an SSH tunnel to the WN's loopback; the secret travels in the request body
only. Every per-WN failure is that WN's result, never raised. Audit: one record per run and one
per WN whose file changed (or failed to), with hashes, never secrets; nothing for a dry run.

Core: never imports the CLI, the console or the lab.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import paramiko

from siteadmin import audit, trust
from siteadmin.aria2conf.check import HostCheck, check_profiles
from siteadmin.aria2conf.render import site_rpc_secret
from siteadmin.aria2conf.validate import NO_START_ARGS, aria2c_problems
from siteadmin.errors import ExitCode, warn
from siteadmin.inventory import Inventory, config_path_for, fold, restart_command_for
from siteadmin.remote import files
from siteadmin.remote.errors import SshError, TunnelError
from siteadmin.remote.fanout import CANCELLED, NOT_STARTED, Batches, HostResult, Progress
from siteadmin.remote.service import WNService
from siteadmin.remote.session import CommandResult, Session
from siteadmin.remote.wnlock import LOCKED, STALE_LOCK, HeldLock, drop_lock, holder_name, lock_path, read_lock, take_lock
from siteadmin.rollout import changes as p
from siteadmin.site import Site

PENDING_SUFFIX = ".siteadmin-restart"
"""Beside the config (``aria2c.conf.siteadmin-restart``): the file in place waits for aria2c's restart
(a run ended ``busy``); it names that file's hash and the backup taken before it."""
PENDING_HINT = "the new file is in place; the next apply restarts aria2c once it has no download in flight (--restart-now: at once)"
DRAIN_POLL = 1.0
"""Seconds between looks at aria2c's active downloads while draining."""
CONFIRM_TIMEOUT = 30.0
"""Seconds a restarted aria2c has to answer over RPC with the new values."""
RPC_TIMEOUT = 10.0
"""Seconds per RPC request."""
VALIDATE_COMMAND = "LC_ALL=C aria2c --conf-path={path} " + " ".join(shlex.quote(a) for a in NO_START_ARGS)
"""How a WN's own aria2c reads the new file: it reads it in full and starts nothing (``validate_command``
adds the WN-side tests of what aria2c checks only when it starts)."""

# outcomes of a WN that did not succeed (besides the SSH layer's and the file steps')
BUSY = "busy"
PROFILE = "failed: profile"
VALIDATION = "failed: validation"
RESTART_FAILED = "failed: restart"
READ_BACK = "failed: read-back"
NO_BACKUP = "failed: no backup"

# how a changed WN's aria2c got its new values (HostReport.reloaded)
RELOADED_RPC = "rpc"
RELOADED_RESTART = "restarted"
NOT_RUNNING = "not running"
RELOAD_SKIPPED = "skipped"


class RolloutError(SshError):
    """A WN's rollout step failed; ``outcome`` says which (``locked``, ``busy``, ``failed: validation``...).

    ``report`` holds what was learnt of the WN before the failure (plan, hashes), when anything was.
    """

    category = "rollout"
    outcome = "failed"
    exit_code = ExitCode.FAILED

    def __init__(self, host: str, message: str, hint: str | None = None, *, outcome: str | None = None, report: HostReport | None = None) -> None:
        super().__init__(host, message, hint, outcome=outcome)
        self.report = report


@dataclasses.dataclass(frozen=True)
class HostReport:
    """What a rollout did (or, dry run, would do) on one WN."""

    host: str
    path: str
    """The config's path on the WN."""
    outcome: str
    """``unchanged``, ``changed`` or ``new`` (for ``rollback`` too: what the restore changed)."""
    before: str | None
    """sha256 of the WN's file before, None when it had none."""
    after: str | None
    """sha256 of the file the WN has (or would have) afterwards."""
    diff: str = ""
    """Unified diff before -> after, secrets masked."""
    changes: tuple[p.OptionChange, ...] = ()
    reload: str = p.RELOAD_NONE
    """What the change needs: ``none``, ``rpc`` or ``restart``."""
    reloaded: str = ""
    """What was done: ``rpc``, ``restarted``, ``not running`` (nothing to reload), ``skipped``; "" when nothing was."""
    backup: str | None = None
    """Id of the backup generation taken before the change."""
    restored: str | None = None
    """Rollback: the id of the generation put back."""
    generations: tuple[files.Backup, ...] = ()
    """``list_generations``: the WN's backups, newest first."""
    dry_run: bool = False
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How the WN is folded in a summary: ``changed (restart)``, ``unchanged``, ``new``; ``unchanged
        (restarted)`` when the file was already in place but still waited for aria2c's restart."""
        if self.reload == p.RELOAD_NONE or (self.outcome == p.UNCHANGED and not self.reloaded and not self.dry_run):
            return self.outcome
        how = self.reloaded or ("live" if self.reload == p.RELOAD_RPC else "restart")
        if how == RELOADED_RPC:
            how = "live"
        return f"{self.outcome} ({how})"

    def as_dict(self) -> dict[str, Any]:
        """As ``--json`` shows it: secrets masked in the diff and the option changes."""
        return {
            "host": self.host,
            "path": self.path,
            "outcome": self.outcome,
            "before": self.before,
            "after": self.after,
            "changes": [c.masked() for c in self.changes],
            "reload": self.reload,
            "reloaded": self.reloaded or None,
            "backup": self.backup,
            "restored": self.restored,
            "generations": [generation_dict(g) for g in self.generations],
            "dry_run": self.dry_run,
            "notes": list(self.notes),
            "diff": self.diff,
        }


def generation_dict(generation: files.Backup) -> dict[str, Any]:
    """A backup generation as JSON shows it."""
    return {
        "id": generation.id,
        "path": generation.path,
        "time": generation.time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "hash": generation.hash,
        "size": generation.size,
        "uid": generation.uid,
        "gid": generation.gid,
        "mode": None if generation.mode is None else f"{generation.mode:04o}",
    }


@dataclasses.dataclass(frozen=True)
class RolloutRun:
    """One plan, apply, rollback or generation listing over many WNs."""

    action: str
    """``plan``, ``apply``, ``rollback`` or ``list``."""
    run_id: str
    dry_run: bool
    results: list[HostResult[HostReport]]
    """One per WN, in the order asked."""
    elapsed: float

    @property
    def ok(self) -> bool:
        """Every WN succeeded."""
        return all(r.ok for r in self.results)

    @property
    def failed(self) -> list[HostResult[HostReport]]:
        return [r for r in self.results if not r.ok]

    @property
    def reports(self) -> list[HostReport]:
        """The reports of the WNs that succeeded."""
        return [r.value for r in self.results if r.ok and r.value is not None]

    def summary(self) -> list[tuple[str, str]]:
        """WNs folded by outcome, successes and failures alike: ``[("wn[001-040].lab", "unchanged"), ...]``."""
        return summary(self.results)


def report_of(result: HostResult[HostReport]) -> HostReport | None:
    """The WN's report: its value, or what a failure learnt before it failed."""
    if result.value is not None:
        return result.value
    report = getattr(result.exception, "report", None)
    return report if isinstance(report, HostReport) else None


def describe(result: HostResult[HostReport]) -> str:
    """The label a WN is folded by: its report's label, or its failure's outcome and one-line reason."""
    if result.ok and result.value is not None:
        return result.value.label
    if result.outcome in (CANCELLED, NOT_STARTED):
        return result.outcome
    detail = result.detail()
    if result.outcome.startswith("failed") or result.outcome in (LOCKED, STALE_LOCK, BUSY):
        return f"{result.outcome}: {detail}" if not detail.startswith(result.outcome) else detail
    return f"failed: {result.outcome}: {detail}"


def summary(results: Sequence[HostResult[HostReport]]) -> list[tuple[str, str]]:
    """Hosts folded by ``describe``, in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for result in results:
        groups.setdefault(describe(result), []).append(result.host)
    return [(fold(hosts), label) for label, hosts in groups.items()]


# ---------------------------------------------------------------- the run's shared state


class _Checks:
    """The profile check of a run, made in a thread of its own while the WNs are connected to.

    It renders and lints every WN's profile on the VoBox (~1.4 ms a WN): made first for every WN,
    it held every connection back. The WNs worked on first (``first``: the run's parallelism) are
    checked at once, before any connection (an exception of the check raises there, nothing
    touched); the others in a thread while those are connected to. Each WN's work waits for its
    own (``of``) before touching the WN. An exception of that thread's check (not a finding:
    those are per WN) fails every WN it did not check.
    """

    def __init__(self, site: Site, hosts: Sequence[str], *, aria2c: bool, run: bool, first: int) -> None:
        self._ready = threading.Condition()
        self._done = False
        self._found: dict[str, HostCheck] = {}
        self._failure: BaseException | None = None
        self._secret: str | None = None
        if not run:
            self._secret = site_rpc_secret(site, create=False)
            self._done = True
            return
        names = list(hosts)
        # the first WNs' checks here, before any connection (raising as the whole check did):
        # made in a thread beside 100 handshaking threads, they were what those WNs waited for
        self._found.update(check_profiles(site, names[: max(first, 1)], aria2c=aria2c).by_host())
        self._secret = site_rpc_secret(site, create=False)  # after rendering: it may have made it
        rest = names[max(first, 1) :]
        if not rest:
            self._done = True
            return

        def check() -> None:
            try:
                found = check_profiles(site, rest, aria2c=aria2c).by_host()
                secret = site_rpc_secret(site, create=False)
                with self._ready:
                    self._found.update(found)
                    self._secret = secret
            except BaseException as exc:  # noqa: BLE001 - each WN not yet checked fails with it
                self._failure = exc
            finally:
                with self._ready:
                    self._done = True
                    self._ready.notify_all()

        threading.Thread(target=check, name="profile-check", daemon=True).start()

    def _wait(self, host: str | None = None) -> None:
        with self._ready:
            self._ready.wait_for(lambda: self._done or (host is not None and host in self._found))

    def of(self, host: str) -> HostCheck | None:
        """The WN's check, as soon as it is made.

        Raises:
            RolloutError: the check itself failed (``failed: profile``).
        """
        self._wait(host)
        with self._ready:
            found = self._found.get(host)
        if found is None and self._failure is not None:
            raise RolloutError(host, f"the profile check failed: {self._failure}", outcome=PROFILE)
        return found

    def site_secret(self) -> str | None:
        """The site's RPC secret (``[aria2c] rpc_secret_file``), as it is once the check is done."""
        self._wait()
        return self._secret


@dataclasses.dataclass
class _Run:
    site: Site
    action: str
    run_id: str
    dry_run: bool
    checks: _Checks
    wait_lock: float
    restart_now: bool
    validate: bool
    reload: bool
    holder: str
    audit_path: Any
    confirm_timeout: float
    to: str | None = None
    write_audit: bool = True
    held: dict[str, HeldLock] = dataclasses.field(default_factory=dict)
    """Locks this run may still have on WNs: from just before the lock is created until it is gone."""
    held_guard: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def path(self, host: str) -> str:
        return config_path_for(self.site, host)

    def holding(self, host: str, lock: HeldLock) -> None:
        with self.held_guard:
            self.held[host] = lock

    def released(self, host: str) -> None:
        with self.held_guard:
            self.held.pop(host, None)

    def left(self) -> dict[str, HeldLock]:
        with self.held_guard:
            return dict(self.held)

    def record(self, event: Mapping[str, Any]) -> None:
        if self.write_audit and not self.dry_run:
            audit.record(self.audit_path, {"run": self.run_id, **event})


# ---------------------------------------------------------------- the lock


def _lock(run: _Run, session: Session, sftp: paramiko.SFTPClient, path: str) -> HeldLock:
    """``take_lock`` for the run, which remembers the lock from before it exists until it is gone (``_release_left``)."""
    lock = HeldLock(lock_path(path), secrets.token_hex(8))
    run.holding(session.host, lock)
    try:
        return take_lock(session, sftp, path, holder=run.holder, wait=run.wait_lock, stale_after=run.site.rollout.lock_stale_after, token=lock.token)
    except SshError as exc:
        if exc.outcome not in ("connection lost", "sftp timed out", CANCELLED):
            run.released(session.host)  # refused or held by another run: nothing of ours on the WN
        raise


# ---------------------------------------------------------------- RPC over the tunnel


class RpcError(RolloutError):
    """aria2c's RPC refused a request or could not be talked to."""

    outcome = "failed: rpc"


class NotRunning(RpcError):
    """Nothing listens on the WN's RPC port."""

    outcome = NOT_RUNNING


@contextlib.contextmanager
def rpc(session: Session, port: int, secret: str | None, timeout: float = RPC_TIMEOUT) -> Iterator[Callable[..., Any]]:
    """A JSON-RPC caller for the WN's aria2c through an SSH tunnel to its loopback ``port``.

    Yields:
        ``call(method, *params)`` returning aria2's result.

    Raises:
        NotRunning: nothing listens on the port (when the tunnel opens).
        RpcError: from ``call``: aria2 refused the request, or the connection failed.
    """
    import aria2p  # imported here: the plan and the lock need no RPC library

    try:
        tunnel = session.open_tunnel("127.0.0.1", port)
    except TunnelError as exc:
        raise NotRunning(session.host, f"aria2c RPC on 127.0.0.1:{port}: {exc.message.removeprefix(session.host + ': ')}") from None
    with tunnel:
        client = aria2p.Client(host="http://127.0.0.1", port=tunnel.local_port, secret=secret or "", timeout=timeout)

        def call(method: str, *params: Any) -> Any:
            try:
                return client.call(method, list(params))
            except Exception as exc:  # noqa: BLE001 - aria2p raises its own and requests' exceptions
                why = getattr(exc, "message", None) or str(exc) or type(exc).__name__
                if secret:
                    why = str(why).replace(secret, "********")
                raise RpcError(session.host, f"aria2c RPC {method} on 127.0.0.1:{port}: {' '.join(str(why).split())[:200]}") from None

        yield call


def rpc_port_of(site: Site, options: Mapping[str, str]) -> int:
    """The port the WN's aria2c listens on for RPC: its file's ``rpc-listen-port``, else ``[wns] rpc_port``."""
    text = options.get("rpc-listen-port", "")
    return int(text) if text.isdigit() else site.wns.rpc_port


def downloads_in_flight(active: Sequence[Mapping[str, Any]]) -> list[str]:
    """GIDs of downloads still transferring: a seeding download stays ``active`` with completedLength == totalLength."""
    busy = []
    for item in active:
        try:
            done, total = int(item.get("completedLength", 0)), int(item.get("totalLength", 0))
        except (TypeError, ValueError):
            done, total = 0, 0
        if total == 0 or done < total:
            busy.append(str(item.get("gid", "?")))
    return busy


# ---------------------------------------------------------------- one WN


def validate_command(options: Mapping[str, str]) -> str:
    """The WN-side check of a new file with these options: its aria2c reads it (``VALIDATE_COMMAND``),
    then the shell tests what aria2c checks only when it starts (``changes.start_checks``); aria2c's
    exit status is kept for the judge."""
    checks = p.start_checks(options)
    if not checks:
        return VALIDATE_COMMAND
    return f"{VALIDATE_COMMAND}; s=$?; " + "; ".join(checks) + "; exit $s"


def _validate_judge(secret_values: Sequence[str]) -> Callable[[CommandResult], str | None]:
    def judge(result: CommandResult) -> str | None:
        if result.exit_status == 127:
            return "aria2c is not installed on the WN (command not found)"
        failed, stderr = p.split_checks(result.stderr)
        problems = failed + aria2c_problems(result.stdout, stderr, result.exit_status, secret_values)
        return "; ".join(problems) if problems else None

    return judge


def _report(run: _Run, host: str, path: str, current: files.FileState, new: bytes, secret_values: Sequence[str]) -> HostReport:
    outcome = p.classify(current.data, new)
    changes = tuple(p.option_changes(p.read_options(current.data), p.read_options(new))) if outcome != p.UNCHANGED else ()
    return HostReport(
        host=host,
        path=path,
        outcome=outcome,
        before=current.sha256,
        after=hashlib.sha256(new).hexdigest(),
        diff=p.masked_diff(current.data, new, path, secret_values) if outcome != p.UNCHANGED else "",
        changes=changes,
        reload=p.reload_kind(changes),
        dry_run=run.dry_run,
    )


def _secret_for(run: _Run, options: Mapping[str, str]) -> str | None:
    return options.get("rpc-secret") or run.checks.site_secret()


def _apply_host(run: _Run, session: Session) -> HostReport:
    host = session.host
    check = run.checks.of(host)
    if check is None or check.text is None or not check.ok:
        why = check.error_text if check is not None and check.error_text else "; ".join(
            f.message for f in (check.all_findings() if check is not None else ()) if f.level == "error"
        )
        raise RolloutError(host, f"profile refused by the check: {why or 'no profile'}", "siteadmin lint shows every finding", outcome=PROFILE)
    secret_values = check.rendered.secrets if check.rendered is not None else []
    new = check.text.encode("utf-8")
    path = run.path(host)
    with session.sftp() as sftp:
        lock = None if run.dry_run else _lock(run, session, sftp, path)
        try:
            current = files.read_file(session, path, sftp=sftp)
            report = _report(run, host, path, current, new, secret_values)
            pending = _read_pending(sftp, path) if run.reload else None
            if pending is not None and pending["sha256"] != current.sha256:
                if not run.dry_run:
                    _clear_pending(sftp, path)  # the file was changed since (by hand): that restart is not ours to do
                pending = None
            if pending is not None and report.outcome == p.UNCHANGED:
                return _restart_pending(run, session, sftp, report, current, pending)
            if pending is not None and report.reload != p.RELOAD_RESTART:
                # aria2c still runs the file before the one in place: only a restart brings it to the new one
                report = dataclasses.replace(report, reload=p.RELOAD_RESTART, notes=(*report.notes, "the file in place still waited for a restart"))
            if run.dry_run:
                return report
            if report.outcome == p.UNCHANGED:
                # what a cut connection of an earlier run left: our temp files have one name while locked
                files.remove_held_temp(session, path, sftp=sftp)
                return report
            # one listing, holding the lock, serves the stale temp files, the backup's link check and its pruning
            folder = files.list_folder(session, path, sftp=sftp)
            files.remove_stale_temps(session, path, sftp=sftp, folder=folder)
            generation: files.Backup | None = None
            try:
                with files.staged(session, path, new, sftp=sftp, held=True) as temp:
                    if run.validate:
                        files.validate(
                            session, temp, validate_command(p.read_options(new)), judge=_validate_judge(secret_values), mask=secret_values, sftp=sftp
                        )
                    # the backup last, right before the rename: a hard link to the file in place where
                    # that is safe (files.link_backup), so it must not outlive a file that stays in place
                    generation = files.link_backup(session, current, folder, keep=max(1, run.site.rollout.backups_kept), sftp=sftp)
                    report = dataclasses.replace(report, backup=generation.id if generation else None)
                    try:
                        files.install(session, temp, current, sftp=sftp)
                    except files.FileStepError as exc:
                        if generation is not None and exc.outcome not in ("connection lost", "sftp timed out"):
                            # the file stayed: its backup is no use, and may share its inode
                            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                                sftp.remove(generation.path)
                            report = dataclasses.replace(report, backup=None)
                        raise
            except files.FileStepError as exc:
                if exc.outcome in ("validation failed", "validation timed out"):
                    error = RolloutError(host, exc.message.removeprefix(host + ": "), exc.hint, outcome=VALIDATION, report=report)
                    _audit_host(run, report, error)
                    raise error from None
                _audit_host(run, report, exc)  # a WN that failed to change (backup or write) is audited like one that changed
                raise
            try:
                report = _reload(run, session, sftp, report, current, new, generation)
            except SshError as exc:
                _audit_host(run, report, exc)
                raise
            _audit_host(run, report, None)
            return report
        finally:
            if lock is not None and drop_lock(sftp, lock, stale_after=run.site.rollout.lock_stale_after):
                run.released(host)


def _audit_host(run: _Run, report: HostReport, error: SshError | None) -> None:
    run.record(
        {
            "action": f"rollout.{run.action}",
            "host": report.host,
            "path": report.path,
            "before": report.before,
            "after": report.after if error is None or error.outcome in (BUSY,) else report.before,
            "new": report.after,
            "backup": report.backup,
            "restored": report.restored,
            "changes": [c.name for c in report.changes],
            "reload": report.reload,
            "reloaded": report.reloaded or None,
            "outcome": "ok" if error is None else error.outcome,
            "error": None if error is None else error.one_line(),
        }
    )


def _reload(
    run: _Run, session: Session, sftp: paramiko.SFTPClient, report: HostReport, old: files.FileState, new: bytes, generation: files.Backup | None
) -> HostReport:
    """Bring the WN's aria2c to the new file; on failure put ``generation`` back, reload it, and raise."""
    if report.reload == p.RELOAD_NONE:
        return report
    if not run.reload:
        return dataclasses.replace(report, reloaded=RELOAD_SKIPPED)
    old_options = p.read_options(old.data)
    new_options = p.read_options(new)
    if report.reload == p.RELOAD_RPC:
        return _reload_live(run, session, sftp, report, old_options, new_options, generation)
    return _reload_restart(run, session, sftp, report, old_options, new_options, generation)


def _reload_live(
    run: _Run,
    session: Session,
    sftp: paramiko.SFTPClient,
    report: HostReport,
    old_options: Mapping[str, str],
    new_options: Mapping[str, str],
    generation: files.Backup | None,
) -> HostReport:
    host = session.host
    values = {c.name: c.rpc_value for c in report.changes if c.rpc_value is not None}
    expected = p.expected_over_rpc(values)
    port = rpc_port_of(run.site, old_options)
    try:
        with rpc(session, port, _secret_for(run, old_options)) as call:
            call("aria2.changeGlobalOption", values)
            wrong = p.mismatches(expected, call("aria2.getGlobalOption"))
    except NotRunning:
        return dataclasses.replace(report, reloaded=NOT_RUNNING, notes=(*report.notes, "aria2c is not running; it reads the new file when it starts"))
    except RpcError as exc:
        why = exc.message.removeprefix(host + ": ")
        raise _put_back(run, session, sftp, report, generation, old_options, READ_BACK, f"live change not applied: {why}") from None
    if wrong:
        raise _put_back(
            run, session, sftp, report, generation, old_options, READ_BACK,
            f"aria2c answered OK but reads back other values for {', '.join(wrong)}",
        )
    return dataclasses.replace(report, reloaded=RELOADED_RPC)


def _session_id(call: Callable[..., Any]) -> str:
    info = call("aria2.getSessionInfo")
    return str(info.get("sessionId", "")) if isinstance(info, dict) else ""


def _reload_restart(
    run: _Run,
    session: Session,
    sftp: paramiko.SFTPClient,
    report: HostReport,
    old_options: Mapping[str, str],
    new_options: Mapping[str, str],
    generation: files.Backup | None,
) -> HostReport:
    host = session.host
    old_port = rpc_port_of(run.site, old_options)
    before_id: str | None = None
    try:
        with rpc(session, old_port, _secret_for(run, old_options)) as call:
            before_id = _session_id(call)
            if not run.restart_now:
                _drain(run, session, call, report)
    except NotRunning:
        before_id = None
    except RpcError as exc:
        # cannot tell what runs there: leave the new file for its next restart rather than guess
        _mark_pending(run, session, sftp, report)
        raise RolloutError(host, f"cannot see aria2c's downloads before restarting: {exc.message.removeprefix(host + ': ')}",
                           PENDING_HINT, outcome=BUSY, report=report) from None
    except RolloutError:
        _mark_pending(run, session, sftp, report)  # busy: the next apply restarts it, even with the file unchanged
        raise
    failure = _restart_and_confirm(run, session, new_options, before_id)
    if failure is not None:
        outcome, why = failure
        error = _put_back(run, session, sftp, report, generation, old_options, outcome, why)
        if error.report is not None and error.report.restored:
            _clear_pending(sftp, run.path(host))
        raise error
    _clear_pending(sftp, run.path(host))
    return dataclasses.replace(report, reloaded=RELOADED_RESTART)


def pending_path(config_path: str) -> str:
    """The file saying the config in place still waits for aria2c's restart (see ``PENDING_SUFFIX``)."""
    return config_path + PENDING_SUFFIX


def _mark_pending(run: _Run, session: Session, sftp: paramiko.SFTPClient, report: HostReport) -> None:
    """Remember on the WN that its file waits for a restart (best effort: the run fails ``busy`` anyway)."""
    body = {"sha256": report.after, "backup": report.backup, "since": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "run": run.run_id}
    path = pending_path(report.path)
    with contextlib.suppress(SshError):
        temp = files.write_temp(session, path, (json.dumps(body, sort_keys=True) + "\n").encode(), sftp=sftp)
        files.install(session, temp, files.FileState(path, None), sftp=sftp)


def _read_pending(sftp: paramiko.SFTPClient, config_path: str) -> dict[str, Any] | None:
    """What ``_mark_pending`` left, or None (absent, unreadable or not ours)."""
    try:
        with sftp.open(pending_path(config_path), "rb") as handle:
            body = json.loads(handle.read(4096).decode("utf-8"))
    except (OSError, EOFError, paramiko.SSHException, UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) and isinstance(body.get("sha256"), str) else None


def _clear_pending(sftp: paramiko.SFTPClient, config_path: str) -> None:
    with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
        sftp.remove(pending_path(config_path))


def _restart_pending(
    run: _Run, session: Session, sftp: paramiko.SFTPClient, report: HostReport, current: files.FileState, pending: Mapping[str, Any]
) -> HostReport:
    """The WN's file is the one an earlier run left for aria2c's next restart (it ended ``busy``): restart now
    (drained as any restart), with the backup that run took to go back to."""
    path = report.path
    generation = next((g for g in files.list_backups(session, path, sftp=sftp) if g.id == pending.get("backup")), None)
    old = files.read_file(session, generation.path, sftp=sftp).data if generation is not None else None
    old_options, new_options = p.read_options(old), p.read_options(current.data)
    since = pending.get("since") if isinstance(pending.get("since"), str) else "an earlier run"
    report = dataclasses.replace(
        report, changes=tuple(p.option_changes(old_options, new_options)), reload=p.RELOAD_RESTART,
        backup=generation.id if generation is not None else None, notes=(*report.notes, f"in place since {since} but aria2c not yet restarted (busy)"),
    )
    if run.dry_run:
        return report
    if not run.reload:
        return dataclasses.replace(report, reloaded=RELOAD_SKIPPED)
    try:
        report = _reload_restart(run, session, sftp, report, old_options or new_options, new_options, generation)
    except SshError as exc:
        _audit_host(run, report, exc)
        raise
    _audit_host(run, report, None)
    return report


def _drain(run: _Run, session: Session, call: Callable[..., Any], report: HostReport) -> None:
    deadline = time.monotonic() + run.site.rollout.drain_timeout
    while True:
        busy = downloads_in_flight(call("aria2.tellActive", ["gid", "status", "completedLength", "totalLength"]))
        if not busy:
            return
        if time.monotonic() >= deadline:
            raise RolloutError(
                session.host,
                f"busy: {len(busy)} download(s) in flight after rollout.drain_timeout {run.site.rollout.drain_timeout:g} s; not restarted",
                PENDING_HINT + ", ending those downloads",
                outcome=BUSY,
                report=report,
            )
        time.sleep(DRAIN_POLL)


def _restart_and_confirm(run: _Run, session: Session, options: Mapping[str, str], before_id: str | None) -> tuple[str, str] | None:
    """Run the restart command, then wait for a new aria2c session with ``options``; (outcome, why) on failure."""
    host = session.host
    command = restart_command_for(run.site, host)
    try:
        result = session.run(command)
    except SshError as exc:
        return RESTART_FAILED, f"restart command failed: {exc.message.removeprefix(host + ': ')}"
    if not result.ok:
        tail = files.output_tail(result.stderr, result.stdout)
        return RESTART_FAILED, f"`{command}` exited with status {result.exit_status}" + (f": {tail}" if tail else "")
    expected = p.expected_over_rpc(options)
    port = rpc_port_of(run.site, options)
    deadline = time.monotonic() + run.confirm_timeout
    last = "no answer"
    while True:
        try:
            with rpc(session, port, _secret_for(run, options)) as call:
                now_id = _session_id(call)
                if before_id is not None and now_id == before_id:
                    last = "aria2c still runs the session it had before the restart"
                else:
                    wrong = p.mismatches(expected, call("aria2.getGlobalOption"))
                    if not wrong:
                        return None
                    return READ_BACK, f"aria2c restarted but reads back other values for {', '.join(wrong)}"
        except RpcError as exc:
            last = exc.message.removeprefix(host + ": ")
        if time.monotonic() >= deadline:
            return RESTART_FAILED, f"aria2c not up with the new file {run.confirm_timeout:g} s after `{command}`: {last}"
        time.sleep(0.2)


def _put_back(
    run: _Run,
    session: Session,
    sftp: paramiko.SFTPClient,
    report: HostReport,
    generation: files.Backup | None,
    old_options: Mapping[str, str],
    outcome: str,
    why: str,
) -> RolloutError:
    """Restore the backup taken before the change and reload it; the error to raise says how that went."""
    host = session.host
    if generation is None:
        return RolloutError(host, f"{why}; the WN had no file before, so there is none to put back", outcome=outcome, report=report)
    try:
        files.restore(session, generation, sftp=sftp)
    except SshError as exc:
        why = f"{why}; restoring backup {generation.id} failed too: {exc.message.removeprefix(host + ': ')}"
        return RolloutError(host, why, outcome=outcome, report=report)
    how = "restored"
    if run.reload:
        if report.reload == p.RELOAD_RPC:
            values = {c.name: c.before for c in report.changes if c.before is not None}
            try:
                with rpc(session, rpc_port_of(run.site, old_options), _secret_for(run, old_options)) as call:
                    call("aria2.changeGlobalOption", values)
                how = "restored and its values set again over RPC"
            except RpcError as exc:
                how = f"restored, but setting its values again failed: {exc.message.removeprefix(host + ': ')}"
        else:
            again = _restart_and_confirm(run, session, old_options, None)
            how = "restored and aria2c restarted with it" if again is None else f"restored, but restarting with it failed: {again[1]}"
    return RolloutError(host, f"{why}; backup {generation.id} {how}", outcome=outcome, report=dataclasses.replace(report, restored=generation.id))


def _rollback_host(run: _Run, session: Session) -> HostReport:
    host = session.host
    path = run.path(host)
    with session.sftp() as sftp:
        lock = None if run.dry_run else _lock(run, session, sftp, path)
        try:
            folder = files.list_folder(session, path, sftp=sftp)
            if lock is not None:
                files.remove_stale_temps(session, path, sftp=sftp, folder=folder)
            generations = list(folder.backups)
            if not generations:
                raise RolloutError(host, f"no backup of {path} to roll back to", outcome=NO_BACKUP)
            try:
                chosen = files.find_backup(generations, run.to) if run.to else generations[0]
            except LookupError as exc:
                raise RolloutError(host, f"{path}: {exc}", "siteadmin rollback --list shows each WN's generations", outcome=NO_BACKUP) from None
            current = files.read_file(session, path, sftp=sftp)
            saved = files.read_file(session, chosen.path, sftp=sftp)
            if saved.data is None:
                raise RolloutError(host, f"backup {chosen.id} of {path} is gone", outcome=NO_BACKUP)
            secret_values = [v for k, v in p.read_options(saved.data).items() if k == "rpc-secret" and v]
            report = dataclasses.replace(_report(run, host, path, current, saved.data, secret_values), restored=chosen.id)
            if run.dry_run or (report.outcome == p.UNCHANGED and (current.uid, current.gid, current.mode) == (chosen.uid, chosen.gid, chosen.mode)):
                return report
            files.restore(
                session, chosen, validate_command=validate_command(p.read_options(saved.data)) if run.validate else None,
                judge=_validate_judge(secret_values), mask=secret_values, sftp=sftp,
            )
            # the file replaced becomes a generation of its own (after the restore: pruning may remove the one restored)
            kept = files.backup(session, current, keep=max(1, run.site.rollout.backups_kept), sftp=sftp) if current.data is not None else None
            report = dataclasses.replace(report, backup=kept.id if kept else None)
            try:
                report = _reload(run, session, sftp, report, current, saved.data, kept)
            except SshError as exc:
                _audit_host(run, report, exc)
                raise
            _audit_host(run, report, None)
            return report
        finally:
            if lock is not None and drop_lock(sftp, lock, stale_after=run.site.rollout.lock_stale_after):
                run.released(host)


def _list_host(run: _Run, session: Session) -> HostReport:
    path = run.path(session.host)
    with session.sftp() as sftp:
        current = files.read_file(session, path, sftp=sftp)
        generations = files.list_backups(session, path, sftp=sftp)
    return HostReport(session.host, path, p.UNCHANGED, current.sha256, current.sha256, generations=tuple(generations), dry_run=True)


# ---------------------------------------------------------------- the runs


def _fan_out(
    site: Site,
    run: _Run,
    hosts: Sequence[str],
    work: Callable[[_Run, Session], HostReport],
    *,
    service: WNService | None,
    inventory: Inventory | None,
    parallelism: int | None,
    batches: Batches | None,
    cancel: threading.Event | None,
    progress: Callable[[Progress[HostReport]], None] | None,
    accept_new: bool,
) -> list[HostResult[HostReport]]:
    own = service is None
    if service is None:
        service = WNService(site, inventory, parallelism=parallelism, **_accept_options(run, accept_new))
    try:
        return service.run(list(hosts), lambda session: work(run, session), parallelism=parallelism, batches=batches, cancel=cancel, progress=progress)
    finally:
        if own:
            service.close()


def _release_left(run: _Run, inventory: Inventory | None) -> dict[str, str]:
    """Remove the locks (and temp files) a cancelled or cut-off WN could not remove itself, over new connections.

    A cancel closes the WNs' connections under their work, and a cut connection cannot remove
    anything: their locks stay on the WNs. Each is removed here only while its file still holds
    this run's token (so never another run's), with the temp files the cut left beside it.
    Connections come from a WN service of their own: the run's may be closed.

    Returns:
        ``{host: why}`` for the WNs whose lock could not be removed (each also a ``warn`` line).
    """
    left = run.left()
    if not left:
        return {}

    def release(session: Session) -> None:
        host = session.host
        lock = left[host]
        with session.sftp() as sftp:
            held = read_lock(sftp, lock.path)
            if held is not None and held.token == lock.token:
                files.remove_stale_temps(session, run.path(host), sftp=sftp)
                sftp.remove(lock.path)
        run.released(host)

    # a service of its own: a cancel closed the run's pool, and a caller's service may be closed too
    with WNService(run.site, inventory, parallelism=max(1, min(len(left), run.site.ssh.parallelism))) as service:
        results = service.run(list(left), release)
    gone: dict[str, str] = {}
    for result in results:
        if not result.ok:
            why = result.detail()
            gone[result.host] = why
            warn(
                f"{result.host}: the lock {left[result.host].path} of this run is still on the WN ({why}); "
                "once no siteadmin run works on that WN, remove it there"
            )
    return gone


def _note_left(results: list[HostResult[HostReport]], left: Mapping[str, str], run: _Run) -> list[HostResult[HostReport]]:
    """Each failed WN whose lock stayed says so in its own line."""
    if not left:
        return results
    noted = []
    for result in results:
        if result.host in left and not result.ok and result.error is not None:
            lock = lock_path(run.path(result.host))
            result = dataclasses.replace(result, error=f"{result.error}; its lock {lock} is left on the WN ({left[result.host]})")
        noted.append(result)
    return noted


def _accept_options(run: _Run, accept_new: bool) -> dict[str, Any]:
    if not accept_new:
        return {}

    def accepted(host: str, name: str, keytype: str, fingerprint: str, path: str) -> None:
        # a dry run too: the key was written to known_hosts, because the admin asked for it
        if run.write_audit:
            event = {"action": "hostkey.accept-new", "host": host, "name": name, "keytype": keytype, "fingerprint": fingerprint, "known_hosts": path}
            audit.record(run.audit_path, {"run": run.run_id, **event})

    return {"accept_new": True, "on_accept": accepted}


def _new_run(site: Site, action: str, dry_run: bool, hosts: Sequence[str], **options: Any) -> _Run:
    validate = options.pop("validate", True)
    first = options.pop("parallelism", None) or site.ssh.parallelism
    checks = _Checks(site, hosts, aria2c=validate, run=action in ("plan", "apply"), first=first)
    return _Run(
        site=site,
        action=action,
        run_id=secrets.token_hex(6),
        dry_run=dry_run,
        checks=checks,
        validate=validate,
        holder=options.pop("holder", None) or holder_name(),
        audit_path=site.audit.path,
        **options,
    )


def _finish(run: _Run, results: list[HostResult[HostReport]], started: float, hosts: Sequence[str]) -> RolloutRun:
    outcome = RolloutRun(run.action, run.run_id, run.dry_run, results, time.monotonic() - started)
    if run.action != "list":
        run.record(
            {
                "action": f"rollout.{run.action}.run",
                "hosts": fold(hosts),
                "count": len(hosts),
                "failed": len(outcome.failed),
                "summary": [{"hosts": h, "outcome": label} for h, label in outcome.summary()],
                "outcome": "ok" if outcome.ok else "failed",
            }
        )
    return outcome


def apply(
    site: Site,
    hosts: Sequence[str],
    *,
    dry_run: bool = False,
    wait_lock: float = 0.0,
    restart_now: bool = False,
    validate: bool = True,
    reload: bool = True,
    batches: Batches | None = None,
    parallelism: int | None = None,
    accept_new: bool = False,
    service: WNService | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[HostReport]], None] | None = None,
    confirm_timeout: float = CONFIRM_TIMEOUT,
    holder: str | None = None,
    audit_log: bool = True,
) -> RolloutRun:
    """Roll each WN's rendered profile out to it (see the module docstring for the order).

    Args:
        site: the site config.
        hosts: WN names (``Inventory(site).select(pattern)``).
        dry_run: plan only: no lock, no backup, nothing written anywhere, no audit record.
        wait_lock: seconds to wait for a WN's lock held by another run; 0 fails it at once (``locked``).
        restart_now: restart without waiting for downloads in flight to finish.
        validate: check the new file with the WN's own aria2c (and the VoBox's, in the profile
            check). A benchmark turns it off; a site cannot.
        reload: bring the WN's aria2c to the new file (RPC or restart). A benchmark turns it off.
        batches: batches and abort threshold (``Batches.from_site(site)``); one batch when None.
        parallelism: WNs at once; the service's (``ssh.parallelism``) when None.
        accept_new: accept (and write to ``ssh.known_hosts``, and audit) the key of a WN that has none there.
        service: a WN service to run on (the console's); a new one, closed afterwards, when None.
            ``accept_new`` applies only to a service made here.
        inventory: the site's Inventory, when the caller has one.
        cancel: set it to stop (WNs not started get ``cancelled``; a WN's file is old or new, never torn).
        progress: called in the calling thread with each WN's result as it lands.
        confirm_timeout: seconds a restarted aria2c has to come up with the new values.
        holder: the name the WN locks carry (``user@vobox`` when None).
        audit_log: write audit records (a benchmark may turn them off).

    Returns:
        A RolloutRun: one result per WN, in order; a failed WN's exception says why.

    Raises:
        ConfigError: the audit log cannot be appended to (checked before any WN is touched), a
            bad key file or ssh config.
        KeyboardInterrupt: after cancelling as above.
    """
    started = time.monotonic()
    if not dry_run and audit_log:
        audit.check_writable(site.audit.path)
    if not dry_run:
        trust.note_cwd_config(site.source, f"a rollout to {len(hosts)} WN(s)")
    run = _new_run(
        site, "plan" if dry_run else "apply", dry_run, hosts, validate=validate, reload=reload, wait_lock=wait_lock,
        restart_now=restart_now, confirm_timeout=confirm_timeout, holder=holder, write_audit=audit_log, parallelism=parallelism,
    )
    try:
        results = _fan_out(site, run, hosts, _apply_host, service=service, inventory=inventory, parallelism=parallelism,
                           batches=batches, cancel=cancel, progress=progress, accept_new=accept_new)
    finally:
        left = _release_left(run, inventory)  # Ctrl-C too: the locks go before the interrupt does
    return _finish(run, _note_left(results, left, run), started, hosts)


def plan(
    site: Site,
    hosts: Sequence[str],
    *,
    parallelism: int | None = None,
    accept_new: bool = False,
    service: WNService | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[HostReport]], None] | None = None,
) -> RolloutRun:
    """What ``apply`` would change on each WN, writing nothing anywhere (``apply(dry_run=True)``).

    Args, Returns, Raises: as ``apply``.
    """
    return apply(site, hosts, dry_run=True, parallelism=parallelism, accept_new=accept_new, service=service,
                 inventory=inventory, cancel=cancel, progress=progress)


def rollback(
    site: Site,
    hosts: Sequence[str],
    *,
    to: str | None = None,
    dry_run: bool = False,
    wait_lock: float = 0.0,
    restart_now: bool = False,
    validate: bool = True,
    reload: bool = True,
    batches: Batches | None = None,
    parallelism: int | None = None,
    accept_new: bool = False,
    service: WNService | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[HostReport]], None] | None = None,
    confirm_timeout: float = CONFIRM_TIMEOUT,
    holder: str | None = None,
) -> RolloutRun:
    """Put a backup generation back on each WN, byte for byte with owner and mode, and reload it as ``apply`` does.

    The file it replaces becomes a generation of its own, so a rollback can be rolled back.

    Args:
        to: the generation's id (or a unique prefix of it) as ``list_generations`` shows it; the
            newest when None. A WN without it fails (``failed: no backup``).
        Others: as ``apply``.

    Returns, Raises: as ``apply``.
    """
    started = time.monotonic()
    if not dry_run:
        audit.check_writable(site.audit.path)
        trust.note_cwd_config(site.source, f"a rollback on {len(hosts)} WN(s)")
    run = _new_run(
        site, "rollback", dry_run, hosts, validate=validate, reload=reload, wait_lock=wait_lock,
        restart_now=restart_now, confirm_timeout=confirm_timeout, holder=holder, to=to,
    )
    try:
        results = _fan_out(site, run, hosts, _rollback_host, service=service, inventory=inventory, parallelism=parallelism,
                           batches=batches, cancel=cancel, progress=progress, accept_new=accept_new)
    finally:
        left = _release_left(run, inventory)
    return _finish(run, _note_left(results, left, run), started, hosts)


def list_generations(
    site: Site,
    hosts: Sequence[str],
    *,
    parallelism: int | None = None,
    accept_new: bool = False,
    service: WNService | None = None,
    inventory: Inventory | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[Progress[HostReport]], None] | None = None,
) -> RolloutRun:
    """Each WN's backup generations (``HostReport.generations``, newest first), writing nothing.

    Args, Returns, Raises: as ``apply``.
    """
    started = time.monotonic()
    run = _new_run(site, "list", True, hosts, wait_lock=0.0, restart_now=False, reload=False, confirm_timeout=0.0, holder=None)
    results = _fan_out(site, run, hosts, _list_host, service=service, inventory=inventory, parallelism=parallelism,
                       batches=None, cancel=cancel, progress=progress, accept_new=accept_new)
    return _finish(run, results, started, hosts)
