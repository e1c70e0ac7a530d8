"""GeoAlign core: GeoAlignCLIP models, losses, geospatial I/O and inference (no Qt)."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import CheckpointError, GeoAlignError, InputError, ModelError, OfflineError
from .model import GeoAlignCLIP, ModelSpec
from .zoo import ZOO, load_model, save_model

__all__ = [
    "CheckpointError",
    "GeoAlignCLIP",
    "GeoAlignError",
    "InputError",
    "ModelError",
    "ModelSpec",
    "OfflineError",
    "ZOO",
    "__version__",
    "load_model",
    "save_model",
]
