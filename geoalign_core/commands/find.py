"""``geoalign find RASTER PHRASE [PHRASE ...]``: objects matching text, as boxes in a GeoPackage
(from the raster, or from its scene index with ``--index``)."""

from __future__ import annotations

import argparse

from ..params import FindParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("find", help="find objects matching phrases (boxes with scores)", description=(
        "Find objects by text: candidate boxes from each phrase's dense similarity map and "
        "multi-scale windows (or the --regions features), scored by RoIAlign region embeddings "
        "from one backbone pass per tile against the phrase's competitors (the built-in vocabulary and "
        "background phrases). The score is the estimated probability that the box shows the phrase, "
        "calibrated on held-out labelled data (the model's card; `geoalign models info NAME`); a model "
        "without a calibration writes 'standout' instead. NMS across tile borders, --min-score, top "
        "--max-results per phrase. Writes GeoPackage layer 'matches' (phrase, score, rank)."))
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
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
    return f"find: {', '.join(repr(t) for t in p.phrases)} in {p.raster or p.index} with {model}"


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        return cs.run_task(args, cs.task_from_args(args, FindParams, out=cs.default_out(args, "_matches.gpkg")),
                           _describe)
