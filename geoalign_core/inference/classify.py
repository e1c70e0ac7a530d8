"""Zero-shot tile classification: every tile's global embedding against the classes' embeddings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from os import PathLike

import geopandas as gpd
import numpy as np
import torch
from rasterio.windows import Window

from ..errors import InputError
from ..geo import pixel_boxes_to_polygons
from ..geo.grid import area_window, clip_window
from . import scoring
from .encoder import Cancel, EmbeddingBatch, Encoder, Progress, Stage, enter_stage
from .metadata import raster_meta, run_metadata
from .source import open_source
from .vocabulary import DEFAULT_VOCABULARY, VOCABULARY_SOURCES

__all__ = ["classify_batches", "tile_classify"]


def classify_batches(batches: Iterable[EmbeddingBatch], text: torch.Tensor, logit_scale: float, top_k: int
                     ) -> tuple[list[Window], torch.Tensor, torch.Tensor]:
    """The scoring step: ``(tile windows, top-k probabilities [T, k], top-k class indexes [T, k])``
    of every tile in ``batches`` (from a live image pass or stored embeddings)."""
    windows: list[Window] = []
    vals, idxs = [], []
    for eb in batches:
        probs = scoring.classify(eb.glob, text, logit_scale).cpu()
        v, i = scoring.top_k(probs, top_k)
        vals.append(v)
        idxs.append(i)
        windows.extend(t.window for t in eb.tiles)
    if not windows:
        return windows, torch.zeros((0, top_k)), torch.zeros((0, top_k), dtype=torch.long)
    return windows, torch.cat(vals), torch.cat(idxs)


def tile_classify(
    enc: Encoder,
    raster: str | PathLike,
    classes: Sequence[str] | None = None,
    top_k: int = 3,
    *,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
) -> gpd.GeoDataFrame:
    """Zero-shot classification of every non-empty tile.

    ``raster``: a raster path, or a :class:`~geoalign_core.index.SceneIndex` (its tiles;
    ``overlap`` then defaults to the index's). ``overlap`` defaults to 0 for a raster.

    Rows: ``geometry`` (the tile, clipped to the raster / ``bounds``), ``label``, ``score``
    (softmax probability of ``label`` over the classes, with the model's logit scale),
    ``top_k`` (JSON list of ``{"label", "score"}``, best first).
    """
    default_vocab = classes is None
    classes = enc.clean(DEFAULT_VOCABULARY if default_vocab else classes, "class")
    if int(top_k) < 1:
        raise InputError(f"top k must be at least 1; got {top_k}", param="top_k")
    with open_source(enc, raster, bands, allow_no_crs) as src:
        ts, overlap = src.tile_size(tile_size), src.overlap(overlap, 0.0)
        area = area_window(src.transform, src.width, src.height, bounds, src.path)
        windows = src.windows(ts, overlap, area)
        enter_stage(stage, "encoding classes")
        text = enc.encode_classes(classes)
        enter_stage(stage, "classifying tiles")
        passed = src.embeddings(windows, dense=False, progress=progress, cancel=cancel)
        tiles, vals, idx = classify_batches(passed, text, enc.logit_scale, int(top_k))
        if not tiles:
            raise InputError(f"no valid pixels in {src.path}" + (" within the bounds" if bounds else ""))
        tops = [json.dumps([{"label": classes[int(i)], "score": round(float(v), 6)} for v, i in zip(vr, ir)])
                for vr, ir in zip(vals, idx)]
        gdf = gpd.GeoDataFrame(
            {"label": [classes[int(i)] for i in idx[:, 0]], "score": vals[:, 0].numpy().astype(np.float64),
             "top_k": tops},
            geometry=pixel_boxes_to_polygons(np.asarray([clip_window(w, area) for w in tiles]), src.transform),
            crs=src.crs,
        )
        gdf.attrs["geoalign"] = run_metadata(
            enc,
            "tile-classify",
            **raster_meta(src, ts, overlap, bounds, enc.batch_size),
            classes=classes,
            n_classes=len(classes),
            vocabulary_source=VOCABULARY_SOURCES if default_vocab else "user",
            prompt_templates=list(enc.templates),
            top_k=int(top_k),
            n_tiles=len(gdf),
            n_windows=len(windows),
        )
    return gdf
