"""``geoalign eval MODE ...``: zero-shot scene / region / tile classification, retrieval, hard negatives."""

from __future__ import annotations

import argparse
import sys

from ..cli import add_common
from ..defaults import DEFAULT_MODEL
from ..errors import InputError

MODES = {
    "scene": "zero-shot scene classification of images (a folder per class, or a CSV image,label)",
    "regions": "region-level classification of the labelled boxes of samples.jsonl",
    "retrieval": "image-text retrieval recall@1/5/10 on samples.jsonl (chips vs captions)",
    "hard-negatives": "accuracy of region phrases against their hard negatives (samples.jsonl)",
    "tiles": "tile classification on a labelled raster, tiles labelled by their dominant class",
}


def _classes(text: str) -> list[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    if not items:
        raise argparse.ArgumentTypeError("--classes needs at least one class name")
    return items


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {v}")
    return v


def _common(p: argparse.ArgumentParser, templates: bool = True) -> None:
    p.add_argument("--json", metavar="OUT", help="also write the metrics to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--batch-size", type=_positive, default=32, help="images per batch (default %(default)s)")
    if templates:
        p.add_argument(
            "--templates", default="default",
            help="prompt templates for class names: 'default' (5 aerial-image templates, averaged), 'none' "
            "(the bare name), or a file with one template per line using {} (name) or {a} (name with article)",
        )
        p.add_argument("--classes", type=_classes, help="comma-separated class names (default: those in the data)")
    add_common(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model: scene / region / tile classification, retrieval, hard negatives",
        description="Evaluate a model. Modes: " + "; ".join(f"{k}: {v}" for k, v in MODES.items()) + ".",
    )
    modes = p.add_subparsers(dest="mode", metavar="MODE", parser_class=type(p))
    modes.required = True

    m = modes.add_parser("scene", help=MODES["scene"], description=MODES["scene"] + ".")
    m.add_argument("--data", required=True, help="folder with one sub-folder of images per class, or a CSV")
    _common(m)

    m = modes.add_parser("regions", help=MODES["regions"], description=MODES["regions"] + ".")
    m.add_argument("--data", required=True, nargs="+", help="samples.jsonl file(s) or folder(s) holding one")
    _common(m)

    m = modes.add_parser("retrieval", help=MODES["retrieval"], description=MODES["retrieval"] + ".")
    m.add_argument("--data", required=True, nargs="+", help="samples.jsonl file(s) or folder(s) holding one")
    m.add_argument("--caption-key", default="caption", choices=("caption", "caption_detail"),
                   help="which caption is the text side (default %(default)s)")
    _common(m, templates=False)

    m = modes.add_parser("hard-negatives", help=MODES["hard-negatives"], description=MODES["hard-negatives"] + ".")
    m.add_argument("--data", required=True, nargs="+", help="samples.jsonl file(s) or folder(s) holding one")
    _common(m, templates=False)

    m = modes.add_parser("tiles", help=MODES["tiles"], description=MODES["tiles"] + ".")
    m.add_argument("--raster", required=True, help="the raster")
    m.add_argument("--labels", required=True, help="labelled polygons (any OGR format, any CRS)")
    m.add_argument("--class-field", required=True, help="field holding the class name")
    m.add_argument("--layer", help="layer of a multi-layer vector file")
    m.add_argument("--tile-size", type=_positive, help="tile side in pixels (default: the model's input size)")
    m.add_argument("--min-cover", type=float, default=0.25,
                   help="skip tiles whose dominant class covers less than this fraction (default %(default)s)")
    m.add_argument("--max-nodata", type=float, default=0.5,
                   help="skip tiles with more nodata than this fraction (default %(default)s)")
    m.add_argument("--bands", help="1-based bands for R,G,B")
    m.add_argument("--allow-no-crs", action="store_true", help="accept a raster without a CRS")
    _common(m)
    p.set_defaults(func=run)


def _print_result(res: dict, model_name: str) -> None:
    from ..evaluation.common import format_table

    task = res["task"]
    unit = {"scene": "images", "regions": "regions", "retrieval": "images", "hard-negatives": "regions",
            "tiles": "tiles"}[task]
    if task == "tiles":
        head = f"eval tiles: model {model_name}, {res['n']} of {res['tiles_in_grid']} tiles "
        head += f"({res['tile_size']} px) kept"
    else:
        head = f"eval {task}: model {model_name}, {res['n']} {unit}"
    if "classes" in res:
        head += f", {len(res['classes'])} classes"
    if task == "retrieval":
        head += f", {res['n_texts']} distinct captions ({res['caption_key']})"
    if task == "tiles" and res["skipped"]:
        head += " (skipped: " + ", ".join(f"{k}: {v}" for k, v in res["skipped"].items()) + ")"
    print(head)
    metrics = res["metrics"]
    if task == "hard-negatives":
        for level, m in metrics.items():
            rows = [(k, v, m.get(f"n_{k}", m["n"])) for k, v in m.items() if not k.startswith("n")]
            print(f"\n{level} vs its hard negatives (accuracy = positive above all negatives of the type)")
            print(format_table(rows, ("negatives", "accuracy", "n")))
    else:
        print(format_table(list(metrics.items()), ("metric", "value")))
    if res.get("per_class"):
        rows = [(c, d["n"], d["top1"]) for c, d in res["per_class"].items()]
        print("\nper class")
        print(format_table(rows, ("class", "n", "top1")))


def run(args: argparse.Namespace) -> int:
    from .. import zoo
    from ..evaluation import common, tasks
    from ..geo.writers import check_output

    if args.json:
        check_output(args.json, args.overwrite)
    templates = common.load_templates(getattr(args, "templates", None))
    progress = not args.quiet
    bs = args.batch_size
    args.model = args.model or DEFAULT_MODEL
    from .options import apply_threads

    apply_threads(args)
    model = zoo.load_model(args.model, device=args.device)
    model.eval()
    if args.mode == "scene":
        res = tasks.eval_scene(model, args.data, classes=args.classes, templates=templates, batch_size=bs,
                               progress=progress)
    elif args.mode == "regions":
        res = tasks.eval_regions(model, args.data, classes=args.classes, templates=templates, batch_size=bs,
                                 progress=progress)
    elif args.mode == "retrieval":
        res = tasks.eval_retrieval(model, args.data, caption_key=args.caption_key, batch_size=bs, progress=progress)
    elif args.mode == "hard-negatives":
        res = tasks.eval_hard_negatives(model, args.data, batch_size=bs, progress=progress)
    elif args.mode == "tiles":
        res = tasks.eval_tiles(
            model, args.raster, args.labels, args.class_field, tile_size=args.tile_size, min_cover=args.min_cover,
            max_nodata=args.max_nodata, classes=args.classes, bands=args.bands, layer=args.layer,
            allow_no_crs=args.allow_no_crs,
            templates=templates, batch_size=bs, progress=progress,
        )
    else:  # pragma: no cover - argparse restricts the choices
        raise InputError(f"unknown eval mode {args.mode!r}")
    res = {"model": args.model, **res}
    if args.mode == "tiles":
        res["data"] = [args.raster, args.labels]
    else:
        res["data"] = args.data if isinstance(args.data, list) else [args.data]
    sys.stdout.flush()
    _print_result(res, args.model)
    if args.json:
        common.write_json(res, args.json, args.overwrite)
        print(f"\nmetrics written to {args.json}")
    return 0
