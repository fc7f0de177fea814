"""The ``siteadmin`` command line: ``main(argv) -> int``.

Each module of this package (``config``, ``hosts``, ``ce``, ...) registers one command group with
``register(subparsers)`` and handlers ``handler(ctx, args) -> int``. Handlers are thin: they call
core services and print results to stdout; diagnostics go to stderr as
``siteadmin: <category>: <message>``; warnings from the core (``errors.warn``) as
``siteadmin: warning: <message>``, each once per run. No traceback reaches the admin unless
``--debug``. Everything written as text passes through ``printable`` (terminal escapes and bidi
controls from LDAP, the audit log or a WN are shown, never obeyed); ``--json`` keeps exact values.
With no arguments, the interactive console opens.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from siteadmin import __version__
from siteadmin.errors import ExitCode, SiteadminError, UsageError, exit_code_for, printable, printable_lines, warnings_to
from siteadmin.site import Site, load_site

Handler = Callable[["Context", argparse.Namespace], int]


class Context:
    """What a command handler gets: the site (loaded on first use) and the output streams."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
        self.args = args
        self.out = out
        self.err = err
        self._site: Site | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def site(self) -> Site:
        if self._site is None:
            self._site = load_site(self.args.site)
        return self._site

    def emit(self, data: Any, text: Callable[[Any], str] | str | None = None) -> None:
        """Print a result: as JSON with --json, else as the given text (or data's str)."""
        if self.json:
            json.dump(data, self.out, indent=2, sort_keys=False, default=str)
            self.out.write("\n")
            return
        rendered = text(data) if callable(text) else (text if text is not None else str(data))
        rendered = printable_lines(rendered)
        if rendered:
            self.out.write(rendered if rendered.endswith("\n") else rendered + "\n")

    def note(self, message: str) -> None:
        """A diagnostic for the admin, on stderr (one line: newlines and escapes are shown, not obeyed)."""
        self.err.write(f"siteadmin: {printable(message)}\n")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see `{self.prog} --help`")


def common_options() -> argparse.ArgumentParser:
    """Options every command accepts, before or after its name."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--site",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="site.toml to use (default: $SITEADMIN_SITE, ./site.toml, ~/.config/siteadmin/, /etc/siteadmin/)",
    )
    parent.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON")
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of unexpected errors")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command module's commands registered."""
    parent = common_options()
    parser = _Parser(
        prog="siteadmin",
        description="The VoBox administrator's tool for ALICE torrent software installation.",
        epilog=(
            "Exit codes: 0 ok; 1 some hosts or checks failed; 2 usage or config error; 3 a service unreachable; 130 interrupted. "
            "Run with no command to open the console."
        ),
        parents=[parent],
    )
    parser.add_argument("--version", action="version", version=f"siteadmin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub, parent)
    return parser


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    for name, value in (("site", None), ("json", False), ("debug", False)):
        if not hasattr(args, name):
            setattr(args, name, value)
    return args


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one siteadmin command and return its exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    warned: set[str] = set()

    def warning(message: str) -> None:
        if message not in warned:  # one line per warning and run, however many binds or hosts
            warned.add(message)
            err.write(f"siteadmin: warning: {printable(message)}\n")

    with warnings_to(warning):
        return _run(argv, out, err)


def _run(argv: list[str], out: TextIO, err: TextIO) -> int:
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = _defaults(parser.parse_args(argv))
        if args.command is None:
            return _console(args, err)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.parse_args([args.command, "--help"])
            return ExitCode.USAGE  # pragma: no cover - --help exits
        return int(handler(Context(args, out, err), args))
    except KeyboardInterrupt:
        err.write("siteadmin: interrupted\n")
        return ExitCode.INTERRUPTED
    except SiteadminError as exc:
        err.write(f"siteadmin: {exc.category}: {printable(exc.one_line())}\n")
        return exit_code_for(exc)
    except BrokenPipeError:
        # stdout closed early (`siteadmin ... | head`): not an error of ours
        return ExitCode.OK
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0) if isinstance(exc.code, int) else ExitCode.USAGE
    except Exception as exc:
        if debug:
            raise
        err.write(f"siteadmin: internal error: {type(exc).__name__}: {printable(str(exc))} (rerun with --debug for the traceback)\n")
        return ExitCode.FAILED


def _console(args: argparse.Namespace, err: TextIO) -> int:
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise UsageError("the console needs a terminal", "run a command instead, see `siteadmin --help`")
    from siteadmin.tui.app import run_console

    return run_console(load_site(args.site))


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
