"""The :class:`Predictor`: a loaded model (an :class:`~.encoder.Encoder`) and the five tasks.

Every task runs in two clear steps (see :mod:`.encoder`): the image pass (embeddings only) and
the scoring of those embeddings against texts. The tasks live in one module each --
:mod:`.classify`, :mod:`.find`, :mod:`.regions`, :mod:`.heatmap`, :mod:`.similar` -- as functions
of an encoder; this class loads the model and offers them as methods, on a raster path or on an
opened index (:func:`geoalign_core.index.open_index`: a scene index or a collection, which then
answers with this model's text side).

The run methods return GeoDataFrames in the raster's CRS and do not write them (except
:meth:`Predictor.heatmap`, which writes block-wise to a COG); the run's metadata is in
``gdf.attrs["geoalign"]``. :mod:`.runs` writes them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from os import PathLike
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import torch

from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_MODEL, DEFAULT_NMS_IOU
from ..errors import Cancelled
from ..text_model import load_text_model
from . import classify, find, heatmap, regions, similar
from .encoder import EmbeddingBatch, Encoder
from .metadata import run_metadata
from .vocabulary import BACKGROUND_PHRASES, PROMPT_TEMPLATES

if TYPE_CHECKING:
    from ..model import GeoAlignCLIP
    from ..text_model import TextModel

__all__ = ["DEFAULT_MAX_RESULTS", "DEFAULT_MIN_SCORE", "DEFAULT_NMS_IOU", "Cancelled", "EmbeddingBatch", "Predictor",
           "as_encoder"]


class Predictor(Encoder):
    """A loaded model with a phrase-embedding cache, running tile-classify / find / match / similar / heatmap.

    Every task takes a raster path, or an opened index (a :class:`~geoalign_core.index.SceneIndex`
    of one raster, or a :class:`~geoalign_core.index.SceneCollection`): then only the text tower
    runs, and the index answers with this model (it must be the index's).

    Args:
        model: a zoo name, open_clip architecture, ``hf-hub:`` id, checkpoint path, or an
            already loaded :class:`~geoalign_core.model.GeoAlignCLIP`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (ignored for a loaded model unless not "auto").
        batch_size: tiles per backbone pass (None: chosen for the device,
            :func:`~.feed.device_batch_size`).
        prefetch: tiles read ahead in a thread (see :class:`~.encoder.Encoder`).
        workers: tile readers (see :class:`~.encoder.Encoder`).
        templates: the prompt templates class names are encoded through (see :class:`~.encoder.Encoder`).
        background: the generic background phrases boxes are scored against (see :class:`~.encoder.Encoder`).
        text_only: start with the text tower alone where the model allows it
            (:func:`~geoalign_core.text_model.load_text_model`): for queries from an index, which run no
            image tower; the whole model is loaded if an image-side step asks for it.
    """

    def __init__(
        self,
        model: str | PathLike | GeoAlignCLIP = DEFAULT_MODEL,
        device: str | torch.device | None = "auto",
        batch_size: int | None = None,
        *,
        prefetch: int | None = None,
        workers: int | None = None,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        background: Sequence[str] = BACKGROUND_PHRASES,
        text_only: bool = False,
    ) -> None:
        loaded: GeoAlignCLIP | TextModel
        if not isinstance(model, (str, PathLike)):  # a loaded GeoAlignCLIP
            if device is not None and str(device) != "auto":
                from ..zoo import resolve_device

                model = model.to(resolve_device(device))
            loaded, source = model.eval(), model.name
        else:
            text = load_text_model(model, device) if text_only else None
            if text is not None:
                loaded = text
            else:
                from ..zoo import load_model

                loaded = load_model(model, device)
            source = str(model)
        super().__init__(loaded, batch_size, prefetch=prefetch, workers=workers, templates=templates,
                         background=background)
        self.model_source = source

    def run_metadata(self, command: str, **params: object) -> dict:
        """What produced a result: model, phrases/classes, parameters, version (JSON-friendly)."""
        return run_metadata(self, command, **params)

    def _task(self, raster: Any, task: Callable[..., Any]) -> Callable[..., Any]:
        """``task`` (a function of an encoder and a raster) for a raster path; for an opened index, its
        method of the same name, answering with this model."""
        if isinstance(raster, (str, PathLike)):
            return partial(task, self, raster)
        raster.bind(self)
        return getattr(raster, task.__name__)

    def tile_classify(self, raster: str | PathLike, classes: Sequence[str] | None = None, top_k: int = 3,
                      **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.classify.tile_classify`: zero-shot classification of every tile."""
        return self._task(raster, classify.tile_classify)(classes, top_k, **kwargs)

    def find(self, raster: str | PathLike, phrases: Sequence[str] | str,
             regions: str | PathLike | gpd.GeoDataFrame | None = None, min_score: float = DEFAULT_MIN_SCORE,
             max_results: int = DEFAULT_MAX_RESULTS, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.find.find`: boxes of the objects matching each phrase."""
        return self._task(raster, find.find)(phrases, regions, min_score, max_results, **kwargs)

    def match_regions(self, raster: str | PathLike, regions_: str | PathLike | gpd.GeoDataFrame,
                      phrases: Sequence[str] | str, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.regions.match_regions`: every feature scored against every phrase."""
        return self._task(raster, regions.match_regions)(regions_, phrases, **kwargs)

    def similar(self, raster: str | PathLike, examples: Any, **kwargs: Any) -> gpd.GeoDataFrame:
        """:func:`.similar.similar`: more regions like the examples (boxes, geometries or a vector file)."""
        return self._task(raster, similar.similar)(examples, **kwargs)

    def heatmap(self, raster: str | PathLike, phrase: str, out_path: str | PathLike, overwrite: bool = False,
                **kwargs: Any):
        """:func:`.heatmap.heatmap`: the phrase's response as a float32 COG; returns its path."""
        return self._task(raster, heatmap.heatmap)(phrase, out_path, overwrite, **kwargs)


def as_encoder(model: Any, device: str | torch.device | None = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
               text_only: bool = False) -> Encoder:
    """``model`` as an encoder: an :class:`~.encoder.Encoder` (a Predictor) as it is, else a Predictor
    loading it (a name, a path or a loaded model; ``text_only``: see :class:`Predictor`)."""
    return model if isinstance(model, Encoder) else Predictor(model, device=device, batch_size=batch_size,
                                                              text_only=text_only)
