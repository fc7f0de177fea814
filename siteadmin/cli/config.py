"""``siteadmin config show|init``: the effective site config and a commented example."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siteadmin.aria2conf import CATALOGUE
from siteadmin.errors import ConfigError, ExitCode, printable
from siteadmin.secrets import write_private_file
from siteadmin.site import example_site_toml, reference_markdown, site_as_dict

if TYPE_CHECKING:
    from siteadmin.cli import Context


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    config = sub.add_parser("config", help="show or create the site config", parents=[parent])
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(config))
    show = actions.add_parser("show", help="print the effective config, secrets masked", parents=[parent])
    show.set_defaults(handler=cmd_config_show)
    init = actions.add_parser("init", help="write a commented example site.toml", parents=[parent])
    init.add_argument("path", nargs="?", default="site.toml", help="where to write it (default ./site.toml; - for stdout)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(handler=cmd_config_init)
    reference = actions.add_parser("reference", help="print the site.toml reference (Markdown)", parents=[parent])
    reference.set_defaults(handler=cmd_config_reference)


def _as_text(data: dict[str, Any], prefix: str = "") -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()) or (isinstance(value, dict) and not prefix):
            lines.append(_as_text(value, f"{prefix}{key}."))
        else:
            lines.append(f"{prefix}{key} = {value!r}" if not isinstance(value, str) else f"{prefix}{key} = {value}")
    return "\n".join(line for line in lines if line)


def cmd_config_show(ctx: Context, args: argparse.Namespace) -> int:
    site = ctx.site
    data = site_as_dict(site, known_options=CATALOGUE)  # a misspelt option may be a misspelt secret
    source = str(site.source) if site.source else "built-in defaults"
    if not ctx.json:
        ctx.out.write(f"# source: {source}\n")
    ctx.emit({"source": source, **data} if ctx.json else data, _as_text)
    return ExitCode.OK


def cmd_config_init(ctx: Context, args: argparse.Namespace) -> int:
    text = example_site_toml()
    if args.path == "-":
        ctx.out.write(text)
        return ExitCode.OK
    path = Path(args.path)
    shown = printable(str(path))
    if path.is_symlink():
        # writing through it would change whatever file the link points at (or create it)
        raise ConfigError(f"{shown}: is a symlink; siteadmin does not write through one", "pass the path of the real file")
    if os.path.lexists(path) and not args.force:
        raise ConfigError(f"{shown}: already exists", "pass --force to overwrite it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)  # /etc/siteadmin on a fresh VoBox
        # 0600 temp file beside the target, synced, renamed over it: the old config survives any failure,
        # and the file may come to hold secrets
        write_private_file(path, text)
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot write: {exc.strerror}", "pass another path") from None
    ctx.note(f"wrote {path}; set [site] name and [wns] hosts, then run `siteadmin config show`")
    return ExitCode.OK


def cmd_config_reference(ctx: Context, args: argparse.Namespace) -> int:
    ctx.out.write(reference_markdown())
    return ExitCode.OK
