"""``geoalign find RASTER PHRASE [PHRASE ...]``: objects matching text, as boxes in a GeoPackage
(from the raster, or from its scene index with ``--index``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.text import clean_texts
from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_NMS_IOU, REFINE_MAX_BOXES
from ..errors import InputError
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find",
        help="find objects matching phrases (boxes with scores)",
        description=(
            "Find objects by text: candidate boxes from each phrase's dense similarity map and "
            "multi-scale windows (or the --regions features), scored by RoIAlign region embeddings "
            "from one backbone pass per tile against the phrase's competitors (the built-in vocabulary and "
            "background phrases). The score is the estimated probability that the box shows the phrase, "
            "calibrated on held-out labelled data (the model's card; `geoalign models info NAME`); a model "
            "without a calibration writes 'standout' instead. NMS across tile borders, --min-score, top "
            "--max-results per phrase. Writes GeoPackage layer 'matches' (phrase, score, rank)."
        ),
    )
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
    p.add_argument("phrases", nargs="*", metavar="PHRASE", help='what to look for, e.g. "red car"')
    where = p.add_mutually_exclusive_group()
    where.add_argument("--within", type=Path, default=None,
                       help="vector file of polygons (any OGR format, any CRS): search inside them only (a box is "
                            "kept when its centre lies in one)")
    where.add_argument("--regions", type=Path, default=None,
                       help="vector file: its features' boxes are the candidates (each scored as a whole)")
    cs.add_vector_options(p, "--within / --regions")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, metavar="S",
                   help="drop matches whose score (probability of being right) is below S, 0..1 (default: "
                        "%(default)s: probably right)")
    p.add_argument("--max-results", type=int, default=DEFAULT_MAX_RESULTS, metavar="N",
                   help="best N matches per phrase (default: %(default)s)")
    p.add_argument("--object-size", default=None, metavar="W[,H]",
                   help="the objects' typical size in metres (a side, or width,height): windows of that size join "
                        "the candidates and boxes far from it (area outside 1/2.5 .. 2.5x) are dropped; without "
                        "it, the sizes a fine-tuned model or the model card knows for the class a phrase names "
                        "apply ('red car' -> car)")
    p.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU, metavar="IOU",
                   help="boxes overlapping a better one by more than IOU are dropped (default: %(default)s)")
    refine = p.add_mutually_exclusive_group()
    refine.add_argument("--no-refine", dest="refine", action="store_false", default=None,
                        help="keep the boxes of the tile pass (default for a raster: the best boxes of each "
                             f"phrase -- the best --max-results + 20, at most {REFINE_MAX_BOXES} per phrase; the "
                             "rest stay as found -- are looked at again at twice the zoom and moved when a better "
                             "placed box scores at least as high)")
    refine.add_argument("--refine", dest="refine", action="store_true", default=None,
                        help="with --index: refine the boxes too (re-reads the raster and runs the image model "
                             "for the kept boxes; off by default from an index)")
    p.add_argument("--exact", action="store_true",
                   help="with a collection index: scan every stored patch even when it has an ANN index")
    cs.add_crs_option(p)
    cs.add_raster_options(p, overlap=0.25, out_help="output GeoPackage (default: <raster stem>_matches.gpkg here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    args.phrases = [args.raster, *args.phrases]


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        cs.check_common(args)
        phrases = clean_texts(args.phrases)
        if not 0.0 <= args.min_score <= 1.0:
            raise InputError(f"--min-score must be in [0, 1]; got {args.min_score}")
        if args.max_results < 1:
            raise InputError(f"--max-results must be at least 1; got {args.max_results}")
        if not 0.0 < args.nms_iou <= 1.0:
            raise InputError(f"--nms-iou must be in (0, 1]; got {args.nms_iou}")
        object_size = None
        if args.object_size is not None:
            try:
                object_size = [float(v) for v in str(args.object_size).split(",")]
            except ValueError:
                object_size = []
            if len(object_size) not in (1, 2) or not all(0 < v < float("inf") for v in object_size):
                raise InputError(f"--object-size must be one or two positive numbers in metres (W or W,H); "
                                 f"got {args.object_size!r}")
        for vec in (args.regions, args.within):
            if vec is not None and not vec.exists():
                raise InputError(f"vector file not found: {vec}")
        out = cs.output_path(args, "_matches.gpkg")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        source = cs.source_for(args, predictor)
        refine = args.refine if args.refine is not None else args.index is None
        cs.say(args, f"find: {', '.join(repr(p) for p in phrases)} in {cs.source_name(args)} with "
                     f"{predictor.model_source}")
        with cs.progress_bar(args, "find") as prog:
            result = runs.find(
                predictor, source, phrases, out, overwrite=args.overwrite, regions=args.regions,
                min_score=args.min_score, max_results=args.max_results, nms_iou=args.nms_iou, refine=refine,
                regions_layer=args.layer, buffer=args.buffer, within=args.within, within_layer=args.layer,
                **({"object_size": object_size} if object_size is not None else {}), progress=prog,
                stage=prog.stage, **cs.common_kwargs(args), **cs.collection_kwargs(args, source),
            )
    print(result.summary)
    return 0
