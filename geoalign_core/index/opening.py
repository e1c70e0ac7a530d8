"""Opening a scene index for queries: an index file, or a collection folder of them.

:func:`open_index` gives a :class:`~.scene_index.SceneIndex` for a ``.parquet`` index and a
:class:`~.collection.SceneCollection` for a collection folder (``geoalign index A.tif B.tif
--out idx/``). Both answer the tasks with the text model only (``find``, ``tile_classify``, ...;
a collection refuses the tasks that take one scene); a
:class:`~geoalign_core.inference.Predictor` hands a task to either of them.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from ..defaults import DEFAULT_BATCH_SIZE
from .collection import SceneCollection
from .scene_index import SceneIndex
from .scenes import is_collection, read_manifest
from .store import read_metadata

__all__ = ["index_model", "open_index"]


def open_index(path: str | PathLike, model: Any = None, *, device: str = "auto",
               batch_size: int = DEFAULT_BATCH_SIZE, check_raster: bool = True) -> SceneIndex | SceneCollection:
    """Open the index at ``path``: a collection folder as a :class:`SceneCollection`, an index file as a
    :class:`SceneIndex` (``model``, ``check_raster``: see :meth:`SceneIndex.open`)."""
    opener = SceneCollection.open if is_collection(path) else SceneIndex.open
    return opener(path, model, device=device, batch_size=batch_size, check_raster=check_raster)


def index_model(path: str | PathLike) -> str:
    """The model an index file or a collection folder was built with (what answers it by default)."""
    if is_collection(path):
        return str(read_manifest(path)["settings"]["model"])
    return str(read_metadata(path)[1]["model"]["source"])
