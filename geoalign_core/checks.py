"""The one input check of a task, before the model loads: the ``geoalign`` CLI and the engine both call it.

:func:`check_task` takes a task's parameters (:mod:`geoalign_core.params`), refuses what cannot
work -- a number out of range, a missing vector file, an output that exists or is an input, a
raster that is missing, unreadable or without a CRS, an index that is not one -- and returns the
parameters in the form the task takes (phrases cleaned, ``bounds`` and ``object_size`` as numbers,
``examples`` as boxes). Every message names the parameter as its caller spells it (``spell``: the
CLI writes ``--min-score``, the engine ``min score``) and carries it in ``param``.

Order: the values first, then the output, then the raster and the index, so that nothing heavy is
opened for a request that is refused anyway. Light on purpose: rasterio and pyproj are imported
only for a request that gets that far, torch never.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .data.text import clean_texts
from .defaults import MAX_WORKERS
from .errors import InputError
from .params import HEATMAP_VALUES, RasterTask

__all__ = ["bounds", "check_output", "check_source", "check_task", "check_values", "engine_spelling", "numbers",
           "vector_file"]

Spell = Callable[[str], str]


def engine_spelling(name: str) -> str:
    """How the engine (and the library) names a parameter in a message: ``min_score`` -> ``min score``."""
    return name.replace("_", " ")


def numbers(value: Any, count: Sequence[int], name: str, spell: Spell, what: str) -> list[float] | None:
    """``value`` (``"1,2,3,4"``, commas or spaces, or a list of numbers) as ``count`` numbers; None for None."""
    if value is None:
        return None
    parts = [v for v in str(value).replace(" ", ",").split(",") if v] if isinstance(value, str) else \
        list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        out = [float(v) for v in parts]
    except (TypeError, ValueError):
        out = []
    if len(out) not in count or not all(math.isfinite(v) for v in out):
        raise InputError(f"{spell(name)} must be {what}; got {value!r}", param=name)
    return out


def bounds(value: Any, name: str, spell: Spell) -> tuple[float, float, float, float] | None:
    b = numbers(value, (4,), name, spell, "four numbers MINX,MINY,MAXX,MAXY")
    if b is None:
        return None
    if not (b[0] < b[2] and b[1] < b[3]):
        raise InputError(f"{spell(name)} must have MINX < MAXX and MINY < MAXY; got {value!r}", param=name)
    return (b[0], b[1], b[2], b[3])


def vector_file(path: Any, name: str) -> Path | None:
    """A vector file that must exist (None for None)."""
    if path is None:
        return None
    if not Path(path).exists():
        raise InputError(f"vector file not found: {path}", param=name)
    return Path(path)


def _at_least(d: dict, name: str, low: float, spell: Spell) -> None:
    value = d.get(name)
    if value is not None and value < low:
        raise InputError(f"{spell(name)} must be at least {low:g}; got {value}", param=name)


def _within(d: dict, name: str, low: float, high: float, spell: Spell, closed_low: bool = True) -> None:
    value = d.get(name)
    if value is not None and not ((low <= value if closed_low else low < value) and value <= high):
        raise InputError(f"{spell(name)} must be in {'[' if closed_low else '('}{low:g}, {high:g}]; got {value}",
                         param=name)


def _text(d: dict, name: str, what: str) -> str:
    if d.get(name) is None:
        raise InputError(f'give the {what}, e.g. "red car"', param=name)
    return clean_texts([d[name]])[0]


def check_values(p: RasterTask, spell: Spell = engine_spelling) -> RasterTask:
    """The parameters' values alone (no file is opened); returns them normalised."""
    from .geo.bands import parse_bands

    d = {f.name: getattr(p, f.name) for f in dataclasses.fields(p)}
    task = p.task
    if p.tile_size is not None and p.tile_size < 8:
        raise InputError(f"{spell('tile_size')} must be at least 8 pixels; got {p.tile_size}", param="tile_size")
    if p.overlap is not None and not 0.0 <= p.overlap < 0.9:
        raise InputError(f"{spell('overlap')} must be in [0, 0.9); got {p.overlap}", param="overlap")
    for name in ("batch_size", "threads", "max_results", "top_k", "scale"):
        _at_least(d, name, 1, spell)
    if p.workers is not None and not 1 <= p.workers <= MAX_WORKERS:
        raise InputError(f"{spell('workers')} must be from 1 to {MAX_WORKERS}; got {p.workers}", param="workers")
    parse_bands(p.bands)
    d["bounds"] = bounds(p.bounds, "bounds", spell)
    if task in ("find", "match_regions"):
        d["phrases"] = clean_texts(d["phrases"])
    if task == "find":
        _within(d, "min_score", 0.0, 1.0, spell)
        what = "one or two positive numbers in metres (W or W,H)"
        size = numbers(d["object_size"], (1, 2), "object_size", spell, what)
        if size is not None and min(size) <= 0:
            raise InputError(f"{spell('object_size')} must be {what}; got {d['object_size']!r}", param="object_size")
        d["object_size"] = size
    if task in ("find", "similar"):
        _within(d, "nms_iou", 0.0, 1.0, spell, closed_low=False)
    if task == "similar":
        _within(d, "min_score", -1.0, 1.0, spell)
        _at_least(d, "text_weight", 0, spell)
        d["examples"] = _examples(d["examples"], spell)
        if d["phrase"] is not None:
            d["phrase"] = _text(d, "phrase", "phrase")
    if task == "heatmap":
        d["phrase"] = _text(d, "phrase", "phrase to map")
        if d["values"] not in HEATMAP_VALUES:
            raise InputError(f"{spell('values')} must be one of {', '.join(HEATMAP_VALUES)}; got {d['values']!r}",
                             param="values")
    if task == "tile_classify" and d["classes"] is not None:
        d["classes"] = clean_texts(d["classes"], "class")
    if d.get("crs") is not None:
        from .geo.vectors import parse_crs

        parse_crs(d["crs"])
    for name in ("regions", "within"):
        vector_file(d.get(name), name)
    if task == "match_regions" and d["regions"] is None:
        raise InputError("give the vector file of regions to score", param="regions")
    return dataclasses.replace(p, **d)


