"""``geoalign heatmap RASTER PHRASE``: per-pixel similarity to a phrase as a float32 COG."""

from __future__ import annotations

import argparse

from ..data.text import clean_texts
from ..errors import InputError
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heatmap",
        help="similarity of every pixel to a phrase, as a float32 GeoTIFF",
        description=(
            "Dense patch-phrase cosine similarity (the model's dense mode), resampled onto the "
            "raster's grid (or a grid coarser by --scale) and averaged where tiles overlap; "
            "float32 Cloud-Optimised GeoTIFF with the raster's CRS, NaN nodata where the input "
            "has no data."
        ),
    )
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
    p.add_argument("phrase", nargs="?", metavar="PHRASE", help='what to map, e.g. "red car"')
    p.add_argument("--scale", type=int, default=None, metavar="N",
                   help="raster pixels per output cell (default: 1, coarser only for huge rasters)")
    p.add_argument("--values", choices=("similarity", "score"), default="similarity",
                   help="similarity: cosine similarity of each patch with the phrase (-1..1); score: the 0..1 "
                        "probability find gives a one-patch region against background phrases (default: %(default)s)")
    cs.add_raster_options(p, overlap=0.25, out_help="output GeoTIFF (default: <raster stem>_heatmap.tif here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    if args.phrase is not None:
        raise InputError(f"one phrase per heatmap; got {args.raster!r} and {args.phrase!r}")
    args.phrase = args.raster


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        cs.check_common(args)
        if args.phrase is None:
            raise InputError('give the phrase to map, e.g. "red car"')
        (phrase,) = clean_texts([args.phrase])
        if args.scale is not None and args.scale < 1:
            raise InputError(f"--scale must be at least 1; got {args.scale}")
        out = cs.output_path(args, "_heatmap.tif")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        source = cs.source_for(args, predictor)
        cs.say(args, f"heatmap: {phrase!r} on {cs.source_name(args)} with {predictor.model_source}")
        with cs.progress_bar(args, "heatmap") as prog:
            result = runs.heatmap(predictor, source, phrase, out, overwrite=args.overwrite, scale=args.scale,
                                  values=args.values, progress=prog, stage=prog.stage, **cs.common_kwargs(args))
    print(result.summary)
    return 0
