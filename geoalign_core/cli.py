"""The ``geoalign`` command.

Each sub-command lives in its own module under :mod:`geoalign_core.commands` and exposes
``add_parser(subparsers)`` (which sets ``func``) — this file only holds what they share:
common options, error handling and exit codes.

Exit codes: 0 success; 2 bad input (one line ``error: ...`` on stderr, no traceback, no
output file left behind); Ctrl-C also exits 2 (partial outputs are removed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence

from . import __version__
from .defaults import DEFAULT_MODEL
from .errors import GeoAlignError

COMMANDS = (
    "tile_classify",
    "find",
    "match_regions",
    "heatmap",
    "similar",
    "index",
    "prepare",
    "train",
    "finetune",
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
            default=None,
            help=f"zoo name, open_clip architecture, hf-hub:org/repo or checkpoint path (default: {DEFAULT_MODEL}; "
                 "with an index: the model it was built with)",
        )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads(p)


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N`` of the commands that run a model (:mod:`geoalign_core.threads`)."""
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch compute threads (default: the cores available to this process -- its CPU "
                        "affinity and cgroup quota, or OMP_NUM_THREADS -- divided among torchrun's local ranks)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="geoalign", description="Find things in aerial and satellite imagery by text.")
    parser.add_argument("--version", action="version", version=f"geoalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).add_parser(sub)
    return parser


#: how the CLI completes a library error about a parameter (default: the flag, ``--name``)
FLAG_HINTS = {
    "overwrite": "use --overwrite to replace it",
    "allow_no_crs": "use --allow-no-crs to work in pixel coordinates",
    "out": "choose another --out",
    "buffer": "--buffer DIST, in the units of the raster's CRS",
    "num_negatives": "make them with geoalign prepare --num-negatives Q",
    "layer": "choose another with --layer",
}


def flag_hint(param: str) -> str:
    """The command-line remedy for a parameter named in an error."""
    return FLAG_HINTS.get(param) or "--" + param.replace("_", "-")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    text = " ".join(str(message).split())
    param = getattr(message, "param", None)
    if param:
        text = f"{text} ({flag_hint(param)})"
    sys.stderr.write(f"warning: {text}\n")


# numeric noise from inside libraries: never something the user can act on
_NOISE = r"(overflow|underflow|divide by zero|invalid value) encountered|Casting complex values"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show Python warnings as one ``warning: ...`` line each (no source line echo, each once);
    numeric noise (numpy overflow / divide / complex-cast warnings), deprecations and torch's
    own user warnings are not shown (``GEOALIGN_DEBUG=1`` shows everything)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        if not os.environ.get("GEOALIGN_DEBUG"):
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module="torch")
            warnings.filterwarnings("ignore", message=_NOISE)
            import numpy as np

            # numpy >= 1.25 has it in numpy.exceptions, older ones at the top level
            complex_warning = getattr(getattr(np, "exceptions", np), "ComplexWarning", None)
            if complex_warning is not None:
                warnings.filterwarnings("ignore", category=complex_warning)
        warnings.showwarning = _show_warning
        yield


class _LowerFormatter(logging.Formatter):
    """``warning: message``, as the ``error:`` lines (no upper-case WARNING)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def main(argv: Sequence[str] | None = None) -> int:
    from .threads import mark

    mark()  # a model command's thread count takes off the cores other programs keep busy meanwhile
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    try:
        with one_line_warnings():
            rc = args.func(args)
    except GeoAlignError as exc:
        msg = " ".join(str(exc).split())
        param = getattr(exc, "param", None)
        if param and flag_hint(param) not in msg:
            msg = f"{msg} ({flag_hint(param)})"
        sys.stderr.write(f"error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; no output written\n")
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
