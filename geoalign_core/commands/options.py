"""What the raster commands (tile-classify, find, match-regions, heatmap) share: their options,
checks, progress bar and status line. Argparse only; the library is imported inside the
functions, so ``geoalign --help`` and a refused input never load the model stack.

Order of work in every command, so that bad input fails fast and nothing is left behind:
validate arguments -> check the output path (format, an input, exists without ``--overwrite``,
unwritable) -> open the raster (missing / not a raster / no CRS) -> load the model -> run ->
write atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from ..defaults import DEFAULT_BATCH_SIZE, MAX_WORKERS
from ..errors import InputError

GDAL_CACHE_MB = 256


def limit_gdal_cache() -> None:
    """Cap GDAL's block cache (default: 5 % of RAM) unless the user set ``GDAL_CACHEMAX``.

    Tiles are read once, in order: a large cache only grows with the scene (a decimated read
    of a 20000 px scene for the statistics filled ~1.1 GB) and buys nothing. Must run before
    the first raster read of the process (GDAL reads the setting once).
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))


def add_raster_options(p: argparse.ArgumentParser, overlap: float, out_help: str, index: bool = True) -> None:
    """Options of every raster command (besides ``--model/--device/--quiet``).

    ``index``: the command can answer from a scene index (``--index``; the raster may then be
    left out). ``overlap``: its default for a raster (an index has its own).
    """
    from ..cli import add_common

    if index:
        p.add_argument("--index", default=None, metavar="IDX",
                       help="answer from this scene index (geoalign index): no image pass, only the text "
                            "model; the raster may then be left out")
    p.add_argument("--out", type=Path, default=None, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--bands", default=None, help="1-based bands for R,G,B (one band or three), e.g. 4,3,2")
    p.add_argument(
        "--tile-size", type=int, default=None, metavar="PX",
        help="tile side in raster pixels (default: the model's input size); tiles are resampled to it",
    )
    p.add_argument(
        "--overlap", type=float, default=None, metavar="FRAC",
        help=f"overlap between neighbouring tiles, 0 <= FRAC < 0.9 (default: {overlap:g}"
             + ("; from an index: the index's)" if index else ")"),
    )
    p.set_defaults(default_overlap=overlap)
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"tiles per model pass (default: {DEFAULT_BATCH_SIZE} on a CPU; on a GPU the largest power "
                        "of two that fits a quarter of its free memory, up to 512)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="threads decoding tiles, each with its own file handle (default: 1 on a CPU; on a GPU "
                        "the cores available less one, up to 8)")
    p.add_argument(
        "--bounds", default=None, metavar="MINX,MINY,MAXX,MAXY",
        help="only process this area, in the raster's CRS",
    )
    p.add_argument("--allow-no-crs", action="store_true",
                   help="accept a raster without a CRS (outputs are then in pixel coordinates)")
    add_common(p)


def is_index_path(path: object) -> bool:
    """Whether a positional names a scene index (a ``.parquet`` file, or a collection folder)
    rather than a raster."""
    if path is None:
        return False
    from ..index.scenes import is_collection

    return str(path).lower().endswith(".parquet") or is_collection(path)


def add_crs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--crs", default=None, metavar="CRS",
                   help="write the results in this CRS (EPSG:4326, a WKT or PROJ string; default: the raster's; "
                        "for a collection index: the scenes' common CRS, else EPSG:4326)")


def collection_kwargs(args: argparse.Namespace, source) -> dict:
    """``crs`` (any source) and ``exact`` (a collection) as the task takes them."""
    kw: dict = {}
    if getattr(args, "crs", None) is not None:
        kw["crs"] = args.crs
    if getattr(args, "exact", False):
        if not getattr(source, "is_collection", False):
            raise InputError("--exact is for a collection index (--index FOLDER)")
        kw["exact"] = True
    return kw


def _is_file(path: object) -> bool:
    """A file, a GDAL virtual path or a GDAL subdataset name (``NETCDF:"a.nc":x``), not a phrase."""
    text = str(path)
    return "://" in text or text.startswith("/vsi") or bool(re.match(r"[A-Z][A-Z0-9_]+:", text)) \
        or Path(text).exists()


def settle_source(args: argparse.Namespace, shift, shifted=None) -> None:
    """Sort out the raster and ``--index`` before anything is opened.

    A ``.parquet`` given as the raster is an index. With ``--index``, the raster may be left
    out: the positionals are then one place off -- ``shifted(args)`` says so (default: the
    first names no file) -- and ``shift(args)`` moves them on (``args.raster`` becomes None).
    """
    if getattr(args, "index", None) is None:
        if is_index_path(args.raster):
            args.index, args.raster = args.raster, None
        elif args.raster is None:
            raise InputError("give a raster (or a scene index with --index)")
        return
    if args.raster is not None and (shifted(args) if shifted else not _is_file(args.raster)):
        shift(args)
        args.raster = None


def source_name(args: argparse.Namespace) -> str:
    """The raster, or the index when there is none: what outputs are named after and messages name."""
    return str(args.raster if args.raster is not None else args.index)


def default_overlap(args: argparse.Namespace) -> float | None:
    """``--overlap`` as given, else None from an index (its own), else the command's default."""
    if args.overlap is not None:
        return args.overlap
    return None if getattr(args, "index", None) else args.default_overlap


def add_vector_options(p: argparse.ArgumentParser, files: str) -> None:
    """``--layer`` and ``--buffer`` for commands that read vector ``files`` (named in the help)."""
    p.add_argument("--layer", default=None, help=f"layer of a multi-layer {files} file (name or 0-based index)")
    p.add_argument("--buffer", type=float, default=None, metavar="DIST",
                   help="buffer point and line features by DIST (units of the raster's CRS) to give them an area")


