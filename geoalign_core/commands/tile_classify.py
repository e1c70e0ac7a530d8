"""``geoalign tile-classify RASTER``: zero-shot classification of every tile into a GeoPackage."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..params import TileClassifyParams
from . import options as cs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = cs.task_parser(sub, TileClassifyParams, "input raster (GeoTIFF, ...; or a scene index "
                       ".parquet; may be left out with --index)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--classes", default=None, help='comma-separated classes, e.g. "forest,river,parking lot"')
    g.add_argument("--classes-file", type=Path, default=None, help="text file, one class per line (# comments)")
    cs.add_task_options(p, TileClassifyParams, out_help="output GeoPackage (default: <raster stem>_tiles.gpkg here)")
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


def _describe(p: TileClassifyParams, model: str) -> str:
    classes = p.classes
    return (f"tile-classify: {p.raster or p.index} with {model}, "
            f"{'the built-in vocabulary' if classes is None else f'{len(classes)} classes'}")


run = cs.task_runner(TileClassifyParams, "_tiles.gpkg", _shift, _describe,
                     values=lambda args: {"classes": read_classes(args)})
