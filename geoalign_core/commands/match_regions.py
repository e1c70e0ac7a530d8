"""``geoalign match-regions RASTER REGIONS PHRASE [...]``: score each feature against phrases."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..params import MatchRegionsParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("match-regions", help="score every feature of a vector file against phrases", description=(
        "Score the bounding box of every input feature (any OGR format and CRS, reprojected "
        "to the raster's) against every phrase: RoIAlign region embeddings against the phrases, generic "
        "background phrases and the built-in vocabulary; score = the estimated probability that the region "
        "shows the phrase (the model card's calibration). Writes GeoPackage layer 'regions': the features "
        "with best_phrase, score and one score column per phrase. Features outside the raster are reported "
        "and skipped."))
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
    p.add_argument("regions", nargs="?", help="vector file with the regions")
    p.add_argument("phrases", nargs="*", metavar="PHRASE", help="phrases to score")
    cs.add_task_options(p, MatchRegionsParams, out_help="output GeoPackage (default: <raster stem>_regions.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    args.regions, args.phrases = args.raster, [args.regions, *args.phrases] if args.regions else args.phrases


def _describe(p: MatchRegionsParams, model: str) -> str:
    return (f"match-regions: {p.regions} x {len(p.phrases)} phrase(s) on {p.raster or p.index}"
            f" with {model}")


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift, lambda a: a.regions is None or not Path(a.regions).exists())
        return cs.run_task(args, cs.task_from_args(args, MatchRegionsParams,
                                                   out=cs.default_out(args, "_regions.gpkg")), _describe)
