"""Checking aria2c options before anything leaves the VoBox.

Three nets, each catching what the others cannot:

1. ``check_option``: the name is in the catalogue (aria2 only warns on an unknown name and
   prints the whole line, secret included), the TOML value has the right type, holds no
   newline, CR or NUL (``x\\nrpc-listen-all=true`` in a proxy password must not become a
   second option), and passes aria2's syntax and range rules.
2. ``render`` re-parses its own output with ``parse_conf`` and demands exactly the options
   it meant to write, whatever a site's own template did.
3. ``check_with_aria2c`` runs the real aria2c on the text in a mode that starts nothing and
   counts any parse error or unknown-option warning as a failure.

Errors are one line naming the layer (site, group, host), the option, the value (masked
for secrets) and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from siteadmin.aria2conf.catalogue import CATALOGUE, Kind, OptionSpec, mask_value
from siteadmin.errors import ConfigError
from siteadmin.secrets import MASK, write_private_file

CONTROL = ("\n", "\r", "\0")


def shown(name: str, value: Any) -> str:
    """A value as error messages and displays may show it (secrets masked)."""
    spec = CATALOGUE.get(name)
    if spec is not None and spec.secret:
        return MASK
    if isinstance(value, str):
        value = mask_value(name, value, MASK)
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    text = text.replace("\n", "\\n").replace("\r", "\\r").replace("\0", "\\0")
    return text if len(text) <= 80 else text[:77] + "..."


def suggest(name: str) -> str:
    """A hint naming the closest catalogue option, or where to look."""
    close = difflib.get_close_matches(name, list(CATALOGUE), n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return "see docs/aria2c-options.md for the options siteadmin knows"


def lookup(name: Any, where: str) -> OptionSpec:
    """The catalogue entry of an option name.

    Raises:
        ConfigError: an unknown name, with the close match (the value is never shown).
    """
    if not isinstance(name, str) or any(c in name for c in CONTROL) or name not in CATALOGUE:
        # a key like "rpc-secret=abc" carries its value: show and match only what precedes "="
        text = str(name).split("=", 1)[0]
        text = text if not any(c in text for c in CONTROL) else repr(text)
        if "=" in str(name):
            text += "=..."
        raise ConfigError(f"{where}: {text}: not an aria2c option siteadmin knows", suggest(str(name).split("=", 1)[0]))
    return CATALOGUE[name]


def to_text(spec: OptionSpec, value: Any, where: str) -> str:
    """A TOML value (str, int, float, bool) as aria2 conf text (booleans as true/false).

    Raises:
        ConfigError: a type that cannot mean anything for this option.
    """
    bad = ConfigError(f"{where}: {spec.name} = {shown(spec.name, value)}: must be {spec.allowed()}")
    if isinstance(value, bool):
        if spec.kind is Kind.BOOL or (spec.kind is Kind.ENUM and "true" in spec.choices):
            return "true" if value else "false"
        raise bad
    if isinstance(value, int):
        if spec.kind in (Kind.INT, Kind.FLOAT, Kind.SIZE, Kind.PORT, Kind.PORTS):
            return str(value)
        raise bad
    if isinstance(value, float):
        if spec.kind is Kind.FLOAT:
            return repr(value)
        if spec.kind in (Kind.INT, Kind.SIZE) and value.is_integer():
            raise ConfigError(f"{where}: {spec.name} = {value!r}: must be {spec.allowed()}", f"write {int(value)} without the .0")
        raise bad
    if isinstance(value, str):
        return value
    raise bad


def check_option(name: Any, value: Any, where: str) -> tuple[str, str]:
    """Validate one option from a profile layer.

    Args:
        name: the option name as written.
        value: the TOML value.
        where: the layer, e.g. ``host wn001: [wns.nodes."wn001"].aria2c``.

    Returns:
        (name, aria2 conf text of the value).

    Raises:
        ConfigError: unknown name, bad type, control character, or a value aria2 (or
        siteadmin's stricter rule) does not accept.
    """
    spec = lookup(name, where)
    text = to_text(spec, value, where)
    if any(c in text for c in CONTROL):
        raise ConfigError(
            f"{where}: {spec.name} = {shown(spec.name, value)}: must not hold a newline, CR or NUL",
            "it would end the line and could add options of its own",
        )
    allowed = spec.check(text)
    if allowed:
        raise ConfigError(f"{where}: {spec.name} = {shown(spec.name, value)}: must be {allowed}")
    return spec.name, text


def check_options(options: Mapping[str, Any], where: str) -> dict[str, str]:
    """Validate a whole table of options; returns name -> conf text."""
    checked: dict[str, str] = {}
    for name, value in options.items():
        key, text = check_option(name, value, where)
        checked[key] = text
    return checked


# ---------------------------------------------------------------- aria2c's own check

ARIA2C_ENV = "SITEADMIN_ARIA2C"
"""Environment variable naming the aria2c binary used for checks (default: aria2c on PATH)."""

NO_START_ARGS = ("--enable-rpc=false", "--daemon=false", "--input-file=")
"""Overrides that make aria2c stop after reading the conf: no RPC server, no fork, no
downloads to add. The conf file is still read and checked in full before these apply.

What aria2c 1.36 does then (measured):

- good file: stderr "Specify at least one URL." and usage, exit 1; nothing listens, nothing
  is written (no log, no session, no dht.dat);
- bad value: "Parse error in <file>" and "errorCode=28 We encountered a problem while
  processing the option '--listen-port'. -> ... listen-port must be between 1024 and 65535.",
  exit 28;
- unknown name: "[WARN] Unknown option: <the whole line>" on stdout, then as for a good file
  (exit 1): only the warning tells, and it carries the value.
"""

_OK_MARK = "Specify at least one URL."
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNKNOWN = re.compile(r"Unknown option: ([^=\s]*)")
_PROBLEM = re.compile(r"problem while processing the option '--([^']+)'")
_REASON = re.compile(r"-> \[[^\]]*\] errorCode=\d+ (.*)")


def aria2c_path() -> str | None:
    """The aria2c used for checks, or None when it is not installed."""
    named = os.environ.get(ARIA2C_ENV)
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("aria2c")


def check_with_aria2c(text: str, secrets: Iterable[str] = (), binary: str | None = None, timeout: float = 10.0) -> list[str]:
    """Let the real aria2c read a conf text and report what it complains about.

    The text goes to a 0600 file in a fresh 0700 temp dir (HOME points there too, and no
    proxy variables are passed); only the file's path is on aria2c's command line.

    Args:
        text: the conf text, real secrets included (aria2c must see what the WN will).
        secrets: values to mask if aria2c echoes them back.
        binary: aria2c to run; default ``aria2c_path()``.
        timeout: seconds before the check counts as failed.

    Returns:
        One line per problem (empty when aria2c accepts the file, or when aria2c is not
        installed: check ``aria2c_path()`` to tell the two apart). Secrets are masked.
    """
    exe = binary or aria2c_path()
    if exe is None:
        return []
    with tempfile.TemporaryDirectory(prefix="siteadmin-aria2c-check-") as tmp:
        os.chmod(tmp, 0o700)
        path = Path(tmp) / "aria2c.conf"
        write_private_file(path, text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "LANG": "C", "LC_ALL": "C"}
        try:
            result = subprocess.run(
                [exe, f"--conf-path={path}", *NO_START_ARGS],
                capture_output=True, text=True, errors="replace", env=env, cwd=tmp, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            return [f"aria2c did not finish reading the profile within {timeout:g} s"]
        except OSError as exc:
            return [f"aria2c could not be run: {exc.strerror}"]
    return aria2c_problems(result.stdout, result.stderr, result.returncode, secrets)


def aria2c_problems(stdout: str, stderr: str, returncode: int, secrets: Iterable[str] = ()) -> list[str]:
    """What aria2c complained about after reading a conf with ``NO_START_ARGS`` (empty: it accepts it).

    The one judgement of aria2c's output, here and on a WN (the rollout runs the WN's own aria2c).
    Secrets are masked.
    """
    output = _mask(_ANSI.sub("", stdout + "\n" + stderr), secrets)
    return _problems(output, returncode)


def _mask(output: str, secrets: Iterable[str]) -> str:
    for value in sorted((s for s in secrets if s), key=len, reverse=True):
        output = output.replace(value, MASK)
    return output


def _problems(output: str, returncode: int) -> list[str]:
    problems = [f"aria2c: unknown option {m.group(1) or '(empty name)'}" for m in _UNKNOWN.finditer(output)]
    failed = _PROBLEM.search(output)
    if failed:
        reason = _REASON.search(output)
        problems.append(f"aria2c: {failed.group(1)}: " + (reason.group(1).strip() if reason else "rejected"))
    elif "Parse error" in output or "Exception" in output:
        first = next((ln.strip() for ln in output.splitlines() if "Exception" in ln or "Parse error" in ln), "parse error")
        problems.append(f"aria2c: {first}")
    for line in output.splitlines():
        if ("WARN" in line or "ERROR" in line) and "Unknown option" not in line:
            problems.append("aria2c: " + line.strip())
    if not problems and (returncode != 1 or _OK_MARK not in output):
        problems.append(f"aria2c: unexpected exit status {returncode} while reading the profile")
    return problems
