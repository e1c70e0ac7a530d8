"""Where the dock keeps a raster's scene index (no Qt, no model stack).

An index belongs to one raster and one model. Where a new one goes is a setting
(:data:`PLACES`, Plugins > GeoAlign > Settings): by default beside the raster
(``scene.tif`` -> ``scene.<model>.geoalign-index.parquet`` and its ``.patches.npy``) only when
the raster lies in the saved project's folder, else in ``<QGIS profile>/geoalign/indexes/``, so
that GeoAlign never writes into someone else's data folder without being asked. An existing
index is found in either place. The engine builds and reads it; the plugin only names it.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["PLACES", "SUFFIX", "existing_index", "index_path", "model_tag"]

#: where a new index goes: "project" (beside the raster when it is inside the project's folder, else the
#: plugin's folder; the default), "raster" (beside the raster whenever its folder can be written),
#: "plugin" (always the plugin's folder in the QGIS profile)
PLACES = {"project": "beside the raster when it is in the project's folder, else in the plugin's folder",
          "raster": "beside the raster (when its folder can be written)",
          "plugin": "in the plugin's folder (QGIS profile)"}

SUFFIX = ".geoalign-index.parquet"


def model_tag(model: str) -> str:
    """A short file-name-safe name for a model: the zoo name, or a checkpoint's stem plus a hash of its path."""
    text = str(model)
    base = Path(text).stem if any(sep in text for sep in ("/", "\\")) else text
    tag = re.sub(r"[^A-Za-z0-9]+", "-", base).strip("-").lower()[:32] or "model"
    if base != text:
        tag += "-" + hashlib.sha1(text.encode()).hexdigest()[:6]
    return tag


def _beside(raster: str, model: str) -> Path | None:
    p = Path(raster)
    if "://" in raster or raster.startswith("/vsi") or not p.is_file():
        return None
    return p.with_name(f"{p.stem}.{model_tag(model)}{SUFFIX}")


def _cached(raster: str, model: str, profile: Path) -> Path:
    key = hashlib.sha1(str(Path(raster).resolve() if Path(raster).exists() else raster).encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9]+", "_", Path(raster).stem).strip("_")[:40] or "raster"
    return profile / "geoalign" / "indexes" / f"{stem}_{key}.{model_tag(model)}{SUFFIX}"


def existing_index(raster: str, model: str, profile: Path) -> Path | None:
    """The index of ``raster`` for ``model`` if one exists (beside the raster, else in the cache)."""
    for path in (_beside(raster, model), _cached(raster, model, profile)):
        if path is not None and path.is_file():
            return path
    return None


def _inside(path: Path, folder: str | None) -> bool:
    if not folder:
        return False
    try:
        path.resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def index_path(raster: str, model: str, profile: Path, place: str = "raster", project_home: str | None = None) -> Path:
    """Where a new index of ``raster`` for ``model`` goes (``place``: a key of :data:`PLACES`; ``project_home``:
    the saved project's folder, for "project")."""
    beside = _beside(raster, model)
    wanted = place == "raster" or (place == "project" and beside is not None and _inside(beside, project_home))
    if wanted and beside is not None and os.access(beside.parent, os.W_OK):
        return beside
    path = _cached(raster, model, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
