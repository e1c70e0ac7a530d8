"""A region that no stored tile holds whole, pooled piece by piece from the tiles it covers.

A live run looks at such a region (larger than a tile, or across tile borders) in a window of
its own; an index has only its tiles. Each pixel of the region is taken from the tile whose
centre is nearest, each piece RoIAlign-pooled from that tile's stored patches, and the pieces
averaged by area.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .store import dequantize

if TYPE_CHECKING:
    from .scene_index import SceneIndex

__all__ = ["pool_pieces"]


def _cores(offsets: np.ndarray, tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per grid offset along an axis, the span of pixels nearest that tile's centre."""
    offs = np.unique(offsets)
    centres = offs + tile_size / 2.0
    mids = (centres[1:] + centres[:-1]) / 2.0
    lo = np.concatenate([[-np.inf], mids])
    hi = np.concatenate([mids, [np.inf]])
    return offs, np.stack([lo, hi], axis=1)


def pool_pieces(idx: SceneIndex, box: np.ndarray) -> torch.Tensor:
    """The normalised embedding ``[D]`` of a raster-pixel box pooled piecewise from ``idx``'s tiles."""
    enc = idx.encoder
    ts = idx.tile_size(None)
    xs, xspan = _cores(idx.col_off, ts)
    ys, yspan = _cores(idx.row_off, ts)
    x0, y0, x1, y1 = (float(v) for v in box)
    k = idx.input_size / ts  # model-input pixels per raster pixel
    acc = torch.zeros(enc.model.embed_dim, device=enc.device)
    total = 0.0
    for cx, (sx0, sx1) in zip(xs, xspan):
        px0, px1 = max(x0, sx0), min(x1, sx1)
        if px1 - px0 <= 0:
            continue
        for cy, (sy0, sy1) in zip(ys, yspan):
            py0, py1 = max(y0, sy0), min(y1, sy1)
            row = idx.row_at(int(cx), int(cy))
            if py1 - py0 <= 0 or row is None:  # outside this piece, or an empty tile: no data there
                continue
            piece = torch.tensor([[(px0 - cx) * k, (py0 - cy) * k, (px1 - cx) * k, (py1 - cy) * k]])
            dense = dequantize(idx.patches[row : row + 1], idx.scale[row : row + 1], idx.grid).to(enc.device)
            with torch.no_grad():
                pooled = enc.model.pool_regions(dense, [piece]).float()[0]
            a = (px1 - px0) * (py1 - py0)
            acc += a * pooled
            total += a
    return acc if total == 0 else F.normalize(acc / total, dim=-1)
