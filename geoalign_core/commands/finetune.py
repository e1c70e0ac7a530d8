"""``geoalign finetune RASTER... LABELS... --class-field F --from MODEL --out DIR``: prepare, train
(stage II) and evaluate on a spatially held-out part of the user's own labels, in one command
(:mod:`geoalign_core.training.finetune`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

HELP = "fine-tune a model on your own labelled polygons (prepare + train + before/after report)"
DESCRIPTION = (
    "Fine-tune MODEL on rasters and their labelled polygons (or pixel boxes): chips every half chip "
    "with background boxes, the east (or south) --val-fraction of each scene (or of --bounds) held "
    "out, stage II training sized to the data, then region top-1 and background-vs-object on the "
    "held-out part before and after. Writes "
    "DIR/<name>.safetensors, DIR/report.md, DIR/commands.sh (the prepare/train/eval commands it ran) "
    "and DIR/train.yaml."
    )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help=HELP, description=DESCRIPTION)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="the rasters, then their labels (one labels file for all, or one per raster in order): "
                        "polygons in any OGR format, or a CSV of pixel boxes xmin,ymin,xmax,ymax; rasters and "
                        "labels files are told apart by their contents")
    p.add_argument("--class-field", required=True, help="field holding each polygon's class")
    p.add_argument("--from", dest="start", default=None, metavar="MODEL",
                   help="the model to start from (a name or a .safetensors; default: the default model)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--name", default=None, help="name of the fine-tuned model file (default: <start>-finetuned)")
    p.add_argument("--val-fraction", type=float, default=0.3, metavar="F",
                   help="share of each scene held out for the before/after report (default: %(default)s)")
    p.add_argument("--background", type=int, default=2, metavar="N", help="background boxes per chip (default: 2)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: ~4 passes over the chips)")
    p.add_argument("--lr", type=float, default=1.0e-4, help="learning rate (default: %(default)g)")
    p.add_argument("--batch-size", type=int, default=16, help="chips per step (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="keep A x the fine-tuned weights + (1 - A) x the start's (default: the largest of 1, "
                        "0.75, 0.5, 0.25 that keeps a generated reference scene within 0.05 of the start)")
    p.add_argument("--bounds", metavar="MINX,MINY,MAXX,MAXY", default=None,
                   help="only chips inside this area, in the rasters' CRS, for training and the held-out part "
                        "(its east --val-fraction), e.g. the left half of a scene")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the training config finetune writes (VALUE read as YAML; repeatable), "
                        "e.g. --set lambdas=[1,1,0,0,0] --set background_negatives=false")
    p.add_argument("--quality-filter", metavar="NAME", default=None,
                   help="as prepare --quality-filter (clip-score), scored by the model being fine-tuned")
    p.add_argument("--keep", type=float, default=0.3, metavar="F",
                   help="with --quality-filter: share of the training samples kept (default %(default)s)")
    p.add_argument("--layer", default=None, help="layer of multi-layer label files")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--overwrite", action="store_true", help="reuse a non-empty --out folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    from ..cli import add_threads

    add_threads(p)
    p.set_defaults(func=run)


def _is_raster(path: str) -> bool:
    import rasterio

    from ..data.labels import is_pixel_box_csv

    if is_pixel_box_csv(path):  # GDAL's XYZ driver may take a CSV of numbers for a grid
        return False
    try:
        with rasterio.open(path):
            return True
    except Exception:  # noqa: BLE001 -- any failure: not a raster GDAL opens
        return False


def run(args: argparse.Namespace) -> int:
    from ..defaults import DEFAULT_MODEL
    from .options import parse_bounds

    bounds = parse_bounds(args.bounds)
    for f in args.files:
        if not ("://" in f or f.startswith("/vsi") or Path(f).exists()):
            raise InputError(f"file not found: {f}")
    if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be in [0, 1]; got {args.alpha}")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1; got {args.steps}")
    rasters = [f for f in args.files if _is_raster(f)]
    labels = [f for f in args.files if f not in rasters]
    if not rasters:
        raise InputError("no raster among the files (give the rasters, then their labels)")
    if not labels:
        raise InputError("no labels file among the files (give the rasters, then their labelled polygons or "
                         "pixel boxes)")
    try:
        from geoalign_core.training.config import parse_override
        from geoalign_core.training.finetune import finetune
    except ModuleNotFoundError as exc:
        raise InputError("the training package is not installed (install geoalign from a source checkout)") from exc
    overrides = dict(parse_override(s) for s in args.set)
    from .options import apply_threads

    apply_threads(args)
    # finetune refuses an --out another run is writing, and removes a folder it created when it fails
    res = finetune(rasters, labels, args.class_field, args.start or DEFAULT_MODEL, args.out, name=args.name,
                   val_fraction=args.val_fraction, background=args.background, steps=args.steps, lr=args.lr,
                   batch_size=args.batch_size, device=args.device, layer=args.layer, alpha=args.alpha,
                   bounds=bounds, overrides=overrides, quality_filter=args.quality_filter, keep=args.keep,
                   overwrite=args.overwrite, quiet=args.quiet, say=(lambda s: None) if args.quiet else print)
    print("\n".join(res.summary))
    print(f"wrote {res.model} ({res.report}, {args.out / 'commands.sh'})")
    return 0
