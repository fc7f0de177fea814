"""Every command's handler is named after the command as the admin types it: ``cmd_<words>``.

``siteadmin ce list`` runs ``cmd_ce_list``, ``siteadmin lab firewall show`` runs
``cmd_lab_firewall_show``: a reader finds the code of a command by its words alone.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from siteadmin.cli import build_parser


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    handler = parser.get_default("handler")
    if handler is not None:
        yield words, handler
    for action in parser._actions:  # argparse keeps its subparsers here only
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:  # an alias names the same parser
                    continue
                seen.add(id(sub))
                yield from commands(sub, (*words, name))


def test_every_handler_is_named_after_its_command() -> None:
    found = list(commands(build_parser()))
    assert len(found) >= 20, found  # the walk reaches the nested commands (ce list, lab firewall show)
    wrong = {
        " ".join(words): getattr(handler, "__name__", repr(handler))
        for words, handler in found
        if getattr(handler, "__name__", "") != "cmd_" + "_".join(w.replace("-", "_") for w in words)
    }
    assert wrong == {}


def test_the_walk_sees_a_misnamed_handler() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()

    def show_things(ctx: object, args: object) -> int:
        return 0

    sub.add_parser("things").set_defaults(handler=show_things)
    assert [(w, getattr(h, "__name__", "")) for w, h in commands(parser)] == [(("things",), "show_things")]
