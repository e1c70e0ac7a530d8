"""Zero-shot tile classification: every tile's global embedding against the classes' embeddings."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from os import PathLike

import geopandas as gpd
import numpy as np
import torch
from rasterio.windows import Window

from ..defaults import DEFAULT_TILE_OVERLAP
from ..errors import InputError
from ..geo import pixel_boxes_to_polygons
from ..geo.grid import clip_window
from ..geo.vectors import parse_crs, results_in_crs
from . import scoring
from .encoder import Cancel, EmbeddingBatch, Encoder, Progress, Stage, enter_stage
from .metadata import raster_meta, run_metadata
from .source import EmbeddingSource, open_source, scan_grid
from .vocabulary import DEFAULT_VOCABULARY, NONE_BELOW, NONE_LABEL, VOCABULARY_SOURCES, competitors_for

__all__ = ["class_features", "classify_batches", "tile_classify", "tile_logits"]


def classify_batches(batches: Iterable[EmbeddingBatch], text: torch.Tensor, logit_scale: float, top_k: int
                     ) -> tuple[list[Window], torch.Tensor, torch.Tensor]:
    """The scoring step: ``(tile windows, top-k probabilities [T, k], top-k class indexes [T, k])``
    of every tile in ``batches`` (from a live image pass or stored embeddings)."""
    windows, logits = tile_logits(batches, text, logit_scale)
    if not windows:
        return windows, torch.zeros((0, top_k)), torch.zeros((0, top_k), dtype=torch.long)
    v, i = scoring.top_k(logits.softmax(dim=-1), top_k)
    return windows, v, i


def tile_logits(batches: Iterable[EmbeddingBatch], text: torch.Tensor, logit_scale: float
                ) -> tuple[list[Window], torch.Tensor]:
    """``(tile windows, logits [T, C])``: ``logit_scale * cos(tile, class)`` of every tile in ``batches``."""
    windows: list[Window] = []
    parts = []
    for eb in batches:
        parts.append((float(logit_scale) * eb.glob.float() @ text.float().T).cpu())
        windows.extend(t.window for t in eb.tiles)
    if not windows:
        return windows, torch.zeros((0, text.shape[0]))
    return windows, torch.cat(parts)


def class_features(logits: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile and class, the calibration features :data:`~geoalign_core.evaluation.reliability.TILE_FEATURES`
    (``[T, C, 2]`` float64) from ``logits [T, C + B]`` (the C classes, then B competitors):

    * ``logodds``: log-odds of the class in the softmax over classes and competitors;
    * ``margin``: its logit minus the best other class's (the best competitor's when there is one class).
    """
    lg = logits.double()
    t, c = lg.shape[0], n_classes
    z = torch.empty((t, c), dtype=torch.float64)
    margin = torch.empty((t, c), dtype=torch.float64)
    for j in range(c):
        others = torch.cat([lg[:, :j], lg[:, j + 1:]], dim=1)
        z[:, j] = lg[:, j] - torch.logsumexp(others, dim=1) if others.shape[1] else torch.full((t,), 30.0)
        rivals = torch.cat([lg[:, :j], lg[:, j + 1:c]], dim=1) if c > 1 else lg[:, c:]
        margin[:, j] = lg[:, j] - rivals.amax(dim=1) if rivals.shape[1] else torch.full((t,), 30.0)
    return z, margin


