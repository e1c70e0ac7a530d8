"""The ``geoalign`` command.

Each sub-command lives in its own module under :mod:`geoalign_core.commands` and exposes
``add_parser(subparsers)`` (which sets ``func``) — this file only holds what they share:
common options, error handling and exit codes.

Exit codes: 0 success; 2 bad input (one line ``error: ...`` on stderr, no traceback, no
output file left behind); Ctrl-C also exits 2 (partial outputs are removed).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from . import __version__
from .errors import GeoAlignError

COMMANDS = (
    "tile_classify",
    "find",
    "match_regions",
    "heatmap",
    "prepare",
    "train",
    "eval",
    "models",
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one ``error:`` line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def add_common(p: argparse.ArgumentParser, model: bool = True) -> None:
    """Options every command takes."""
    if model:
        p.add_argument(
            "--model",
            default="geoalign-demo",
            help="zoo name, open_clip architecture, hf-hub:org/repo or checkpoint path (default: %(default)s)",
        )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="geoalign", description="Find things in aerial and satellite imagery by text.")
    parser.add_argument("--version", action="version", version=f"geoalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"commands.{name}"):
                continue  # command not built in this installation
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.environ.get("GEOALIGN_DEBUG"):
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        rc = args.func(args)
    except GeoAlignError as exc:
        msg = " ".join(str(exc).split())
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; no output written\n")
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
