"""The :class:`Predictor`: one model, a text-embedding cache, and the four inference tasks.

Every task runs in two clear steps:

1. the **image pass** (:meth:`Predictor.image_pass`): raster windows -> model-ready batches
   (read ahead in a thread) -> ONE backbone pass per tile -> global ``[B, D]`` and dense
   ``[B, D, h, w]`` embeddings. It knows nothing about phrases.
2. the **scoring pass** (:mod:`geoalign_core.inference.scoring`): embeddings x phrase
   embeddings -> probabilities, similarity maps, candidate boxes, NMS. It never touches the
   raster or the backbone.

So a later image-side index can store what step 1 yields and answer each new phrase with
step 2 alone. Phrase embeddings are cached per text for the Predictor's lifetime, and each
run encodes its phrases once (never per tile).

The run methods return GeoDataFrames in the raster's CRS and do not write them (except
:meth:`Predictor.heatmap`, which writes block-wise to a COG); the run's metadata is in
``gdf.attrs["geoalign"]``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio.windows
import shapely
import shapely.affinity
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from .. import __version__
from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE, DEFAULT_MODEL, DEFAULT_NMS_IOU
from ..errors import GeoAlignError, InputError
from ..geo import (
    HeatmapAccumulator,
    RasterSource,
    Tile,
    boxes_to_pixels,
    check_output,
    clip_to_raster,
    drop_unprojectable,
    pixel_boxes_to_polygons,
    read_vectors,
    tile_windows,
    write_float_geotiff,
)
from ..model import GeoAlignCLIP
from ..zoo import load_model
from . import scoring
from ._reader import iter_batches
from .vocabulary import BACKGROUND_PHRASES, DEFAULT_VOCABULARY, PROMPT_TEMPLATES, VOCABULARY_SOURCES

__all__ = [
    "DEFAULT_MAX_RESULTS",
    "DEFAULT_MIN_SCORE",
    "Cancelled",
    "EmbeddingBatch",
    "Predictor",
]

MIN_VALID_FRACTION = 0.5  # candidates / patches with less valid area are ignored
MAX_HEATMAP_CELLS = 25_000_000  # default heatmap grid: the raster's, coarsened to stay under this
TEXT_CHUNK = 256
PRE_NMS = 64  # candidates per (tile, phrase) considered for NMS
# find's box refinement: each kept box is looked at again at twice the tile zoom (a window of
# half the tile size around it, resampled to the model's input) for a better placed box
REFINE_ZOOM = 2
REFINE_MIN_AREA = 0.5  # a refined box keeps at least this share of the original box's area
REFINE_SPARE = 20  # boxes refined beyond max_results per phrase (NMS may merge refined boxes)
_BUFFER_LIMIT = 20_000

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Stage = Callable[[str], None]
HEATMAP_VALUES = ("similarity", "score")


def _enter(stage: Stage | None, name: str) -> None:
    """Announce a stage of a run; the ``progress(done, total)`` calls that follow count its work."""
    if stage is not None:
        stage(name)


class Cancelled(GeoAlignError):
    """The run was cancelled by its ``cancel`` callback (nothing was written)."""


@dataclass
class EmbeddingBatch:
    """What the image pass yields for one batch of tiles.

    Attributes:
        tiles: the tiles (``window``: raster pixels; ``image``/``valid``: model input size S).
        valid: bool ``[B, S, S]`` (CPU).
        glob: ``[B, D]`` L2-normalised global embeddings (model device, float32).
        dense: ``[B, D, h, w]`` UNnormalised patch embeddings or None: pool regions from it
            with ``model.pool_regions`` and normalise after pooling (as ``encode_regions``
            does); :attr:`dense_normalized` for per-patch similarity.
        done: windows consumed so far (progress).
    """

    tiles: list[Tile]
    valid: torch.Tensor
    glob: torch.Tensor
    dense: torch.Tensor | None
    done: int

    @property
    def dense_normalized(self) -> torch.Tensor:
        if self.dense is None:
            raise ValueError("this image pass ran without dense embeddings")
        return F.normalize(self.dense, dim=1)


#: output columns of match-regions besides the per-phrase ones, and names GDAL reserves
RESERVED_COLUMNS = ("best_phrase", "score", "fid", "ogc_fid", "geometry", "geom")


def phrase_columns(phrases: Sequence[str], reserved: Sequence[str] = RESERVED_COLUMNS) -> dict[str, str]:
    """The score column of each phrase: the phrase itself, unless it equals (ignoring case) a
    reserved name or an earlier phrase's column; then ``score_<phrase>`` (``_2``, ... if needed).
    GeoPackage and Shapefile field names ignore case, so neither may two columns."""
    used = {r.lower() for r in reserved}
    out: dict[str, str] = {}
    for p in phrases:
        col, n = p, 1
        while col.lower() in used:
            n += 1
            col = f"score_{p}" if n == 2 else f"score_{p}_{n}"
        used.add(col.lower())
        out[p] = col
    return out


def _clean_texts(texts: Sequence[str] | str | None, what: str) -> list[str]:
    """Strip, reject empty ones, de-duplicate ignoring case (the first spelling is kept, order kept)."""
    if texts is None:
        raise InputError(f"no {what}s given")
    if isinstance(texts, str):
        texts = [texts]
    out: list[str] = []
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"{what}s must be text, got {type(t).__name__}")
        s = " ".join(t.split())
        if not s:
            raise InputError(f"empty {what}: give some text, e.g. \"red car\"")
        if s.lower() not in {o.lower() for o in out}:
            out.append(s)
    if not out:
        raise InputError(f"no {what}s given")
    return out


def _jsonable(v: object) -> object:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _offsets(length: int, tile: int, stride: int) -> list[int]:
    out = [0]
    while out[-1] + tile < length:
        out.append(out[-1] + stride)
    return out


class Predictor:
    """A loaded model with a phrase-embedding cache, running tile-classify / find / match / heatmap.

    Args:
        model: a zoo name, open_clip architecture, ``hf-hub:`` id, checkpoint path, or an
            already loaded :class:`~geoalign_core.model.GeoAlignCLIP`.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (ignored for a loaded model unless not "auto").
        batch_size: tiles per backbone pass.
        prefetch: batches read ahead in a background thread (0: read in the caller's thread);
            None (default): ``$GEOALIGN_PREFETCH`` if set, else 2 on a GPU or with 4+ CPU
            cores, else 0 (on a 2-core machine the reader thread only competes with torch's
            compute threads).
        templates: prompt templates for tile classification.
        background: phrases competing with the query phrases in region scores.
    """

    def __init__(
        self,
        model: str | PathLike | GeoAlignCLIP = DEFAULT_MODEL,
        device: str | torch.device | None = "auto",
        batch_size: int = 32,
        *,
        prefetch: int | None = None,
        templates: Sequence[str] = PROMPT_TEMPLATES,
        background: Sequence[str] = BACKGROUND_PHRASES,
    ) -> None:
        if int(batch_size) < 1:
            raise InputError(f"--batch-size must be at least 1; got {batch_size}")
        self.batch_size = int(batch_size)
        self._prefetch = prefetch
        if isinstance(model, GeoAlignCLIP):
            if device is not None and str(device) != "auto":
                from ..zoo import resolve_device

                model = model.to(resolve_device(device))
            self.model = model.eval()
            self.model_source = model.name
        else:
            self.model = load_model(model, device)
            self.model_source = str(model)
        self.templates = tuple(templates)
        self.background = tuple(background)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.texts_encoded = 0  # texts sent through the text tower (cache misses)
        self.text_batches = 0  # text-tower forward passes

    # ------------------------------------------------------------------ basics
    @property
    def prefetch(self) -> int:
        """Batches read ahead by the reader thread (see the constructor)."""
        if self._prefetch is not None:
            return int(self._prefetch)
        env = os.environ.get("GEOALIGN_PREFETCH", "").strip()
        if env.isdigit():
            return int(env)
        return 2 if self.device.type == "cuda" or (os.cpu_count() or 1) >= 4 else 0

    @prefetch.setter
    def prefetch(self, value: int | None) -> None:
        self._prefetch = value

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def input_size(self) -> int:
        """Side of the square model input every tile is resampled to."""
        return self.model.image_size

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach())

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def run_metadata(self, command: str, **params: object) -> dict:
        """What produced a result: model, phrases/classes, parameters, version (JSON-friendly)."""
        m = self.model
        meta: dict[str, object] = {
            "command": command,
            "model": self.model_source,
            "model_name": m.name,
            "model_arch": m.spec.arch,
            "dense_mode": m.dense_mode,
            "input_size": m.image_size,
            "patch_size": m.patch_size,
            "logit_scale": round(self.logit_scale, 4),
            "device": str(self.device),
            "geoalign_version": __version__,
        }
        meta.update({k: _jsonable(v) for k, v in params.items()})
        return meta

    # ------------------------------------------------------------------ text side
    def encode_phrases(self, phrases: Sequence[str] | str) -> torch.Tensor:
        """``[N, D]`` normalised phrase embeddings (on the model's device), cached per text."""
        if isinstance(phrases, str):
            phrases = [phrases]
        phrases = list(phrases)
        missing = list(dict.fromkeys(p for p in phrases if p not in self._text_cache))
        if missing:
            with torch.no_grad(), self._autocast():
                for i in range(0, len(missing), TEXT_CHUNK):
                    chunk = missing[i : i + TEXT_CHUNK]
                    emb = self.model.encode_text(chunk).float()
                    emb = F.normalize(emb, dim=-1)
                    self.text_batches += 1
                    self.texts_encoded += len(chunk)
                    for text, e in zip(chunk, emb):
                        self._text_cache[text] = e
        if not phrases:
            return torch.zeros((0, self.model.embed_dim), device=self.device)
        return torch.stack([self._text_cache[p] for p in phrases])

    def warn_long_texts(self, texts: Sequence[str], what: str = "phrase") -> None:
        """Warn (one line each) about texts longer than the text tower reads: the rest is ignored."""
        encode = getattr(self.model.tokenizer, "encode", None)
        limit = int(self.model.context_length)
        if encode is None:
            return
        for t in texts:
            n = len(encode(t)) + 2  # + start and end tokens
            if n > limit:
                shown = t if len(t) <= 40 else t[:37] + "..."
                warnings.warn(f"{what} {shown!r} is {n} tokens long; the model reads the first {limit}, "
                              "the rest is ignored", UserWarning, stacklevel=3)

    def encode_classes(self, classes: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """``[C, D]``: each class through every prompt template, averaged, re-normalised."""
        templates = tuple(templates or self.templates) or ("{}",)
        texts = [t.format(c) for c in classes for t in templates]
        emb = self.encode_phrases(texts).view(len(classes), len(templates), -1)
        return F.normalize(emb.mean(dim=1), dim=-1)

    def _query_texts(self, phrases: list[str]) -> tuple[torch.Tensor, list[str]]:
        """Embeddings of ``phrases + background`` (background minus the query phrases)."""
        lower = {p.lower() for p in phrases}
        bg = [b for b in self.background if b.lower() not in lower]
        return self.encode_phrases(phrases + bg), bg

    # ------------------------------------------------------------------ raster side
    def _open(self, raster: str | PathLike, bands, allow_no_crs: bool) -> RasterSource:
        return RasterSource(raster, bands, allow_no_crs=allow_no_crs)

    @staticmethod
    def area_window(source: RasterSource, bounds: Sequence[float] | None) -> Window:
        """The integer pixel window of ``bounds`` (raster CRS) within the raster; the whole raster for None."""
        full = Window(0, 0, source.width, source.height)
        if bounds is None:
            return full
        try:
            left, bottom, right, top = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise InputError(f"bounds must be four numbers (minx, miny, maxx, maxy); got {bounds!r}") from None
        if not (left < right and bottom < top):
            raise InputError(f"bounds must have minx < maxx and miny < maxy; got {tuple(bounds)}")
        win = rasterio.windows.from_bounds(left, bottom, right, top, source.transform)
        c0, c1 = sorted((win.col_off, win.col_off + win.width))
        r0, r1 = sorted((win.row_off, win.row_off + win.height))
        c0, r0 = max(0, math.floor(c0 + 1e-9)), max(0, math.floor(r0 + 1e-9))
        c1, r1 = min(source.width, math.ceil(c1 - 1e-9)), min(source.height, math.ceil(r1 - 1e-9))
        if c1 <= c0 or r1 <= r0:
            raise InputError(f"bounds {tuple(bounds)} do not overlap the raster {source.path}")
        return Window(c0, r0, c1 - c0, r1 - r0)

    def _tile_size(self, tile_size: int | None) -> int:
        if tile_size is None:
            return self.input_size
        if int(tile_size) != tile_size or int(tile_size) < 8:
            raise InputError(f"--tile-size must be a whole number of pixels >= 8; got {tile_size}")
        return int(tile_size)

    def grid(self, source: RasterSource, area: Window, tile_size: int, overlap: float) -> list[Window]:
        """Row-major tile windows covering ``area`` (last row/column may extend beyond the raster)."""
        wins = tile_windows(int(area.width), int(area.height), tile_size, overlap)
        c0, r0 = int(area.col_off), int(area.row_off)
        return [Window(w.col_off + c0, w.row_off + r0, w.width, w.height) for w in wins]

    def image_pass(
        self,
        source: RasterSource,
        windows: Sequence[Window],
        dense: bool = True,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        skip_empty: bool = True,
    ) -> Iterator[EmbeddingBatch]:
        """Step 1: one backbone pass per tile of ``windows``; yields :class:`EmbeddingBatch` es.

        Reading and preprocessing run in a background thread, overlapping the model.
        ``cancel`` is polled before each batch (raises :class:`Cancelled`); ``progress`` gets
        ``(windows done, windows total)`` after each batch.
        """
        total = len(windows)
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        model = self.model
        batches = iter_batches(
            source, windows, self.input_size, self.batch_size, skip_empty=skip_empty, prefetch=self.prefetch
        )
        with contextlib.closing(batches):
            for tb in batches:
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                x = torch.from_numpy(tb.images).to(self.device, non_blocking=True)
                with torch.no_grad(), self._autocast():
                    glob, dmap = model.forward_visual(model.preprocess(x), dense=dense)
                    glob = F.normalize(glob.float(), dim=-1)
                    dmap = dmap.float() if dmap is not None else None
                if progress is not None:
                    progress(tb.done, total)
                yield EmbeddingBatch(tb.tiles, torch.from_numpy(tb.valid), glob, dmap, tb.done)
        if progress is not None:
            progress(total, total)

    def iter_embeddings(
        self,
        raster: str | PathLike,
        *,
        dense: bool = True,
        bands: Sequence[int] | str | None = None,
        tile_size: int | None = None,
        overlap: float = 0.0,
        bounds: Sequence[float] | None = None,
        allow_no_crs: bool = False,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> Iterator[EmbeddingBatch]:
        """The image pass over a raster's tile grid (the image side of an index)."""
        with self._open(raster, bands, allow_no_crs) as src:
            area = self.area_window(src, bounds)
            windows = self.grid(src, area, self._tile_size(tile_size), overlap)
            yield from self.image_pass(src, windows, dense, progress, cancel)

    @staticmethod
    def _tile_scale(tile: Tile) -> float:
        """Raster pixels per model-input pixel."""
        return float(tile.window.width) / float(tile.valid.shape[-1])

    # ------------------------------------------------------------------ tile-classify
    def tile_classify(
        self,
        raster: str | PathLike,
        classes: Sequence[str] | None = None,
        top_k: int = 3,
        *,
        bands: Sequence[int] | str | None = None,
        tile_size: int | None = None,
        overlap: float = 0.0,
        bounds: Sequence[float] | None = None,
        allow_no_crs: bool = False,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stage: Stage | None = None,
    ) -> gpd.GeoDataFrame:
        """Zero-shot classification of every non-empty tile.

        Rows: ``geometry`` (the tile, clipped to the raster / ``bounds``), ``label``, ``score``
        (softmax probability of ``label`` over the classes, with the model's logit scale),
        ``top_k`` (JSON list of ``{"label", "score"}``, best first).
        """
        default_vocab = classes is None
        classes = _clean_texts(DEFAULT_VOCABULARY if default_vocab else classes, "class")
        self.warn_long_texts(classes, "class")
        if int(top_k) < 1:
            raise InputError(f"--top-k must be at least 1; got {top_k}")
        ts = self._tile_size(tile_size)
        with self._open(raster, bands, allow_no_crs) as src:
            area = self.area_window(src, bounds)
            windows = self.grid(src, area, ts, overlap)
            _enter(stage, "encoding classes")
            text = self.encode_classes(classes)
            _enter(stage, "classifying tiles")
            boxes: list[list[float]] = []
            labels: list[str] = []
            scores: list[float] = []
            tops: list[str] = []
            for eb in self.image_pass(src, windows, dense=False, progress=progress, cancel=cancel):
                probs = scoring.classify(eb.glob, text, self.logit_scale).cpu()
                vals, idx = scoring.top_k(probs, top_k)
                for b, tile in enumerate(eb.tiles):
                    boxes.append(self._clip_window(tile.window, area))
                    labels.append(classes[int(idx[b, 0])])
                    scores.append(float(vals[b, 0]))
                    tops.append(
                        json.dumps(
                            [{"label": classes[int(i)], "score": round(float(v), 6)} for v, i in zip(vals[b], idx[b])]
                        )
                    )
            if not boxes:
                raise InputError(f"no valid pixels in {src.path}" + (" within the bounds" if bounds else ""))
            gdf = gpd.GeoDataFrame(
                {"label": labels, "score": np.asarray(scores, dtype=np.float64), "top_k": tops},
                geometry=pixel_boxes_to_polygons(np.asarray(boxes), src.transform),
                crs=src.crs,
            )
            gdf.attrs["geoalign"] = self.run_metadata(
                "tile-classify",
                **self._raster_meta(src, ts, overlap, bounds),
                classes=classes,
                n_classes=len(classes),
                vocabulary_source=VOCABULARY_SOURCES if default_vocab else "user",
                prompt_templates=list(self.templates),
                top_k=int(top_k),
                n_tiles=len(gdf),
                n_windows=len(windows),
            )
        return gdf

    @staticmethod
    def _clip_window(window: Window, area: Window) -> list[float]:
        x0 = max(float(window.col_off), float(area.col_off))
        y0 = max(float(window.row_off), float(area.row_off))
        x1 = min(float(window.col_off + window.width), float(area.col_off + area.width))
        y1 = min(float(window.row_off + window.height), float(area.row_off + area.height))
        return [x0, y0, x1, y1]

    def _raster_meta(self, src: RasterSource, tile_size: int, overlap: float, bounds) -> dict:
        return {
            "raster": str(src.path),
            "crs": src.crs.to_string() if src.crs is not None else None,
            "georeferencing": src.georeferencing,
            "bands": list(src.bands),
            "scene_stats": src.stats.to_dict(),
            "tile_size": tile_size,
            "overlap": float(overlap),
            "bounds": list(bounds) if bounds is not None else None,
            "batch_size": self.batch_size,
        }

    # ------------------------------------------------------------------ find
    def find(
        self,
        raster: str | PathLike,
        phrases: Sequence[str] | str,
        regions: str | PathLike | gpd.GeoDataFrame | None = None,
        min_score: float = DEFAULT_MIN_SCORE,
        max_results: int = DEFAULT_MAX_RESULTS,
        *,
        nms_iou: float = DEFAULT_NMS_IOU,
        bands: Sequence[int] | str | None = None,
        tile_size: int | None = None,
        overlap: float = 0.25,
        bounds: Sequence[float] | None = None,
        allow_no_crs: bool = False,
        refine: bool = True,
        regions_layer: str | int | None = None,
        buffer: float | None = None,
        within: str | PathLike | gpd.GeoDataFrame | None = None,
        within_layer: str | int | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stage: Stage | None = None,
    ) -> gpd.GeoDataFrame:
        """Find objects matching each phrase.

        Candidates (without ``regions``): connected components of each phrase's dense
        similarity map at several relative thresholds, plus multi-scale sliding windows; all
        RoIAlign-pooled from the tile's one dense map, scored (see
        :mod:`~geoalign_core.inference.scoring`), NMS per tile, then NMS across tile borders
        (raster pixel frame), score threshold, top ``max_results`` per phrase.
        With ``regions`` the given features' bounding boxes are the candidates (no NMS).

        ``within`` (a vector file or GeoDataFrame of polygons, any CRS): search inside them only:
        tiles that touch none are skipped, and a box is kept when its centre lies in one of them.
        (``regions``, by contrast, makes each feature's box *the* candidate.)

        ``refine`` (without ``regions``): each kept box is looked at again at twice the zoom
        (:meth:`_refine_boxes`) and may move to a better placed box of at least half its area;
        it does so only when the moved box scores at least as high at the tile zoom. Scores
        are those of the tile pass. Then NMS again and the top ``max_results``.

        Rows: ``geometry`` (box), ``phrase``, ``score``, ``rank`` (1 = best, per phrase).
        """
        phrases = _clean_texts(phrases, "phrase")
        self.warn_long_texts(phrases)
        if not 0.0 <= float(min_score) <= 1.0:
            raise InputError(f"--min-score must be in [0, 1]; got {min_score}")
        if int(max_results) < 1:
            raise InputError(f"--max-results must be at least 1; got {max_results}")
        ts = self._tile_size(tile_size)
        with self._open(raster, bands, allow_no_crs) as src:
            area = self.area_window(src, bounds)
            extra: dict[str, object] = {}
            if regions is not None:
                feats, rboxes, n_out = self._load_regions(regions, src, area, regions_layer, buffer)
                texts, bg = self._query_texts(phrases)
                _enter(stage, "scoring regions")
                emb = self._region_embeddings(src, rboxes, area, ts, overlap, progress, cancel)
                probs = scoring.phrase_probabilities(emb, texts, len(phrases), self.logit_scale).cpu()
                k_idx, p_idx = (probs >= float(min_score)).nonzero(as_tuple=True)
                boxes = torch.from_numpy(rboxes)[k_idx]
                scores = probs[k_idx, p_idx]
                keep = scoring.nms_per_label(boxes, scores, p_idx, iou=1.0, cap=int(max_results))
                extra = {"regions": str(regions) if not isinstance(regions, gpd.GeoDataFrame) else "GeoDataFrame",
                         "n_regions": len(feats), "n_regions_outside": n_out}
            else:
                texts, bg = self._query_texts(phrases)
                windows = self.grid(src, area, ts, overlap)
                zone = None
                if within is not None:
                    zone, n_within = self._load_within(within, src, area, within_layer, buffer)
                    windows = [w for w in windows if zone.intersects(shapely.box(
                        w.col_off, w.row_off, w.col_off + w.width, w.row_off + w.height))]
                    extra |= {"within": str(within) if not isinstance(within, gpd.GeoDataFrame) else "GeoDataFrame",
                              "n_within": n_within}
                _enter(stage, "scanning tiles")
                boxes, scores, p_idx = self._find_candidates(
                    src, windows, area, texts, len(phrases), float(min_score), int(max_results),
                    float(nms_iou), progress, cancel,
                )
                if zone is not None:
                    inside = _centres_in(zone, boxes)
                    boxes, scores, p_idx = boxes[inside], scores[inside], p_idx[inside]
                if refine:
                    keep = scoring.nms_per_label(boxes, scores, p_idx, float(nms_iou),
                                                 cap=int(max_results) + min(int(max_results), REFINE_SPARE))
                    boxes, scores, p_idx = boxes[keep], scores[keep], p_idx[keep]
                    boxes, n_moved = self._refine_boxes(src, area, boxes, p_idx, texts, len(phrases), ts, overlap,
                                                        cancel, progress, stage)
                    extra["n_refined"] = n_moved
                    if zone is not None:  # a moved box keeps its centre in the old box, maybe not in the zone
                        inside = _centres_in(zone, boxes)
                        boxes, scores, p_idx = boxes[inside], scores[inside], p_idx[inside]
                keep = scoring.nms_per_label(boxes, scores, p_idx, float(nms_iou), cap=int(max_results))
                extra |= {"n_windows": len(windows), "nms_iou": float(nms_iou), "refine": bool(refine),
                         "dense_thresholds": list(scoring.DENSE_THRESHOLDS),
                         "window_scales_patches": list(scoring.WINDOW_SCALES)}
            boxes, scores, p_idx = boxes[keep], scores[keep], p_idx[keep]
            order = np.lexsort((-scores.numpy(), p_idx.numpy()))
            boxes, scores, p_idx = boxes[order], scores[order], p_idx[order]
            ranks = np.zeros(len(order), dtype=np.int64)
            for p in range(len(phrases)):
                sel = (p_idx == p).numpy()
                ranks[sel] = np.arange(1, int(sel.sum()) + 1)
            gdf = gpd.GeoDataFrame(
                {
                    "phrase": pd_strings([phrases[int(i)] for i in p_idx]),
                    "score": scores.numpy().astype(np.float64),
                    "rank": ranks,
                },
                geometry=pixel_boxes_to_polygons(boxes.numpy().reshape(-1, 4), src.transform),
                crs=src.crs,
            )
            gdf.attrs["geoalign"] = self.run_metadata(
                "find",
                **self._raster_meta(src, ts, overlap, bounds),
                phrases=phrases,
                background_phrases=bg,
                min_score=float(min_score),
                max_results=int(max_results),
                score="softmax(logit_scale * cos) over phrases + background phrases",
                n_matches=len(gdf),
                **extra,
            )
        return gdf

    def _find_candidates(
        self,
        src: RasterSource,
        windows: list[Window],
        area: Window,
        texts: torch.Tensor,
        n_phrases: int,
        min_score: float,
        max_results: int,
        nms_iou: float,
        progress: Progress | None,
        cancel: Cancel | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image pass + candidate scoring; returns (raster-pixel boxes, scores, phrase index)."""
        phr = texts[:n_phrases]
        all_boxes: list[torch.Tensor] = []
        all_scores: list[torch.Tensor] = []
        all_labels: list[torch.Tensor] = []
        buffered = 0
        cap = max(4 * max_results, 200)
        for eb in self.image_pass(src, windows, dense=True, progress=progress, cancel=cancel):
            b = len(eb.tiles)
            sim = scoring.similarity_maps(eb.dense_normalized, phr).cpu()  # [B, N, h, w]
            owner, cand, probs, valid, nonempty = self._score_candidates(eb, sim.flatten(0, 1), area, texts, n_phrases)
            probs[~(valid & nonempty)] = 0.0
            # the best PRE_NMS candidates per (tile, phrase) go on to NMS
            probs = _keep_top_per_tile(probs, owner, b, PRE_NMS)
            k_idx, p_idx = (probs >= max(min_score, 1e-12)).nonzero(as_tuple=True)
            if k_idx.numel() == 0:
                continue
            bx, sc = cand[k_idx], probs[k_idx, p_idx]
            # NMS inside the batch keyed by (tile, phrase): cheap and bounds what is buffered
            key = owner[k_idx] * n_phrases + p_idx
            keep = scoring.nms_per_label(bx, sc, key, nms_iou)
            all_boxes.append(bx[keep])
            all_scores.append(sc[keep])
            all_labels.append(p_idx[keep])
            buffered += int(keep.numel())
            if buffered > _BUFFER_LIMIT:
                bx, sc, lb = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
                keep = scoring.nms_per_label(bx, sc, lb, nms_iou, cap=cap)
                all_boxes, all_scores, all_labels = [bx[keep]], [sc[keep]], [lb[keep]]
                buffered = int(keep.numel())
        if not all_boxes:
            return torch.zeros((0, 4), dtype=torch.float64), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)

    def _score_candidates(
        self, eb: EmbeddingBatch, sim: torch.Tensor, area: Window, texts: torch.Tensor, n_phrases: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Candidate boxes of a batch of tiles, pooled from their dense maps and scored.

        Candidates per tile: the window grid (:func:`scoring.window_candidates`) plus the
        components of the tile's similarity maps at patch and half-patch resolution.

        Args:
            eb: the batch (dense maps, validity, tiles).
            sim: ``[B * m, h, w]`` similarity maps, ``m`` consecutive maps per tile.
            area: the search area (raster pixels): boxes are clamped to it.
            texts, n_phrases: query phrases then background phrases (see
                :func:`scoring.phrase_probabilities`).

        Returns:
            ``owner [K]`` (tile of each candidate, in batch order), ``boxes [K, 4]`` (raster
            pixels, float64, clamped to ``area``), ``probs [K, n_phrases]``, ``valid [K]``
            (enough valid pixels inside) and ``nonempty [K]`` (at least 1 px wide and high after
            clamping).
        """
        patch, size = self.model.patch_size, self.input_size
        b = len(eb.tiles)
        per_map = sim.shape[0] // b
        pvalid = (scoring.patch_validity(eb.valid, patch) >= MIN_VALID_FRACTION).repeat_interleave(per_map, dim=0)
        midx, dboxes = scoring.dense_candidates(sim, patch, pvalid)
        # the same maps at half-patch resolution: tighter boxes around small objects
        midx2, dboxes2 = scoring.dense_candidates(sim, patch, pvalid, upsample=2)
        midx, dboxes = torch.cat([midx, midx2]), torch.cat([dboxes, dboxes2])
        tile_of = midx // per_map
        grid_boxes = scoring.window_candidates(size, size, patch)
        per_tile = [torch.unique(torch.cat([grid_boxes, dboxes[tile_of == i]], dim=0), dim=0) for i in range(b)]
        valid = scoring.boxes_valid_fraction(eb.valid, per_tile) >= MIN_VALID_FRACTION
        with torch.no_grad():
            reg = F.normalize(self.model.pool_regions(eb.dense, per_tile).float(), dim=-1)
            probs = scoring.phrase_probabilities(reg, texts, n_phrases, self.logit_scale).cpu()
        # map to raster pixels
        owner = torch.cat([torch.full((len(c),), i) for i, c in enumerate(per_tile)])
        cand = torch.cat(per_tile).double()
        offs = torch.tensor([[t.window.col_off, t.window.row_off] for t in eb.tiles], dtype=torch.float64)
        scl = torch.tensor([self._tile_scale(t) for t in eb.tiles], dtype=torch.float64)
        cand = cand * scl[owner, None] + offs[owner].repeat(1, 2)
        a_x0, a_y0 = float(area.col_off), float(area.row_off)
        cand[:, 0::2] = cand[:, 0::2].clamp(a_x0, a_x0 + float(area.width))
        cand[:, 1::2] = cand[:, 1::2].clamp(a_y0, a_y0 + float(area.height))
        nonempty = ((cand[:, 2] - cand[:, 0]) >= 1) & ((cand[:, 3] - cand[:, 1]) >= 1)
        return owner, cand, probs, valid, nonempty

    def _refine_boxes(
        self,
        src: RasterSource,
        area: Window,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        texts: torch.Tensor,
        n_phrases: int,
        tile_size: int,
        overlap: float,
        cancel: Cancel | None,
        progress: Progress | None = None,
        stage: Stage | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Place each box better by looking at it at twice the tile zoom.

        A box found on the patch grid of a tile is placed to within a patch; objects of one or
        two patches (cars at 0.3 m with 8 px patches) then get boxes that are shifted or the
        wrong shape. For each box: a window of half the tile size centred on it is resampled
        to the model's input (twice the zoom, so patches of half the size), the candidates of
        :meth:`_find_candidates` are scored there for the box's phrase, and the best one whose
        centre lies in the box and whose area is at least ``REFINE_MIN_AREA`` of the box's is
        proposed (the area bound keeps a part of a large object from replacing it). The
        proposal replaces the box only if, pooled at the tile zoom like every ``find``
        candidate, it scores at least as high as the box.

        Args:
            boxes: ``[K, 4]`` raster-pixel boxes (float64); labels: ``[K]`` phrase indexes.

        Returns:
            ``(boxes [K, 4], number of boxes moved)``.
        """
        if len(boxes) == 0:
            return boxes, 0
        _enter(stage, "refining boxes")
        side = max(self.model.patch_size, round(tile_size / REFINE_ZOOM))
        orig = boxes.numpy()
        cx, cy = (orig[:, 0] + orig[:, 2]) / 2, (orig[:, 1] + orig[:, 3]) / 2
        windows = [Window(math.floor(x - side / 2), math.floor(y - side / 2), side, side) for x, y in zip(cx, cy)]
        proposed = orig.copy()
        for eb in self.image_pass(src, windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
            rows = torch.tensor([t.index for t in eb.tiles])
            lab = labels[rows]
            # the similarity map of each window's own phrase
            sim = torch.einsum("bdhw,bd->bhw", eb.dense_normalized.float(), texts[lab.to(texts.device)].float()).cpu()
            owner, cand, probs, valid, _ = self._score_candidates(eb, sim, area, texts, n_phrases)
            score = probs[torch.arange(len(owner)), lab[owner]]
            score[~valid] = -1.0
            c_area = (cand[:, 2] - cand[:, 0]) * (cand[:, 3] - cand[:, 1])
            ccx, ccy = (cand[:, 0] + cand[:, 2]) / 2, (cand[:, 1] + cand[:, 3]) / 2
            for i, k in enumerate(rows.tolist()):
                x0, y0, x1, y1 = orig[k]
                ok = ((owner == i) & (ccx >= x0) & (ccx <= x1) & (ccy >= y0) & (ccy <= y1)
                      & (c_area >= REFINE_MIN_AREA * (x1 - x0) * (y1 - y0)) & (score >= 0))
                if bool(ok.any()):
                    j = int(torch.where(ok, score, torch.full_like(score, -2.0)).argmax())
                    proposed[k] = cand[j].numpy()
        moved = np.flatnonzero(np.abs(proposed - orig).max(axis=1) > 1e-6)
        if len(moved) == 0:
            return boxes, 0
        # the check at the tile zoom: the proposal must score at least as high as the box
        both = np.concatenate([orig[moved], proposed[moved]])
        _enter(stage, "checking refined boxes")
        emb = self._region_embeddings(src, both, area, tile_size, overlap, progress, cancel)
        probs = scoring.phrase_probabilities(emb, texts, n_phrases, self.logit_scale).cpu()
        lab = labels[torch.from_numpy(moved)]
        n = len(moved)
        before = probs[torch.arange(n), lab]
        after = probs[torch.arange(n, 2 * n), lab]
        accept = moved[(after >= before).numpy()]
        out = orig.copy()
        out[accept] = proposed[accept]
        return torch.from_numpy(out), int(len(accept))

    # ------------------------------------------------------------------ regions
    def _load_regions(
        self, regions: str | PathLike | gpd.GeoDataFrame, src: RasterSource, area: Window,
        layer: str | int | None = None, buffer: float | None = None,
    ) -> tuple[gpd.GeoDataFrame, np.ndarray, int]:
        """Features overlapping the area (raster CRS) and their pixel boxes clipped to it.

        Regions need an area: points and lines are refused unless ``buffer`` (a distance in the
        raster CRS's units) turns them into polygons. Features that cannot be reprojected to the
        raster's CRS are skipped with a warning.
        """
        if isinstance(regions, gpd.GeoDataFrame):
            gdf = regions[~(regions.geometry.isna() | regions.geometry.is_empty)]
            if len(gdf) == 0:
                raise InputError("the regions have no features with a geometry")
            if src.crs is not None:
                if gdf.crs is None:
                    warnings.warn("the regions have no CRS; assuming the raster's", stacklevel=3)
                    gdf = gdf.set_crs(src.crs)
                else:
                    gdf = gdf.to_crs(src.crs)
            gdf = gdf.reset_index(drop=True)
        else:
            gdf = drop_unprojectable(read_vectors(regions, src.crs, layer=layer), regions)
        kinds = gdf.geometry.geom_type.fillna("")
        lines = ~kinds.str.contains("Polygon").to_numpy()
        if lines.any():
            if buffer is None:
                what = ", ".join(sorted(set(kinds[lines])))
                raise InputError(
                    f"{int(lines.sum())} of the {len(gdf)} regions are not polygons ({what}): a region needs an "
                    "area; buffer them into polygons with the buffer option (--buffer DIST, in the units of the "
                    "raster's CRS, e.g. metres)")
            if float(buffer) <= 0:
                raise InputError(f"buffer must be a positive distance; got {buffer}")
            gdf = gdf.copy()
            gdf.loc[lines, gdf.geometry.name] = gdf.geometry[lines].buffer(float(buffer))
        left, bottom, right, top = rasterio.windows.bounds(area, src.transform)
        inside, n_out = clip_to_raster(gdf, (left, bottom, right, top))
        inside = inside.reset_index(drop=True)
        boxes = boxes_to_pixels(inside, src.transform)
        x0, y0 = float(area.col_off), float(area.row_off)
        x1, y1 = x0 + float(area.width), y0 + float(area.height)
        boxes[:, 0::2] = boxes[:, 0::2].clip(x0, x1)
        boxes[:, 1::2] = boxes[:, 1::2].clip(y0, y1)
        # points, lines and slivers: at least one raster pixel
        for lo, hi, amin, amax in ((0, 2, x0, x1), (1, 3, y0, y1)):
            small = boxes[:, hi] - boxes[:, lo] < 1.0
            c = (boxes[small, lo] + boxes[small, hi]) / 2
            boxes[small, lo] = np.clip(c - 0.5, amin, amax - 1)
            boxes[small, hi] = boxes[small, lo] + 1
        if n_out:
            warnings.warn(
                f"{n_out} of {len(gdf)} features lie outside the raster"
                + (" bounds" if (area.width, area.height) != (src.width, src.height) else "")
                + " and were skipped",
                stacklevel=3,
            )
        return inside, boxes, n_out

    def _load_within(
        self, within: str | PathLike | gpd.GeoDataFrame, src: RasterSource, area: Window,
        layer: str | int | None, buffer: float | None,
    ) -> tuple[BaseGeometry, int]:
        """The search zone of ``find(within=...)``: the union of the polygons, in raster pixels."""
        feats, _, _ = self._load_regions(within, src, area, layer, buffer)
        inv = ~src.transform
        mat = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
        pixel = [shapely.affinity.affine_transform(g, mat) for g in feats.geometry.values]
        zone = shapely.union_all([shapely.make_valid(g) for g in pixel])
        shapely.prepare(zone)
        return zone, len(feats)

    def _region_windows(
        self, boxes: np.ndarray, area: Window, tile_size: int, overlap: float
    ) -> tuple[list[Window], list[np.ndarray]]:
        """Assign each box to a grid tile that contains it whole (the most centred one), or
        to its own square window (boxes crossing tile borders, or larger than a tile)."""
        stride = max(1, round(tile_size * (1.0 - overlap)))
        if not 0.0 <= overlap < 0.9:
            raise InputError(f"--overlap must be in [0, 0.9); got {overlap}")
        c0, r0 = int(area.col_off), int(area.row_off)
        cols = np.asarray(_offsets(int(area.width), tile_size, stride)) + c0
        rows = np.asarray(_offsets(int(area.height), tile_size, stride)) + r0
        groups: dict[tuple[int, int, int], list[int]] = {}

        def pick(offs: np.ndarray, lo: float, hi: float) -> int | None:
            a = int(np.searchsorted(offs, hi - tile_size - 1e-6, "left"))
            b = int(np.searchsorted(offs, lo + 1e-6, "right"))
            if a >= b:
                return None
            centre = (lo + hi) / 2 - tile_size / 2
            return int(offs[a:b][np.argmin(np.abs(offs[a:b] - centre))])

        for k, (x0, y0, x1, y1) in enumerate(boxes):
            cx, cy = pick(cols, x0, x1), pick(rows, y0, y1)
            if cx is not None and cy is not None:
                key = (cy, cx, tile_size)
            else:
                side = max(tile_size, math.ceil(1.1 * max(x1 - x0, y1 - y0)))
                key = (math.floor((y0 + y1) / 2 - side / 2), math.floor((x0 + x1) / 2 - side / 2), side)
            groups.setdefault(key, []).append(k)
        keys = sorted(groups)
        windows = [Window(c, r, s, s) for r, c, s in keys]
        return windows, [np.asarray(groups[k]) for k in keys]

    def _region_embeddings(
        self,
        src: RasterSource,
        boxes: np.ndarray,
        area: Window,
        tile_size: int,
        overlap: float,
        progress: Progress | None,
        cancel: Cancel | None,
    ) -> torch.Tensor:
        """``[K, D]`` normalised region embeddings of raster-pixel boxes (RoIAlign on dense maps)."""
        windows, members = self._region_windows(boxes, area, tile_size, overlap)
        out = torch.zeros((len(boxes), self.model.embed_dim), device=self.device)
        for eb in self.image_pass(src, windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
            blist, idx = [], []
            for t in eb.tiles:
                m = members[t.index]
                s = self._tile_scale(t)
                b = boxes[m].copy()
                b[:, 0::2] -= float(t.window.col_off)
                b[:, 1::2] -= float(t.window.row_off)
                blist.append(torch.from_numpy(b / s).float())
                idx.append(torch.from_numpy(m))
            with torch.no_grad():
                reg = F.normalize(self.model.pool_regions(eb.dense, blist).float(), dim=-1)
            out[torch.cat(idx).to(self.device)] = reg
        return out

    def match_regions(
        self,
        raster: str | PathLike,
        regions: str | PathLike | gpd.GeoDataFrame,
        phrases: Sequence[str] | str,
        *,
        bands: Sequence[int] | str | None = None,
        tile_size: int | None = None,
        overlap: float = 0.25,
        bounds: Sequence[float] | None = None,
        allow_no_crs: bool = False,
        layer: str | int | None = None,
        buffer: float | None = None,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stage: Stage | None = None,
    ) -> gpd.GeoDataFrame:
        """Score every feature's bounding box against every phrase.

        Returns the features that overlap the raster (reprojected to its CRS, attributes kept)
        with ``best_phrase``, ``score`` (its score) and one float column per phrase (named by
        the phrase, or ``score_<phrase>`` where that would clash, ignoring case, with a reserved
        name: :func:`phrase_columns`). Input columns whose name clashes, ignoring case, with an
        output column get an ``_input`` suffix. Both mappings are in the metadata
        (``phrase_columns``, ``renamed_input_columns``).
        """
        phrases = _clean_texts(phrases, "phrase")
        self.warn_long_texts(phrases)
        ts = self._tile_size(tile_size)
        with self._open(raster, bands, allow_no_crs) as src:
            area = self.area_window(src, bounds)
            feats, boxes, n_out = self._load_regions(regions, src, area, layer, buffer)
            texts, bg = self._query_texts(phrases)
            _enter(stage, "scoring regions")
            emb = self._region_embeddings(src, boxes, area, ts, overlap, progress, cancel)
            probs = scoring.phrase_probabilities(emb, texts, len(phrases), self.logit_scale).cpu().numpy()
            columns = phrase_columns(phrases)
            geom = feats.geometry.name
            taken = {c.lower() for c in (*RESERVED_COLUMNS, *columns.values())}
            rename: dict[str, str] = {}
            for c in feats.columns:  # input fields never collide with an output column, in any case
                if c == geom or str(c).lower() not in taken:
                    continue
                new, n = f"{c}_input", 1
                while new.lower() in taken or new in feats.columns:
                    n += 1
                    new = f"{c}_input{n}"
                taken.add(new.lower())
                rename[c] = new
            out = feats.rename(columns=rename)
            if geom != "geometry":
                out = out.rename_geometry("geometry")
            best = probs.argmax(axis=1)
            out["best_phrase"] = pd_strings([phrases[int(i)] for i in best])
            out["score"] = probs[np.arange(len(best)), best].astype(np.float64)
            for j, p in enumerate(phrases):
                out[columns[p]] = probs[:, j].astype(np.float64)
            out = gpd.GeoDataFrame(out, geometry="geometry", crs=feats.crs)
            out.attrs["geoalign"] = self.run_metadata(
                "match-regions",
                **self._raster_meta(src, ts, overlap, bounds),
                regions=str(regions) if not isinstance(regions, gpd.GeoDataFrame) else "GeoDataFrame",
                phrases=phrases,
                phrase_columns=columns,
                renamed_input_columns=rename,
                background_phrases=bg,
                score="softmax(logit_scale * cos) over phrases + background phrases",
                n_regions=len(out),
                n_regions_outside=n_out,
            )
        return out

    # ------------------------------------------------------------------ heatmap
    def heatmap(
        self,
        raster: str | PathLike,
        phrase: str,
        out_path: str | PathLike,
        overwrite: bool = False,
        *,
        scale: int | None = None,
        values: str = "similarity",
        metadata: Mapping[str, object] | None = None,
        bands: Sequence[int] | str | None = None,
        tile_size: int | None = None,
        overlap: float = 0.25,
        bounds: Sequence[float] | None = None,
        allow_no_crs: bool = False,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
        stage: Stage | None = None,
    ) -> Path:
        """Write the phrase's dense similarity as a float32 COG; returns the path.

        Values (``values``): ``"similarity"``, the cosine similarity (-1..1) of each patch
        embedding (the model's ``dense_mode``) with the phrase; or ``"score"``, the 0..1
        probability ``find`` would give a one-patch region (softmax with the model's logit
        scale over the phrase and the background phrases), the score users see on boxes. Both
        are bilinearly resampled onto the output grid and averaged where tiles overlap. The
        grid is the raster's (or the ``bounds`` window's) pixel grid, coarsened by ``scale``
        raster pixels per cell (default: 1, or the smallest integer keeping the
        grid under 25 M cells). Cells without valid input pixels are nodata (NaN).
        """
        phrase = _clean_texts(phrase, "phrase")[0]
        self.warn_long_texts([phrase])
        if values not in HEATMAP_VALUES:
            raise InputError(f"heatmap values must be one of {', '.join(HEATMAP_VALUES)}; got {values!r}")
        out_path = check_output(out_path, overwrite)
        ts = self._tile_size(tile_size)
        with self._open(raster, bands, allow_no_crs) as src:
            area = self.area_window(src, bounds)
            h, w = int(area.height), int(area.width)
            if scale is None:
                scale = max(1, math.ceil(math.sqrt(h * w / MAX_HEATMAP_CELLS)))
            elif int(scale) != scale or int(scale) < 1:
                raise InputError(f"--scale must be a whole number >= 1; got {scale}")
            scale = int(scale)
            windows = self.grid(src, area, ts, overlap)
            texts, bg = self._query_texts([phrase])
            transform = rasterio.windows.transform(area, src.transform)
            acc = HeatmapAccumulator(h, w, transform, src.crs, scale=scale)
            c0, r0 = int(area.col_off), int(area.row_off)
            n_tiles = 0
            _enter(stage, "scanning tiles")
            for eb in self.image_pass(src, windows, dense=True, progress=progress, cancel=cancel):
                if values == "score":
                    sim = scoring.probability_maps(eb.dense_normalized, texts, 1, self.logit_scale)
                else:
                    sim = scoring.similarity_maps(eb.dense_normalized, texts[:1])
                sim = sim[:, 0].cpu().numpy()
                for i, t in enumerate(eb.tiles):
                    win = Window(t.window.col_off - c0, t.window.row_off - r0, t.window.width, t.window.height)
                    acc.add(win, sim[i], valid=t.valid, resampling="bilinear")
                    n_tiles += 1
            if n_tiles == 0:
                raise InputError(f"no valid pixels in {src.path}" + (" within the bounds" if bounds else ""))
            meta = self.run_metadata(
                "heatmap",
                **self._raster_meta(src, ts, overlap, bounds),
                phrase=phrase,
                values=values,
                values_meaning=(
                    "probability of the phrase against background phrases for each patch as a one-patch region "
                    "(find's score), averaged in overlaps" if values == "score"
                    else "cosine similarity of patch embeddings with the phrase, averaged in overlaps"),
                background_phrases=bg if values == "score" else [],
                scale=scale,
                n_tiles=n_tiles,
            )
            meta.update({k: _jsonable(v) for k, v in (metadata or {}).items()})
            grid = acc.result()
            _enter(stage, "masking nodata")
            self._mask_invalid(grid, src, area, scale, cancel)
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            _enter(stage, "writing")
            desc = f"{phrase} (score)" if values == "score" else phrase
            write_float_geotiff(grid, out_path, acc.out_transform, src.crs, overwrite=overwrite,
                                band_descriptions=[desc], tags={"GEOALIGN_METADATA": meta})
        return out_path

    @staticmethod
    def _mask_invalid(values: np.ndarray, src: RasterSource, area: Window, scale: int, cancel: Cancel | None) -> None:
        """Set output cells whose raster pixel (nearest, at the output resolution) is nodata to NaN.

        Tiles resampled to the model's input size carry a coarser validity mask; this strip-wise
        pass makes nodata exact on the output grid without holding the raster in memory.
        """
        out_h, out_w = values.shape
        rows = max(1, 4_000_000 // max(out_w, 1))
        for r in range(0, out_h, rows):
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            n = min(rows, out_h - r)
            win = Window(area.col_off, area.row_off + r * scale, out_w * scale, n * scale)
            _, valid = src.read_raw(win, out_shape=(n, out_w))
            values[r : r + n][~valid] = np.nan


def _centres_in(zone: BaseGeometry, boxes: torch.Tensor) -> torch.Tensor:
    """Which boxes ``[K, 4]`` (raster pixels) have their centre inside ``zone`` (bool ``[K]``)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.bool)
    b = boxes.numpy()
    inside = shapely.intersects_xy(zone, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
    return torch.from_numpy(np.asarray(inside, dtype=bool))


def _keep_top_per_tile(probs: torch.Tensor, owner: torch.Tensor, n_tiles: int, k: int) -> torch.Tensor:
    """Zero all but the ``k`` best scores per (tile, phrase) column of ``probs [K, N]``."""
    out = torch.zeros_like(probs)
    for i in range(n_tiles):
        rows = (owner == i).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            continue
        sub = probs[rows]
        kk = min(k, sub.shape[0])
        vals, idx = sub.topk(kk, dim=0)
        out[rows[idx], torch.arange(sub.shape[1]).expand(kk, -1)] = vals
    return out


def pd_strings(values: list[str]) -> np.ndarray:
    """Object array of strings (keeps the column typed as text even when empty)."""
    return np.asarray(values, dtype=object)
