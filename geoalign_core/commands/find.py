"""``geoalign find RASTER PHRASE [PHRASE ...]``: objects matching text, as boxes in a GeoPackage
(from the raster, or from its scene index with ``--index``)."""

from __future__ import annotations

import argparse

from ..params import FindParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, FindParams)
    p.add_argument("phrases", nargs="*", metavar="PHRASE", help='what to look for, e.g. "red car"')
    cs.add_vector_choice(p, FindParams, "within", "regions")
    refine = p.add_mutually_exclusive_group()
    refine.add_argument("--no-refine", dest="refine", action="store_false", default=None,
                        help="keep the boxes of the tile pass (the default from an index)")
    refine.add_argument("--refine", dest="refine", action="store_true", default=None,
                        help=FindParams.__dataclass_fields__["refine"].metadata["help"])
    cs.add_task_options(p, FindParams, out_help="output GeoPackage (default: <raster stem>_matches.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    args.phrases = [args.raster, *args.phrases]


def _describe(p: FindParams, model: str) -> str:
    return f"find: {', '.join(repr(t) for t in p.phrases or ())} in {p.raster or p.index} with {model}"


run = cs.task_runner(FindParams, "_matches.gpkg", _shift, _describe)
