"""``geoalign heatmap RASTER PHRASE``: per-pixel similarity to a phrase as a float32 COG."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..params import HeatmapParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, HeatmapParams)
    p.add_argument("phrase", nargs="?", metavar="PHRASE", help='what to map, e.g. "red car"')
    cs.add_task_options(p, HeatmapParams, out_help="output GeoTIFF (default: <raster stem>_heatmap.tif here)")
    p.set_defaults(func=run)


def _shift(args: argparse.Namespace) -> None:
    if args.phrase is not None:
        raise InputError(f"one phrase per heatmap; got {args.raster!r} and {args.phrase!r}")
    args.phrase = args.raster


def _describe(p: HeatmapParams, model: str) -> str:
    return f"heatmap: {p.phrase!r} on {p.raster or p.index} with {model}"


run = cs.task_runner(HeatmapParams, "_heatmap.tif", _shift, _describe)
