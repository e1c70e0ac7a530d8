"""Every stored patch of an index against a few query vectors: one int8 matrix product per chunk.

What ``find`` over an index starts with (:meth:`SceneIndex.patch_scores
<geoalign_core.index.scene_index.SceneIndex.patch_scores>`): each tile's best patch score per
query bounds what its regions can score, so only the tiles that can reach the threshold are
pooled. The patch file is memory-mapped and read chunk by chunk; the pages of a chunk are handed
back once it is scored, so a scan keeps one chunk in memory whatever the index's size.
"""

from __future__ import annotations

import contextlib
import functools
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
        return torch._weight_int8pack_mm(queries.bfloat16().cpu(), q, _ones(q.shape[0])).float()
    except (RuntimeError, AttributeError, NotImplementedError):
        return queries.float().cpu() @ q.float().T


@functools.lru_cache(maxsize=2)
def _ones(n: int) -> torch.Tensor:
    """The int8 kernel's per-row scales (all 1): one tensor per chunk size, not one per chunk."""
    return torch.ones(n, dtype=torch.bfloat16)


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


#: where the stored background texts a query leaves out hold more than this share of a patch's stored background
#: term, taking them out of it would lose precision: such patches are scored against the query's background rows
DROP_EXACT = 0.9


def best_patch_scores(patches: np.ndarray, scale: np.ndarray, norm: np.ndarray,
                      validity: Callable[[np.ndarray], torch.Tensor | None], rows: np.ndarray, queries: torch.Tensor,
                      n_queries: int, logit_scale: float | None, cancel: Cancel | None = None,
                      background: tuple[np.ndarray, torch.Tensor] | None = None,
                      keep_lse: np.ndarray | None = None) -> torch.Tensor:
    """Best patch score per (tile, query) ``[len(rows), n_queries]`` over the tiles' valid patches.

    ``patches [N, hw, D]`` int8 with their per-patch ``scale`` and ``norm [N, hw]``;
    ``validity(rows)``: bool ``[len(rows), hw]``, the patches that count (None: all of them). With ``logit_scale``: the
    probability of each query
    against the other rows of ``queries`` (find's score of a one-patch region: ``queries`` =
    phrases, then background phrases); without: the cosine similarity of each patch with each query.

    ``background`` (:mod:`.background`): ``(lse [N, hw], left_out [R, D])``, the stored background term of
    every patch and the stored background texts that this query's background leaves out: only the phrase
    rows (and ``left_out``) are scanned, and the background's share of each softmax comes from ``lse``.
    ``keep_lse`` (``[N, hw]`` float32, without ``background``): receives the background term of the
    scanned rows (``logsumexp`` of ``logit_scale * cos`` over ``queries[n_queries:]``).
    """
    hw, d = patches.shape[1], patches.shape[2]
    out = torch.full((len(rows), n_queries), -1.0)
    step = max(1, SIM_CHUNK // hw)
    order = np.argsort(rows)
    stored = background if logit_scale is not None else None
    lscale = 0.0 if logit_scale is None else float(logit_scale)
    scan = queries if stored is None else torch.cat([queries[:n_queries], stored[1].to(queries)])
    for lo in range(0, len(rows), step):
        check_cancel(cancel)
        part = order[lo : lo + step]
        sel = rows[part]
        with rows_of_patches(patches, sel) as block, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # read-only views: only read
            factor = torch.from_numpy(_take(scale, sel).reshape(-1)) / \
                torch.from_numpy(_take(norm, sel).reshape(-1)).clamp_min(1e-12)
            flat = torch.from_numpy(block.reshape(-1, d))
            cos = int8_dot(scan, flat) * factor[None]  # [T, P]
            if stored is not None:  # each phrase's logit against every other text: its score is the sigmoid
                logits = lscale * cos
                bg = torch.from_numpy(np.ascontiguousarray(_take(stored[0], sel), dtype=np.float32).reshape(-1))
                if len(logits) > n_queries:  # stored texts this query leaves out
                    bg = _take_out(logits[n_queries:], bg, flat, factor, queries[n_queries:], lscale)
                score = _against_others(logits[:n_queries], bg)
            elif logit_scale is None:
                score = cos[:n_queries]
            else:
                logits = lscale * cos
                score = logits.softmax(dim=0)[:n_queries]
                if keep_lse is not None:
                    keep_lse[sel] = torch.logsumexp(logits[n_queries:], dim=0).reshape(len(sel), hw).numpy()
        if n_queries == 0:  # the background term only (keep_lse)
            continue
        score = score.T.reshape(len(sel), hw, n_queries)
        pv = validity(sel)
        if stored is None:
            if pv is not None:
                score = torch.where(pv[..., None], score, torch.full_like(score, -1.0))
            out[torch.from_numpy(part)] = score.amax(dim=1)
            continue
        if pv is not None:
            score = score.masked_fill(~pv[..., None], float("-inf"))
        best = score.amax(dim=1)  # the sigmoid rises: the best logit is the best score
        out[torch.from_numpy(part)] = torch.where(best > float("-inf"), torch.sigmoid(best), -1.0)
    return out


def _take(a: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """``a[sel]``: a view where ``sel`` is a run of consecutive rows (a whole index's scan)."""
    if len(sel) and sel[-1] - sel[0] + 1 == len(sel):
        return a[int(sel[0]) : int(sel[-1]) + 1]
    return a[sel]


def _against_others(logits: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """``[N, P]`` each phrase's logit minus the log-sum-exp of the other phrases' and the background's
    (``bg [P]``): the softmax over them all, at that phrase, is its sigmoid."""
    if len(logits) == 1:
        return logits - bg[None]
    out = torch.empty_like(logits)
    for i in range(len(logits)):
        others = torch.cat([logits[:i], logits[i + 1 :], bg[None]])
        out[i] = logits[i] - torch.logsumexp(others, dim=0)
    return out


def _take_out(left_out: torch.Tensor, bg: torch.Tensor, flat: torch.Tensor, factor: torch.Tensor,
              background: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """The stored background term ``bg [P]`` without the ``left_out [R, P]`` logits' share; where that
    share is most of it (:data:`DROP_EXACT`), the term of the query's ``background`` rows, computed."""
    rest = 1.0 - (left_out - bg[None]).exp().sum(dim=0)
    redo = ~(rest >= 1.0 - DROP_EXACT)  # NaN too
    bg = bg + rest.clamp_min(1e-30).log()
    if bool(redo.any()):
        idx = redo.nonzero(as_tuple=True)[0]
        logits = logit_scale * int8_dot(background, flat[idx]) * factor[idx][None]
        bg[idx] = torch.logsumexp(logits, dim=0)
    return bg
