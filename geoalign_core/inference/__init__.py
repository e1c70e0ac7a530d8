"""Inference: tile classification, find-by-text, region-phrase matching and heatmaps (no Qt).

Data flow: raster -> :mod:`geoalign_core.geo` (tiles) -> model (embeddings) -> here (scores,
boxes) -> geo writers. The CLI and the QGIS plugin both drive a :class:`Predictor`::

    from geoalign_core.inference import Predictor
    p = Predictor("geoalign-demo", device="auto", batch_size=32)
    tiles = p.tile_classify("scene.tif")                 # GeoDataFrame: label, score, top_k
    cars = p.find("scene.tif", ["red car"])              # GeoDataFrame: phrase, score, rank
    p.heatmap("scene.tif", "red car", "heat.tif")        # float32 COG

Each task is an image pass (:meth:`Predictor.image_pass`, embeddings only) followed by a
scoring pass (:mod:`geoalign_core.inference.scoring`, embeddings x phrases only).
"""

from .predictor import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_MIN_SCORE,
    Cancelled,
    EmbeddingBatch,
    Predictor,
)
from .vocabulary import BACKGROUND_PHRASES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES, VOCABULARY_SOURCES

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
