"""The approximate patch search of a collection larger than memory: FAISS IVF-PQ with inverted lists on disk.

``idx/ann-disk/`` holds one or more **ANN shards**, each over a group of scenes (balanced by patch
count): ``shard-<i>.faiss`` (the coarse quantiser and PQ codebooks: a few MB, in memory) and
``shard-<i>.ivfdata`` (the inverted lists, ``faiss.OnDiskInvertedLists``: 72 bytes per patch,
memory-mapped, read per probed list), plus ``ondisk.json`` (the scenes, their offsets in their
shard, their patch files' digests). A query probes ``nprobe`` lists of each shard, takes the
``rerank`` nearest PQ candidates (more for coarser codes: :data:`RERANK_BY_BITS`) and scores them
exactly from the int8 patch files (one read of ``D`` bytes each), so the scores it returns are
the exact scan's (:mod:`.stream`) and only what it finds may differ. With several shards each is
searched alone and the best ``k`` merged: a Dask worker per shard (:mod:`.distributed`) or one
process, one after the other.

Why FAISS on-disk lists and not Lance: docs/scaling.md ("Search beyond memory") has the
measurement. The build is bounded too: patches are added in blocks of ``memory_mb``, each block
written as a small index, and the blocks merged into the on-disk lists.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .ivfpq import faiss_or_fail, ivfpq_index, pq_subquantizers, sample_evenly, unit_vectors
from .stream import DEFAULT_MEMORY_MB, Hits, PatchShard, collection_shards, is_url, merge_hits, normalized_queries

__all__ = ["DEFAULT_NPROBE", "DEFAULT_RERANK", "RERANK_BY_BITS", "OnDiskAnn", "build_ondisk", "default_nlist",
           "ondisk_search"]

DIRNAME = "ann-disk"
META = "ondisk.json"
FORMAT = "geoalign-ann-ondisk"
DEFAULT_NPROBE = 32  #: inverted lists probed per shard and query
DEFAULT_RERANK = 1000  #: PQ candidates per shard and query scored exactly (at least 20 x k), 8-bit codes
#: the default rerank per PQ code size: coarser codes rank the true neighbours lower. 4 bits at 20 M patches
#: (benchmarks/bench_large_collection.py): 1,000 found 4-8 of the exact top-10, 5,000 8-10, 20,000 10 of 10;
#: 8 bits at 1 M: 1,000 found 10 of 10. 6 bits: between the two, not measured.
RERANK_BY_BITS = {8: DEFAULT_RERANK, 6: 5000, 4: 20000}
_TRAIN_MIN = 50_000


def _faiss() -> Any:
    return faiss_or_fail("the on-disk ANN index")


def default_nlist(n_patches: int) -> int:
    """Inverted lists for ``n_patches``: the power of two nearest sqrt(N) / 4 (16 .. 65,536): 1,024 for
    20 M patches, 4,096 for 435 M (about 100,000 patches a list, so 32 probed lists read ~230 MB)."""
    x = max(1.0, math.sqrt(max(1, n_patches)) / 4)
    return int(min(65536, max(16, 2 ** round(math.log2(x)))))


def _groups(shards: Sequence[PatchShard], count: int) -> list[list[int]]:
    """Scenes (their numbers) per ANN shard: largest first to the lightest group, kept in collection order."""
    load = [0] * count
    groups: list[list[int]] = [[] for _ in range(count)]
    for i in sorted(range(len(shards)), key=lambda i: (-shards[i].n, i)):
        g = min(range(count), key=lambda j: (load[j], j))
        load[g] += shards[i].n
        groups[g].append(i)
    return [sorted(g) for g in groups if g]


def _read_rows(sh: PatchShard, rows: np.ndarray) -> np.ndarray:
    """int8 patch vectors at positions ``rows`` (sorted) of a scene's patch file, without mapping it."""
    out = np.empty((len(rows), sh.dim), dtype=np.int8)
    starts = sh.offset + rows.astype(np.int64) * sh.dim
    if is_url(sh.path):
        import fsspec

        fs, p = fsspec.core.url_to_fs(sh.path)
        blobs = fs.cat_ranges([p] * len(rows), starts.tolist(), (starts + sh.dim).tolist())
        for i, b in enumerate(blobs):
            out[i] = np.frombuffer(b, dtype=np.int8)
        return out
    fd = os.open(sh.path, os.O_RDONLY)
    try:
        for i, s in enumerate(starts.tolist()):
            b = os.pread(fd, sh.dim, s)
            if len(b) != sh.dim:
                raise InputError(f"the patch file {sh.path} is shorter than its header says", param="index")
            out[i] = np.frombuffer(b, dtype=np.int8)
    finally:
        os.close(fd)
    return out


def _blocks(shards: Sequence[PatchShard], members: list[int], rows_per_block: int):
    """(scene number, first row, int8 rows) blocks of at most ``rows_per_block`` patches."""
    for i in members:
        sh = shards[i]
        mm = np.load(sh.path, mmap_mode="r").reshape(-1, sh.dim)
        for lo in range(0, sh.n, rows_per_block):
            yield i, lo, np.asarray(mm[lo:lo + rows_per_block])
        del mm


