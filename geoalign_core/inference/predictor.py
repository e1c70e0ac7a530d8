"""The :class:`Predictor`: a loaded model (an :class:`~.encoder.Encoder`) and the four tasks.

Every task runs in two clear steps (see :mod:`.encoder`): the image pass (embeddings only) and
the scoring of those embeddings against texts. The tasks live in one module each --
:mod:`.classify`, :mod:`.find`, :mod:`.regions`, :mod:`.heatmap` -- as functions of an encoder;
this class loads the model and offers them as methods.

The run methods return GeoDataFrames in the raster's CRS and do not write them (except
:meth:`Predictor.heatmap`, which writes block-wise to a COG); the run's metadata is in
``gdf.attrs["geoalign"]``. :mod:`.runs` writes them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import geopandas as gpd
import torch

from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_MODEL, DEFAULT_NMS_IOU
from ..model import GeoAlignCLIP
from ..zoo import load_model, resolve_device
from . import classify, find, heatmap, regions, similar
from .encoder import Cancelled, EmbeddingBatch, Encoder
from .metadata import run_metadata
from .vocabulary import BACKGROUND_PHRASES, PROMPT_TEMPLATES

__all__ = ["DEFAULT_MAX_RESULTS", "DEFAULT_MIN_SCORE", "DEFAULT_NMS_IOU", "Cancelled", "EmbeddingBatch", "Predictor"]


class Predictor(Encoder):
    """A loaded model with a phrase-embedding cache, running tile-classify / find / match / similar / heatmap.

    Every task takes a raster path or a :class:`~geoalign_core.index.SceneIndex` of one (then
    only the text tower runs).

    Args:
        model: a zoo name, open_clip architecture, ``hf-hub:`` id, checkpoint path, or an
            already loaded :class:`~geoalign_core.model.GeoAlignCLIP`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (ignored for a loaded model unless not "auto").
        batch_size: tiles per backbone pass (None: chosen for the device,
            :func:`~.feed.device_batch_size`).
        prefetch: tiles read ahead in a thread (see :class:`~.encoder.Encoder`).
        workers: threads decoding tiles (see :class:`~.encoder.Encoder`).
        templates: the prompt templates class names are encoded through (see :class:`~.encoder.Encoder`).
        background: the generic background phrases boxes are scored against (see :class:`~.encoder.Encoder`).
    """

    def __init__(
        self,
        model: str | PathLike | GeoAlignCLIP = DEFAULT_MODEL,
        device: str | torch.device | None = "auto",
        batch_size: int | None = 32,
        *,
        prefetch: int | None = None,
        workers: int | None = None,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        background: Sequence[str] = BACKGROUND_PHRASES,
    ) -> None:
        if isinstance(model, GeoAlignCLIP):
            if device is not None and str(device) != "auto":
                model = model.to(resolve_device(device))
            loaded, source = model.eval(), model.name
        else:
            loaded, source = load_model(model, device), str(model)
        super().__init__(loaded, batch_size, prefetch=prefetch, workers=workers, templates=templates,
                         background=background)
        self.model_source = source

    def run_metadata(self, command: str, **params: object) -> dict:
        """What produced a result: model, phrases/classes, parameters, version (JSON-friendly)."""
        return run_metadata(self, command, **params)

    def tile_classify(self, raster: str | PathLike, classes: Sequence[str] | None = None, top_k: int = 3,
                      **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.classify.tile_classify`: zero-shot classification of every tile."""
        if getattr(raster, "is_collection", False):
            return raster.tile_classify(classes, top_k, **kwargs)
        return classify.tile_classify(self, raster, classes, top_k, **kwargs)

    def find(self, raster: str | PathLike, phrases: Sequence[str] | str,
             regions: str | PathLike | gpd.GeoDataFrame | None = None, min_score: float = DEFAULT_MIN_SCORE,
             max_results: int = DEFAULT_MAX_RESULTS, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.find.find`: boxes of the objects matching each phrase."""
        if getattr(raster, "is_collection", False):  # a collection index: every scene, merged
            return raster.find(phrases, regions, min_score, max_results, **kwargs)
        return find.find(self, raster, phrases, regions, min_score, max_results, **kwargs)

    def match_regions(self, raster: str | PathLike, regions_: str | PathLike | gpd.GeoDataFrame,
                      phrases: Sequence[str] | str, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.regions.match_regions`: every feature scored against every phrase."""
        if getattr(raster, "is_collection", False):
            return raster.match_regions(regions_, phrases, **kwargs)
        return regions.match_regions(self, raster, regions_, phrases, **kwargs)

    def similar(self, raster: str | PathLike, examples: Any, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.similar.similar`: more regions like the examples (boxes, geometries or a vector file)."""
        if getattr(raster, "is_collection", False):
            return raster.similar(examples, **kwargs)
        return similar.similar(self, raster, examples, **kwargs)

    def heatmap(self, raster: str | PathLike, phrase: str, out_path: str | PathLike, overwrite: bool = False,
                **kwargs: Any):
        """:func:`.heatmap.heatmap`: the phrase's response as a float32 COG; returns its path."""
        if getattr(raster, "is_collection", False):
            return raster.heatmap(phrase, out_path, overwrite, **kwargs)
        return heatmap.heatmap(self, raster, phrase, out_path, overwrite, **kwargs)
