"""Inference: tile classification, find-by-text, region-phrase matching and heatmaps (no Qt).

Data flow: raster -> :mod:`geoalign_core.geo` (tiles) -> model (embeddings) -> here (scores,
boxes) -> geo writers. The CLI, the engine (and through it the QGIS plugin) drive a
:class:`Predictor`::

    from geoalign_core.inference import Predictor
    p = Predictor("geoalign-demo", device="auto", batch_size=16)
    tiles = p.tile_classify("scene.tif")                 # GeoDataFrame: label, score, top_k
    cars = p.find("scene.tif", ["red car"])              # GeoDataFrame: phrase, score, rank
    p.heatmap("scene.tif", "red car", "heat.tif")        # float32 COG

Each task is an image pass (:meth:`Predictor.image_pass`, embeddings only) followed by a
scoring pass (:mod:`geoalign_core.inference.scoring`, embeddings x phrases only);
:mod:`~geoalign_core.inference.runs` adds the written output and a summary line.

Names are imported on first use (PEP 562): importing this package loads no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names
from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE
from ..errors import Cancelled

if TYPE_CHECKING:
    from .encoder import EmbeddingBatch, Encoder
    from .predictor import Predictor
    from .vocabulary import BACKGROUND_PHRASES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES, VOCABULARY_SOURCES

_LAZY = {  # submodule: the names it serves
    "encoder": ("EmbeddingBatch", "Encoder"),
    "predictor": ("Predictor",),
    "vocabulary": ("BACKGROUND_PHRASES", "DEFAULT_VOCABULARY", "PROMPT_TEMPLATES", "VOCABULARY_SOURCES"),
}


__getattr__ = lazy_names(__name__, _LAZY)


__all__ = [
    "BACKGROUND_PHRASES",
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_MIN_SCORE",
    "DEFAULT_VOCABULARY",
    "PROMPT_TEMPLATES",
    "VOCABULARY_SOURCES",
    "Cancelled",
    "EmbeddingBatch",
    "Encoder",
    "Predictor",
]