def tile_classify(
    enc: Encoder,
    raster: str | PathLike | EmbeddingSource,
    classes: Sequence[str] | None = None,
    top_k: int = 3,
    *,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    crs: object | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
) -> gpd.GeoDataFrame:
    """Zero-shot classification of every non-empty tile.

    ``raster``: a raster path, or a :class:`~geoalign_core.index.SceneIndex` (its tiles;
    ``overlap`` then defaults to the index's). ``overlap`` defaults to 0 for a raster. ``crs``: the
    results' CRS (default: the raster's).

    Each tile is scored against the classes and their competitors (the built-in vocabulary, minus
    what names a class: :func:`~.vocabulary.competitors_for`; none for the default vocabulary).

    Rows: ``geometry`` (the tile, clipped to the raster / ``bounds``), ``label``, ``score`` (the
    model card's calibrated probability that ``label`` is right), ``top_k`` (JSON list of
    ``{"label", "score"}``, best first). When no class is probably right (best below
    :data:`~.vocabulary.NONE_BELOW`), ``label`` is :data:`~.vocabulary.NONE_LABEL` and ``score`` the
    probability that the best class is wrong. A model without a calibration gives ``logodds``
    instead of ``score``, and "none of these" where a competitor beats every class.
    """
    default_vocab = classes is None
    classes = enc.clean(DEFAULT_VOCABULARY if default_vocab else classes, "class")
    if int(top_k) < 1:
        raise InputError(f"top k must be at least 1; got {top_k}", param="top_k")
    if crs is not None:
        parse_crs(crs)  # an unknown CRS fails before the image pass
    with open_source(enc, raster, bands, allow_no_crs) as src:
        ts, overlap, area = scan_grid(src, tile_size, overlap, bounds, DEFAULT_TILE_OVERLAP)
        windows = src.windows(ts, overlap, area)
        enter_stage(stage, "encoding classes")
        text = enc.encode_classes(classes)
        rivals = [] if default_vocab else competitors_for(classes)
        if rivals:
            text = torch.cat([text, enc.encode_classes(rivals)])
        enter_stage(stage, "classifying tiles")
        passed = src.embeddings(windows, dense=False, progress=progress, cancel=cancel)
        tiles, logits = tile_logits(passed, text, enc.logit_scale)
        if not tiles:
            raise InputError(f"no valid pixels in {src.path}" + (" within the bounds" if bounds else ""))
        z, margin = class_features(logits, len(classes))
        score_map = enc.score_map("tiles", getattr(src, "out_of_domain", False))
        if score_map is not None:  # calibrated: each class's probability of being right
            value = score_map.probability(torch.stack([z, margin], dim=-1).view(-1, 2)).view(z.shape)
            column = "score"
        else:  # uncalibrated: the log-odds against the other classes and the competitors
            value = z
            column = "logodds"
        k = min(int(top_k), len(classes))
        vals, idx = value.topk(k, dim=1)
        best = idx[:, 0]
        rows = torch.arange(len(best))
        if score_map is not None:
            none = vals[:, 0] < NONE_BELOW
        else:  # a competitor (not one of the classes) describes the tile better than every class
            none = torch.zeros(len(best), dtype=torch.bool)
            if rivals:
                none = logits[:, len(classes):].amax(dim=1) > logits[rows, best]
        labels = [NONE_LABEL if bool(n) else classes[int(i)] for i, n in zip(best, none)]
        shown = vals[:, 0].clone()
        if score_map is not None:
            shown[none] = 1.0 - vals[none, 0]  # "none of these": the probability that the best class is wrong
        tops = [json.dumps([{"label": classes[int(i)], column: round(float(v), 6)} for v, i in zip(vr, ir)])
                for vr, ir in zip(vals, idx)]
        gdf = gpd.GeoDataFrame(
            {"label": labels, column: shown.numpy().astype(np.float64), "top_k": tops},
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
            competitors=rivals,
            score_column=column,
            score=("probability that the label is right (model card calibration); for 'none of these', the "
                   "probability that the best class is wrong") if score_map is not None else
            "uncalibrated: log-odds of the class against the other classes and the competitors",
            none_label=NONE_LABEL,
            n_none=int(none.sum()),
            top_k=int(top_k),
            n_tiles=len(gdf),
            n_windows=len(windows),
        )
    gdf.attrs["score_features"] = torch.stack([z[rows, best], margin[rows, best]], dim=1).numpy()
    gdf.attrs["best_class"] = [classes[int(i)] for i in best]
    return results_in_crs(gdf, crs)
