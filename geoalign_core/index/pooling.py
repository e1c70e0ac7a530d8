"""A scene index's candidate pooling, lazily: only the tiles that can still enter the top results.

``find`` from an index ranks every stored patch first (one int8 scan), which bounds what each
tile's boxes can score (:meth:`SceneIndex.candidate_windows
<geoalign_core.index.SceneIndex.candidate_windows>`); pooling candidate boxes in a tile (RoIAlign
over its dense map) is the expensive part after that. :func:`lazy_batches` hands the tiles to
``find`` best bound first, in batches that start small and double (so the score a new box must
reach -- the ``max_results``-th best so far -- rises after a few tiles, not after a whole batch),
and before each batch it leaves out every tile whose bound stays below that score for every
phrase: such a tile cannot add a box to the results, and is never dequantised nor pooled.

:func:`valid_patches` is the per-tile patch validity of the scan, for many rows at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from rasterio.windows import Window

    from ..inference.encoder import Cancel, EmbeddingBatch, Progress
    from .scene_index import SceneIndex

__all__ = ["FIRST_BATCH", "lazy_batches", "valid_patches"]

FIRST_BATCH = 4  #: tiles in the first pooled batch; each next batch doubles, up to the index's batch


def lazy_batches(src: SceneIndex, windows: Sequence[Window], bound: torch.Tensor,
                 floor: Callable[[], torch.Tensor], most: int, progress: Progress | None = None,
                 cancel: Cancel | None = None, first: int = FIRST_BATCH) -> Iterator[EmbeddingBatch]:
    """The stored embeddings of the ``windows`` that can still reach ``floor()``, in batches.

    Args:
        windows: tiles, best bound first (:meth:`SceneIndex.candidate_windows`).
        bound: ``[len(windows), N]``: the most each tile's boxes can score, per phrase.
        floor: ``[N]``: what a box must score now to enter the results (read before every batch).
        most: the largest batch.

    Each batch's ``done`` is the number of ``windows`` settled (pooled or left out) so far, so
    ``bound[done:]`` are the tiles still to come.
    """
    total = len(windows)
    pos, size = 0, max(1, int(first))
    while pos < total:
        need = floor().view(1, -1)
        rest = torch.nonzero((bound[pos:] >= need).any(dim=1), as_tuple=True)[0]
        if rest.numel() == 0:
            if progress is not None:
                progress(total, total)
            return
        take = (pos + rest[:size]).tolist()
        pos = take[-1] + 1
        for eb in src.embeddings([windows[i] for i in take], dense=True, cancel=cancel):
            yield dataclasses.replace(eb, done=pos)
        if progress is not None:
            progress(pos, total)
        size = min(2 * size, int(most))


def valid_patches(src: SceneIndex, rows: np.ndarray) -> torch.Tensor | None:
    """``[len(rows), h * w]`` bool: the patches of each row that count (:meth:`SceneIndex.patch_validity`),
    or None when every one does; rows stored without a validity mask (wholly valid tiles, most of them)
    are not looked at one by one."""
    hw = src.grid[0] * src.grid[1]
    has_mask = getattr(src, "_has_mask", None)
    if has_mask is None:
        has_mask = np.fromiter((m is not None for m in src._masks), dtype=bool, count=len(src._masks))
        setattr(src, "_has_mask", has_mask)  # noqa: B010 - kept with the index, computed on first use
    masked = np.flatnonzero(has_mask[rows])
    if len(masked) == 0:
        return None
    out = torch.ones((len(rows), hw), dtype=torch.bool)
    for k in masked:
        out[int(k)] = src.patch_validity(int(rows[k]))
    return out
