"""``geoalign tile-classify RASTER``: zero-shot classification of every tile into a GeoPackage."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tile-classify",
        help="classify every tile of a raster against classes (zero-shot)",
        description=(
            "Zero-shot classification of every tile: each class through remote-sensing prompt "
            "templates (averaged), softmax with the model's logit scale. Writes GeoPackage layer "
            "'tiles' (label, score = probability of label, top_k = JSON) in the raster's CRS."
        ),
    )
    p.add_argument("raster", nargs="?", help="input raster (GeoTIFF, ...; or a scene index .parquet; may be left out "
                   "with --index)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classes", default=None, help='comma-separated classes, e.g. "forest,river,parking lot"')
    g.add_argument("--classes-file", type=Path, default=None, help="text file, one class per line (# comments)")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="classes kept per tile in top_k (default: 3)")
    cs.add_crs_option(p)
    cs.add_raster_options(p, overlap=0.0, out_help="output GeoPackage (default: <raster stem>_tiles.gpkg here)")
    p.set_defaults(func=run)


def read_classes(args: argparse.Namespace) -> list[str] | None:
    """The classes from ``--classes`` / ``--classes-file``; None for the built-in vocabulary."""
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",")]
    elif args.classes_file is not None:
        try:
            lines = Path(args.classes_file).read_text(encoding="utf-8-sig").splitlines()  # a BOM is not text
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read --classes-file {args.classes_file}: {exc}") from None
        classes = [ln.strip() for ln in lines if not ln.strip().startswith("#")]
    else:
        return None
    classes = [c for c in classes if c]
    if not classes:
        raise InputError("no classes given: --classes needs at least one class name, e.g. \"forest,river\"")
    return classes


def _shift(args: argparse.Namespace) -> None:
    raise InputError(f"tile-classify takes no phrase; got {args.raster!r} (classes go in --classes)")


def run(args: argparse.Namespace) -> int:
    with cs.one_line_warnings():
        cs.settle_source(args, _shift)
        cs.check_common(args)
        classes = read_classes(args)
        if args.top_k < 1:
            raise InputError(f"--top-k must be at least 1; got {args.top_k}")
        out = cs.output_path(args, "_tiles.gpkg")
        cs.open_raster_check(args)
        from ..inference import runs  # the model stack: only once the inputs are known to be good

        predictor = cs.make_predictor(args)
        source = cs.source_for(args, predictor)
        n = "the built-in vocabulary" if classes is None else f"{len(classes)} classes"
        cs.say(args, f"tile-classify: {cs.source_name(args)} with {predictor.model_source}, {n}")
        with cs.progress_bar(args, "tile-classify") as prog:
            result = runs.tile_classify(predictor, source, classes, out, overwrite=args.overwrite,
                                        top_k=args.top_k, progress=prog, stage=prog.stage, **cs.common_kwargs(args),
                                        **cs.collection_kwargs(args, source))
    print(result.summary)
    return 0
