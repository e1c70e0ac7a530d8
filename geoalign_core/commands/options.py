"""What the task commands (tile-classify, find, match-regions, heatmap, similar, index) share: their
options, built from each task's parameter set (:mod:`geoalign_core.params`), the one input check
(:func:`geoalign_core.checks.check_task`, shared with the engine), the run, the progress bar and
the status line. Argparse only; the library is imported inside the functions, so ``geoalign
--help`` and a refused input never load the model stack.

Order of work in every command, so that bad input fails fast and nothing is left behind:
validate arguments -> check the output path (format, an input, exists without ``--overwrite``,
unwritable) -> open the raster (missing / not a raster / no CRS) -> load the model -> run ->
write atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..params import RasterTask, fields_of

GDAL_CACHE_MB = 256


def limit_gdal_cache() -> None:
    """Cap GDAL's block cache (default: 5 % of RAM) unless the user set ``GDAL_CACHEMAX``.

    Tiles are read once, in order: a large cache only grows with the scene (a decimated read
    of a 20000 px scene for the statistics filled ~1.1 GB) and buys nothing. Must run before
    the first raster read of the process (GDAL reads the setting once).
    """
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))


def spell(name: str) -> str:
    """A parameter as the command line writes it: ``min_score`` -> ``--min-score``."""
    return "--" + name.replace("_", "-")


_TYPES = {"int": int, "float": float}


def _option_help(cls: type[RasterTask], f: dataclasses.Field) -> str:
    text = f.metadata["help"]
    if f.name == "overlap":
        return text + f" (default: {cls.default_overlap:g}" + ("; from an index: the index's)" if "index" in
                                                                 fields_of(cls.task, cli="option") else ")")
    if f.default is not None and not isinstance(f.default, bool):
        return text + " (default: %(default)s)"
    return text


def add_task_options(p: argparse.ArgumentParser, cls: type[RasterTask], out_help: str) -> None:
    """The options of task ``cls`` that the command line takes as options (``cli="option"`` in its
    parameter set), then ``--model``, ``--device``, ``--quiet`` and ``--threads``."""
    from ..cli import add_common

    for name, f in fields_of(cls.task, cli="option").items():
        kinds = {part.strip().split("[")[0] for part in str(f.type).split("|")} - {"None"}
        kind = kinds.pop() if len(kinds) == 1 else "str"  # a union (a number or numbers): text, parsed by the check
        kw: dict = {"dest": name, "default": f.default, "help": out_help if name == "out" else _option_help(cls, f)}
        if kind == "bool":
            kw["action"] = "store_true"
        else:
            kw.update(type=_TYPES.get(kind, str), metavar=f.metadata["metavar"], choices=f.metadata["choices"])
        p.add_argument(spell(name), **kw)
    add_common(p)


RASTER_HELP = "input raster (or a scene index .parquet; may be left out with --index)"


def task_parser(sub: argparse._SubParsersAction, cls: type[RasterTask],
                raster_help: str | None = RASTER_HELP) -> argparse.ArgumentParser:
    """The sub-command of task ``cls`` (``find``, ``tile-classify``, ...) with its raster positional first (none
    for ``raster_help=None``); its help and description are the parameter set's docstring (the first line, then
    the rest)."""
    first, _, rest = inspect.cleandoc(cls.__doc__ or "").partition("\n\n")
    p = sub.add_parser(cls.task.replace("_", "-"), help=first[:1].lower() + first[1:].rstrip("."),
                       description=" ".join(rest.split()))
    if raster_help is not None:
        p.add_argument("raster", nargs="?", help=raster_help)
    return p


def task_runner(cls: type[RasterTask], suffix: str, shift: Callable[[argparse.Namespace], None],
                describe: Callable[[Any, str], str], shifted: Callable[[argparse.Namespace], bool] | None = None,
                values: Callable[[argparse.Namespace], dict] | None = None) -> Callable[[argparse.Namespace], int]:
    """A task command's ``run(args)``: the raster or index settled (``shift``, ``shifted``: see
    :func:`settle_source`), the parameters from the options (and ``values(args)``, the command's own forms),
    the output named ``<raster stem><suffix>`` unless ``--out`` names it, then :func:`run_task`."""
    def run(args: argparse.Namespace) -> int:
        with one_line_warnings():
            settle_source(args, shift, shifted)
            extra = values(args) if values is not None else {}
            return run_task(args, task_from_args(args, cls, out=default_out(args, suffix), **extra), describe)

    return run


def add_vector_choice(p: argparse.ArgumentParser, cls: type[RasterTask], *names: str) -> None:
    """Vector-file options of which one may be given (find's ``--within`` / ``--regions``)."""
    group = p.add_mutually_exclusive_group()
    for name in names:
        group.add_argument(spell(name), default=None, help=fields_of(cls.task)[name].metadata["help"])


def task_from_args(args: argparse.Namespace, cls: type[RasterTask], **values: object) -> RasterTask:
    """Task ``cls``'s parameters from the parsed command line (and ``values``)."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**given, **values})


def is_index_path(path: object) -> bool:
    """Whether a positional names a scene index (a ``.parquet`` file, or a collection folder)
    rather than a raster."""
    if path is None:
        return False
    from ..index.scenes import is_collection

    return str(path).lower().endswith(".parquet") or is_collection(path)


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


def parse_bounds(text: str | None, flag: str = "--bounds") -> tuple[float, float, float, float] | None:
    """``MINX,MINY,MAXX,MAXY`` (commas or spaces) as four numbers; None for None."""
    from ..checks import bounds

    return bounds(text, flag.lstrip("-").replace("-", "_"), spell)


def check_common(args: argparse.Namespace, cls: type[RasterTask]) -> None:
    """Validate the options' values before anything is opened or loaded (and cap GDAL's cache)."""
    from ..checks import check_values

    limit_gdal_cache()
    check_values(task_from_args(args, cls), spell)


def default_stem(raster: str) -> str:
    """A file-name stem for outputs named after a raster (also for GDAL names like NETCDF:"a.nc":x)."""
    name = str(raster).rstrip("/").replace("\\", "/").split("/")[-1]
    stem = Path(name).stem if "." in name else name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "raster"


def default_out(args: argparse.Namespace, suffix: str) -> Path:
    """``--out``, or ``<raster stem><suffix>`` in the current directory."""
    if args.out is not None:
        return Path(args.out)
    stem = default_stem(source_name(args))
    if args.raster is None and stem.endswith("_index"):
        stem = stem[: -len("_index")]
    return Path(f"{stem}{suffix}")


def make_predictor(args: argparse.Namespace, p: RasterTask | None = None):
    """The model: ``--model``, else the index's model (with ``--index``), else the default."""
    from ..defaults import DEFAULT_MODEL
    from ..inference import Predictor

    model, index = (p.model, p.index) if p is not None else (args.model, getattr(args, "index", None))
    if model is None and index is not None:
        from ..index.opening import index_model

        model = index_model(index)
    args.torch_threads = apply_threads(args)
    predictor = Predictor(model or DEFAULT_MODEL, device=args.device, batch_size=args.batch_size,
                          workers=getattr(args, "workers", None), text_only=index is not None)
    from ..card import model_line

    say(args, f"model {model_line(predictor.model)}")
    return predictor


def apply_threads(args: argparse.Namespace) -> int:
    """torch's compute threads: ``--threads`` or the policy of :mod:`geoalign_core.threads` (imports torch)."""
    from ..threads import apply

    return apply(getattr(args, "threads", None))


def compute_line(args: argparse.Namespace, predictor: Any) -> str:
    """Where the model runs: ``"cpu, 2 threads"``, ``"cuda"`` (the torch thread count of the CPU)."""
    device = str(predictor.device)
    threads = getattr(args, "torch_threads", None)
    if device != "cpu" or threads is None:
        return device
    return f"cpu, {threads} thread{'s' if threads != 1 else ''}"


def run_task(args: argparse.Namespace, p: RasterTask, describe: Callable[[Any, str], str]) -> int:
    """Check task ``p`` (the engine's check), load the model, run and write it with a progress bar; the status
    line ``describe(p, model)`` first, the run's summary last."""
    from ..checks import check_task

    limit_gdal_cache()
    p = check_task(p, spell)
    from ..inference import runs  # the model stack: only once the inputs are known to be good

    predictor = make_predictor(args, p)
    source = runs.source_for(p, predictor)
    say(args, f"{describe(p, predictor.model_source)} ({compute_line(args, predictor)})")
    with progress_bar(args, p.task.replace("_", "-")) as prog:
        result = runs.run_task(p, predictor, source, progress=prog, stage=prog.stage)
    print(result.summary)
    return 0


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