def _examples(examples: Any, spell: Spell) -> Any:
    """Example boxes as lists of four numbers, or a vector file that exists."""
    if examples is None or (isinstance(examples, (list, tuple)) and not examples):
        raise InputError(f"give an example region: a box MINX,MINY,MAXX,MAXY or a vector file ({spell('examples')})",
                         param="examples")
    if isinstance(examples, (str, Path)):
        return vector_file(examples, "examples")
    boxes = [examples] if len(examples) == 4 and not isinstance(examples[0], (list, tuple, str)) else examples
    return [list(bounds(b, "box", spell) or ()) for b in boxes]


def check_output(p: RasterTask) -> None:
    """The output: a format its extension names, not an input, not existing without ``overwrite``, writable."""
    from .outputs import INDEX_FORMATS, RASTER_FORMATS, VECTOR_FORMATS, check_not_an_input
    from .outputs import check_output as check_out

    if p.out is None:
        raise InputError("give the output file", param="out")
    examples = getattr(p, "examples", None)
    check_not_an_input(p.out, p.raster, p.index, getattr(p, "regions", None), getattr(p, "within", None),
                       examples if isinstance(examples, (str, Path)) else None)
    if p.task == "index":
        if not str(p.out).lower().endswith(".parquet"):
            raise InputError(f"an index is a .parquet file; got {p.out}", param="out")
        check_out(p.out, p.overwrite, INDEX_FORMATS)
    else:
        check_out(p.out, p.overwrite, RASTER_FORMATS if p.task == "heatmap" else VECTOR_FORMATS)


def check_source(p: RasterTask) -> None:
    """The raster (missing, not a raster, no CRS, bad bands) and the index (an index file and its patch file,
    or a collection folder); a local raster that is missing or a folder is refused before rasterio loads."""
    from .geo.paths import check_raster_path

    if p.raster is None and p.index is None:
        raise InputError("give a raster (or a scene index)", param="raster")
    if p.raster is not None:
        check_raster_path(p.raster)
    collection = p.index is not None and _check_index(p)
    if getattr(p, "exact", None) is not None and not collection:
        raise InputError("exact is for a collection index (an index folder)", param="exact")
    if p.raster is not None:
        from .geo.raster import RasterSource

        with RasterSource(p.raster, p.bands, allow_no_crs=p.allow_no_crs):
            pass


def _check_index(p: RasterTask) -> bool:
    """The index of ``p``: a collection folder (True) or an index file and its patch file (False)."""
    from .index.scenes import is_collection, read_manifest
    from .index.store import check_patches, read_metadata

    index = Path(str(p.index))
    if is_collection(index):
        read_manifest(index)
        if p.raster is not None:
            raise InputError("a collection index answers for its own scenes: leave the raster out", param="raster")
        return True
    if index.is_dir():
        raise InputError(f"not an index: {index} is a folder without a manifest.json", param="index")
    emb, _ = read_metadata(index)
    check_patches(index, emb)
    return False


def check_task(p: RasterTask, spell: Spell = engine_spelling) -> RasterTask:
    """Every check of a task's parameters before its model loads (see the module docstring); returns
    them as the task takes them."""
    p = check_values(p, spell)
    check_output(p)
    check_source(p)
    return p
