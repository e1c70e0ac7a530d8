"""Inference: tile classification, find-by-text, region-phrase matching and heatmaps (no Qt).

Data flow: raster -> :mod:`geoalign_core.geo` (tiles) -> model (embeddings) -> here (scores,
boxes) -> geo writers. The CLI, the engine (and through it the QGIS plugin) drive a
:class:`Predictor`::

    from geoalign_core.inference import Predictor
    p = Predictor("geoalign-demo", device="auto", batch_size=32)
    tiles = p.tile_classify("scene.tif")                 # GeoDataFrame: label, score, top_k
    cars = p.find("scene.tif", ["red car"])              # GeoDataFrame: phrase, score, rank
    p.heatmap("scene.tif", "red car", "heat.tif")        # float32 COG

Each task is an image pass (:meth:`Predictor.image_pass`, embeddings only) followed by a
scoring pass (:mod:`geoalign_core.inference.scoring`, embeddings x phrases only);
:mod:`~geoalign_core.inference.runs` adds the written output and a summary line.

Names are imported on first use (PEP 562): importing this package loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE

if TYPE_CHECKING:
    from .predictor import Cancelled, EmbeddingBatch, Predictor
    from .vocabulary import BACKGROUND_PHRASES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES, VOCABULARY_SOURCES

_LAZY = {
    "Cancelled": "predictor",
    "EmbeddingBatch": "predictor",
    "Predictor": "predictor",
    "BACKGROUND_PHRASES": "vocabulary",
    "DEFAULT_VOCABULARY": "vocabulary",
    "PROMPT_TEMPLATES": "vocabulary",
    "VOCABULARY_SOURCES": "vocabulary",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"geoalign_core.inference.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKGROUND_PHRASES",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_MIN_SCORE",
    "DEFAULT_VOCABULARY",
    "PROMPT_TEMPLATES",
    "VOCABULARY_SOURCES",
    "Cancelled",
    "EmbeddingBatch",
    "Predictor",
]
