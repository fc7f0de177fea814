"""aria2's conf file syntax: what aria2c itself reads from ``--conf-path``.

aria2 (OptionParser::parse) reads the file line by line (``\\n`` only), skips empty lines
and lines whose FIRST character is ``#``, splits the rest at the first ``=``, strips
spaces, tabs, CR and LF from both sides of name and value, and warns ``Unknown option:
<the whole line>`` for a name it does not know (so a misspelt secret is printed in full).
A line without ``=`` is taken as a name with an empty value; an indented ``# comment`` is an
unknown option; a later line for the same name replaces the earlier one.

``parse_conf`` reproduces that reading. In strict mode (the default) it refuses every
construct that aria2 would read differently from how a person reads it, so a rendered
profile that parses strictly means exactly what it says.
"""

from __future__ import annotations

from siteadmin.errors import ConfigError

STRIP = " \t\r\n"
"""Characters aria2 strips around names and values (util::stripIter)."""

FORBIDDEN = ("\n", "\r", "\0")


def parse_conf(text: str, strict: bool = True, source: str = "conf") -> dict[str, str]:
    """Options an aria2 conf text sets, as aria2 reads them.

    Args:
        text: the file's content.
        strict: refuse lines without ``=``, indented comments or names, spaces around
            ``=``, values aria2 would strip, NUL or stray CR, a byte-order mark, and
            repeated names, instead of reading them as aria2 would.
        source: name of the text for error messages.

    Returns:
        name -> value, in file order (a repeated name keeps its last value, as in aria2).

    Raises:
        ConfigError: (strict only) naming the line number and the problem, never the value.
    """
    options: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        where = f"{source} line {number}"
        if strict:
            _check_line(line, where, options)
        if line == "" or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        name = name.strip(STRIP)
        if not name:
            continue
        options.pop(name, None)
        options[name] = value.strip(STRIP)
    return options


def _check_line(line: str, where: str, seen: dict[str, str]) -> None:
    if "\0" in line:
        raise ConfigError(f"{where}: holds a NUL byte")
    if "\r" in line:
        raise ConfigError(f"{where}: holds a carriage return (CR)", "aria2 strips it at the ends only; write plain LF lines")
    if line.startswith("\ufeff"):
        raise ConfigError(f"{where}: starts with a byte-order mark", "aria2 reads it as part of the option name")
    if line == "" or line.startswith("#"):
        return
    if line[0] in STRIP:
        raise ConfigError(f"{where}: starts with whitespace", "aria2 reads an indented line, even a # comment, as an option")
    name, eq, value = line.partition("=")
    if not eq:
        raise ConfigError(f"{where}: no '=' in an option line", "write name=value")
    if name != name.strip(STRIP):
        raise ConfigError(f"{where}: space before '=' after {name.strip(STRIP)}")
    if value != value.strip(STRIP):
        raise ConfigError(f"{where}: {name}: the value has leading or trailing whitespace, which aria2 strips")
    if name in seen:
        raise ConfigError(f"{where}: {name} is set twice", "aria2 silently keeps the last one")


def format_line(name: str, value: str) -> str:
    """One ``name=value`` line; refuses text that could break out of the line.

    Raises:
        ConfigError: a newline, CR or NUL in name or value.
    """
    for part, what in ((name, "name"), (value, "value")):
        if any(c in part for c in FORBIDDEN):
            raise ConfigError(f"{name if what == 'value' else repr(name)}: the {what} holds a newline, CR or NUL")
    return f"{name}={value}"
