"""Candidate boxes of a batch of tiles: built on each tile's dense map, pooled and scored.

The candidates of a tile are the window grid (:func:`~.scoring.window_candidates`), the
connected components of each query's similarity map at patch and half-patch resolution, and
windows of known object sizes (:mod:`.object_sizes`); each is RoIAlign-pooled from the tile's one
dense map. :mod:`.find` scores and keeps them; :mod:`.refine` builds them again at twice the zoom.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from rasterio.windows import Window

from . import scoring
from .encoder import EmbeddingBatch, Encoder, tile_scale
from .object_sizes import sized_windows

__all__ = ["keep_top_per_tile", "pool_candidates", "score_candidates"]


def score_candidates(
    enc: Encoder, eb: EmbeddingBatch, sim: torch.Tensor, area: Window, texts: torch.Tensor, n_phrases: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`pool_candidates`, each candidate scored against the phrases
    (:func:`scoring.phrase_probabilities`: ``texts`` = the ``n_phrases`` query phrases, then
    background phrases). Returns ``owner, boxes, probs [K, n_phrases], valid, nonempty``."""
    owner, cand, reg, valid, nonempty = pool_candidates(enc, eb, sim, area)
    probs = scoring.phrase_probabilities(reg, texts, n_phrases, enc.logit_scale).cpu()
    return owner, cand, probs, valid, nonempty


def pool_candidates(
    enc: Encoder, eb: EmbeddingBatch, sim: torch.Tensor, area: Window, hot: torch.Tensor | None = None,
    sizes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidate boxes of a batch of tiles and their embeddings, pooled from the tiles' dense maps.

    Candidates per tile: the window grid (:func:`scoring.window_candidates`) plus the
    components of the tile's similarity maps at patch and half-patch resolution.

    Args:
        eb: the batch (dense maps, validity, tiles).
        sim: ``[B * m, h, w]`` similarity maps, ``m`` consecutive maps per tile (one per query).
        area: the search area (raster pixels): boxes are clamped to it.
        hot: optional bool ``[B, h, w]``: only boxes over at least one hot patch are pooled (a
            scene index marks the patches whose score can reach the threshold; see
            :func:`scoring.score_bound`).
        sizes: optional ``[N, 2]`` raster-pixel object sizes (NaN rows skipped): windows of each
            size, stepped by a quarter of it, join every tile's candidates.

    Returns:
        ``owner [K]`` (tile of each candidate, in batch order), ``boxes [K, 4]`` (raster
        pixels, float64, clamped to ``area``), ``embeddings [K, D]`` (normalised), ``valid [K]``
        (enough valid pixels inside) and ``nonempty [K]`` (at least 1 px wide and high after
        clamping).
    """
    patch, size = enc.model.patch_size, enc.input_size
    b = len(eb.tiles)
    per_map = sim.shape[0] // b
    pvalid = (scoring.patch_validity(eb.valid, patch) >= scoring.MIN_VALID_FRACTION).repeat_interleave(per_map, dim=0)
    midx, dboxes = scoring.dense_candidates(sim, patch, pvalid)
    # the same maps at half-patch resolution: tighter boxes around small objects
    midx2, dboxes2 = scoring.dense_candidates(sim, patch, pvalid, upsample=2)
    midx, dboxes = torch.cat([midx, midx2]), torch.cat([dboxes, dboxes2])
    tile_of = midx // per_map
    grid_boxes = scoring.window_candidates(size, size, patch)
    per_tile = [torch.unique(torch.cat([grid_boxes, dboxes[tile_of == i],
                                        *sized_windows(sizes, tile_scale(eb.tiles[i]), size)], dim=0), dim=0)
                for i in range(b)]
    if hot is not None:
        per_tile = [c[scoring.boxes_touch(hot[i], c, patch)] for i, c in enumerate(per_tile)]
    valid = scoring.boxes_valid_fraction(eb.valid, per_tile) >= scoring.MIN_VALID_FRACTION
    if eb.dense is None:
        raise ValueError("candidate boxes are pooled from dense maps: pass the batch with dense=True")
    with torch.no_grad():
        reg = F.normalize(enc.model.pool_regions(eb.dense, per_tile).float(), dim=-1)
    # map to raster pixels
    owner = torch.cat([torch.full((len(c),), i) for i, c in enumerate(per_tile)])
    cand = torch.cat(per_tile).double()
    offs = torch.tensor([[t.window.col_off, t.window.row_off] for t in eb.tiles], dtype=torch.float64)
    scl = torch.tensor([tile_scale(t) for t in eb.tiles], dtype=torch.float64)
    cand = cand * scl[owner, None] + offs[owner].repeat(1, 2)
    a_x0, a_y0 = float(area.col_off), float(area.row_off)
    cand[:, 0::2] = cand[:, 0::2].clamp(a_x0, a_x0 + float(area.width))
    cand[:, 1::2] = cand[:, 1::2].clamp(a_y0, a_y0 + float(area.height))
    nonempty = ((cand[:, 2] - cand[:, 0]) >= 1) & ((cand[:, 3] - cand[:, 1]) >= 1)
    return owner, cand, reg, valid, nonempty


def keep_top_per_tile(probs: torch.Tensor, owner: torch.Tensor, n_tiles: int, k: int) -> torch.Tensor:
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
