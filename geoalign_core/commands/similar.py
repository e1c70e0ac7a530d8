"""``geoalign similar RASTER_OR_INDEX --box ...``: more regions like an example (query by example)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..params import SimilarParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, SimilarParams, "input raster or scene index .parquet (may be left "
                       "out with --index)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--box", action="append", default=None, metavar="MINX,MINY,MAXX,MAXY",
                    help="an example region in the raster's CRS (repeat for several)")
    ex.add_argument("--examples", default=None, help="vector file of example regions (any OGR format, any CRS)")
    cs.add_task_options(p, SimilarParams, out_help="output GeoPackage (default: <raster stem>_similar.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    raise InputError(f"similar takes no phrase positional; got {args.raster!r} (steer it with --phrase)")


def _describe(p: SimilarParams, model: str) -> str:
    ex, phrase = p.examples, p.phrase
    n = ex if isinstance(ex, str) or not isinstance(ex, list) else len(ex)
    return f"similar: {n} example(s){f' + {phrase!r}' if phrase else ''} in {p.raster or p.index} with {model}"


def _examples(args: argparse.Namespace) -> dict:
    if args.box is None and args.examples is None:
        raise InputError("give an example region: --box MINX,MINY,MAXX,MAXY or --examples FILE")
    return {"examples": args.box if args.box is not None else args.examples}


run = cs.task_runner(SimilarParams, "_similar.gpkg", _shift, _describe, values=_examples)
