"""What a swarm report becomes for monitoring: one Nagios status line, a Prometheus textfile.

``nagios(report, status)`` follows the Nagios plugin rules (one line, ``|`` then perfdata,
exit 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN) with the ``[status]`` thresholds.
``prometheus_text(report)`` renders the report with the prometheus-client library's text
format (metric names ``siteadmin_swarm_*``, labels ``wn``, ``package``, ``source``, ``problem``);
``write_prometheus`` writes it for node_exporter's textfile collector atomically (a temp file in
the same folder, renamed), mode 0644: the file holds no secret.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from siteadmin.errors import ConfigError
from siteadmin.site import StatusSection
from siteadmin.swarm.model import CRITICAL_PROBLEMS, PROBLEMS, SwarmReport


class NagiosState(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def _perf(label: str, value: float | int, uom: str = "", warn: str = "", crit: str = "", low: str = "", high: str = "") -> str:
    number = f"{value:.4g}" if isinstance(value, float) else str(value)
    return f"{label}={number}{uom};{warn};{crit};{low};{high}".rstrip(";")


def nagios(report: SwarmReport, status: StatusSection) -> tuple[NagiosState, str]:
    """The Nagios state and status line of a report.

    CRITICAL when more than ``nagios_critical_percent`` of the WNs cannot be read; WARNING when
    more than ``nagios_warning_percent`` have any problem, or the site share is below
    ``nagios_min_site_share``; UNKNOWN when no WN was selected.

    Args:
        report: one poll.
        status: the ``[status]`` thresholds.

    Returns:
        (state, one line: ``SWARM OK - ... | perfdata``).
    """
    total = len(report.wns)
    if total == 0:
        return NagiosState.UNKNOWN, "SWARM UNKNOWN - no WNs selected"
    unread = {p.host for p in report.problems if p.code in CRITICAL_PROBLEMS}
    flagged = {p.host for p in report.problems}
    unread_pct = 100.0 * len(unread) / total
    flagged_pct = 100.0 * len(flagged) / total
    fraction = report.share.fraction
    reasons = []
    state = NagiosState.OK
    if unread_pct > status.nagios_critical_percent:
        state = NagiosState.CRITICAL
        reasons.append(f"{len(unread)} of {total} WNs unreadable")
    if flagged_pct > status.nagios_warning_percent:
        state = max(state, NagiosState.WARNING)
        counts: dict[str, int] = {}
        for p in report.problems:
            counts[p.code] = counts.get(p.code, 0) + 1
        reasons.append(", ".join(f"{counts[c]} {c}" for c in PROBLEMS if c in counts))
    if status.nagios_min_site_share > 0 and fraction is not None and fraction * 100 < status.nagios_min_site_share:
        state = max(state, NagiosState.WARNING)
        reasons.append(f"site share {fraction * 100:.0f}% below {status.nagios_min_site_share:g}%")
    seeding = sum(w.seeding for w in report.wns)
    downloading = sum(w.active for w in report.wns)
    summary = (
        f"{total - len(unread)}/{total} WNs read, {downloading} downloading, {seeding} seeding, "
        f"from site WNs {report.share.label}"
    )
    text = f"SWARM {state.name} - {'; '.join([*reasons, summary]) if reasons else summary}"
    perf = [
        _perf("wns", total, low="0"),
        _perf("unreadable", len(unread), warn="", crit=f"{status.nagios_critical_percent * total / 100:g}", low="0", high=str(total)),
        _perf("problems", len(flagged), warn=f"{status.nagios_warning_percent * total / 100:g}", low="0", high=str(total)),
        _perf("downloading", downloading, low="0"),
        _perf("seeding", seeding, low="0"),
        _perf("download_speed", sum(w.download_speed for w in report.wns), "B", low="0"),
        _perf("upload_speed", sum(w.upload_speed for w in report.wns), "B", low="0"),
    ]
    if fraction is not None:
        warn = f"{status.nagios_min_site_share:g}:" if status.nagios_min_site_share > 0 else ""
        perf.append(_perf("site_share", round(fraction * 100, 1), "%", warn=warn, low="0", high="100"))
    perf.append(_perf("poll_time", round(report.elapsed, 3), "s", low="0"))
    return state, f"{text} | {' '.join(perf)}"


class _ReportCollector(Collector):
    def __init__(self, report: SwarmReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        r = self.report
        up = GaugeMetricFamily("siteadmin_swarm_wn_up", "1 when the WN's aria2c answered its RPC, else 0.", labels=["wn", "reason"])
        info = GaugeMetricFamily("siteadmin_swarm_aria2c_info", "The aria2c version a WN runs (always 1).", labels=["wn", "version"])
        downloads = GaugeMetricFamily("siteadmin_swarm_downloads", "Downloads on a WN by state.", labels=["wn", "state"])
        down = GaugeMetricFamily("siteadmin_swarm_download_bytes_per_second", "A WN's aria2c download speed.", labels=["wn"])
        upload = GaugeMetricFamily("siteadmin_swarm_upload_bytes_per_second", "A WN's aria2c upload speed.", labels=["wn"])
        progress = GaugeMetricFamily("siteadmin_swarm_package_progress_ratio", "Share of a package a WN holds, 0-1.", labels=["wn", "package"])
        seeding = GaugeMetricFamily("siteadmin_swarm_package_seeding", "1 when the WN seeds the package.", labels=["wn", "package"])
        seed_seconds = GaugeMetricFamily("siteadmin_swarm_package_seed_seconds", "Seconds the WN has seeded the package.", labels=["wn", "package"])
        ratio = GaugeMetricFamily("siteadmin_swarm_package_upload_ratio", "Bytes uploaded over bytes held.", labels=["wn", "package"])
        peers = GaugeMetricFamily("siteadmin_swarm_package_peers", "Peers of the WN's download of the package.", labels=["wn", "package"])
        received = CounterMetricFamily(
            "siteadmin_swarm_received_bytes", "TCP bytes a WN received by source, from its accounting counters.", labels=["wn", "source"]
        )
        problems = GaugeMetricFamily("siteadmin_swarm_problem", "1 for each problem flagged on a WN.", labels=["wn", "problem", "package"])
        share = GaugeMetricFamily(
            "siteadmin_swarm_package_site_share_ratio", "Share of a package's bytes that came from site WNs, 0-1.", labels=["package", "exact"]
        )
        for w in r.wns:
            up.add_metric([w.host, w.reason or ""], 1.0 if w.reachable else 0.0)
            if not w.reachable:
                continue
            info.add_metric([w.host, w.version or ""], 1.0)
            for state, n in (("active", w.active), ("waiting", w.waiting), ("seeding", w.seeding), ("stopped", w.stopped)):
                downloads.add_metric([w.host, state], float(n))
            down.add_metric([w.host], float(w.download_speed))
            upload.add_metric([w.host], float(w.upload_speed))
            for t in w.torrents:
                progress.add_metric([w.host, t.package], t.progress)
                seeding.add_metric([w.host, t.package], 1.0 if t.seeding else 0.0)
                if t.seed_seconds is not None:
                    seed_seconds.add_metric([w.host, t.package], t.seed_seconds)
                ratio.add_metric([w.host, t.package], t.ratio)
                peers.add_metric([w.host, t.package], float(t.connections))
            if w.counters is not None:
                for source, value in w.counters.as_dict().items():
                    received.add_metric([w.host, source], float(value))
        for p in r.problems:
            problems.add_metric([p.host, p.code, p.package or ""], 1.0)
        for pkg in r.packages:
            if pkg.share.fraction is not None:
                share.add_metric([pkg.name, "true" if pkg.share.exact else "false"], pkg.share.fraction)
        yield from (up, info, downloads, down, upload, progress, seeding, seed_seconds, ratio, peers, received, problems, share)
        site = GaugeMetricFamily(
            "siteadmin_swarm_site_share_ratio", "Site-wide share of bytes that came from site WNs, 0-1.", labels=["exact"]
        )
        if r.share.fraction is not None:
            site.add_metric(["true" if r.share.exact else "false"], r.share.fraction)
        yield site
        yield GaugeMetricFamily("siteadmin_swarm_poll_seconds", "Wall time of the poll.", value=r.elapsed)
        yield GaugeMetricFamily("siteadmin_swarm_last_poll_timestamp_seconds", "When the poll was taken (Unix time).", value=r.taken_at)


def prometheus_text(report: SwarmReport) -> str:
    """The report in Prometheus' text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ReportCollector(report))
    return generate_latest(registry).decode()


def write_prometheus(path: Path, report: SwarmReport) -> None:
    """Write the textfile atomically, mode 0644 (node_exporter reads ``*.prom`` files; the name should end so).

    Raises:
        ConfigError: the folder is missing or not writable.
    """
    text = prometheus_text(report)
    path = path.expanduser()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"--prometheus {path}: cannot write in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError(f"--prometheus {path}: cannot write: {exc.strerror}") from None


__all__ = ["NagiosState", "nagios", "prometheus_text", "write_prometheus"]
