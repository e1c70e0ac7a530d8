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
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
    p.add_argument("regions", nargs="?", help="vector file with the regions")
    p.add_argument("phrases", nargs="*", metavar="PHRASE", help="phrases to score")
    cs.add_vector_options(p, "REGIONS")
    cs.add_raster_options(p, overlap=0.25, out_help="output GeoPackage (default: <raster stem>_regions.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    args.regions, args.phrases = args.raster, [args.regions, *args.phrases] if args.regions else args.phrases


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift, lambda a: a.regions is None or not Path(a.regions).exists())
        cs.check_common(args)
        if args.regions is None:
            raise InputError("give the vector file of regions to score")
        args.regions = Path(args.regions)
        phrases = clean_texts(args.phrases)
        if not args.regions.exists():
            raise InputError(f"vector file not found: {args.regions}")
        out = cs.output_path(args, "_regions.gpkg")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        source = cs.source_for(args, predictor)
        cs.say(args, f"match-regions: {args.regions} x {len(phrases)} phrase(s) on {cs.source_name(args)}"
                     f" with {predictor.model_source}")
        with cs.progress_bar(args, "match-regions") as prog:
            result = runs.match_regions(predictor, source, args.regions, phrases, out, overwrite=args.overwrite,
                                        layer=args.layer, buffer=args.buffer, progress=prog, stage=prog.stage,
                                        **cs.common_kwargs(args))
    print(result.summary)
    return 0
