"""Patch search over a collection larger than memory: the Python entry point and its command line.

::

    python -m geoalign_core.index.large build-ann idx/ --shards 2            # idx/ann-disk/ (.ondisk)
    python -m geoalign_core.index.large search idx/ "solar farm" -k 20       # on-disk ANN if built, else exact
    python -m geoalign_core.index.large search idx/ "solar farm" --exact --memory-mb 512
    python -m geoalign_core.index.large search s3://bucket/idx "solar farm" --scheduler tcp://head:8786
    python -m geoalign_core.index.large search idx/ "solar farm" --local-workers 2 --out hits.csv

A hit is a patch: its scene, its tile (the row ``id`` of ``idx/parts/<scene>.parquet``, whose
``geometry`` is the tile's footprint), its place in the tile's ``h x w`` patch grid (row-major)
and its cosine similarity with the phrase. Ranking patches is the first step of ``geoalign find``;
the boxes and calibrated scores of ``find`` come from scoring the few tiles named here
(``geoalign find --index idx/parts/<scene>.parquet``).

Bad input exits with status 2 and one ``error:`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import GeoAlignError, InputError
from .stream import DEFAULT_MEMORY_MB, Hits, chunk_patches, collection_shards, exact_search, is_url, read_manifest_any

__all__ = ["encode_phrases", "search"]


def encode_phrases(root: str | os.PathLike, phrases: Sequence[str], model: Any = None) -> np.ndarray:
    """The phrases' embeddings by the collection's own model (checked by its fingerprint), ``[T, D]``."""
    from ..inference import Predictor

    settings = read_manifest_any(root)["settings"]
    enc = Predictor(model if model is not None else settings["model"], device="cpu")
    fp = enc.model.fingerprint()
    if fp != settings.get("model_fingerprint"):
        raise InputError(f"{root} was built with the model {settings['model']!r} (fingerprint "
                         f"{settings.get('model_fingerprint')}); this one has fingerprint {fp}", param="model")
    return enc.encode_phrases(list(phrases)).float().cpu().numpy()


def search(root: str | os.PathLike, queries: Any, k: int = 10, *, method: str = "auto", client: Any = None,
           memory_mb: float = DEFAULT_MEMORY_MB, nprobe: int | None = None, rerank: int | None = None) -> Hits:
    """The best ``k`` patches per query vector (``[T, D]``) of the collection ``root``.

    ``method``: ``"exact"`` (:func:`.stream.exact_search`, ``memory_mb`` of working memory),
    ``"ann"`` (the on-disk index, :mod:`.ondisk`), ``"auto"`` (the on-disk index when ``root`` is
    local and has one, else exact). ``client``: a Dask client: the work is fanned out over its
    workers (:mod:`.distributed`); None: this process.
    """
    from . import ondisk

    if method == "auto":
        has = not is_url(root) and os.path.isfile(os.path.join(root, ondisk.DIRNAME, ondisk.META))
        method = "ann" if has else "exact"
    if method not in ("exact", "ann"):
        raise InputError(f"method must be 'exact', 'ann' or 'auto'; got {method!r}", param="method")
    if client is not None:
        from .distributed import cluster_search

        return cluster_search(client, root, queries, k, method=method, memory_mb=memory_mb, nprobe=nprobe,
                              rerank=rerank)
    if method == "ann":
        return ondisk.ondisk_search(root, queries, k, nprobe=nprobe or ondisk.DEFAULT_NPROBE, rerank=rerank)
    return exact_search(root, queries, k, memory_mb)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one ``error:`` line and exit status 2, as ``geoalign``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m geoalign_core.index.large",
                        description="Patch search over collections larger than memory (docs/scaling.md).")
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build-ann", help="build the on-disk ANN index idx/ann-disk/")
    b.add_argument("index", help="a local collection index folder")
    b.add_argument("--shards", type=int, default=1, help="ANN shards: one per search worker (default 1)")
    b.add_argument("--nlist", type=int, default=None, help="inverted lists (default: about sqrt(patches)/4)")
    b.add_argument("--pq-bits", type=int, default=8, choices=(4, 6, 8), help="bits per PQ code (default 8)")
    b.add_argument("--memory-mb", type=float, default=4 * DEFAULT_MEMORY_MB, help="patches added per block, in MB")
    s = sub.add_parser("search", help="the best patches per phrase")
    s.add_argument("index", help="a collection index folder or URL (s3://, gs://, file://)")
    s.add_argument("phrases", nargs="+")
    s.add_argument("-k", type=int, default=10, help="patches per phrase (default 10)")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--exact", action="store_const", const="exact", dest="method", help="stream every patch")
    how.add_argument("--ann", action="store_const", const="ann", dest="method", help="the on-disk ANN index")
    s.add_argument("--memory-mb", type=float, default=DEFAULT_MEMORY_MB,
                   help=f"working memory of one exact scan (default {DEFAULT_MEMORY_MB})")
    s.add_argument("--nprobe", type=int, default=None, help="ANN lists probed per shard")
    s.add_argument("--rerank", type=int, default=None,
                   help="ANN candidates scored exactly per shard (default by code size: 1000 for 8-bit PQ codes, "
                        "5000 for 6, 20000 for 4)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--scheduler", help="a running Dask scheduler, e.g. tcp://head:8786")
    where.add_argument("--local-workers", type=int, help="start a local Dask cluster of N workers")
    s.add_argument("--model", default=None, help="the text model (default: the collection's)")
    s.add_argument("--out", default=None, help="write the hits to this .csv or .parquet file")
    return ap


def _run(a: argparse.Namespace) -> None:
    if a.command == "build-ann":
        from .ondisk import build_ondisk

        if is_url(a.index) or not os.path.isdir(a.index):
            raise InputError(f"not a local collection index folder: {a.index}", param="index")
        meta = build_ondisk(a.index, shards=a.shards, nlist=a.nlist, pq_bits=a.pq_bits,
                           memory_mb=a.memory_mb)
        print(f"{a.index}: on-disk ANN index {meta['kind']}, {meta['patches']} patches in "
              f"{len(meta['shards'])} shard(s), {meta['bytes'] / 1e6:.1f} MB, {meta['seconds']:.1f} s")
        return
    if a.k < 1:
        raise InputError(f"k must be >= 1; got {a.k}", param="k")
    if a.out is not None and not a.out.endswith((".csv", ".parquet")):
        raise InputError(f"--out must name a .csv or .parquet file; got {a.out}", param="out")
    if a.out is not None and os.path.exists(a.out):
        raise InputError(f"{a.out} exists: remove it or name another file", param="out")
    chunk_patches(a.memory_mb, 1, 1)  # bad settings and a bad index fail before the model loads
    collection_shards(a.index)
    queries = encode_phrases(a.index, a.phrases, a.model)
    client = None
    if a.scheduler:
        from .distributed import connect

        client = connect(a.scheduler)
    elif a.local_workers:
        from .distributed import local_cluster

        client = local_cluster(a.local_workers)
    try:
        t0 = time.perf_counter()
        hits = search(a.index, queries, a.k, method=a.method or "auto", client=client, memory_mb=a.memory_mb,
                      nprobe=a.nprobe, rerank=a.rerank)
        dt = time.perf_counter() - t0
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None)
            client.close()
            if a.local_workers and cluster is not None:
                cluster.close()
    import pandas as pd

    df = pd.DataFrame(hits.rows(a.phrases), columns=["query", "rank", "scene", "tile", "patch", "similarity"])
    df = df.rename(columns={"query": "phrase"})
    if a.out is None:
        print(df.to_string(index=False))
    else:
        tmp = f"{a.out}.{os.getpid()}.tmp"
        (df.to_csv(tmp, index=False) if a.out.endswith(".csv") else df.to_parquet(tmp, index=False))
        os.replace(tmp, a.out)
    print(f"{len(df)} hit(s) for {len(a.phrases)} phrase(s) in {dt:.2f} s", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        _run(a)
    except GeoAlignError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