def build_ondisk(root: str | os.PathLike, *, shards: int = 1, nlist: int | None = None,
                 pq_bits: int = 8, memory_mb: float = 4 * DEFAULT_MEMORY_MB, seed: int = 0,
                 progress: Callable[[int, int], None] | None = None) -> dict:
    """Build ``root/ann-disk/`` over every indexed scene of the local collection ``root``; returns its facts.

    ``shards``: ANN shards (one per search worker); ``nlist``: inverted lists (default
    :func:`default_nlist`); ``memory_mb``: the size of the blocks added at a time. IVF-PQ with
    ``D/8`` sub-quantisers of ``pq_bits`` bits (8: 64 bytes per 512-d patch; 4: 32 bytes and a
    build about twice as fast, candidates less precise before the exact rerank), inner product
    over L2-normalised vectors, trained on
    ``max(50,000, 40 nlist)`` patches sampled evenly. Written to a temporary folder, then renamed.
    """
    faiss = _faiss()
    t0 = time.perf_counter()
    root = Path(root)
    if is_url(root):
        raise InputError("the on-disk ANN index is built on a local collection (copy it, build, upload)",
                         param="index")
    if int(shards) < 1:
        raise InputError(f"shards must be >= 1; got {shards}", param="shards")
    pshards = collection_shards(root)
    total = sum(s.n for s in pshards)
    d = pshards[0].dim
    nlist = int(nlist) if nlist else default_nlist(total)
    if nlist < 1:
        raise InputError(f"nlist must be >= 1; got {nlist}", param="nlist")
    if int(pq_bits) not in (4, 6, 8):
        raise InputError(f"pq_bits must be 4, 6 or 8; got {pq_bits}", param="pq_bits")
    m = pq_subquantizers(d)
    xt = sample_evenly([s.n for s in pshards], max(_TRAIN_MIN, 40 * nlist), seed,
                       lambda i, rows: _read_rows(pshards[i], rows))
    nlist = max(1, min(nlist, len(xt) // 39))  # FAISS wants ~39 training points per list
    trained = ivfpq_index(faiss, d, nlist, m, int(pq_bits))
    trained.train(xt)
    del xt
    tmp = root / f".{DIRNAME}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    faiss.write_index(trained, str(tmp / "trained.faiss"))
    rows_per_block = max(1024, int(memory_mb * (1 << 20)) // (4 * d + 2 * (m + 8)))
    groups = _groups(pshards, int(shards))
    meta_shards = []
    done = 0
    for g, members in enumerate(groups):
        offsets, at = {}, 0
        for i in members:
            offsets[i], at = at, at + pshards[i].n
        block_files = []
        for b, (i, lo, block) in enumerate(_blocks(pshards, members, rows_per_block)):
            idx = faiss.read_index(str(tmp / "trained.faiss"))
            ids = offsets[i] + lo + np.arange(len(block), dtype=np.int64)
            idx.add_with_ids(unit_vectors(block), ids)
            block_files.append(tmp / f"block-{g}-{b}.faiss")
            faiss.write_index(idx, str(block_files[-1]))
            del idx
            done += len(block)
            if progress is not None:
                progress(done, total)
        _merge_blocks(faiss, tmp, g, block_files, nlist, trained.code_size)
        meta_shards.append({"file": f"shard-{g}.faiss", "patches": at,
                            "scenes": [{"scene": pshards[i].scene, "number": i, "offset": offsets[i],
                                        "tiles": pshards[i].tiles, "digest": pshards[i].digest} for i in members]})
    (tmp / "trained.faiss").unlink()
    meta = {"format": FORMAT, "version": 1, "kind": f"IVF{nlist},PQ{m}x{pq_bits} (inner product), on-disk lists",
            "patches": total, "patches_per_tile": pshards[0].hw, "dim": d, "nlist": nlist, "pq_m": m,
            "pq_bits": int(pq_bits),
            "shards": meta_shards, "seconds": round(time.perf_counter() - t0, 2),
            "bytes": sum(f.stat().st_size for f in tmp.iterdir())}
    (tmp / META).write_text(json.dumps(meta, indent=1))
    final, old = root / DIRNAME, root / f".{DIRNAME}.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return meta


def _merge_blocks(faiss: Any, folder: Path, g: int, block_files: list[Path], nlist: int, code_size: int) -> None:
    """The blocks' inverted lists merged into ``shard-<g>.ivfdata`` (on disk) and ``shard-<g>.faiss``."""
    blocks = []
    vec = faiss.InvertedListsPtrVector()
    for f in block_files:
        ix = faiss.read_index(str(f), faiss.IO_FLAG_MMAP)
        blocks.append(ix)
        vec.push_back(ix.invlists)
    lists = faiss.OnDiskInvertedLists(nlist, code_size, str(folder / f"shard-{g}.ivfdata"))
    ntotal = lists.merge_from_multiple(vec.data(), vec.size())
    index = faiss.read_index(str(folder / "trained.faiss"))
    index.ntotal = ntotal
    index.replace_invlists(lists, True)
    lists.this.disown()  # owned by the index now
    faiss.write_index(index, str(folder / f"shard-{g}.faiss"))
    del index, blocks, vec
    for f in block_files:
        f.unlink()


_OPEN: dict[tuple[str, int], Any] = {}  #: (index file, mtime) -> opened index, per process (a worker keeps its shard)


class OnDiskAnn:
    """An opened ``idx/ann-disk/``; :meth:`search_shard` answers for one ANN shard."""

    def __init__(self, root: str | os.PathLike, meta: dict) -> None:
        self.root = Path(root)
        self.meta = meta

    @classmethod
    def open(cls, root: str | os.PathLike, pshards: Sequence[PatchShard] | None = None) -> OnDiskAnn:
        """The collection's on-disk ANN index; an error when there is none or it is older than the scenes."""
        path = Path(root) / DIRNAME / META
        if not path.is_file():
            raise InputError(f"{root} has no on-disk ANN index: build it with "
                             f"python -m geoalign_core.index.large build-ann {root}", param="ann")
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise InputError(f"not a GeoAlign on-disk ANN index: {path}", param="ann")
        ann = cls(root, meta)
        pshards = collection_shards(root) if pshards is None else pshards
        have = sorted((s["scene"], s["number"], s["tiles"], s["digest"]) for g in meta["shards"] for s in g["scenes"])
        now = sorted((p.scene, i, p.tiles, p.digest) for i, p in enumerate(pshards))
        if have != now:
            raise InputError(f"the on-disk ANN index of {root} is older than its scenes: rebuild it with "
                             f"python -m geoalign_core.index.large build-ann {root}", param="ann")
        return ann

    @property
    def n_shards(self) -> int:
        return len(self.meta["shards"])

    @property
    def default_rerank(self) -> int:
        """Candidates per shard scored exactly when the caller does not say: :data:`RERANK_BY_BITS` of its codes."""
        return RERANK_BY_BITS.get(int(self.meta.get("pq_bits", 8)), DEFAULT_RERANK)

    def _index(self, g: int) -> Any:
        faiss = _faiss()
        path = self.root / DIRNAME / self.meta["shards"][g]["file"]
        key = (str(path), path.stat().st_mtime_ns)
        if key not in _OPEN:
            for old in [k for k in _OPEN if k[0] == key[0]]:
                del _OPEN[old]
            _OPEN[key] = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
        return _OPEN[key]

    def search_shard(self, g: int, queries: np.ndarray, k: int, pshards: Sequence[PatchShard],
                     nprobe: int = DEFAULT_NPROBE, rerank: int | None = None) -> Hits:
        """The best ``k`` patches of ANN shard ``g`` per (normalised) query, scored exactly (``rerank``
        candidates; None: :attr:`default_rerank`)."""
        index = self._index(g)
        index.nprobe = max(1, int(nprobe))
        n_cand = max(int(self.default_rerank if rerank is None else rerank), 20 * int(k))
        _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), n_cand)
        scenes = self.meta["shards"][g]["scenes"]
        offs = np.asarray([s["offset"] for s in scenes], dtype=np.int64)
        nums = np.asarray([s["number"] for s in scenes], dtype=np.int64)
        parts = []
        for t in range(len(queries)):
            got = np.unique(ids[t][ids[t] >= 0])
            which = np.searchsorted(offs, got, side="right") - 1
            rows_s, rows_j, rows_p = [], [], []
            for w in np.unique(which):
                local = got[which == w] - offs[w]
                sh = pshards[int(nums[w])]
                x = _read_rows(sh, local).astype(np.float32)
                norm = np.sqrt(np.einsum("ij,ij->i", x, x))
                norm[norm == 0] = np.inf
                rows_s.append(((queries[t:t + 1] @ x.T) / norm)[0])
                rows_j.append(np.full(len(local), nums[w]))
                rows_p.append(local)
            if not rows_s:
                empty = np.zeros((1, 0), np.int64)
                parts.append(merge_hits([Hits(np.zeros((1, 0), np.float32), empty, empty)], k))
                continue
            one = Hits(np.concatenate(rows_s)[None].astype(np.float32), np.concatenate(rows_j)[None],
                       np.concatenate(rows_p)[None])
            parts.append(merge_hits([one], k))
        return Hits(np.concatenate([h.score for h in parts]), np.concatenate([h.shard for h in parts]),
                    np.concatenate([h.patch for h in parts]), list(pshards))


def ondisk_search(root: str | os.PathLike, queries: Any, k: int = 10, *, nprobe: int = DEFAULT_NPROBE,
                  rerank: int | None = None) -> Hits:
    """The approximate best ``k`` patches per query vector, every ANN shard in this process."""
    if int(k) < 1:
        raise InputError(f"k must be >= 1; got {k}", param="k")
    pshards = collection_shards(root)
    ann = OnDiskAnn.open(root, pshards)
    q = normalized_queries(queries)
    parts = [ann.search_shard(g, q, int(k), pshards, nprobe, rerank) for g in range(ann.n_shards)]
    return merge_hits(parts, int(k), pshards)
