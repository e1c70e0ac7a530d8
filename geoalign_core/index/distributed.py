"""A collection's patch search fanned out over a Dask cluster: the workers scan shards, the client merges.

Why Dask and not Ray: docs/scaling.md ("A query on a cluster"). In short: a pure-Python wheel
(~10 MB) that runs the same code on a laptop's :class:`~distributed.LocalCluster`, an HPC batch
system (``dask-jobqueue``: SLURM, PBS) or Kubernetes (``dask-kubernetes``), reads object
storage through the same fsspec this module uses, and enforces a per-worker memory limit;
Ray's object store and raylet would take a share of the very memory budget a search runs in.

* **exact** (:func:`cluster_search` with ``method="exact"``): one task per scene; a worker
  streams that scene's patch file in chunks of ``memory_mb`` (:func:`.stream.scan_shard`) from
  local disk, a shared file system or object storage, and returns its best ``k`` per query.
* **ann**: one task per ANN shard of ``idx/ann-disk/`` (:mod:`.ondisk`), pinned to one worker
  so that the worker keeps that shard's index open between queries; the candidates are scored
  exactly from the patch files.

The client merges the partial top-``k`` lists with the same tie-break as one process
(:func:`.stream.merge_hits`), so the exact search returns the same patches, in the same order,
with the same scores as :func:`.stream.exact_search`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InputError
from .stream import DEFAULT_MEMORY_MB, Hits, PatchShard, collection_shards, merge_hits, normalized_queries, scan_shard

__all__ = ["cluster_search", "connect", "local_cluster"]


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError("a search on a cluster needs Dask: pip install 'geoalign[distributed]'",
                         param="scheduler") from None
    return distributed


def local_cluster(n_workers: int = 2, memory_limit: str | int | None = "4GB", **kwargs: Any) -> Any:
    """A :class:`distributed.Client` on a new local cluster of ``n_workers`` processes, one thread each
    (so a worker runs one scan at a time: its memory is one scan's), each held under ``memory_limit``
    by Dask's nanny. Close it with ``client.close(); client.cluster.close()``."""
    distributed = _distributed()
    if int(n_workers) < 1:
        raise InputError(f"workers must be >= 1; got {n_workers}", param="workers")
    cluster = distributed.LocalCluster(n_workers=int(n_workers), threads_per_worker=1, processes=True,
                                       memory_limit=memory_limit, dashboard_address=None, **kwargs)
    return distributed.Client(cluster)


def connect(scheduler: str) -> Any:
    """A client of a running Dask scheduler (``tcp://host:8786``)."""
    distributed = _distributed()
    try:
        return distributed.Client(scheduler, timeout="30s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler {scheduler}: {exc}", param="scheduler") from None


def _exact_task(shard: PatchShard, queries: np.ndarray, k: int, memory_mb: float, number: int) -> Hits:
    return scan_shard(shard, queries, k, memory_mb, number)


def _ann_task(root: str, g: int, queries: np.ndarray, k: int, pshards: list[PatchShard], nprobe: int,
              rerank: int | None) -> Hits:
    from .ondisk import OnDiskAnn

    ann = OnDiskAnn(root, _ann_meta(root))
    hits = ann.search_shard(g, queries, k, pshards, nprobe, rerank)
    hits.shards = []  # the client has them: do not send them back
    return hits


def _ann_meta(root: str) -> dict:
    import json
    from pathlib import Path

    from .ondisk import DIRNAME, META

    return json.loads((Path(root) / DIRNAME / META).read_text())


def cluster_search(client: Any, root: str | os.PathLike, queries: Any, k: int = 10, *, method: str = "exact",
                   memory_mb: float = DEFAULT_MEMORY_MB, nprobe: int | None = None,
                   rerank: int | None = None) -> Hits:
    """The best ``k`` patches of the collection ``root`` per query vector, computed on ``client``'s
    workers (see the module docstring). ``root`` must be readable by every worker under the same
    name: a shared file system path or an fsspec URL (``s3://bucket/idx``)."""
    from .ondisk import DEFAULT_NPROBE, OnDiskAnn

    if int(k) < 1:
        raise InputError(f"k must be >= 1; got {k}", param="k")
    if method not in ("exact", "ann"):
        raise InputError(f"method must be 'exact' or 'ann'; got {method!r}", param="method")
    root = str(root)
    pshards = collection_shards(root)
    q = normalized_queries(queries)
    if method == "exact":
        # the largest scenes first, so the last task to finish is a small one
        order = sorted(range(len(pshards)), key=lambda i: -pshards[i].n)
        futures = [client.submit(_exact_task, pshards[i], q, int(k), memory_mb, i, pure=False) for i in order]
    else:
        ann = OnDiskAnn.open(root, pshards)
        workers = sorted(client.nthreads())  # asked of the scheduler now (the client's cached view may be empty)
        futures = [client.submit(_ann_task, root, g, q, int(k), pshards, nprobe or DEFAULT_NPROBE,
                                 rerank, pure=False,
                                 workers=[workers[g % len(workers)]] if workers else None, allow_other_workers=True)
                   for g in range(ann.n_shards)]
    parts = client.gather(futures)
    return merge_hits(parts, int(k), pshards)
