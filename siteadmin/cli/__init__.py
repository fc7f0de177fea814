"""The ``siteadmin`` command line: ``main(argv) -> int``.

Each module of this package (``config``, ``hosts``, ``ce``, ...) registers one command group with
``register(subparsers)`` and handlers ``handler(ctx, args) -> int``. Handlers are thin: they call
core services and print results to stdout; diagnostics go to stderr as
``siteadmin: <category>: <message>``; warnings from the core (``errors.warn``) as
``siteadmin: warning: <message>``, each once per run. No traceback reaches the admin unless
``--debug``. ``--quiet`` (before or after the command) keeps only failures: text results, progress
and closing notes are dropped, errors and warnings stay (``--json`` still prints the data asked
for); progress is shown only on a terminal, so cron and systemd timers get none. Commands that
change the site hold the site-wide run lock (``changing``, ``Context.site_lock``): a second run
exits 4 naming the holder. Everything written as text passes through ``printable`` (terminal escapes and bidi
controls from LDAP, the audit log or a WN are shown, never obeyed); ``--json`` keeps exact values.
With no arguments, the interactive console opens.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import pkgutil
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from siteadmin import __version__, runlock, syslog_sink
from siteadmin.errors import ExitCode, SiteadminError, UsageError, exit_code_for, printable, printable_lines, warnings_to
from siteadmin.site import Site, load_site

Handler = Callable[["Context", argparse.Namespace], int]


class Context:
    """What a command handler gets: the site (loaded on first use) and the output streams."""

    def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO, argv: Sequence[str] = ()) -> None:
        self.args = args
        self.out = out
        self.err = err
        self.argv = list(argv)
        self._site: Site | None = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def quiet(self) -> bool:
        """``--quiet``: print only failures (scheduled runs)."""
        return bool(getattr(self.args, "quiet", False))

    @property
    def progress(self) -> bool:
        """Whether to show progress: only on a terminal, and not with ``--quiet`` (cron mails no progress)."""
        return not self.quiet and bool(getattr(self.err, "isatty", lambda: False)())

    @property
    def site(self) -> Site:
        if self._site is None:
            self._site = load_site(self.args.site)
            syslog_sink.attach(self._site)  # every change this run records also goes to the site's syslog
        return self._site

    @property
    def command_line(self) -> str:
        """This run as the admin typed it, for the run lock's holder line."""
        return shlex.join(["siteadmin", *self.argv])

    @contextlib.contextmanager
    def site_lock(self) -> Iterator[Path]:
        """Hold the site-wide run lock for the block (``siteadmin.runlock``); BusyError (exit 4) when another run holds it."""
        with runlock.hold(self.site, self.command_line) as path:
            yield path

    def emit(self, data: Any, text: Callable[[Any], str] | str | None = None, quiet_text: Callable[[Any], str] | str | None = None) -> None:
        """Print a result: as JSON with --json, else as the given text (or data's str).

        With ``--quiet`` the text is dropped; ``quiet_text`` (the failures alone), when given, is
        printed instead. JSON is printed all the same: it was asked for.
        """
        if self.json:
            json.dump(data, self.out, indent=2, sort_keys=False, default=str)
            self.out.write("\n")
            return
        if self.quiet:
            if quiet_text is None:
                return
            text = quiet_text
        rendered = text(data) if callable(text) else (text if text is not None else str(data))
        rendered = printable_lines(rendered)
        if rendered:
            self.out.write(rendered if rendered.endswith("\n") else rendered + "\n")

    def note(self, message: str) -> None:
        """A diagnostic for the admin, on stderr (one line: newlines and escapes are shown, not obeyed)."""
        self.err.write(f"siteadmin: {printable(message)}\n")

    def close(self) -> None:
        """End of the run: stop sending this site's changes to syslog (its socket is closed)."""
        if self._site is not None:
            syslog_sink.detach(self._site.audit.path)

    def info(self, message: str) -> None:
        """A note that is no failure (``40 WNs applied in 3.1 s``): dropped with ``--quiet``."""
        if not self.quiet:
            self.note(message)


def changing(when: Callable[[argparse.Namespace], bool] = lambda _args: True) -> Callable[[Handler], Handler]:
    """Decorate a handler that changes the site: it runs holding the site-wide run lock.

    Args:
        when: whether this invocation changes anything (``--dry-run`` does not, so takes no lock).

    Returns:
        The decorator; the wrapped handler raises BusyError (exit 4, naming the holder) when
        another run holds the lock, before doing anything.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def locked(ctx: Context, args: argparse.Namespace) -> int:
            if not when(args):
                return handler(ctx, args)
            with ctx.site_lock():
                return handler(ctx, args)

        return locked

    return decorate


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
    parent.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
        help="print only failures: no results, progress or closing notes (for cron and timers; --json still prints)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every command module's commands registered."""
    parent = common_options()
    parser = _Parser(
        prog="siteadmin",
        description="The VoBox administrator's tool for ALICE torrent software installation.",
        epilog=(
            "Exit codes: 0 ok; 1 some hosts or checks failed; 2 usage or config error; 3 a service unreachable; "
            "4 busy (another run holds the site lock; nothing done); 130 interrupted. "
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
    for name, value in (("site", None), ("json", False), ("debug", False), ("quiet", False)):
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
        if argv[-2:] == ["completion", "--groups"]:
            # shell completion asks this at a Tab press: answer without importing every command's modules
            from siteadmin.cli.completion import print_groups_fast

            fast = print_groups_fast(argv[:-2], out)
            if fast is not None:
                return fast
        parser = build_parser()
        args = _defaults(parser.parse_args(argv))
        if args.command is None:
            return _console(args, err)
        handler: Handler | None = getattr(args, "handler", None)
        if handler is None:
            parser.parse_args([args.command, "--help"])
            return ExitCode.USAGE  # pragma: no cover - --help exits
        ctx = Context(args, out, err, argv)
        try:
            return int(handler(ctx, args))
        finally:
            ctx.close()
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

    site = load_site(args.site)
    syslog_sink.attach(site)
    try:
        return run_console(site)
    finally:
        syslog_sink.detach(site.audit.path)


def run() -> NoReturn:
    """Console-script entry point."""
    sys.exit(main())
