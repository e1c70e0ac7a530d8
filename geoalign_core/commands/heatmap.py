"""``geoalign heatmap RASTER PHRASE``: per-pixel similarity to a phrase as a float32 COG."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..params import HeatmapParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("heatmap", help="similarity of every pixel to a phrase, as a float32 GeoTIFF", description=(
        "Dense patch-phrase cosine similarity (the model's dense mode), resampled onto the "
        "raster's grid (or a grid coarser by --scale) and averaged where tiles overlap; "
        "float32 Cloud-Optimised GeoTIFF with the raster's CRS, NaN nodata where the input "
        "has no data. --values score maps the estimated probability that a one-patch region shows the phrase."))
    p.add_argument("raster", nargs="?", help="input raster (or a scene index .parquet; may be left out with --index)")
    p.add_argument("phrase", nargs="?", metavar="PHRASE", help='what to map, e.g. "red car"')
    cs.add_task_options(p, HeatmapParams, out_help="output GeoTIFF (default: <raster stem>_heatmap.tif here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    if args.phrase is not None:
        raise InputError(f"one phrase per heatmap; got {args.raster!r} and {args.phrase!r}")
    args.phrase = args.raster


def _describe(p: HeatmapParams, model: str) -> str:
    return f"heatmap: {p.phrase!r} on {p.raster or p.index} with {model}"


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        return cs.run_task(args, cs.task_from_args(args, HeatmapParams, out=cs.default_out(args, "_heatmap.tif")),
                           _describe)
