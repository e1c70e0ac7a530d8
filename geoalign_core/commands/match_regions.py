"""``geoalign match-regions RASTER REGIONS PHRASE [...]``: score each feature against phrases."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import MatchRegionsParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, MatchRegionsParams)
    p.add_argument("regions", nargs="?", help="vector file with the regions")
    p.add_argument("phrases", nargs="*", metavar="PHRASE", help="phrases to score")
    cs.add_task_options(p, MatchRegionsParams, out_help="output GeoPackage (default: <raster stem>_regions.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    args.regions, args.phrases = args.raster, [args.regions, *args.phrases] if args.regions else args.phrases


def _describe(p: MatchRegionsParams, model: str) -> str:
    return f"match-regions: {p.regions} x {len(p.phrases or ())} phrase(s) on {p.raster or p.index} with {model}"


run = cs.task_runner(MatchRegionsParams, "_regions.gpkg", _shift, _describe,
                     shifted=lambda a: a.regions is None or not Path(a.regions).exists())
