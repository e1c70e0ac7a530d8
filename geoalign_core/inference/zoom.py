"""The zoom view of ``find``: each returned box looked at again at twice the tile zoom, centred.

A box found on a tile's patch grid is pooled from patches as large as a small object (a car at
0.3 m covers one or two 8 px patches), in a tile where it may sit at an edge. The zoom view reads a
window of half the tile size centred on the box, resampled to the model's input (patches of half the
size), pools the box there and compares it with every text: the phrase, the query's other phrases, the
background phrases and the vocabulary (:func:`~.scoring.vocabulary_logodds`). On the demo model's
held-out scenes this tells right "red car" boxes from wrong ones far better than the scan's own
evidence (docs/scores.md), so the card's ``find:zoom`` map reads it as the feature ``zoom``.

``find`` on a raster (read live) computes it when the model card has a ``find:zoom`` map for the raster's
domain. Everything else is scored by the card's ``find`` map from the scan alone: a query from an index
(it stays an index query: stored patches and the text tower, no image pass), ``find --regions`` and
``match-regions``. To collect calibration data, :func:`collecting_zoom_view` makes ``find`` compute the
zoom view from an index too (its raster read live), so that one image pass per scene serves every phrase.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from . import scoring
from .encoder import Cancel, Encoder, Progress, Stage, enter_stage
from .source import EmbeddingSource, LiveSource, tile_boxes

if TYPE_CHECKING:
    from .calibration import Scorer

__all__ = ["ZOOM", "centred_windows", "collecting_zoom_view", "zoom_logodds", "zoom_scorer", "zoom_wanted"]

ZOOM = 2  #: a window of half the tile size around the box, resampled to the model's input


def centred_windows(boxes: np.ndarray, tile_size: int, patch: int, zoom: int = ZOOM) -> list[Window]:
    """A window of ``tile_size / zoom`` raster pixels (at least one patch) centred on each box ``[K, 4]``."""
    side = max(int(patch), round(tile_size / zoom))
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    return [Window(math.floor(x - side / 2), math.floor(y - side / 2), side, side) for x, y in zip(cx, cy)]


def zoom_logodds(enc: Encoder, live: LiveSource, boxes: torch.Tensor, labels: torch.Tensor, texts: torch.Tensor,
                 vocab: torch.Tensor, n_phrases: int, tile_size: int, cancel: Cancel | None = None,
                 progress: Progress | None = None, stage: Stage | None = None) -> torch.Tensor:
    """``[K]`` float64: each box's log-odds for its phrase (``labels [K]``) against every other text, the
    box pooled from a window of half the tile size centred on it (``boxes [K, 4]``: raster pixels)."""
    out = torch.zeros(len(boxes), dtype=torch.float64)
    if len(boxes) == 0:
        return out
    enter_stage(stage, "zoom view")
    b = boxes.double().numpy()
    windows = centred_windows(b, tile_size, enc.model.patch_size)
    for eb in live.embeddings(windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
        rows = [t.index for t in eb.tiles]
        blist = [tile_boxes(b[[k]], t) for k, t in zip(rows, eb.tiles)]
        assert eb.dense is not None  # the pass above asked for dense embeddings
        with torch.no_grad():
            reg = F.normalize(enc.model.pool_regions(eb.dense, blist).float(), dim=-1)
        zv = scoring.vocabulary_logodds(reg, texts, vocab, n_phrases, enc.logit_scale).cpu()
        idx = torch.tensor(rows)
        out[idx] = zv[torch.arange(len(rows)), labels[idx].long()]
    return out


def zoom_scorer(enc: Encoder, src: EmbeddingSource, scan: Scorer, phrases: Sequence[str]) -> Scorer | None:
    """The scene's scorer with the card's ``find:zoom`` map for ``phrases``, when the card has one for the
    raster's domain and ``src`` is a raster read live; None otherwise (``scan``'s map scores the boxes)."""
    if not src.live:
        return None
    zoomed = scan.with_task(enc, "find:zoom", src.out_of_domain)
    if zoomed is None or not zoomed.zoom_view:
        return None
    return zoomed.for_phrases(enc, phrases, src.out_of_domain)


def zoom_wanted(enc: Encoder, src: EmbeddingSource, scorer: Scorer | None) -> bool:
    """Whether ``find`` computes the zoom view of its boxes: ``scorer`` (from :func:`zoom_scorer`) reads it, or
    calibration data are being collected (:func:`collecting_zoom_view`) and the raster can be read."""
    return scorer is not None or (enc.collect_zoom_view and src.raster_available())


@contextlib.contextmanager
def collecting_zoom_view(enc: Encoder) -> Iterator[None]:
    """Within this block ``find`` computes the zoom view (and records it in ``attrs["score_features"]``) even
    when the model's card has no ``find:zoom`` map yet: for collecting the labelled results that fit one."""
    before = enc.collect_zoom_view
    enc.collect_zoom_view = True
    try:
        yield
    finally:
        enc.collect_zoom_view = before
