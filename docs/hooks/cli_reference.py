"""MkDocs hook: the command-line reference, generated from the argparse parsers.

A page that holds the line ``<!-- cli-reference: COMMAND -->`` gets, in its place, the usage and
a table of every positional argument and option of ``geoalign COMMAND`` (and of its
sub-commands, e.g. ``models list``) as ``geoalign_core.cli.build_parser()`` defines them: the
same text ``geoalign COMMAND --help`` prints, so the reference cannot drift from the parser.
``tests/test_docs.py`` imports this module too (options documented in prose vs the parser).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

MARKER = re.compile(r"^<!-- cli-reference: ([a-z-]+(?: [a-z-]+)*) -->$", re.M)


def root_parser() -> argparse.ArgumentParser:
    from geoalign_core.cli import build_parser

    return build_parser()


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def commands(parser: argparse.ArgumentParser | None = None) -> dict[str, argparse.ArgumentParser]:
    """Every top-level command of ``geoalign``: name -> its parser."""
    return _subparsers(parser or root_parser())


def walk(name: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The command and its nested sub-commands (``models``, ``models list``, ``models download``...)."""
    yield name, parser
    for sub, p in _subparsers(parser).items():
        yield from walk(f"{name} {sub}", p)


def options(parser: argparse.ArgumentParser, nested: bool = True) -> set[str]:
    """Every ``--long`` option string of the parser (and of its sub-commands)."""
    found = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    if nested:
        for sub in _subparsers(parser).values():
            found |= options(sub)
    return found


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=parser.prog)
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _flags(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    fmt = parser._get_formatter()
    if not action.option_strings:
        return f"`{fmt._metavar_formatter(action, action.dest)(1)[0]}`"
    if action.nargs == 0:
        return ", ".join(f"`{s}`" for s in action.option_strings)
    metavar = fmt._format_args(action, action.dest.upper())
    return ", ".join(f"`{s} {metavar}`" for s in action.option_strings)


def render_one(name: str, parser: argparse.ArgumentParser, level: int) -> str:
    fmt = parser._get_formatter()
    fmt.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    usage = fmt.format_help().strip()
    out = [f"{'#' * level} `geoalign {name}`", ""]
    if parser.description:
        out += [_cell(parser.description), ""]
    out += ["```text", usage, "```", ""]
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        rows.append(f"| {_flags(action, parser)} | {_cell(_help(action, parser))} |")
    if rows:
        out += ["| argument | meaning |", "|---|---|", *rows, ""]
    return "\n".join(out)


def render(command: str) -> str:
    """The reference section of ``geoalign COMMAND`` (e.g. ``find`` or ``models``)."""
    parser = root_parser()
    name, *rest = command.split()
    node = commands(parser)[name]
    for part in rest:
        node = _subparsers(node)[part]
    parts = ["## Reference", "",
             f"Generated from the parser of `geoalign {command}` (what `geoalign {command} --help` prints).", ""]
    for sub, p in walk(command, node):
        parts.append(render_one(sub, p, level=3 if sub == command else 4))
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001  (mkdocs hook signature)
    return MARKER.sub(lambda m: render(m.group(1)), markdown)
