"""``siteadmin render`` and ``siteadmin lint``: the aria2c profile of each WN, shown, written, checked.

``render`` prints each selected WN's profile with secrets masked; ``--out DIR`` writes one
file per WN (0600, real secrets) instead, and only when every profile passes validation,
aria2c's own check and the security lint. ``lint`` reports findings, hosts folded by finding;
it exits 1 on errors and 0 when there are only warnings.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from siteadmin.aria2conf import PLACEHOLDER_HOST, Finding, Rendered, allowed_rules, aria2c_path, check_with_aria2c, lint, render
from siteadmin.aria2conf.lint import ERROR, RULES
from siteadmin.errors import ConfigError, ExitCode, UsageError
from siteadmin.inventory import Inventory, fold
from siteadmin.secrets import write_private_file
from siteadmin.site import Site

if False:  # typing only
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", metavar="PATTERN", help="WNs to work on: hostlist, @group, a!b (default: all; the site profile when none)")
    common.add_argument("--allow", metavar="RULE", action="append", default=[], help=f"accept a lint rule for this run ({', '.join(RULES)})")
    common.add_argument("--no-aria2c-check", action="store_true", help="skip letting the installed aria2c read each profile")
    r = sub.add_parser("render", help="render each WN's aria2c profile (secrets masked; --out writes real files)", parents=[parent, common])
    r.add_argument("--out", metavar="DIR", help="write <DIR>/<host>.conf, mode 0600, real secrets, instead of printing")
    r.set_defaults(handler=render_command)
    lt = sub.add_parser("lint", help="security lint of each WN's aria2c profile (exit 1 on errors)", parents=[parent, common])
    lt.add_argument(
        "--probe",
        action="store_true",
        help="log in to each WN over SSH to learn its IPv4 interfaces for the LPD rule (without it the rule looks at this machine's)",
    )
    lt.set_defaults(handler=lint_command)


def _hosts(site: Site, pattern: str | None) -> list[str]:
    inventory = Inventory(site)
    if pattern is None and not inventory.select(None):
        return [PLACEHOLDER_HOST]
    return inventory.select(pattern)


def _allow(site: Site, extra: Iterable[str]) -> tuple[str, ...]:
    extra = list(extra)
    unknown = [rule for rule in extra if rule not in RULES]
    if unknown:
        raise UsageError(f"--allow {unknown[0]}: no such lint rule", f"rules: {', '.join(RULES)}")
    return (*allowed_rules(site), *extra)


def _check_all(ctx: Context, args: argparse.Namespace) -> tuple[list[Rendered], dict[str, list[Finding]]]:
    """Render, lint and aria2c-check every selected host; findings per host."""
    site = ctx.site
    allow = _allow(site, args.allow)
    rendered = [render(site, host) for host in _hosts(site, args.host)]
    checked: dict[str, list[str]] = {}
    use_aria2c = not args.no_aria2c_check and aria2c_path() is not None
    if not args.no_aria2c_check and not use_aria2c:
        ctx.note("aria2c not installed: profiles not checked by aria2c itself")
    findings: dict[str, list[Finding]] = {}
    interfaces = _probe_interfaces(site, [item.host for item in rendered], findings) if getattr(args, "probe", False) else {}
    for item in rendered:
        found = findings.get(item.host, []) + lint(site, item.options, allow=allow, interfaces=interfaces.get(item.host))
        if use_aria2c:
            # texts of hosts with equal options differ in comments only (render proved it), so
            # aria2c needs to read each distinct option set once
            if item.hash not in checked:
                checked[item.hash] = check_with_aria2c(item.text, secrets=item.secrets)
            found += [Finding(ERROR, "aria2c", problem, "aria2c") for problem in checked[item.hash]]
        findings[item.host] = found
    return rendered, findings


def _probe_interfaces(site: Site, hosts: list[str], findings: dict[str, list[Finding]]) -> dict[str, list[str]]:
    """Each WN's IPv4 interfaces over SSH; a WN that cannot be probed gets an error finding."""
    from siteadmin.remote.facts import wn_interfaces

    known: dict[str, list[str]] = {}
    for result in wn_interfaces(site, [h for h in hosts if h != PLACEHOLDER_HOST]):
        if result.ok and result.value is not None:
            known[result.host] = result.value
        else:
            findings[result.host] = [Finding(ERROR, "ssh", f"cannot probe interfaces: {result.error}", "probe")]
    return known


def _folded(findings: dict[str, list[Finding]]) -> list[dict[str, Any]]:
    """Findings with the hosts that share each one folded: wn[001-040]."""
    hosts_of: dict[Finding, list[str]] = {}
    for host, found in findings.items():
        for finding in found:
            hosts_of.setdefault(finding, []).append(host)
    order = [*RULES, "aria2c", "probe"]
    rows = [{"hosts": fold(hosts), **f.as_dict()} for f, hosts in hosts_of.items()]
    return sorted(rows, key=lambda r: (r["level"] != ERROR, order.index(r["rule"]), r["hosts"]))


def _findings_text(rows: list[dict[str, Any]]) -> str:
    return "\n".join(f"{r['hosts']}: {r['level']}: {r['option']}: {r['message']} [{r['rule']}]" for r in rows)


def lint_command(ctx: Context, args: argparse.Namespace) -> int:
    rendered, findings = _check_all(ctx, args)
    rows = _folded(findings)
    errors = sum(1 for r in rows if r["level"] == ERROR)
    data = {"hosts": fold(findings), "count": len(findings), "errors": errors, "findings": rows}
    ctx.emit(data, lambda d: _findings_text(d["findings"]) or f"{d['hosts']}: no findings")
    return ExitCode.FAILED if errors else ExitCode.OK


def render_command(ctx: Context, args: argparse.Namespace) -> int:
    rendered, findings = _check_all(ctx, args)
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
