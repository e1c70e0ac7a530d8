"""What the inference commands (tile-classify, find, match-regions, heatmap) share.

Order of work in every command, so that bad input fails fast and nothing is left behind:
validate arguments -> check the output path (exists without ``--overwrite``, unwritable) ->
open the raster (missing / not a raster / no CRS) -> load the model -> run -> write atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..geo import RasterSource, check_output, parse_bands

DEFAULT_BATCH_SIZE = 16
GDAL_CACHE_MB = 256


def limit_gdal_cache() -> None:
    """Cap GDAL's block cache (default: 5 % of RAM) unless the user set ``GDAL_CACHEMAX``.

    Tiles are read once, in order: a large cache only grows with the scene (a decimated read
    of a 20000 px scene for the statistics filled ~1.1 GB) and buys nothing. Must run before
    the first raster read of the process (GDAL reads the setting once).
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))


def add_raster_options(p: argparse.ArgumentParser, overlap: float, out_help: str) -> None:
    """Options of every raster command (besides ``--model/--device/--quiet``)."""
    from ..cli import add_common

    p.add_argument("--out", type=Path, default=None, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--bands", default=None, help="1-based bands for R,G,B (one band or three), e.g. 4,3,2")
    p.add_argument(
        "--tile-size", type=int, default=None, metavar="PX",
        help="tile side in raster pixels (default: the model's input size); tiles are resampled to it",
    )
    p.add_argument(
        "--overlap", type=float, default=overlap, metavar="FRAC",
        help="overlap between neighbouring tiles, 0 <= FRAC < 0.9 (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help="tiles per model pass (default: %(default)s)")
    p.add_argument(
        "--bounds", default=None, metavar="MINX,MINY,MAXX,MAXY",
        help="only process this area, in the raster's CRS",
    )
    p.add_argument("--allow-no-crs", action="store_true",
                   help="accept a raster without a CRS (outputs are then in pixel coordinates)")
    add_common(p)


def parse_bounds(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    parts = [v for v in text.replace(" ", ",").split(",") if v]
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"--bounds must be four numbers MINX,MINY,MAXX,MAXY; got {text!r}")
    if not (values[0] < values[2] and values[1] < values[3]):
        raise InputError(f"--bounds must have MINX < MAXX and MINY < MAXY; got {text!r}")
    return values  # type: ignore[return-value]


def check_common(args: argparse.Namespace) -> None:
    """Validate the numeric options before anything is opened or loaded (and cap GDAL's cache)."""
    limit_gdal_cache()
    if args.tile_size is not None and args.tile_size < 8:
        raise InputError(f"--tile-size must be at least 8 pixels; got {args.tile_size}")
    if not 0.0 <= args.overlap < 0.9:
        raise InputError(f"--overlap must be in [0, 0.9); got {args.overlap}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    parse_bands(args.bands)


def output_path(args: argparse.Namespace, suffix: str) -> Path:
    """``--out`` or ``<raster stem><suffix>`` in the current directory, checked for writing."""
    out = args.out if args.out is not None else Path(f"{Path(args.raster).stem}{suffix}")
    return check_output(out, args.overwrite)


def open_raster_check(args: argparse.Namespace) -> None:
    """Open and validate the raster (missing, not a raster, no CRS, bad bands) before the model loads."""
    with RasterSource(args.raster, args.bands, allow_no_crs=args.allow_no_crs):
        pass


def common_kwargs(args: argparse.Namespace) -> dict:
    return {
        "bands": args.bands,
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "bounds": parse_bounds(args.bounds),
        "allow_no_crs": args.allow_no_crs,
    }


def make_predictor(args: argparse.Namespace):
    from . import Predictor

    return Predictor(args.model, device=args.device, batch_size=args.batch_size)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show Python warnings as one ``warning: ...`` line each (no source line echo)."""
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        warnings.showwarning = _show_warning
        yield


class _Bar:
    """A tqdm bar on stderr fed by the Predictor's ``progress(done, total)`` and ``stage(name)``."""

    def __init__(self, bar) -> None:
        self.bar = bar

    def __call__(self, done: int, total: int) -> None:
        bar = self.bar
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(max(0, done - bar.n))

    def stage(self, name: str) -> None:
        """A new stage: the bar restarts, named after it."""
        self.bar.reset(total=0)
        self.bar.set_description(name)


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace, desc: str, unit: str = "tile") -> Iterator[_Bar]:
    """A tqdm bar on stderr: pass it as ``progress=`` and its ``.stage`` as ``stage=``.

    Disabled with ``--quiet``; tqdm also disables itself when stderr is not a terminal.
    """
    from tqdm import tqdm

    bar = tqdm(total=0, desc=desc, unit=unit, disable=True if args.quiet else None, leave=False,
               dynamic_ncols=True)
    try:
        yield _Bar(bar)
    finally:
        bar.close()


def say(args: argparse.Namespace, text: str) -> None:
    """A status line on stdout (suppressed by ``--quiet``); stderr is kept for the bar and errors."""
    if not args.quiet:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
