"""Known object sizes in ``find``: the objects' typical size, given (``object_size``) or learnt.

``object_size`` (metres: a side, or width and height) applies to every phrase; without it, a
fine-tuned model's labelled sizes (``spec.extra["object_sizes"]``, written by ``geoalign
finetune``), else the model card's typical sizes, apply to the phrases that name one of those
classes ("red car" -> "car"). For a phrase with a size, windows of that
size (stepped by a quarter of it) join the candidates and only boxes within :data:`SIZE_RANGE` x
of its area are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..card import phrase_object_size
from ..errors import InputError
from ..geo.grid import pixel_size_m
from .encoder import Encoder
from .source import EmbeddingSource

__all__ = ["SIZE_RANGE", "object_sizes", "size_fits", "sized_windows"]

#: a phrase keeps only boxes whose area is within this factor of its object size
SIZE_RANGE = 2.5


def object_sizes(enc: Encoder, phrases: Sequence[str], object_size: float | Sequence[float] | None,
                 src: EmbeddingSource, tile_px: float | None = None
                 ) -> tuple[torch.Tensor | None, dict[str, list[float]]]:
    """Per phrase, the object size in raster pixels (``[N, 2]`` width, height; NaN: unknown) and in
    metres for the run metadata: ``object_size`` (metres; a side or width, height) for every
    phrase, else the model's labelled sizes (``spec.extra["object_sizes"]``) or its card's typical
    sizes for the classes the phrases name. A stored size larger than a tile (``tile_px`` raster
    pixels) is not used: such objects are found by their parts."""
    if object_size is not None:
        vals = [float(v) for v in np.atleast_1d(np.asarray(object_size, dtype=np.float64))]
        if len(vals) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in vals):
            raise InputError(f"object size must be one or two positive numbers (metres); got {object_size!r}",
                             param="object_size")
        known = {p: (vals[0], vals[-1]) for p in phrases}
    else:
        stored = (getattr(getattr(enc.model, "spec", None), "extra", None) or {}).get("object_sizes") or {}
        card = enc.card
        known = {}
        for p in phrases:
            hit = phrase_object_size(p, stored) or (card.object_size(p) if card is not None else None)
            if hit is not None:
                known[p] = hit
    mx, my = pixel_size_m(src.crs, src.transform, src.width, src.height)
    if object_size is None and tile_px is not None:
        known = {p: wh for p, wh in known.items() if max(wh[0] / mx, wh[1] / my) <= tile_px}
    if not known:
        return None, {}
    out = torch.full((len(phrases), 2), float("nan"), dtype=torch.float64)
    for i, p in enumerate(phrases):
        if p in known:
            out[i, 0], out[i, 1] = known[p][0] / mx, known[p][1] / my
    return out, {p: [round(w, 3), round(h, 3)] for p, (w, h) in known.items()}


def sized_windows(sizes: torch.Tensor | None, scale: float, input_size: int) -> list[torch.Tensor]:
    """Windows of each known size (``sizes [N, 2]`` raster pixels; a tile at ``scale`` raster
    pixels per input pixel), stepped by a quarter of the size, in input pixels."""
    if sizes is None:
        return []
    out = []
    for w, h in {(float(w), float(h)) for w, h in sizes.tolist() if not math.isnan(w)}:
        wi, hi = min(w / scale, input_size), min(h / scale, input_size)
        if wi < 2 or hi < 2:
            continue
        xs = torch.arange(0.0, input_size - wi + 1e-6, max(1.0, wi / 4))
        ys = torch.arange(0.0, input_size - hi + 1e-6, max(1.0, hi / 4))
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        x0, y0 = xx.reshape(-1), yy.reshape(-1)
        out.append(torch.stack([x0, y0, x0 + wi, y0 + hi], dim=1))
    return out


def size_fits(boxes: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """``[K, N]``: whether each raster-pixel box's area is within :data:`SIZE_RANGE` x of each
    phrase's object size (True for phrases of unknown size)."""
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double()[:, None]
    want = (sizes[:, 0] * sizes[:, 1])[None, :]
    ok = (area >= want / SIZE_RANGE) & (area <= want * SIZE_RANGE)
    return ok | torch.isnan(want)
