"""The profile check: one answer per WN to "may this aria2c profile go out?".

``siteadmin render``, ``siteadmin lint``, the console's Profile tab and the rollout plan all
call ``check_profiles``, so they cannot disagree about a site. For each WN it renders the
profile, lints it with the site's allowed rules plus the caller's, lets the installed aria2c
read it (once per distinct option set: texts with equal options differ in their header
comments only, which ``render`` proved) and, when the caller passes interface facts, judges
LPD by the WN's own interfaces.

Interface facts come in as a callable (``InterfaceProbe``), so this package does not depend
on how they are learnt (``siteadmin.remote.facts.wn_interfaces`` logs in over SSH).

A WN whose profile cannot be rendered gets a result holding the error; nothing raises per WN.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

from siteadmin.aria2conf.lint import ALLOWED, ERROR, RULES, WARNING, Finding, allowed_rules, lint
from siteadmin.aria2conf.render import PLACEHOLDER_HOST, Rendered, render
from siteadmin.aria2conf.validate import aria2c_path, check_with_aria2c
from siteadmin.errors import SiteadminError, UsageError
from siteadmin.inventory import Inventory
from siteadmin.site import Site

ARIA2C_RULE = "aria2c"
"""Rule id of a finding from aria2c's own reading of the profile (always an error)."""
PROBE_RULE = "probe"
"""Rule id of a finding about a WN whose interfaces could not be learnt (always an error)."""
RENDER_RULE = "render"
"""Rule id of the finding standing for a profile that could not be rendered (always an error)."""

FINDING_ORDER: tuple[str, ...] = (*RULES, ARIA2C_RULE, PROBE_RULE, RENDER_RULE)
"""Every rule id a check can report, in display order."""

InterfaceProbe = Callable[[Sequence[str]], Mapping[str, "Sequence[str] | BaseException"]]
"""Given WN names, each WN's non-loopback interfaces, or the exception that kept them unknown.

A WN missing from the answer counts as not probed (an error finding).
"""


class Verdict(enum.Enum):
    """What a check says about one WN's profile (allowed findings do not count)."""

    OK = "ok"
    WARNING = "warning"
    """Warnings only: the profile may go out."""
    ERROR = "error"
    """An error finding or a profile that cannot be rendered: it must not go out."""


@dataclasses.dataclass(frozen=True)
class HostCheck:
    """The profile check of one WN."""

    host: str
    rendered: Rendered | None
    """The rendered profile (real text, masked text, options, hash, origin); None when rendering failed."""
    findings: tuple[Finding, ...]
    """Lint findings in rule order, then aria2c's and the interface probe's."""
    error: SiteadminError | None = None
    """Why the profile could not be rendered (kept as the exception object)."""
    aria2c_checked: bool = False
    """aria2c read this profile's text (or an identical option set's)."""

    @property
    def verdict(self) -> Verdict:
        if self.error is not None or any(f.level == ERROR for f in self.findings):
            return Verdict.ERROR
        if any(f.level == WARNING for f in self.findings):
            return Verdict.WARNING
        return Verdict.OK

    @property
    def ok(self) -> bool:
        """The profile may go out (no error; warnings and allowed findings do not stop it)."""
        return self.verdict is not Verdict.ERROR

    @property
    def errors(self) -> int:
        """Error findings, a render failure counting as one."""
        return sum(f.level == ERROR for f in self.findings) + (self.error is not None)

    @property
    def warnings(self) -> int:
        return sum(f.level == WARNING for f in self.findings)

    @property
    def allowed(self) -> int:
        return sum(f.level == ALLOWED for f in self.findings)

    @property
    def error_text(self) -> str | None:
        """The render failure as one line, or None."""
        return self.error.one_line() if self.error is not None else None

    @property
    def text(self) -> str | None:
        """The file for the WN, real secrets included (None when rendering failed)."""
        return self.rendered.text if self.rendered else None

    @property
    def options(self) -> dict[str, str] | None:
        return self.rendered.options if self.rendered else None

    @property
    def hash(self) -> str | None:
        return self.rendered.hash if self.rendered else None

    def all_findings(self) -> tuple[Finding, ...]:
        """The findings, with a render failure as a finding of its own (rule ``render``)."""
        if self.error is None:
            return self.findings
        return (*self.findings, Finding(ERROR, "template", self.error.one_line(), RENDER_RULE))


@dataclasses.dataclass(frozen=True)
class ProfileCheck:
    """The profile check of a set of WNs: one HostCheck per WN, in the order asked."""

    hosts: tuple[HostCheck, ...]
    aria2c: str | None
    """The aria2c binary that read the profiles; None when it was not run (skipped or not installed)."""
    notes: tuple[str, ...] = ()
    """What the admin should know about the check itself (e.g. aria2c is not installed)."""

    def by_host(self) -> dict[str, HostCheck]:
        return {h.host: h for h in self.hosts}

    @property
    def verdicts(self) -> dict[str, Verdict]:
        """WN -> verdict."""
        return {h.host: h.verdict for h in self.hosts}

    @property
    def ok(self) -> bool:
        """No WN's profile has an error."""
        return all(h.ok for h in self.hosts)

    @property
    def failed(self) -> list[HostCheck]:
        """The WNs whose profile has an error (render failures included)."""
        return [h for h in self.hosts if not h.ok]


