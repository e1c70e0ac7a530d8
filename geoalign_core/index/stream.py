"""The exact patch search of a collection larger than memory: patch files streamed in bounded chunks.

A collection's patches (``idx/patches/<scene>.npy``, int8 ``[tiles, h*w, D]``) are read in
chunks of at most ``memory_mb`` megabytes of working memory (the int8 chunk, its float32
copy and its scores), never memory-mapped whole, so the memory a query holds is set by
``memory_mb`` and not by the collection's size: 435 M patches (10,000 km² at 0.3 m with
ViT-B/16, docs/scaling.md "A whole country") stream through the same 256 MB as 4 M.

A patch's score is the cosine similarity of its vector with the query vector (the int8 vector's
scale cancels out). Ties are broken by the scene's place in the collection, then by the
patch's place in its file, so every way of splitting the work (one process, chunks of any
size, a Dask cluster: :mod:`.distributed`) returns the same ranking.

Nothing here imports torch: a search worker needs NumPy and PyArrow only (and fsspec for
collections on object storage, ``s3://`` / ``gs://`` / ``file://`` roots).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import InputError

__all__ = ["DEFAULT_MEMORY_MB", "Hits", "PatchShard", "chunk_patches", "collection_shards", "exact_search",
           "merge_hits", "scan_shard"]

DEFAULT_MEMORY_MB = 256  #: working memory of one scan (chunk, its float copy, its scores), in MB
_MIN_CHUNK = 1024  #: patches per chunk at the least, whatever the setting


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(root: str | os.PathLike, *parts: str) -> str:
    """``root/part/...`` for a local folder or an fsspec URL."""
    if is_url(root):
        return "/".join([str(root).rstrip("/"), *parts])
    return str(Path(root).joinpath(*parts))


def open_binary(path: str) -> IO[bytes]:
    """A local file, or a file on object storage through fsspec (``s3://``, ``gs://``, ``file://``)."""
    if is_url(path):
        try:
            import fsspec
        except ImportError:
            raise InputError(f"{path} is a URL: reading it needs fsspec (pip install 'geoalign[distributed]', "
                             "plus s3fs or gcsfs for s3:// or gs://)", param="index") from None
        try:
            return fsspec.open(path, "rb").open()
        except (FileNotFoundError, ValueError, ImportError) as exc:
            raise InputError(f"cannot open {path}: {exc}", param="index") from None
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open {path}: {exc.strerror or exc}", param="index") from None


@dataclass(frozen=True)
class PatchShard:
    """One scene's patch file, as a scan reads it: ``offset`` is where its int8 data starts."""

    scene: str
    path: str
    tiles: int
    hw: int
    dim: int
    offset: int
    digest: str | None = None

    @property
    def n(self) -> int:
        return self.tiles * self.hw


def _npy_header(f: IO[bytes], path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, OSError) as exc:
        raise InputError(f"not a patch file (.npy): {path} ({exc})", param="index") from None
    if fortran or dtype != np.int8 or len(shape) != 3:
        raise InputError(f"{path} holds {dtype} {list(shape)}, not int8 [tiles, patches, dim]", param="index")
    return tuple(int(s) for s in shape), dtype, f.tell()


def _part_emb(part: str) -> dict:
    """The ``emb`` metadata of a collection's part (its Parquet footer only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_binary(part) as f:
        try:
            kv = pq.read_schema(f).metadata or {}
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"not a GeoAlign index part: {part} ({exc})", param="index") from None
    try:
        meta, emb = json.loads(kv[b"geoalign"]), json.loads(kv[b"emb"])
        emb["patch_embeddings"]["file"]
    except (KeyError, TypeError, ValueError):
        raise InputError(f"not a GeoAlign index part: {part} (no patch metadata)", param="index") from None
    if meta.get("format") != "geoalign-scene-index":
        raise InputError(f"not a GeoAlign index part: {part}", param="index")
    return emb


def read_manifest_any(root: str | os.PathLike) -> dict:
    """A collection's manifest, from a local folder or an fsspec URL."""
    from .scenes import COLLECTION_FORMAT, MANIFEST

    try:
        with open_binary(join(root, MANIFEST)) as f:
            doc = json.loads(f.read())
    except InputError:
        raise InputError(f"not a collection index: {root} has no readable {MANIFEST}", param="index") from None
    except ValueError as exc:
        raise InputError(f"unreadable {join(root, MANIFEST)}: {exc}", param="index") from None
    if doc.get("format") != COLLECTION_FORMAT:
        raise InputError(f"not a GeoAlign collection index: {root}", param="index")
    return doc


def collection_shards(root: str | os.PathLike, scenes: Sequence[str] | None = None) -> list[PatchShard]:
    """The patch files of a collection's indexed scenes (``scenes``: only these), in the manifest's order.

    Reads the manifest, each part's Parquet footer and each patch file's header: nothing else.
    """
    from .scenes import manifest_scenes

    doc = read_manifest_any(root)
    listed = manifest_scenes(doc)
    if scenes is not None:
        unknown = sorted(set(scenes) - {s.name for s in listed})
        if unknown:
            raise InputError(f"no scene {unknown[0]!r} in {root}", param="scenes")
        listed = [s for s in listed if s.name in set(scenes)]
    out = []
    for s in listed:
        part = join(root, "parts", f"{s.name}.parquet")
        try:
            emb = _part_emb(part)
        except InputError:
            if _exists(part):
                raise
            continue  # listed, not indexed (yet)
        info = emb["patch_embeddings"]
        ppath = join(root, "parts", *str(info["file"]).replace(os.sep, "/").split("/"))
        ppath = ppath if is_url(ppath) else os.path.normpath(ppath)
        with open_binary(ppath) as f:
            shape, _, offset = _npy_header(f, ppath)
        out.append(PatchShard(s.name, ppath, shape[0], shape[1], shape[2], offset, info.get("digest")))
    if not out:
        raise InputError(f"{root} holds no indexed scene", param="index")
    if len({(p.hw, p.dim) for p in out}) > 1:
        raise InputError(f"the scenes of {root} have patch grids of different sizes", param="index")
    return out


def _exists(path: str) -> bool:
    if is_url(path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return bool(fs.exists(p))
    return Path(path).exists()


def chunk_patches(memory_mb: float, dim: int, n_queries: int) -> int:
    """Patches per chunk that fit ``memory_mb``: int8 vector + float32 copy + norm + one score per query."""
    if not memory_mb or memory_mb <= 0:
        raise InputError(f"memory_mb must be > 0; got {memory_mb}", param="memory_mb")
    per_patch = 5 * dim + 8 + 8 * n_queries
    return max(_MIN_CHUNK, int(memory_mb * (1 << 20)) // per_patch)


@dataclass
class Hits:
    """The best ``k`` patches per query: ``score`` float32 ``[T, k]`` (cosine similarity, best first),
    ``shard`` (index into ``shards``) and ``patch`` (position in that scene's file: tile row x h*w +
    patch) int64 ``[T, k]``; -1 where fewer than ``k`` patches exist."""

    score: np.ndarray
    shard: np.ndarray
    patch: np.ndarray
    shards: list[PatchShard] = field(default_factory=list)

    def rows(self, phrases: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per hit: query, rank, scene, tile (row in the scene's part), patch (in the tile's
        row-major h x w grid), similarity."""
        out = []
        for t in range(self.score.shape[0]):
            for r in range(self.score.shape[1]):
                j = int(self.shard[t, r])
                if j < 0:
                    continue
                sh, flat = self.shards[j], int(self.patch[t, r])
                out.append({"query": phrases[t] if phrases is not None else t, "rank": r + 1, "scene": sh.scene,
                            "tile": flat // sh.hw, "patch": flat % sh.hw, "similarity": float(self.score[t, r])})
        return out


def normalized_queries(queries: Any) -> np.ndarray:
    q = np.array(queries, dtype=np.float32, ndmin=2)
    if q.ndim != 2 or not np.all(np.isfinite(q)):
        raise InputError("query vectors must be a finite [T, D] array", param="queries")
    q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
    return q


def _keep_best(score: np.ndarray, shard: np.ndarray, patch: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """Per row, the ``k`` best of the candidates: score descending, then shard, then patch ascending."""
    t = score.shape[0]
    out_s = np.full((t, k), -np.inf, dtype=np.float32)
    out_j = np.full((t, k), -1, dtype=np.int64)
    out_p = np.full((t, k), -1, dtype=np.int64)
    for i in range(t):
        ok = shard[i] >= 0
        s, j, p = score[i][ok], shard[i][ok], patch[i][ok]
        order = np.lexsort((p, j, -s.astype(np.float64)))[:k]
        m = len(order)
        out_s[i, :m], out_j[i, :m], out_p[i, :m] = s[order], j[order], p[order]
    return out_s, out_j, out_p


def merge_hits(parts: Sequence[Hits], k: int, shards: list[PatchShard] | None = None) -> Hits:
    """The best ``k`` per query over several partial results (their ``shard`` numbers are global)."""
    if not parts:
        raise ValueError("nothing to merge")
    s = np.concatenate([h.score for h in parts], axis=1)
    j = np.concatenate([h.shard for h in parts], axis=1)
    p = np.concatenate([h.patch for h in parts], axis=1)
    bs, bj, bp = _keep_best(s, j, p, k)
    return Hits(bs, bj, bp, shards if shards is not None else parts[0].shards)


def _read_into(f: IO[bytes], buf: np.ndarray, path: str) -> None:
    view = memoryview(buf).cast("B")  # type: ignore[arg-type]  # an ndarray is a buffer; the stubs miss it
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise InputError(f"the patch file {path} is shorter than its header says: rebuild the index",
                             param="index")
        got += n


def _padded(rows: list[tuple[np.ndarray, np.ndarray]], number: int) -> Hits:
    width = max(1, max(len(r[0]) for r in rows))
    t = len(rows)
    out = Hits(np.full((t, width), -np.inf, np.float32), np.full((t, width), -1, np.int64),
               np.full((t, width), -1, np.int64))
    for i, (sc, ids) in enumerate(rows):
        out.score[i, :len(sc)], out.shard[i, :len(sc)], out.patch[i, :len(sc)] = sc, number, ids
    return out


def _chunk_best(s: np.ndarray, k: int, lo: int, number: int) -> Hits:
    """Per query, the chunk's patches that score at least its ``k``-th best (every tie kept, so the
    tie-break by position does not depend on where chunks start)."""
    m = s.shape[1]
    rows = []
    for row in s:
        if k < m:
            thr = np.partition(row, m - k)[m - k]
            idx = np.flatnonzero(row >= thr)
        else:
            idx = np.arange(m)
        rows.append((row[idx], lo + idx))
    return _padded(rows, number)


def scan_shard(shard: PatchShard, queries: np.ndarray, k: int, memory_mb: float = DEFAULT_MEMORY_MB,
               number: int = 0) -> Hits:
    """The exact best ``k`` patches of one scene per query (``queries``: L2-normalised ``[T, D]``),
    streamed in chunks that fit ``memory_mb``; ``number``: the shard's place in the collection."""
    t, d = queries.shape
    if d != shard.dim:
        raise InputError(f"query vectors have {d} dimensions, the patches of {shard.scene} {shard.dim}",
                         param="queries")
    chunk = chunk_patches(memory_mb, d, t)
    buf = np.empty((min(chunk, max(shard.n, 1)), d), dtype=np.int8)
    best = Hits(np.full((t, 0), -np.inf, np.float32), np.zeros((t, 0), np.int64), np.zeros((t, 0), np.int64))
    with open_binary(shard.path) as f:
        f.seek(shard.offset)
        for lo in range(0, shard.n, chunk):
            m = min(chunk, shard.n - lo)
            _read_into(f, buf[:m], shard.path)
            x = buf[:m].astype(np.float32)
            norm = np.sqrt(np.einsum("ij,ij->i", x, x))
            norm[norm == 0] = np.inf  # an all-zero vector scores 0
            s = (queries @ x.T) / norm  # [T, m]
            del x
            best = merge_hits([best, _chunk_best(s, k, lo, number)], k)
    return best


def exact_search(root: str | os.PathLike | Sequence[PatchShard], queries: Any, k: int = 10,
                 memory_mb: float = DEFAULT_MEMORY_MB) -> Hits:
    """The exact best ``k`` patches of the collection per query vector, one scene after another in
    ``memory_mb`` of working memory (see the module docstring)."""
    if int(k) < 1:
        raise InputError(f"k must be >= 1; got {k}", param="k")
    shards = collection_shards(root) if isinstance(root, (str, os.PathLike)) else list(root)
    q = normalized_queries(queries)
    parts = [scan_shard(sh, q, int(k), memory_mb, number=i) for i, sh in enumerate(shards)]
    return merge_hits(parts, int(k), shards)
