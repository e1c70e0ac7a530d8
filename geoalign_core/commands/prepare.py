"""``geoalign prepare RASTER LABELS --class-field F --out DIR``: labelled polygons -> training samples."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_common
from ..defaults import DEFAULT_CHIP_SIZE
from ..errors import InputError

EPILOG = """\
outputs:
  DIR/chips/NNNNNN.tif  3-band uint8 RGB GeoTIFF chips on the raster's grid (the selected bands,
                        scene-normalised; divide by 255), georeferenced, internal nodata mask
  DIR/samples.jsonl     one line per chip: image, caption, caption_detail, regions (bbox, phrase,
                        description, hard_negatives + extras), see geoalign_core/data/schema.py
  DIR/dataset.json      classes, parameters and this run's summary

chips are dropped when mostly nodata, blank, dominated by one region (> --max-cover of the
area, the paper's 75% rule) or without any labelled region. Features with an empty class
value, a class not in --classes, no geometry, no area, or outside the raster are skipped and
counted. The default chip size (112 px) is the input size of the bundled geoalign-demo model;
use 224 for ViT-B/16 and ViT-L/14.
"""


def _classes(text: str) -> list[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise argparse.ArgumentTypeError("--classes needs at least one class name")
    return items


HELP = "turn a raster and labelled polygons into training chips + samples.jsonl"
DESCRIPTION = ("Turn a raster and labelled polygons (any OGR format, any CRS) into georeferenced "
    "chips and samples.jsonl with rule-based captions, region phrases and hard negatives.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raster", help="GeoTIFF (or any raster GDAL reads) with a CRS")
    p.add_argument("labels", help="labelled polygons: GeoPackage, Shapefile, GeoJSON, ... in any CRS")
    p.add_argument("--class-field", required=True, help="field holding the class name of each polygon")
    p.add_argument("--description-field", help="optional field with a description per polygon (used as is)")
    p.add_argument("--out", required=True, help="output folder (created; its parent must exist)")
    p.add_argument("--layer", help="layer of a multi-layer vector file (default: the first)")
    p.add_argument("--classes", type=_classes, help="comma-separated class values to keep; others are skipped")
    p.add_argument("--chip-size", type=int, default=DEFAULT_CHIP_SIZE, help="chip side in pixels (default %(default)s)")
    p.add_argument("--stride", type=int, help="step between chips in pixels (default: the chip size, no overlap)")
    p.add_argument("--min-region-px", type=float, default=4.0,
                   help="clipped boxes narrower or lower than this are slivers (default %(default)s)")
    p.add_argument("--min-visible", type=float, default=0.3,
                   help="objects with less of their area inside the chip are slivers, unless they cover "
                   ">= 10%% of the chip (default %(default)s)")
    p.add_argument("--max-cover", type=float, default=0.75,
                   help="drop chips where one region covers more than this fraction (default %(default)s)")
    p.add_argument("--max-nodata", type=float, default=0.5,
                   help="drop chips with more nodata than this fraction (default %(default)s)")
    p.add_argument("--min-std", type=float, default=0.01,
                   help="drop blank chips: largest band standard deviation in [0,1] units below this "
                   "(default %(default)s)")
    p.add_argument("--num-negatives", type=int, default=6, help="hard negatives per region, Q (default %(default)s)")
    p.add_argument("--bands", help="1-based bands for R,G,B (one or three, e.g. 4,3,2; default: RGB / first three)")
    p.add_argument("--color-field", default="auto",
                   help="colour attribute field; 'auto' finds color/colour, 'none' ignores (default %(default)s)")
    p.add_argument("--size-field", default="auto",
                   help="size field (small/medium/large); 'auto' finds 'size', else size is derived from the "
                   "area relative to the class; 'none' derives it (default %(default)s)")
    p.add_argument("--orientation-field", default="auto",
                   help="orientation field (north-south/east-west/diagonal); 'auto' finds 'orientation', else "
                   "it is derived from the shape (default %(default)s)")
    p.add_argument("--keep-empty", action="store_true", help="also keep chips without any labelled region")
    p.add_argument("--allow-no-crs", action="store_true",
                   help="accept a raster without a CRS; the labels must then be in its pixel/map coordinates")
    p.add_argument("--seed", type=int, default=0, help="seed of the hard-negative choices (default %(default)s)")
    p.add_argument("--background", type=int, default=2, metavar="N",
                   help="per chip, up to N unlabelled boxes of the labelled objects' size, away from every "
                        "label, as 'background' regions (teaches object vs not-object; default: %(default)s)")
    p.add_argument("--bounds", metavar="MINX,MINY,MAXX,MAXY",
                   help="only chips inside this area, in the raster's CRS (e.g. the left half for training)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="hold out the last F of the area (east end, or south when taller than wide) as "
                        "validation chips in samples_val.jsonl; chips across the line are dropped (default: 0)")
    p.add_argument("--quality-filter", metavar="NAME", default=None,
                   help="rank the training samples by a data-quality score and keep the best --keep share: "
                        "clip-score (image-caption cosine similarity under --quality-model)")
    p.add_argument("--keep", type=float, default=0.3, metavar="F",
                   help="with --quality-filter: share of the training samples kept (default %(default)s)")
    p.add_argument("--quality-model", metavar="MODEL", default=None,
                   help="with --quality-filter clip-score: the reference model (default: the default model)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    add_common(p, model=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..geo.paths import check_raster_path, check_vector_path

    check_raster_path(args.raster)  # a missing raster or labels file is refused before the raster and vector
    check_vector_path(args.labels)  # stacks load
    from ..data.prepare import PrepareOptions, prepare_dataset
    from .options import parse_bounds

    scorer = None
    if args.quality_filter is not None:  # checked before any work
        from ..data.quality import make_scorer

        if not 0.0 < args.keep <= 1.0:
            raise InputError(f"--keep must be in (0, 1]; got {args.keep}")
        from .options import apply_threads

        apply_threads(args)  # a clip-score filter runs a model
        scorer = make_scorer(args.quality_filter, model=args.quality_model)
    elif args.quality_model is not None:
        raise InputError("--quality-model needs --quality-filter")

    opts = PrepareOptions(
        class_field=args.class_field,
        description_field=args.description_field,
        chip_size=args.chip_size,
        stride=args.stride,
        min_region_px=args.min_region_px,
        min_visible=args.min_visible,
        max_cover=args.max_cover,
        max_nodata=args.max_nodata,
        min_std=args.min_std,
        num_negatives=args.num_negatives,
        bands=args.bands,
        seed=args.seed,
        classes=args.classes,
        layer=args.layer,
        color_field=args.color_field,
        size_field=args.size_field,
        orientation_field=args.orientation_field,
        keep_empty=args.keep_empty,
        allow_no_crs=args.allow_no_crs,
        bounds=parse_bounds(args.bounds),
        val_fraction=args.val_fraction,
        background=args.background,
    )
    summary = prepare_dataset(
        args.raster, args.labels, args.out, opts, overwrite=args.overwrite, progress=not args.quiet
    )
    quality = None
    if scorer is not None:
        from ..data.quality import filter_dataset

        quality = filter_dataset(args.out, scorer, args.keep)
    val = f" and {args.out}/samples_val.jsonl" if summary.chips_val else ""
    print(f"wrote {summary.chips_written} chips and {args.out}/samples.jsonl{val}")
    for line in summary.lines():
        print(line)
    if quality is not None:
        print(quality.line())
    sys.stdout.flush()
    return 0