def hosts_to_check(site: Site, pattern: str | None = None, inventory: Inventory | None = None) -> list[str]:
    """The WNs a pattern selects; the placeholder host when the site lists no WNs and no pattern is given.

    Raises:
        InventoryError: a malformed pattern, an unknown @group, or hosts not in the site.
    """
    inventory = inventory or Inventory(site)
    if pattern is None and not inventory.select(None):
        return [PLACEHOLDER_HOST]
    return inventory.select(pattern)


def check_allow(extra: Iterable[str]) -> tuple[str, ...]:
    """The caller's extra allowed rules, checked against the lint's rule ids.

    Raises:
        UsageError: an unknown rule id, with the ids there are.
    """
    extra = tuple(extra)
    for rule in extra:
        if rule not in RULES:
            raise UsageError(f"--allow {rule}: no such lint rule", f"rules: {', '.join(RULES)}")
    return extra


def check_profiles(
    site: Site,
    hosts: Sequence[str] | None = None,
    *,
    allow: Iterable[str] = (),
    aria2c: bool = True,
    interfaces: InterfaceProbe | None = None,
    create_secret: bool = True,
    aria2c_binary: str | None = None,
) -> ProfileCheck:
    """Check each WN's profile: render, lint, aria2c's own reading, interface facts.

    Args:
        site: the site config.
        hosts: WN names; None checks ``hosts_to_check(site)`` (every WN, or the placeholder host).
        allow: rule ids accepted on top of the site's ``[aria2c] allow`` (reported as ``allowed``).
        aria2c: let the installed aria2c read each distinct option set; when aria2c is not
            installed the check says so in ``notes`` and goes on without it.
        interfaces: learns WNs' interfaces for the LPD rule (e.g. over SSH); None judges LPD by
            this machine's interfaces. Called once, with every WN except the placeholder host.
        create_secret: generate the site's RPC secret file when a profile needs it and it is missing.
        aria2c_binary: aria2c to run; default ``aria2c_path()``.

    Returns:
        One HostCheck per WN, in the order given; a WN that cannot be rendered holds its error.

    Raises:
        UsageError: an unknown rule id in ``allow``.
        InventoryError: the site's hostlists cannot be expanded (only when ``hosts`` is None).
    """
    names = list(hosts_to_check(site) if hosts is None else hosts)
    allowed = (*allowed_rules(site), *check_allow(allow))
    notes: list[str] = []
    binary = (aria2c_binary or aria2c_path()) if aria2c else None
    if aria2c and binary is None:
        notes.append("aria2c not installed: profiles not checked by aria2c itself")

    facts: Mapping[str, Sequence[str] | BaseException] = {}
    probed = [h for h in names if h != PLACEHOLDER_HOST]
    if interfaces is not None and probed:
        facts = interfaces(probed)

    aria2c_said = _Aria2cOnce(binary)
    out: list[HostCheck] = []
    for host in names:
        try:
            rendered = render(site, host, create_secret=create_secret)
        except SiteadminError as exc:
            out.append(HostCheck(host, None, (), exc))
            continue
        found: list[Finding] = []
        known: Sequence[str] | None = None
        if interfaces is not None and host in probed:
            fact = facts.get(host)
            if isinstance(fact, BaseException) or fact is None:
                why = _one_line(fact) if fact is not None else "no answer"
                found.append(Finding(ERROR, "ssh", f"cannot probe interfaces: {why}", PROBE_RULE))
            else:
                known = list(fact)
        found += lint(site, rendered.options, allow=allowed, interfaces=known)
        problems = aria2c_said(rendered)
        found += [Finding(ERROR, "aria2c", problem, ARIA2C_RULE) for problem in problems or ()]
        out.append(HostCheck(host, rendered, tuple(found), aria2c_checked=problems is not None))
    return ProfileCheck(hosts=tuple(out), aria2c=binary, notes=tuple(notes))


class _Aria2cOnce:
    """aria2c's complaints per distinct option set: identical renders are read once (thread-safe)."""

    def __init__(self, binary: str | None) -> None:
        self.binary = binary
        self._said: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, rendered: Rendered) -> list[str] | None:
        if self.binary is None:
            return None
        with self._lock:
            said = self._said.get(rendered.hash)
        if said is None:
            said = check_with_aria2c(rendered.text, secrets=rendered.secrets, binary=self.binary)
            with self._lock:
                said = self._said.setdefault(rendered.hash, said)
        return said


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SiteadminError):
        return exc.one_line()
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
