"""What produced a result: the model, the raster, the parameters -- stored with every output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__

if TYPE_CHECKING:
    from .encoder import Encoder
    from .source import EmbeddingSource

__all__ = ["jsonable", "raster_identity", "raster_meta", "run_metadata"]


def jsonable(v: object) -> object:
    """``v`` with paths, tuples, numpy scalars and other objects turned into JSON values."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def raster_identity(path: object, crs: Any, georeferencing: str, bands: Sequence[int], stats: Any,
                    **extra: object) -> dict:
    """The raster a result came from (an embedding source's ``raster_meta``): its path (and ``extra``,
    e.g. the index), CRS, georeferencing, bands and scene statistics."""
    return {"raster": str(path), **extra, "crs": crs.to_string() if crs is not None else None,
            "georeferencing": georeferencing, "bands": list(bands), "scene_stats": stats.to_dict()}


def run_metadata(enc: Encoder, command: str, **params: object) -> dict:
    """Model, command and parameters of a run (JSON-friendly)."""
    m = enc.model
    meta: dict[str, object] = {
        "command": command,
        "model": enc.model_source,
        "model_name": m.name,
        "model_arch": m.spec.arch,
        "dense_mode": m.dense_mode,
        "input_size": m.image_size,
        "patch_size": m.patch_size,
        "logit_scale": round(enc.logit_scale, 4),
        "device": str(enc.device),
        "geoalign_version": __version__,
    }
    meta.update({k: jsonable(v) for k, v in params.items()})
    return meta


def raster_meta(source: EmbeddingSource, tile_size: int, overlap: float, bounds: Sequence[float] | None,
                batch_size: int) -> dict:
    """The raster side of a run's metadata: which raster (and index), how it was read and tiled."""
    return {
        **source.raster_meta(),
        "tile_size": tile_size,
        "overlap": float(overlap),
        "bounds": list(bounds) if bounds is not None else None,
        "batch_size": batch_size,
    }
