"""Heatmaps: a phrase's response at every patch of a raster, resampled onto its grid, as a COG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

import rasterio.windows
import torch
from rasterio.windows import Window

from ..errors import InputError
from ..geo import HeatmapAccumulator, check_output, write_float_geotiff
from ..params import HEATMAP_VALUES
from . import scoring
from .encoder import Cancel, Encoder, Progress, Stage, check_cancel, enter_stage
from .metadata import jsonable, raster_meta, run_metadata
from .source import EmbeddingSource, open_source, scan_grid

__all__ = ["HEATMAP_VALUES", "MAX_HEATMAP_CELLS", "heatmap"]

MAX_HEATMAP_CELLS = 25_000_000  # default grid: the raster's, coarsened to stay under this


def heatmap(
    enc: Encoder,
    raster: str | PathLike | EmbeddingSource,
    phrase: str,
    out_path: str | PathLike,
    overwrite: bool = False,
    *,
    scale: int | None = None,
    values: str = "similarity",
    metadata: Mapping[str, object] | None = None,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float | None = None,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
) -> Path:
    """Write the phrase's dense similarity as a float32 COG; returns the path.

    Values (``values``): ``"similarity"``, the cosine similarity (-1..1) of each patch
    embedding (the model's ``dense_mode``) with the phrase; or ``"score"``, the score ``find``
    would give a one-patch region (the calibrated probability that it shows the phrase; the
    ``standout`` for a model without a calibration, recorded as ``values: standout``). Both
    are bilinearly resampled onto the output grid and averaged where tiles overlap. The
    grid is the raster's (or the ``bounds`` window's) pixel grid, coarsened by ``scale``
    raster pixels per cell (default: 1, or the smallest integer keeping the
    grid under 25 M cells). Cells without valid input pixels are nodata (NaN).

    ``raster``: a raster path, or a :class:`~geoalign_core.index.SceneIndex` (its tiles and
    their stored validity; ``overlap`` then defaults to the index's, else to 0.25).
    """
    phrase = enc.clean(phrase)[0]
    if values not in HEATMAP_VALUES:
        raise InputError(f"heatmap values must be one of {', '.join(HEATMAP_VALUES)}; got {values!r}")
    out_path = check_output(out_path, overwrite)
    with open_source(enc, raster, bands, allow_no_crs) as src:
        ts, overlap, area = scan_grid(src, tile_size, overlap, bounds)
        h, w = int(area.height), int(area.width)
        if scale is None:
            scale = max(1, math.ceil(math.sqrt(h * w / MAX_HEATMAP_CELLS)))
        elif int(scale) != scale or int(scale) < 1:
            raise InputError(f"scale must be a whole number >= 1; got {scale}", param="scale")
        scale = int(scale)
        windows = src.windows(ts, overlap, area)
        texts, bg = enc.query_texts([phrase])
        transform = rasterio.windows.transform(area, src.transform)
        acc = HeatmapAccumulator(h, w, transform, src.crs, scale=scale)
        c0, r0 = int(area.col_off), int(area.row_off)
        n_tiles = 0
        enter_stage(stage, "scanning tiles")
        cal = None
        if values == "score":  # the calibrated score of a one-patch region, as find reports boxes
            cal = src.calibration(area, ts, overlap, texts, 1, cancel).for_phrases(enc, [phrase], src.out_of_domain)
        for eb in src.embeddings(windows, dense=True, progress=progress, cancel=cancel):
            if cal is not None:
                raw = scoring.probability_maps(eb.dense_normalized, texts, 1, enc.logit_scale).cpu()
                sim = cal.score(raw.reshape(-1), torch.zeros(raw.numel(), dtype=torch.long)).float().view(raw.shape)
            else:
                sim = scoring.similarity_maps(eb.dense_normalized, texts[:1])
            sim = sim[:, 0].cpu().numpy()
            for i, t in enumerate(eb.tiles):
                win = Window(t.window.col_off - c0, t.window.row_off - r0, t.window.width, t.window.height)
                acc.add(win, sim[i], valid=t.valid, resampling="bilinear")
                n_tiles += 1
        if n_tiles == 0:
            raise InputError(f"no valid pixels in {src.path}" + (" within the bounds" if bounds else ""))
        meta = run_metadata(
            enc,
            "heatmap",
            **raster_meta(src, ts, overlap, bounds, enc.batch_size),
            phrase=phrase,
            values=values if cal is None or cal.calibrated else "standout",
            values_meaning=(
                "find's score of each patch as a one-patch region (the calibrated probability that it shows the "
                "phrase), averaged in overlaps" if cal is not None and cal.calibrated
                else "uncalibrated model: find's standout of each patch as a one-patch region (spreads above the "
                     "scene's typical region), averaged in overlaps" if cal is not None
                else "cosine similarity of patch embeddings with the phrase, averaged in overlaps"),
            competitors=bg if values == "score" else [],
            calibration=cal.as_dict([phrase]) if cal is not None else None,
            scale=scale,
            n_tiles=n_tiles,
        )
        meta.update({k: jsonable(v) for k, v in (metadata or {}).items()})
        grid = acc.result()
        enter_stage(stage, "masking nodata")
        src.mask_invalid(grid, area, scale, cancel)
        check_cancel(cancel)
        enter_stage(stage, "writing")
        desc = f"{phrase} ({'score' if cal.calibrated else 'standout'})" if cal is not None else phrase
        write_float_geotiff(grid, out_path, acc.out_transform, src.crs, overwrite=overwrite,
                            band_descriptions=[desc], tags={"GEOALIGN_METADATA": meta})
    return out_path
