"""``geoalign similar RASTER_OR_INDEX --box ...``: more regions like an example (query by example)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_NMS_IOU
from ..errors import InputError
from . import options as cs

SIMILAR_MIN_SCORE = 0.5  # geoalign_core.inference.similar.DEFAULT_SIMILAR_MIN_SCORE (--help stays light)
TEXT_WEIGHT = 1.0  # geoalign_core.inference.similar.DEFAULT_TEXT_WEIGHT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "similar",
        help="find more regions like an example box (query by example), from a raster or its index",
        description=(
            "Query by example: the example regions' embedding (RoIAlign, averaged over the examples) is "
            "the query; candidate boxes of about the examples' size are built and pooled as find builds "
            "them, scored by cosine similarity with the query. With --phrase the query becomes "
            "normalize(examples + W * phrase), e.g. an example car and --phrase 'red car'. The example "
            "itself is a candidate (without a phrase it scores 1 and ranks first; column 'example'). "
            "Writes GeoPackage layer 'similar' (score, rank, example)."
        ),
    )
    p.add_argument("raster", nargs="?", help="input raster or scene index .parquet (may be left out with --index)")
    ex = p.add_mutually_exclusive_group()
    ex.add_argument("--box", action="append", default=None, metavar="MINX,MINY,MAXX,MAXY",
                    help="an example region in the raster's CRS (repeat for several)")
    ex.add_argument("--examples", type=Path, default=None,
                    help="vector file of example regions (any OGR format, any CRS)")
    cs.add_vector_options(p, "--examples")
    p.add_argument("--phrase", default=None, help='steer the query with text, e.g. "red car"')
    p.add_argument("--text-weight", type=float, default=TEXT_WEIGHT, metavar="W",
                   help="weight of --phrase against the examples (default: %(default)s)")
    p.add_argument("--min-score", type=float, default=SIMILAR_MIN_SCORE, metavar="S",
                   help="drop regions whose cosine similarity with the query is below S, -1..1 (default: %(default)s)")
    p.add_argument("--max-results", type=int, default=DEFAULT_MAX_RESULTS, metavar="N",
                   help="best N regions (default: %(default)s)")
    p.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU, metavar="IOU",
                   help="boxes overlapping a better one by more than IOU are dropped (default: %(default)s)")
    cs.add_raster_options(p, overlap=0.25, out_help="output GeoPackage (default: <raster stem>_similar.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    raise InputError(f"similar takes no phrase positional; got {args.raster!r} (steer it with --phrase)")


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        cs.check_common(args)
        if args.box is None and args.examples is None:
            raise InputError("give an example region: --box MINX,MINY,MAXX,MAXY or --examples FILE")
        examples = args.examples
        if args.box is not None:
            examples = [cs.parse_bounds(b, "--box") for b in args.box]
        elif not args.examples.exists():
            raise InputError(f"vector file not found: {args.examples}")
        if not -1.0 <= args.min_score <= 1.0:
            raise InputError(f"--min-score must be in [-1, 1]; got {args.min_score}")
        if args.max_results < 1:
            raise InputError(f"--max-results must be at least 1; got {args.max_results}")
        if not 0.0 < args.nms_iou <= 1.0:
            raise InputError(f"--nms-iou must be in (0, 1]; got {args.nms_iou}")
        if args.text_weight < 0:
            raise InputError(f"--text-weight must be >= 0; got {args.text_weight}")
        phrase = None
        if args.phrase is not None:
            from ..data.text import clean_texts

            (phrase,) = clean_texts([args.phrase])
        out = cs.output_path(args, "_similar.gpkg")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        source = cs.source_for(args, predictor)
        n = len(args.box) if args.box else str(args.examples)
        cs.say(args, f"similar: {n} example(s){f' + {phrase!r}' if phrase else ''} in {cs.source_name(args)} "
                     f"with {predictor.model_source}")
        with cs.progress_bar(args, "similar") as prog:
            result = runs.similar(predictor, source, examples, out, overwrite=args.overwrite, phrase=phrase,
                                  text_weight=args.text_weight, min_score=args.min_score,
                                  max_results=args.max_results, nms_iou=args.nms_iou, layer=args.layer,
                                  buffer=args.buffer, progress=prog, stage=prog.stage, **cs.common_kwargs(args))
    print(result.summary)
    return 0
