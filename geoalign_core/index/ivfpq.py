"""What both FAISS IVF-PQ indexes of a collection share (:mod:`.ann` in memory, :mod:`.ondisk` with
inverted lists on disk): FAISS itself, the vectors they index, the product quantiser's shape, the
untrained index and its training sample."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["faiss_or_fail", "ivfpq_index", "pq_subquantizers", "sample_evenly", "unit_vectors"]


def faiss_or_fail(what: str) -> Any:
    """The ``faiss`` module; an :class:`InputError` naming ``what`` needs it when it is not installed."""
    try:
        import faiss
    except ImportError:
        raise InputError(f"{what} needs FAISS: pip install faiss-cpu (or the ann extra: "
                         "pip install 'geoalign[ann]')", param="ann") from None
    return faiss


def unit_vectors(q: np.ndarray) -> np.ndarray:
    """int8 patch vectors -> L2-normalised float32 (the per-vector scale cancels out)."""
    x = q.reshape(-1, q.shape[-1]).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    return x


def pq_subquantizers(d: int) -> int:
    """Sub-quantisers of the product quantiser: ``d / 8`` (8 dimensions each), or the nearest
    smaller divisor of ``d``."""
    m = max(1, d // 8)
    while d % m:
        m -= 1
    return m


def ivfpq_index(faiss: Any, d: int, nlist: int, m: int, bits: int) -> Any:
    """An untrained ``IndexIVFPQ``: inner product (cosine over unit vectors), a flat coarse quantiser."""
    return faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, m, bits, faiss.METRIC_INNER_PRODUCT)


def sample_evenly(sizes: Sequence[int], n: int, seed: int,
                  read_rows: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """``n`` patches (at most all) drawn without replacement evenly over parts of ``sizes`` patches,
    as unit vectors; ``read_rows(part, rows)`` reads a part's int8 patch vectors at the sorted ``rows``."""
    rng = np.random.default_rng(seed)
    total = int(sum(sizes))
    picks = np.sort(rng.choice(total, size=min(total, n), replace=False))
    offsets = np.cumsum([0, *sizes])
    out = []
    for i in range(len(sizes)):
        local = picks[(picks >= offsets[i]) & (picks < offsets[i + 1])] - offsets[i]
        if len(local):
            out.append(unit_vectors(read_rows(i, local)))
    return np.concatenate(out)
