"""``geoalign match-regions RASTER REGIONS PHRASE [...]``: score each feature against phrases."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.text import clean_texts
from ..errors import InputError
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "match-regions",
        help="score every feature of a vector file against phrases",
        description=(
            "Score the bounding box of every input feature (any OGR format and CRS, reprojected "
            "to the raster's) against every phrase: RoIAlign region embeddings, score = "
            "softmax(logit_scale * cos) over the phrases plus generic background phrases. "
            "Writes GeoPackage layer 'regions': the features with best_phrase, score and one "
            "score column per phrase. Features outside the raster are reported and skipped."
        ),
    )
    p.add_argument("raster", help="input raster")
    p.add_argument("regions", type=Path, help="vector file with the regions")
    p.add_argument("phrases", nargs="+", metavar="PHRASE", help="phrases to score")
    cs.add_vector_options(p, "REGIONS")
    cs.add_raster_options(p, overlap=0.25, out_help="output GeoPackage (default: <raster stem>_regions.gpkg here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.check_common(args)
        phrases = clean_texts(args.phrases)
        if not args.regions.exists():
            raise InputError(f"vector file not found: {args.regions}")
        out = cs.output_path(args, "_regions.gpkg")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        cs.say(args, f"match-regions: {args.regions} x {len(phrases)} phrase(s) on {args.raster}"
                     f" with {predictor.model_source}")
        with cs.progress_bar(args, "match-regions") as prog:
            result = runs.match_regions(predictor, args.raster, args.regions, phrases, out, overwrite=args.overwrite,
                                        layer=args.layer, buffer=args.buffer, progress=prog, stage=prog.stage,
                                        **cs.common_kwargs(args))
    print(result.summary)
    return 0
