"""Regions: vector features as boxes on the raster, their RoIAlign embeddings, and match-regions.

* :func:`load_regions`: a vector file or GeoDataFrame -> the features overlapping the search
  area (raster CRS) and their pixel boxes (points and lines need a ``buffer``);
* :func:`load_within`: the union of polygons as a search zone in raster pixels (``find(within=)``);
* boxes -> ``[K, D]`` embeddings is the embedding source's ``region_embeddings`` (a live raster:
  each box pooled from the tile that holds it whole; an index: see :mod:`geoalign_core.index`);
* :func:`match_regions`: every feature scored against every phrase.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike

import geopandas as gpd
import numpy as np
import rasterio.windows
import shapely
import shapely.affinity
import torch
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from ..errors import InputError
from ..geo import boxes_to_pixels, clip_to_raster, drop_unprojectable, mark_unprojectable, read_vectors
from . import scoring
from .encoder import Cancel, Encoder, Progress, Stage, enter_stage
from .metadata import raster_meta, run_metadata
from .source import EmbeddingSource, open_source, scan_grid
from .vocabulary import NONE_BELOW, NONE_LABEL

__all__ = [
    "RESERVED_COLUMNS",
    "centres_in",
    "load_regions",
    "load_within",
    "match_regions",
    "pd_strings",
    "phrase_columns",
]


#: uncalibrated models: a region's best phrase must stand out this many spreads above the scene's typical region
STANDOUT_NONE = 2.0

#: output columns of match-regions besides the per-phrase ones, and names GDAL reserves
RESERVED_COLUMNS = ("best_phrase", "score", "standout", "fid", "ogc_fid", "geometry", "geom")


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


def load_regions(
    regions: str | PathLike | gpd.GeoDataFrame, src: EmbeddingSource, area: Window,
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
                warnings.warn("the regions have no CRS; assuming the raster's", stacklevel=4)
                gdf = gdf.set_crs(src.crs)
            else:
                gdf = drop_unprojectable(mark_unprojectable(gdf.to_crs(src.crs).reset_index(drop=True)),
                                         "the regions")
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
                "area; buffer them into polygons with a buffer distance (in the units of the raster's CRS, "
                "e.g. metres)", param="buffer")
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
            stacklevel=4,
        )
    return inside, boxes, n_out



def load_within(
    within: str | PathLike | gpd.GeoDataFrame, src: EmbeddingSource, area: Window,
    layer: str | int | None, buffer: float | None,
) -> tuple[BaseGeometry, int]:
    """The search zone of ``find(within=...)``: the union of the polygons, in raster pixels."""
    feats, _, _ = load_regions(within, src, area, layer, buffer)
    inv = ~src.transform
    mat = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
    pixel = [shapely.affinity.affine_transform(g, mat) for g in feats.geometry.values]
    zone = shapely.union_all([shapely.make_valid(g) for g in pixel])
    shapely.prepare(zone)
    return zone, len(feats)



def match_regions(
    enc: Encoder,
    raster: str | PathLike | EmbeddingSource,
    regions: str | PathLike | gpd.GeoDataFrame,
    phrases: Sequence[str] | str,
    *,
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
    """Score every feature's bounding box against every phrase.

    Returns the features that overlap the raster (reprojected to its CRS, attributes kept)
    with ``best_phrase``, ``score`` (its score: the calibrated probability that the region shows the
    phrase, as ``find``'s; ``best_phrase`` is :data:`~.vocabulary.NONE_LABEL` when no phrase reaches
    :data:`~.vocabulary.NONE_BELOW`; an uncalibrated model gives ``standout`` instead of ``score``)
    and one float column per phrase (named by
    the phrase, or ``score_<phrase>`` where that would clash, ignoring case, with a reserved
    name: :func:`phrase_columns`). Input columns whose name clashes, ignoring case, with an
    output column get an ``_input`` suffix. Both mappings are in the metadata
    (``phrase_columns``, ``renamed_input_columns``).
    """
    phrases = enc.clean(phrases)
    with open_source(enc, raster, bands, allow_no_crs, phrases=phrases) as src:
        ts, overlap, area = scan_grid(src, tile_size, overlap, bounds)
        feats, boxes, n_out = load_regions(regions, src, area, layer, buffer)
        texts, bg = enc.query_texts(phrases)
        enter_stage(stage, "scoring regions")
        cal = src.calibration(area, ts, overlap, texts, len(phrases), cancel).for_phrases(
            enc, phrases, src.out_of_domain)
        emb = src.region_embeddings(boxes, area, ts, overlap, progress, cancel)
        raw = scoring.phrase_probabilities(emb, texts, len(phrases), enc.logit_scale).cpu()
        vocab, vocab_names = enc.vocabulary_texts(phrases, bg)
        zv = scoring.vocabulary_logodds(emb, texts, vocab, len(phrases), enc.logit_scale).cpu()
        k = len(raw)
        labels = torch.arange(len(phrases)).repeat(k)
        probs = cal.score(raw.reshape(-1), labels, zv.reshape(-1)).reshape(k, len(phrases)).numpy()
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
        best = probs.argmax(axis=1) if k else np.zeros(0, dtype=np.int64)
        top = probs[np.arange(len(best)), best].astype(np.float64)
        # "none of these": no phrase is probably right (calibrated), or, uncalibrated, none stands out
        none = top < (NONE_BELOW if cal.calibrated else STANDOUT_NONE)
        out["best_phrase"] = pd_strings([NONE_LABEL if n else phrases[int(i)] for i, n in zip(best, none)])
        out[cal.column] = top
        for j, p in enumerate(phrases):
            out[columns[p]] = probs[:, j].astype(np.float64)
        out = gpd.GeoDataFrame(out, geometry="geometry", crs=feats.crs)
        out.attrs["geoalign"] = run_metadata(
            enc,
            "match-regions",
            **raster_meta(src, ts, overlap, bounds, enc.batch_size),
            regions=str(regions) if not isinstance(regions, gpd.GeoDataFrame) else "GeoDataFrame",
            phrases=phrases,
            phrase_columns=columns,
            renamed_input_columns=rename,
            background_phrases=bg,
            vocabulary_phrases=vocab_names,
            score_column=cal.column,
            score=cal.as_dict(phrases)["value"] + " (per phrase column); best_phrase is "
            f"{NONE_LABEL!r} when no phrase reaches {NONE_BELOW if cal.calibrated else STANDOUT_NONE}",
            calibration=cal.as_dict(phrases),
            n_none=int(none.sum()),
            n_regions=len(out),
            n_regions_outside=n_out,
        )
    return out


def centres_in(zone: BaseGeometry, boxes: torch.Tensor) -> torch.Tensor:
    """Which boxes ``[K, 4]`` (raster pixels) have their centre inside ``zone`` (bool ``[K]``)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.bool)
    b = boxes.numpy()
    inside = shapely.intersects_xy(zone, (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2)
    return torch.from_numpy(np.asarray(inside, dtype=bool))


def pd_strings(values: list[str]) -> np.ndarray:
    """Object array of strings (keeps the column typed as text even when empty)."""
    return np.asarray(values, dtype=object)
