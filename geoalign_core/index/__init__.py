"""Index a scene once, search it many times: stored tile and patch embeddings of a raster.

``geoalign index RASTER --out scene.parquet`` runs the image tower once over the raster's
tile grid and keeps what every task needs (:mod:`.store` describes the files); afterwards
:class:`SceneIndex` answers ``find``, ``heatmap``, ``tile-classify``, ``match-regions`` and
``similar`` with the text tower only.

* :mod:`.build`: :func:`build_index` (one image pass, resumable);
* :mod:`.store`: the file format (GeoParquet + an int8 patch file);
* :mod:`.fingerprint`: telling a changed raster from the indexed one;
* :mod:`.scene_index`: :class:`SceneIndex`, an embedding source the tasks run on
  (:mod:`.patch_scores`: every stored patch against the phrases; :mod:`.pieces`: a region
  across tiles);
* :mod:`.opening`: :func:`open_index`, an index file or a collection folder.

Many scenes (a collection folder, docs/scaling.md):

* :mod:`.scenes`: the scenes' names, the shares of torchrun ranks / job-array tasks, the manifest;
* :mod:`.collection_build`: :func:`build_collection` (this process's share; reruns skip, failures
  are reported);
* :mod:`.collection`: :class:`SceneCollection`, ``find`` / ``tile_classify`` over every scene;
* :mod:`.ann`: the FAISS approximate search for large collections.

Collections larger than memory (patch search in a memory bound set by the caller;
``python -m geoalign_core.index.large``):

* :mod:`.stream`: the exact scan, patch files streamed in bounded chunks (local or fsspec URLs);
* :mod:`.ondisk`: FAISS IVF-PQ shards with on-disk inverted lists, candidates re-scored exactly;
* :mod:`.distributed`: the same searches fanned out over a Dask cluster, top-k merged by the client;
* :mod:`.large`: one entry point for all three, and its command line.
"""

from __future__ import annotations

from .._lazy import lazy_names
from ..errors import IndexMismatch

_NAMES = {  # submodule: the names it serves
    "ann": ("build_ann",),
    "build": ("DEFAULT_INDEX_OVERLAP", "IndexBuild", "build_index"),
    "collection": ("SceneCollection",),
    "collection_build": ("build_collection",),
    "opening": ("open_index",),
    "scene_index": ("SceneIndex",),
    "store": ("patches_path", "read_metadata"),
}
__getattr__ = lazy_names(__name__, _NAMES)
__all__ = ["IndexMismatch", *sorted(name for names in _NAMES.values() for name in names)]
