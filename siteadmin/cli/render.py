"""``siteadmin render`` and ``siteadmin lint``: the aria2c profile of each WN, shown, written, checked.

``render`` prints each selected WN's profile with secrets masked; ``--out DIR`` writes one
file per WN (0600, real secrets) instead, and only when every profile passes validation,
aria2c's own check and the security lint. ``lint`` reports findings, hosts folded by finding,
and (with ``--json``) each WN's verdict; it exits 1 on errors and 0 when there are only warnings.
Both run ``siteadmin.aria2conf.check_profiles``, the check the console's Profile tab runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteadmin.aria2conf import Rendered
from siteadmin.aria2conf.check import FINDING_ORDER, InterfaceProbe, ProfileCheck, check_allow, check_profiles, hosts_to_check
from siteadmin.aria2conf.lint import ERROR, RULES, Finding
from siteadmin.errors import ConfigError, ExitCode, ServiceUnreachable
from siteadmin.inventory import fold
from siteadmin.secrets import write_private_file
from siteadmin.site import Site

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", metavar="PATTERN", help="WNs to work on: hostlist, @group, a!b (default: all; the site profile when none)")
    common.add_argument("--allow", metavar="RULE", action="append", default=[], help=f"accept a lint rule for this run ({', '.join(RULES)})")
    common.add_argument("--no-aria2c-check", action="store_true", help="skip letting the installed aria2c read each profile")
    r = sub.add_parser("render", help="render each WN's aria2c profile (secrets masked; --out writes real files)", parents=[parent, common])
    r.add_argument("--out", metavar="DIR", help="write <DIR>/<host>.conf, mode 0600, real secrets, instead of printing")
    r.set_defaults(handler=cmd_render)
    lt = sub.add_parser("lint", help="security lint of each WN's aria2c profile (exit 1 on errors)", parents=[parent, common])
    lt.add_argument(
        "--probe",
        action="store_true",
        help="log in to each WN over SSH to learn its IPv4 interfaces for the LPD rule (without it the rule looks at this machine's)",
    )
    lt.set_defaults(handler=cmd_lint)


def _check_all(ctx: Context, args: argparse.Namespace) -> tuple[ProfileCheck, list[Rendered], dict[str, list[Finding]]]:
    """The profile check of every selected host (the one the console runs too); findings per host.

    Raises:
        ConfigError: a profile that cannot be rendered (the first such host's error).
    """
    site = ctx.site
    allow = check_allow(args.allow)
    hosts = hosts_to_check(site, args.host)
    probe = _interface_probe(site) if getattr(args, "probe", False) else None
    checked = check_profiles(site, hosts, allow=allow, aria2c=not args.no_aria2c_check, interfaces=probe)
    for note in checked.notes:
        ctx.note(note)
    return checked, _rendered_or_raise(checked), {h.host: list(h.findings) for h in checked.hosts}


def _rendered_or_raise(checked: ProfileCheck) -> list[Rendered]:
    rendered = []
    for host in checked.hosts:
        if host.error is not None:
            raise host.error
        if host.rendered is not None:
            rendered.append(host.rendered)
    return rendered


def _interface_probe(site: Site) -> InterfaceProbe:
    """Each WN's IPv4 interfaces over SSH, as the profile check takes them."""
    from siteadmin.remote.facts import wn_interfaces

    def probe(hosts: Sequence[str]) -> Mapping[str, Sequence[str] | BaseException]:
        known: dict[str, Sequence[str] | BaseException] = {}
        for result in wn_interfaces(site, hosts):
            if result.ok and result.value is not None:
                known[result.host] = result.value
            else:
                known[result.host] = result.exception or ServiceUnreachable(result.detail())
        return known

    return probe


def _folded(findings: dict[str, list[Finding]]) -> list[dict[str, Any]]:
    """Findings with the hosts that share each one folded: wn[001-040]."""
    hosts_of: dict[Finding, list[str]] = {}
    for host, found in findings.items():
        for finding in found:
            hosts_of.setdefault(finding, []).append(host)
    order = list(FINDING_ORDER)
    rows = [{"hosts": fold(hosts), **f.as_dict()} for f, hosts in hosts_of.items()]
    return sorted(rows, key=lambda r: (r["level"] != ERROR, order.index(r["rule"]), r["hosts"]))


def _findings_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['hosts']}: {r['level']}: {r['option']}: {r['message']} [{r['rule']}]" for r in rows)


def cmd_lint(ctx: Context, args: argparse.Namespace) -> int:
    checked, _, findings = _check_all(ctx, args)
    rows = _folded(findings)
    errors = sum(1 for r in rows if r["level"] == ERROR)
    verdicts = {host: verdict.value for host, verdict in checked.verdicts.items()}
    data = {"hosts": fold(findings), "count": len(findings), "errors": errors, "findings": rows, "verdicts": verdicts}
    ctx.emit(data, lambda d: _findings_text(d["findings"]) or f"{d['hosts']}: no findings",
             quiet_text=lambda d: _findings_text([r for r in d["findings"] if r["level"] == ERROR]))  # --quiet: the errors alone
    return ExitCode.FAILED if errors else ExitCode.OK


def cmd_render(ctx: Context, args: argparse.Namespace) -> int:
    _, rendered, findings = _check_all(ctx, args)
    rows = _folded(findings)
    errors = [r for r in rows if r["level"] == ERROR]
    for row in rows:
        ctx.note(f"lint: {row['hosts']}: {row['level']}: {row['option']}: {row['message']} [{row['rule']}]")
    if args.out is not None:
        if errors:
            ctx.note(f"nothing written: {len(errors)} lint error(s); fix them or --allow the rule")
            return ExitCode.FAILED
        written = _write_all(Path(args.out), rendered)
        data = [{"host": r.host, "path": str(p), "hash": r.hash} for r, p in zip(rendered, written, strict=True)]
        ctx.emit(data, lambda d: "\n".join(f"{x['host']}: {x['path']} {x['hash']}" for x in d))
        return ExitCode.OK
    data_list = [{"host": r.host, "hash": r.hash, "text": r.masked_text, "origin": r.origin} for r in rendered]
    ctx.emit(data_list, lambda d: "\n".join(x["text"] for x in d))
    return ExitCode.FAILED if errors else ExitCode.OK


def _write_all(out: Path, rendered: list[Rendered]) -> list[Path]:
    """Write each profile to <out>/<host>.conf atomically, 0600 from the first byte."""
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create directory: {exc.strerror}") from None
    paths = []
    for item in rendered:
        path = out / f"{item.host}.conf"
        try:
            write_private_file(path, item.text)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write {path.name}: {exc.strerror}") from None
        paths.append(path)
    return paths
