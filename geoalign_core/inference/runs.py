"""A run: one task of a :class:`~geoalign_core.inference.Predictor`, its output written
atomically in the format its extension names (:func:`geoalign_core.geo.write_vector`), and a
one-line summary.

``raster`` may also be an opened index (:func:`geoalign_core.index.open_index`; then only the
text model runs). The ``geoalign`` CLI commands and the engine process that serves the QGIS
plugin (:mod:`geoalign_core.engine`) are two thin shells over these functions, so a result
file is the same whichever of them made it. Each returns a :class:`RunResult`; the metadata
written into the file is the Predictor's run metadata plus ``metadata`` (e.g. the client).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

from ..index.build import build_index
from ..index.opening import open_index
from ..params import RasterTask, fields_of
from .encoder import Cancel, Progress, Stage
from .predictor import Predictor


@dataclass
class RunResult:
    """What a run wrote.

    Attributes:
        path: the output file, or None when nothing was written (no rows and
            ``write_empty=False``).
        layer: the GeoPackage layer ("matches", "regions", "tiles"), None for a heatmap.
        count: features written (1 for a heatmap: one raster).
        summary: one line for people, e.g. ``wrote 12 matches to x.gpkg (layer 'matches'); ...``.
        metadata: what produced it (model, phrases, parameters), as stored in the file.
        details: task-specific figures (per-phrase counts, value range, ...).
    """

    path: Path | None
    layer: str | None
    count: int
    summary: str
    metadata: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"path": str(self.path) if self.path is not None else None, "layer": self.layer,
                "count": self.count, "summary": self.summary, "metadata": self.metadata, "details": self.details}


def _write(gdf: Any, out: Path, layer: str, metadata: Mapping[str, Any] | None, overwrite: bool,
           write_empty: bool) -> tuple[Path | None, dict]:
    from ..geo import write_vector

    meta = dict(gdf.attrs.get("geoalign") or {})
    meta.update(metadata or {})
    if len(gdf) == 0 and not write_empty:
        return None, meta
    write_vector(gdf, out, layer, meta, overwrite=overwrite)
    return Path(out), meta


def _where(path: Path | None, layer: str) -> str:
    if path is None:
        return "(nothing written)"
    return f"to {path} (layer '{layer}')" if path.suffix.lower() == ".gpkg" else f"to {path}"


def find(predictor: Predictor, raster: str | PathLike, phrases: Sequence[str], out: str | PathLike, *,
         overwrite: bool = False, metadata: Mapping[str, Any] | None = None, write_empty: bool = True,
         **kwargs: Any) -> RunResult:
    """``predictor.find(raster, phrases, **kwargs)`` written as layer "matches" of ``out``."""
    gdf = predictor.find(raster, phrases, **kwargs)
    path, meta = _write(gdf, Path(out), "matches", metadata, overwrite, write_empty)
    col = "score" if "score" in gdf.columns else "standout"
    per_phrase = {}
    parts = []
    found, missing = [], []
    for p in meta.get("phrases", list(dict.fromkeys(gdf["phrase"]))):
        sel = gdf[gdf["phrase"] == p]
        best = float(sel[col].max()) if len(sel) else None
        per_phrase[p] = {"count": int(len(sel)), "best_score": best, "value": col}
        shown = p if len(p) <= 40 else p[:37] + "..."
        if len(sel):
            found.append(p)
            parts.append(f"{shown!r}: {len(sel)}, best {col} {best:.3f}")
        else:
            missing.append(shown)
    where = _where(path, "matches")
    summary = f"wrote {len(gdf)} matches {where}" + ("; " + "; ".join(parts) if parts else "")
    if missing:
        floor = meta.get("min_score")
        summary += "; no matches for " + ", ".join(repr(m) for m in missing) + (
            f" (none scores >= {floor:g})" if isinstance(floor, (int, float)) and col == "score" else "")
    return RunResult(path, "matches", len(gdf), summary, meta, {"phrases": per_phrase})


def match_regions(predictor: Predictor, raster: str | PathLike, regions: Any, phrases: Sequence[str],
                  out: str | PathLike, *, overwrite: bool = False, metadata: Mapping[str, Any] | None = None,
                  write_empty: bool = True, **kwargs: Any) -> RunResult:
    """``predictor.match_regions(raster, regions, phrases, **kwargs)`` written as layer "regions"."""
    gdf = predictor.match_regions(raster, regions, phrases, **kwargs)
    path, meta = _write(gdf, Path(out), "regions", metadata, overwrite, write_empty)
    counts = Counter(gdf["best_phrase"]).most_common() if len(gdf) else []
    where = _where(path, "regions")
    summary = f"wrote {len(gdf)} regions {where}; best phrase: " + ", ".join(f"{p!r} {n}" for p, n in counts)
    return RunResult(path, "regions", len(gdf), summary, meta, {"best_phrase": dict(counts)})


def similar(predictor: Predictor, raster: Any, examples: Any, out: str | PathLike, *, overwrite: bool = False,
            metadata: Mapping[str, Any] | None = None, write_empty: bool = True, **kwargs: Any) -> RunResult:
    """``predictor.similar(raster, examples, **kwargs)`` written as layer "similar" of ``out``."""
    gdf = predictor.similar(raster, examples, **kwargs)
    path, meta = _write(gdf, Path(out), "similar", metadata, overwrite, write_empty)
    others = gdf[~gdf["example"]] if len(gdf) else gdf
    col = "score" if "score" in gdf.columns else "similarity"
    best = f", best {col} {float(others[col].max()):.3f}" if len(others) else ""
    summary = (f"wrote {len(gdf)} similar regions {_where(path, 'similar')}; {len(gdf) - len(others)} of them "
               f"example(s), {len(others)} other(s){best}")
    return RunResult(path, "similar", len(gdf), summary, meta,
                     {"examples": int(len(gdf) - len(others)), "others": int(len(others))})


def index(predictor: Predictor, raster: str | PathLike, out: str | PathLike, *, overwrite: bool = False,
          **kwargs: Any) -> RunResult:
    """:func:`geoalign_core.index.build_index`: the scene index of ``raster`` in ``out`` (.parquet)."""
    built = build_index(predictor, raster, out, overwrite=overwrite, **kwargs)
    details = {k: (str(v) if isinstance(v, Path) else v) for k, v in built.items() if k != "summary"}
    return RunResult(Path(built["path"]), None, int(built["n_tiles"]), built["summary"], {}, details)


def tile_classify(predictor: Predictor, raster: str | PathLike, classes: Sequence[str] | None,
                  out: str | PathLike, *, overwrite: bool = False, metadata: Mapping[str, Any] | None = None,
                  **kwargs: Any) -> RunResult:
    """``predictor.tile_classify(raster, classes, **kwargs)`` written as layer "tiles"."""
    gdf = predictor.tile_classify(raster, classes, **kwargs)
    path, meta = _write(gdf, Path(out), "tiles", metadata, overwrite, True)
    counts = Counter(gdf["label"]).most_common()
    summary = (f"wrote {len(gdf)} tiles {_where(path, 'tiles')}; most frequent labels: "
               + ", ".join(f"{label} {n}" for label, n in counts[:5]))
    return RunResult(path, "tiles", len(gdf), summary, meta, {"labels": dict(counts)})


def heatmap(predictor: Predictor, raster: str | PathLike, phrase: str, out: str | PathLike, *,
            overwrite: bool = False, metadata: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """``predictor.heatmap(raster, phrase, out, **kwargs)``: a float32 COG; the summary gives its range."""
    import json

    import numpy as np
    import rasterio

    path = Path(predictor.heatmap(raster, phrase, out, overwrite=overwrite, metadata=metadata, **kwargs))
    with rasterio.open(path) as ds:
        meta = json.loads(ds.tags().get("GEOALIGN_METADATA", "{}") or "{}")
        a = ds.read(1, masked=True, out_shape=(min(ds.height, 1024), min(ds.width, 1024)))
        valid = a.compressed()
        lo, hi = (float(np.min(valid)), float(np.max(valid))) if valid.size else (None, None)
        what = meta.get("values") if meta.get("values") in ("score", "standout") else "similarity"
        rng = f"{lo:.3f} .. {hi:.3f}" if valid.size else "no valid cells"
        summary = (f"wrote {ds.width}x{ds.height} float32 heatmap to {path} (res {ds.res[0]:g}, "
                   f"crs {ds.crs.to_string() if ds.crs else 'none'}); {what} {rng}")
        details = {"width": ds.width, "height": ds.height, "min": lo, "max": hi, "values": what}
    return RunResult(path, None, 1, summary, meta, details)


def source_for(p: RasterTask, predictor: Predictor, opener: Any = None) -> Any:
    """What task ``p`` runs on: its raster path, or its index opened with ``opener(path, predictor,
    check_raster=...)`` (default :func:`~geoalign_core.index.open_index`) and checked against the
    raster when both are given."""
    if p.index is None:
        return p.raster
    idx = (opener or open_index)(p.index, predictor, check_raster=p.raster is None)
    if p.raster is not None:
        idx.check_raster(p.raster)
    return idx


def run_task(p: RasterTask, predictor: Predictor, source: Any, *, progress: Progress | None = None,
             stage: Stage | None = None, cancel: Cancel | None = None) -> RunResult:
    """Task ``p`` (checked: :func:`geoalign_core.checks.check_task`) run on ``source`` (:func:`source_for`)
    and written: the one call of the ``geoalign`` commands and the engine."""
    kw = {name: getattr(p, name) for name, f in fields_of(p.task).items() if f.metadata["api"] in ("task", "run")}
    return _RUNS[p.task](predictor, source, progress=progress, stage=stage, cancel=cancel, **kw)


_RUNS: dict[str, Callable[..., RunResult]] = {
    "find": find, "tile_classify": tile_classify, "match_regions": match_regions, "heatmap": heatmap,
    "similar": similar, "index": index,
}

__all__ = ["RunResult", "find", "heatmap", "index", "match_regions", "run_task", "similar", "source_for",
           "tile_classify"]
