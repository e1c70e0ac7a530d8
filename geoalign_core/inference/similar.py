"""Find similar (query by example): more regions like one or more example regions, optionally steered by text.

The examples' regions are pooled (RoIAlign) like any region; their mean, normalised, is the
query. With a phrase the query becomes ``normalize(query + text_weight * phrase)``: the sum of
an image and a text embedding, the simple and strong baseline of composed image retrieval
("like this, but red"). Candidate boxes are built and pooled exactly as ``find`` builds them
(from the similarity of every patch with the query). A box's ``score`` is the estimated probability
that it is the same kind of thing as the examples: the model card's map of its cosine similarity with
the query and how far that stands out from the scene's typical region (:mod:`.calibration`); boxes below
``min_score`` are dropped. A model without that calibration writes ``similarity`` (the cosine, -1..1)
instead, and ``min_score`` applies to the cosine.
Results are about the examples' size: between 1/4 and 4 times their mean area (other
instances of the same kind of object, not the larger scene around them).
The examples are candidates too: without a phrase, a single example scores 1 and ranks first.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from ..box_ops import box_iou
from ..defaults import (
    DEFAULT_MAX_RESULTS,
    DEFAULT_NMS_IOU,
    DEFAULT_SIMILAR_MIN_SCORE,
    DEFAULT_TEXT_WEIGHT,
)
from ..errors import InputError
from ..geo import pixel_boxes_to_polygons
from . import scoring
from .calibration import measure_similar
from .encoder import Cancel, Encoder, Progress, Stage, enter_stage
from .find import find_candidates
from .metadata import raster_meta, run_metadata
from .regions import load_regions
from .source import EmbeddingSource, open_source, scan_grid

__all__ = ["DEFAULT_SIMILAR_MIN_SCORE", "DEFAULT_TEXT_WEIGHT", "similar"]

EXAMPLE_IOU = 0.5  #: a result overlapping an example this much is flagged ``example``
SIZE_RANGE = 4.0  #: results are between 1/4 and 4 times the examples' mean area


def _as_geometries(examples: Any) -> list[BaseGeometry] | None:
    """Boxes (4 numbers, or a list of them) and shapely geometries as geometries; None otherwise."""
    if isinstance(examples, BaseGeometry):
        return [examples]
    if isinstance(examples, (str, PathLike, gpd.GeoDataFrame, gpd.GeoSeries)):
        return None
    items = list(examples)
    if len(items) == 4 and all(isinstance(v, (int, float, np.floating, np.integer)) for v in items):
        items = [items]
    out = []
    for it in items:
        if isinstance(it, BaseGeometry):
            out.append(it)
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in it)
        except (TypeError, ValueError):
            raise InputError(f"an example box is four numbers minx, miny, maxx, maxy; got {it!r}",
                             param="examples") from None
        if not (x0 < x1 and y0 < y1):
            raise InputError(f"an example box needs minx < maxx and miny < maxy; got {tuple(it)}", param="examples")
        out.append(shapely.box(x0, y0, x1, y1))
    if not out:
        raise InputError("give at least one example region", param="examples")
    return out


def example_boxes(examples: Any, src: EmbeddingSource, area: Window, layer: str | int | None,
                  buffer: float | None) -> np.ndarray:
    """The examples' pixel boxes ``[E, 4]`` (clipped to the area).

    ``examples``: a box ``(minx, miny, maxx, maxy)`` or a list of boxes in the raster's CRS,
    shapely geometries (raster CRS), a GeoDataFrame (any CRS), or a vector file.
    """
    geoms = _as_geometries(examples)
    regions = examples if geoms is None else gpd.GeoDataFrame(geometry=geoms, crs=src.crs)
    try:
        _, boxes, _ = load_regions(regions, src, area, layer, buffer)
    except InputError as exc:
        if geoms is not None and "overlap" in str(exc):
            crs = src.crs.to_string() if src.crs is not None else "pixel coordinates"
            raise InputError(f"no example box lies on the raster (boxes are in the raster's CRS, {crs})",
                             param="examples") from None
        raise InputError(str(exc).replace("regions", "examples"), param=exc.param or "examples") from None
    if len(boxes) == 0:
        raise InputError("no example region lies on the raster" + (" bounds" if area.width else ""),
                         param="examples")
    return boxes


def similar(
    enc: Encoder,
    raster: str | PathLike | Any,
    examples: Any,
    *,
    phrase: str | None = None,
    text_weight: float = DEFAULT_TEXT_WEIGHT,
    min_score: float = DEFAULT_SIMILAR_MIN_SCORE,
    max_results: int = DEFAULT_MAX_RESULTS,
    nms_iou: float = DEFAULT_NMS_IOU,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    layer: str | int | None = None,
    buffer: float | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
) -> gpd.GeoDataFrame:
    """Regions of ``raster`` (a path or a :class:`~geoalign_core.index.SceneIndex`) like ``examples``.

    See the module docstring. ``bounds`` limit where similar regions are searched; the examples
    may lie anywhere on the raster. Rows: ``geometry`` (box), ``score`` (cosine similarity with
    the query), ``rank`` (1 = best), ``example`` (True for a box that is one of the examples:
    IoU >= 0.5 with one).
    """
    if not -1.0 <= float(min_score) <= 1.0:
        raise InputError(f"min score must be in [-1, 1] (a cosine similarity); got {min_score}", param="min_score")
    if int(max_results) < 1:
        raise InputError(f"max results must be at least 1; got {max_results}", param="max_results")
    if float(text_weight) < 0:
        raise InputError(f"text weight must be >= 0; got {text_weight}", param="text_weight")
    if phrase is not None:
        phrase = enc.clean(phrase)[0]
    with open_source(enc, raster, bands, allow_no_crs) as src:
        ts, overlap, area = scan_grid(src, tile_size, overlap, bounds)
        full = Window(0, 0, src.width, src.height)  # an example may lie outside the searched bounds
        ex_boxes = example_boxes(examples, src, full, layer, buffer)
        enter_stage(stage, "embedding the examples")
        ex = src.region_embeddings(ex_boxes, full, ts, overlap, None, cancel)
        query = F.normalize(ex.float().mean(dim=0), dim=-1)
        if phrase is not None:
            query = F.normalize(query + float(text_weight) * enc.encode_phrases([phrase])[0].float(), dim=-1)
        enter_stage(stage, "scanning tiles")
        windows = src.windows(ts, overlap, area)
        cal = measure_similar(enc, src, windows, query, cancel)
        floor = cal.cosine_threshold(float(min_score))
        boxes, scores, _, n_scanned, _ = find_candidates(
            enc, src, windows, area, query[None], 1, floor, int(max_results) + len(ex_boxes),
            float(nms_iou), progress, cancel, cosine=True)
        # boxes of about the examples' size (other instances of the same kind of object)
        ex_area = float(np.mean((ex_boxes[:, 2] - ex_boxes[:, 0]) * (ex_boxes[:, 3] - ex_boxes[:, 1])))
        c_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        sized = (c_area >= ex_area / SIZE_RANGE) & (c_area <= ex_area * SIZE_RANGE)
        boxes, scores = boxes[sized], scores[sized]
        # the examples themselves are candidates (scored like every box) where they are in the area
        ex_scores = (ex.float() @ query).cpu()
        a0, b0 = float(area.col_off), float(area.row_off)
        a1, b1 = a0 + float(area.width), b0 + float(area.height)
        inside = torch.from_numpy((ex_boxes[:, 0] < a1) & (ex_boxes[:, 2] > a0) & (ex_boxes[:, 1] < b1)
                                  & (ex_boxes[:, 3] > b0))
        boxes = torch.cat([torch.from_numpy(ex_boxes).double()[inside], boxes])
        scores = torch.cat([ex_scores[inside], scores])
        ok = scores >= floor
        boxes, scores = boxes[ok], scores[ok]
        keep = scoring.nms_per_label(boxes, scores, torch.zeros(len(scores), dtype=torch.long), float(nms_iou),
                                     cap=int(max_results))
        boxes, scores = boxes[keep], scores[keep]
        order = torch.argsort(scores, descending=True, stable=True)
        boxes, scores = boxes[order], scores[order]
        is_example = (box_iou(boxes, torch.from_numpy(ex_boxes).double()).amax(dim=1) >= EXAMPLE_IOU
                      if len(boxes) else torch.zeros(0, dtype=torch.bool))
        feats = cal.features(scores)
        gdf = gpd.GeoDataFrame(
            {cal.column: cal.score(scores).numpy().astype(np.float64), "rank": np.arange(1, len(scores) + 1),
             "example": is_example.numpy().astype(bool)},
            geometry=pixel_boxes_to_polygons(boxes.numpy().reshape(-1, 4), src.transform),
            crs=src.crs,
        )
        gdf.attrs["geoalign"] = run_metadata(
            enc,
            "similar",
            **raster_meta(src, ts, overlap, bounds, enc.batch_size),
            n_examples=len(ex_boxes),
            example_boxes_px=ex_boxes.round(2).tolist(),
            phrase=phrase,
            text_weight=float(text_weight) if phrase is not None else None,
            query="normalize(mean of the examples' embeddings" + (" + text_weight * phrase)" if phrase else ")"),
            score_column=cal.column,
            score="probability that the box is the same kind of thing as the examples (model card calibration of "
                  "its cosine similarity with the query and how far that stands out in the scene)" if cal.model
            else "uncalibrated: cosine similarity of the box's embedding with the query",
            similar_calibration={"median": float(cal.stats.centre[0]), "spread": float(cal.stats.spread[0]),
                                 "n_regions": cal.stats.n_regions,
                                 "map": cal.model.to_dict() if cal.model is not None else None},
            min_score=float(min_score),
            max_results=int(max_results),
            nms_iou=float(nms_iou),
            n_windows=len(windows),
            n_windows_scored=n_scanned,
            n_matches=len(gdf),
        )
    gdf.attrs["score_features"] = feats.numpy()
    return gdf
