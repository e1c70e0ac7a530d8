"""Every stored patch of an index against a few query vectors: one int8 matrix product per chunk.

What ``find`` over an index starts with (:meth:`SceneIndex.patch_scores
<geoalign_core.index.scene_index.SceneIndex.patch_scores>`): each tile's best patch score per
query bounds what its regions can score, so only the tiles that can reach the threshold are
pooled. The patch file is memory-mapped and read chunk by chunk; the pages of a chunk are handed
back once it is scored, so a scan keeps one chunk in memory whatever the index's size.
"""

from __future__ import annotations

import contextlib
import mmap
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..inference.encoder import Cancel, check_cancel

__all__ = ["SIM_CHUNK", "best_patch_scores", "int8_dot", "rows_of_patches"]

SIM_CHUNK = 1 << 18  #: patches per matrix product when ranking the whole index (128 MB of 512-d int8)


def int8_dot(queries: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``queries [T, D]`` (float) x int8 vectors ``q [P, D]`` -> ``[T, P]`` float32 dot products.

    Uses PyTorch's int8-weight kernel (bfloat16 activations; ~0.3 % relative error, plenty to
    rank patches) where the CPU has it, else a float matrix product.
    """
    try:
        ones = torch.ones(q.shape[0], dtype=torch.bfloat16)
        return torch._weight_int8pack_mm(queries.bfloat16().cpu(), q, ones).float()
    except (RuntimeError, AttributeError, NotImplementedError):
        return queries.float().cpu() @ q.float().T


@contextlib.contextmanager
def rows_of_patches(patches: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    """The int8 patches of ``rows`` (ascending) for the duration of the ``with``.

    A run of consecutive rows is a view of the memory map, and its pages are handed back
    afterwards (``madvise(MADV_DONTNEED)``; they stay in the page cache).
    """
    if not (len(rows) and rows[-1] - rows[0] + 1 == len(rows)):
        yield np.ascontiguousarray(patches[rows])
        return
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    yield patches[lo:hi]
    mm = getattr(patches, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        row_bytes = int(np.prod(patches.shape[1:]))
        offset = int(getattr(patches, "offset", 0))  # a memory map's header bytes
        start, end = offset + lo * row_bytes, offset + hi * row_bytes
        page = mmap.PAGESIZE
        first = (start + page - 1) // page * page  # whole pages inside the run only
        with contextlib.suppress(OSError, ValueError):
            if end - first >= page:
                mm.madvise(mmap.MADV_DONTNEED, first, (end - first) // page * page)


def best_patch_scores(patches: np.ndarray, scale: np.ndarray, norm: np.ndarray,
                      validity: Callable[[np.ndarray], torch.Tensor], rows: np.ndarray, queries: torch.Tensor,
                      n_queries: int, logit_scale: float | None, cancel: Cancel | None = None) -> torch.Tensor:
    """Best patch score per (tile, query) ``[len(rows), n_queries]`` over the tiles' valid patches.

    ``patches [N, hw, D]`` int8 with their per-patch ``scale`` and ``norm [N, hw]``;
    ``validity(rows)``: bool ``[len(rows), hw]``, the patches that count. With ``logit_scale``: the
    probability of each query
    against the other rows of ``queries`` (find's score of a one-patch region: ``queries`` =
    phrases, then background phrases); without: the cosine similarity of each patch with each query.
    """
    hw = patches.shape[1]
    out = torch.full((len(rows), n_queries), -1.0)
    step = max(1, SIM_CHUNK // hw)
    order = np.argsort(rows)
    for lo in range(0, len(rows), step):
        check_cancel(cancel)
        part = order[lo : lo + step]
        sel = rows[part]
        with rows_of_patches(patches, sel) as block, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a read-only view: only read
            dots = int8_dot(queries, torch.from_numpy(block.reshape(-1, patches.shape[2])))  # [T, P]
        cos = dots * (torch.from_numpy(scale[sel].reshape(-1)) / torch.from_numpy(norm[sel].reshape(-1))
                      .clamp_min(1e-12))[None]
        score = (float(logit_scale) * cos).softmax(dim=0)[:n_queries] if logit_scale is not None else cos[:n_queries]
        score = score.T.reshape(len(sel), hw, n_queries)
        pv = validity(sel)
        score = torch.where(pv[..., None], score, torch.full_like(score, -1.0))
        out[torch.from_numpy(part)] = score.amax(dim=1)
    return out
