"""Box refinement in ``find``: each kept box looked at again at twice the tile zoom.

A box found on the patch grid of a tile is placed to within a patch; objects of one or two
patches then get boxes that are shifted or the wrong shape. :func:`refine_boxes` proposes a
better placed box from a window of half the tile size around each box and keeps it only when it
scores at least as high at the tile zoom; :func:`refine_selection` picks the boxes worth it.
"""

from __future__ import annotations

import numpy as np
import torch
from rasterio.windows import Window

from . import scoring
from .candidates import score_candidates
from .encoder import Cancel, Encoder, Progress, Stage, enter_stage
from .source import LiveSource
from .zoom import ZOOM, centred_windows

__all__ = ["REFINE_MIN_AREA", "REFINE_SPARE", "REFINE_ZOOM", "refine_boxes", "refine_selection"]

REFINE_ZOOM = ZOOM  #: a window of half the tile size around the box, resampled to the model's input
REFINE_MIN_AREA = 0.5  #: a refined box keeps at least this share of the original box's area
REFINE_SPARE = 20  #: boxes kept for refinement beyond max_results per phrase (NMS may merge refined boxes)


def refine_selection(scores: torch.Tensor, labels: torch.Tensor, eligible: torch.Tensor, cap: int) -> torch.Tensor:
    """``[K]`` bool: the boxes to refine: per label, the ``cap`` best-scoring ``eligible`` boxes (ties: the
    earlier box first)."""
    pick = torch.zeros(len(scores), dtype=torch.bool)
    for lab in labels[eligible].unique():
        rows = torch.nonzero(eligible & (labels == lab), as_tuple=True)[0]
        order = scores[rows].double().argsort(descending=True, stable=True)
        pick[rows[order[: max(0, int(cap))]]] = True
    return pick


def refine_boxes(
    enc: Encoder,
    src: LiveSource,
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
    :func:`find_candidates` are scored there for the box's phrase, and the best one whose
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
    enter_stage(stage, "refining boxes")
    orig = boxes.numpy()
    windows = centred_windows(orig, tile_size, enc.model.patch_size, REFINE_ZOOM)
    proposed = orig.copy()
    for eb in src.embeddings(windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
        rows = torch.tensor([t.index for t in eb.tiles])
        lab = labels[rows]
        # the similarity map of each window's own phrase
        sim = torch.einsum("bdhw,bd->bhw", eb.dense_normalized.float(), texts[lab.to(texts.device)].float()).cpu()
        owner, cand, probs, valid, _ = score_candidates(enc, eb, sim, area, texts, n_phrases)
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
    enter_stage(stage, "checking refined boxes")
    emb = src.region_embeddings(both, area, tile_size, overlap, progress, cancel)
    probs = scoring.phrase_probabilities(emb, texts, n_phrases, enc.logit_scale).cpu()
    lab = labels[torch.from_numpy(moved)]
    n = len(moved)
    before = probs[torch.arange(n), lab]
    after = probs[torch.arange(n, 2 * n), lab]
    accept = moved[(after >= before).numpy()]
    out = orig.copy()
    out[accept] = proposed[accept]
    return torch.from_numpy(out), int(len(accept))
