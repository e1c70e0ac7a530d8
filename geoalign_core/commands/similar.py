"""``geoalign similar RASTER_OR_INDEX --box ...``: more regions like an example (query by example)."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..params import SimilarParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("similar", help="find more regions like an example box (query by example), from a raster "
                       "or its index", description=(
        "Query by example: the example regions' embedding (RoIAlign, averaged over the examples) is "
        "the query; candidate boxes of about the examples' size are built and pooled as find builds "
        "them, scored by their similarity with the query: score = the estimated probability that a region "
        "is the same kind of thing as the examples. With --phrase the query becomes "
        "normalize(examples + W * phrase), e.g. an example car and --phrase 'red car'. The example "
        "itself is a candidate (column 'example'). Writes GeoPackage layer 'similar' (score, rank, example)."))
    p.add_argument("raster", nargs="?", help="input raster or scene index .parquet (may be left out with --index)")
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


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        if args.box is None and args.examples is None:
            raise InputError("give an example region: --box MINX,MINY,MAXX,MAXY or --examples FILE")
        p = cs.task_from_args(args, SimilarParams, examples=args.box if args.box is not None else args.examples,
                              out=cs.default_out(args, "_similar.gpkg"))
        return cs.run_task(args, p, _describe)
