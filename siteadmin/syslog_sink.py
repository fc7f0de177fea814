"""Every change also goes to syslog: one line per audit event, for the site's central log collection.

The audit log (``siteadmin.audit``) is the full record of every change; a site's log collection
(rsyslog, journald, a central collector) should see the changes too, without reading that file.
``audit.record`` calls ``forward`` after each append; ``forward`` sends the event as one syslog
line when a site config with ``[syslog] enabled`` is attached for that audit log (``attach``: the
CLI and the console attach the site they load, so every change of a run is covered).

A line reads ``rollout.apply host=wn001.example.org outcome=ok before=3f2a… after=9c1d… user=root
run=…``: the action, then ``key=value`` pairs (values with spaces quoted, control characters
written out, so a value can never forge a second line), at most ``MAX_MESSAGE`` bytes. Fields
whose name looks like a secret are masked and ``user:password@`` in URLs is masked: secrets never
reach syslog. Severity is ``notice`` for a change that went through, ``warning`` for one that
failed or was refused.

Syslog is best effort: a socket that is absent, refuses or fails gives one warning per run
(``errors.warn``) and never fails or undoes the change (the audit line is already written).
Sending uses the standard library's ``logging.handlers.SysLogHandler`` (Unix datagram or stream
socket, UDP, or TCP); the line is RFC 3164: ``<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE``, with the
host name after the time when it goes to a remote collector.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from siteadmin.errors import printable, warn
from siteadmin.secrets import MASK, mask_userinfo
from siteadmin.site import Site, SyslogSection, parse_syslog_address, resembles_secret

MAX_MESSAGE = 2048
"""Longest message sent, in bytes (what every syslog transport carries; the audit log has the rest)."""

LEAD = ("action", "ce", "host", "hosts", "from", "to", "before", "after", "outcome")
"""Fields shown first, in this order, when an event has them."""

DROPPED = frozenset({"when"})
"""Fields not sent: syslog stamps its own time."""

OK_OUTCOMES = frozenset({"ok", "requested", "accepted"})
"""Outcomes that are no failure (anything else is sent at warning)."""

SEND_TIMEOUT = 2.0
"""Seconds a connect or send may take: a stuck syslog must not hold up a rollout."""

RETRY_AFTER = 60.0
"""Seconds a sink that failed stays quiet before trying again (a run with hundreds of changes waits on no dead collector)."""

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        text = ",".join(_value(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}:{_value(v)}" for k, v in value.items())
    else:
        text = str(value)
    text = printable(mask_userinfo(text))
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def message(event: Mapping[str, Any]) -> str:
    """The syslog message for one audit event: ``ACTION key=value ...``, secrets masked, one line.

    Args:
        event: the audit event as written (``audit.record``'s return value).

    Returns:
        The message, cut to ``MAX_MESSAGE`` bytes (ending in ``...`` when cut).
    """
    keys = [k for k in LEAD if k in event and k != "action"]
    keys += [k for k in event if k not in LEAD and k not in DROPPED]
    parts = [_value(event.get("action", "change"))]
    for key in keys:
        shown = MASK if resembles_secret(str(key)) and event[key] not in (None, "") else event[key]
        parts.append(f"{printable(str(key))}={_value(shown)}")
    text = " ".join(parts)
    data = text.encode("utf-8", "backslashreplace")
    if len(data) > MAX_MESSAGE:
        text = data[: MAX_MESSAGE - 3].decode("utf-8", "ignore") + "..."
    return text


def severity(event: Mapping[str, Any]) -> str:
    """``notice`` for a change that went through, ``warning`` for one that failed or was refused."""
    outcome = event.get("outcome")
    return "notice" if outcome is None or outcome in OK_OUTCOMES else "warning"


def rfc3164_time(when: float) -> str:
    """``Dec  1 03:00:00``: RFC 3164's local timestamp (day padded with a space)."""
    t = time.localtime(when)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


class _Handler(logging.handlers.SysLogHandler):
    """SysLogHandler that keeps the error of a failed send instead of printing a traceback, with bounded waits."""

    failure: BaseException | None = None

    def handleError(self, record: logging.LogRecord) -> None:  # logging's name
        self.failure = sys.exc_info()[1]

    def createSocket(self) -> None:  # logging's name
        if not isinstance(self.address, str) and self.socktype == socket.SOCK_STREAM:
            # the stdlib connects a TCP collector without a time limit
            self.unixsocket = False
            self.socket = socket.create_connection(self.address, timeout=SEND_TIMEOUT)
            return
        super().createSocket()
        if not self.unixsocket and self.socket is not None:  # a Unix socket got its timeout when it connected
            self.socket.settimeout(SEND_TIMEOUT)

    def _connect_unixsocket(self, address: Any) -> None:  # a reconnect in emit comes here too
        super()._connect_unixsocket(address)  # type: ignore[misc]  # not in typeshed
        if self.socket is not None:
            self.socket.settimeout(SEND_TIMEOUT)

    def mapPriority(self, levelName: str) -> str:  # logging's names
        return levelName.lower()


class SyslogSink:
    """Sends audit events of one site to its syslog; never raises.

    Args:
        settings: the site's ``[syslog]`` table.
    """

    def __init__(self, settings: SyslogSection) -> None:
        self.settings = settings
        self.kind, self.address = parse_syslog_address(settings.address)
        self._handler: _Handler | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._quiet_until = 0.0

    def _open(self) -> _Handler:
        if self._handler is None:
            socktype = socket.SOCK_STREAM if self.kind == "tcp" else (socket.SOCK_DGRAM if self.kind == "udp" else None)
            # a missing Unix socket is not an error here (as openlog(3)); the first send reports it
            handler = _Handler(address=self.address, facility=self.settings.facility, socktype=socktype)
            handler.append_nul = self.kind == "tcp"  # a NUL ends a message on a stream; a datagram is one message
            self._handler = handler
        return self._handler

    def line(self, event: Mapping[str, Any], now: float | None = None) -> str:
        """The text after ``<PRI>``: time, (host name when remote), ``TAG[PID]:`` and the message."""
        head = rfc3164_time(time.time() if now is None else now)
        if self.kind != "unix":
            head += " " + (socket.gethostname().split(".")[0] or "-")
        return f"{head} {self.settings.tag}[{os.getpid()}]: {message(event)}"

    def send(self, event: Mapping[str, Any]) -> bool:
        """Send one event; on failure warn once (per sink) and return False. Never raises.

        After a failure the sink sends nothing for ``RETRY_AFTER`` seconds, then tries again.
        """
        if time.monotonic() < self._quiet_until:
            return False
        try:
            failure = self._emit(event)
        except Exception as exc:  # any failure of syslog must leave the change alone
            failure = exc
        if failure is not None:
            self._failed(failure)
            return False
        return True

    def _emit(self, event: Mapping[str, Any]) -> BaseException | None:
        with self._lock:
            handler = self._open()
            handler.failure = None
            record = logging.LogRecord("siteadmin", logging.INFO, __file__, 0, self.line(event), None, None)
            record.levelname = severity(event).upper()
            handler.handle(record)
            return handler.failure

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._quiet_until = time.monotonic() + RETRY_AFTER
            if self._handler is not None:
                self._handler.close()
                self._handler = None
            if self._warned:
                return
            self._warned = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        warn(
            f"syslog {self.settings.address}: cannot send ({reason}); changes are in the audit log only "
            "(set [syslog] address, or enabled = false)"
        )

    def close(self) -> None:
        with self._lock:
            if self._handler is not None:
                self._handler.close()
                self._handler = None


_sinks: dict[str, SyslogSink] = {}
_sinks_lock = threading.Lock()


def _key(audit_path: Path | str) -> str:
    return os.path.abspath(Path(audit_path).expanduser())


def attach(site: Site) -> SyslogSink | None:
    """Send every change recorded in ``site``'s audit log to ``site``'s syslog from now on.

    Args:
        site: the loaded site config (``[syslog]`` and ``[audit] path``).

    Returns:
        The sink, or None when ``[syslog] enabled`` is false (then nothing is sent for that log).
    """
    key = _key(site.audit.path)
    with _sinks_lock:
        old = _sinks.pop(key, None)
        if old is not None and old.settings == site.syslog:
            _sinks[key] = old
            return old
        if old is not None:
            old.close()
        if not site.syslog.enabled:
            return None
        sink = SyslogSink(site.syslog)
        _sinks[key] = sink
        return sink


def detach(audit_path: Path | str) -> None:
    """Stop sending the changes of this audit log to syslog."""
    with _sinks_lock:
        sink = _sinks.pop(_key(audit_path), None)
    if sink is not None:
        sink.close()


def forward(audit_path: Path | str, event: Mapping[str, Any]) -> None:
    """Send an event just appended to ``audit_path`` to the syslog attached for it, if any. Never raises."""
    try:
        with _sinks_lock:
            sink = _sinks.get(_key(audit_path))
    except Exception:  # a path that cannot even be named has no sink
        return
    if sink is not None:
        sink.send(event)
