"""GeoAlign core: GeoAlignCLIP models, losses, geospatial I/O and inference (no Qt).

The model names (``load_model``, ``GeoAlignCLIP``, ...) are imported on first use (PEP 562), so
``import geoalign_core`` -- and light entry points such as ``python -m geoalign_core.engine`` --
does not load torch and open_clip until a model is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_names

__version__ = "0.1.0"

from .errors import Cancelled, CheckpointError, GeoAlignError, IndexMismatch, InputError, ModelError, OfflineError

if TYPE_CHECKING:
    from .model import GeoAlignCLIP, ModelSpec
    from .zoo import ZOO, load_model, save_model

_LAZY = {"model": ("GeoAlignCLIP", "ModelSpec"), "zoo": ("ZOO", "load_model", "save_model")}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "Cancelled",
    "CheckpointError",
    "GeoAlignCLIP",
    "GeoAlignError",
    "IndexMismatch",
    "InputError",
    "ModelError",
    "ModelSpec",
    "OfflineError",
    "ZOO",
    "__version__",
    "load_model",
    "save_model",
]