def parse_bounds(text: str | None, flag: str = "--bounds") -> tuple[float, float, float, float] | None:
    """``MINX,MINY,MAXX,MAXY`` (commas or spaces) as four numbers; None for None."""
    if text is None:
        return None
    parts = [v for v in text.replace(" ", ",").split(",") if v]
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 4:
        raise InputError(f"{flag} must be four numbers MINX,MINY,MAXX,MAXY; got {text!r}")
    if not (values[0] < values[2] and values[1] < values[3]):
        raise InputError(f"{flag} must have MINX < MAXX and MINY < MAXY; got {text!r}")
    return values


def check_common(args: argparse.Namespace) -> None:
    """Validate the numeric options before anything is opened or loaded (and cap GDAL's cache)."""
    limit_gdal_cache()
    if args.tile_size is not None and args.tile_size < 8:
        raise InputError(f"--tile-size must be at least 8 pixels; got {args.tile_size}")
    if args.overlap is not None and not 0.0 <= args.overlap < 0.9:
        raise InputError(f"--overlap must be in [0, 0.9); got {args.overlap}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    if getattr(args, "workers", None) is not None and not 1 <= args.workers <= MAX_WORKERS:
        raise InputError(f"--workers must be from 1 to {MAX_WORKERS}; got {args.workers}")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise InputError(f"--threads must be at least 1; got {args.threads}")
    from ..geo.bands import parse_bands

    parse_bands(args.bands)
    if getattr(args, "crs", None) is not None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(args.crs)
        except CRSError:
            raise InputError(f"--crs: unknown CRS {args.crs!r} (e.g. EPSG:4326)") from None


def default_stem(raster: str) -> str:
    """A file-name stem for outputs named after a raster (also for GDAL names like NETCDF:"a.nc":x)."""
    name = str(raster).rstrip("/").replace("\\", "/").split("/")[-1]
    stem = Path(name).stem if "." in name else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "raster"


def output_path(args: argparse.Namespace, suffix: str) -> Path:
    """``--out`` or ``<raster stem><suffix>`` in the current directory, checked for writing: a
    format its extension names, not an input, not existing without ``--overwrite``."""
    from ..outputs import RASTER_FORMATS, VECTOR_FORMATS, check_not_an_input, check_output

    stem = default_stem(source_name(args))
    if args.raster is None and stem.endswith("_index"):
        stem = stem[: -len("_index")]
    out = args.out if args.out is not None else Path(f"{stem}{suffix}")
    formats = RASTER_FORMATS if suffix.endswith(".tif") else VECTOR_FORMATS
    check_not_an_input(out, args.raster, getattr(args, "index", None), getattr(args, "regions", None),
                       getattr(args, "within", None), getattr(args, "classes_file", None),
                       getattr(args, "examples", None))
    return check_output(out, args.overwrite, formats)


def open_raster_check(args: argparse.Namespace) -> None:
    """Open and validate the raster (missing, not a raster, no CRS, bad bands) and the index
    (missing, not an index, its patch file) before the model loads. A local raster that is
    missing or a folder is refused before rasterio is imported."""
    from ..geo.paths import check_raster_path

    if args.raster is not None:
        check_raster_path(args.raster)
    if getattr(args, "index", None) is not None:
        from ..index.scenes import is_collection, read_manifest
        from ..index.store import check_patches, read_metadata

        if Path(args.index).is_dir():
            if not is_collection(args.index):
                raise InputError(f"not an index: {args.index} is a folder without a manifest.json")
            read_manifest(args.index)
            if args.raster is not None:
                raise InputError("a collection index answers for its own scenes: leave the raster out")
        else:
            emb, _ = read_metadata(args.index)
            check_patches(Path(args.index), emb)
    if args.raster is not None:
        from ..geo.raster import RasterSource

        with RasterSource(args.raster, args.bands, allow_no_crs=args.allow_no_crs):
            pass


def common_kwargs(args: argparse.Namespace) -> dict:
    kw = {
        "bands": args.bands,
        "tile_size": args.tile_size,
        "overlap": default_overlap(args),
        "bounds": parse_bounds(args.bounds),
        "allow_no_crs": args.allow_no_crs,
    }
    return kw


def make_predictor(args: argparse.Namespace):
    """The model: ``--model``, else the index's model (with ``--index``), else the default."""
    from ..defaults import DEFAULT_MODEL
    from ..inference import Predictor

    model = args.model
    if model is None and getattr(args, "index", None) is not None:
        from ..index.scenes import is_collection, read_manifest
        from ..index.store import read_metadata

        model = (read_manifest(args.index)["settings"]["model"] if is_collection(args.index)
                 else read_metadata(args.index)[1]["model"]["source"])
    apply_threads(args)
    predictor = Predictor(model or DEFAULT_MODEL, device=args.device, batch_size=args.batch_size,
                          workers=getattr(args, "workers", None))
    from ..card import model_line

    say(args, f"model {model_line(predictor.model)}")
    return predictor


def apply_threads(args: argparse.Namespace) -> int:
    """torch's compute threads: ``--threads`` or the policy of :mod:`geoalign_core.threads` (imports torch)."""
    from ..threads import apply

    return apply(getattr(args, "threads", None))


def source_for(args: argparse.Namespace, predictor):
    """What the task runs on: the raster path, or the opened index (checked against the model
    and, when both are given, against the raster)."""
    if getattr(args, "index", None) is None:
        return args.raster
    from ..index import SceneIndex

    idx = SceneIndex.open(args.index, predictor, check_raster=args.raster is None)
    if args.raster is not None:
        idx.check_raster(args.raster)
    return idx


def one_line_warnings():
    """See :func:`geoalign_core.cli.one_line_warnings` (every command runs inside it)."""
    from ..cli import one_line_warnings as olw

    return olw()


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
