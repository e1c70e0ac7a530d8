"""Index a scene once, search it many times: stored tile and patch embeddings of a raster.

``geoalign index RASTER --out scene.parquet`` runs the image tower once over the raster's
tile grid and keeps what every task needs (:mod:`.store` describes the files); afterwards
:class:`SceneIndex` answers ``find``, ``heatmap``, ``tile-classify``, ``match-regions`` and
``similar`` with the text tower only.

* :mod:`.build`: :func:`build_index` (one image pass, resumable);
* :mod:`.store`: the file format (GeoParquet + an int8 patch file);
* :mod:`.fingerprint`: telling a changed raster from the indexed one;
* :mod:`.scene_index`: :class:`SceneIndex`, an embedding source the tasks run on.
"""

from __future__ import annotations

from .._lazy import lazy_names

_NAMES = {
    "DEFAULT_INDEX_OVERLAP": "build",
    "IndexBuild": "build",
    "IndexMismatch": "scene_index",
    "SceneIndex": "scene_index",
    "build_index": "build",
    "patches_path": "store",
    "read_metadata": "store",
}
__getattr__ = lazy_names(__name__, _NAMES)
__all__ = sorted(_NAMES)
