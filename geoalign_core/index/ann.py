"""Approximate nearest-neighbour search over a collection's patches (FAISS), for large collections.

The exact search ranks every stored patch against the phrases (one int8 matrix product per
scene). Its cost grows with the collection; past :data:`ANN_MIN_PATCHES` patches (measured on
this project's benchmark machine: ``benchmarks/bench_collection.py``, docs/benchmarks.md,
"Many scenes") an inverted-file product-quantised FAISS index answers "which patches are
nearest this phrase" in milliseconds, and only the tiles holding the ``k`` nearest patches of
each phrase are then scored exactly (candidate boxes, the phrase-vs-background score).

The ANN index ranks patches by cosine similarity with the phrase alone (not against the
background phrases), and approximately, so it may miss what the exact search finds: it is a
filter for collections too large to scan, and ``exact=True`` (``geoalign find --exact``)
always scans everything.

Files (``idx/ann/``): ``patches.faiss`` (``IndexIVFPQ``, inner product over L2-normalised
patch vectors; an id is ``offset[scene] + tile_row * patches_per_tile + patch``) and
``ann.json`` (the scenes, their offsets and their patch files' digests: an ANN index of other
parts than the collection's is stale and not used). ``faiss-cpu`` from PyPI (the ``ann`` extra);
a GPU build of FAISS is used for the build when present.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .ivfpq import faiss_or_fail, ivfpq_index, pq_subquantizers, sample_evenly, unit_vectors
from .scenes import manifest_scenes, read_manifest
from .store import read_metadata

__all__ = ["ANN_MIN_PATCHES", "AnnIndex", "build_ann", "candidate_tiles", "choose"]

#: below this many stored patches the exact scan is fast enough (and exact): an exact query of one phrase
#: stays under 2 s on 2 CPU cores, and the ANN index saves at most a quarter of it (docs/benchmarks.md,
#: "Many scenes: exact scan or ANN", measured 2026-12-07: 1.3x at 4.4 M and 8.7 M patches)
ANN_MIN_PATCHES = 9_000_000
ANN_K_PER_RESULT = 20  #: nearest patches fetched per wanted result and phrase
ANN_K_MIN = 2000
NPROBE = 32
_TRAIN_MAX = 100_000


def _faiss() -> Any:
    return faiss_or_fail("the ANN index")


def ann_dir(root: Path) -> Path:
    return Path(root) / "ann"


def _parts_state(scenes: Any, part_metadata: Callable[[Any], tuple[dict, dict]]) -> list[dict]:
    """Per indexed scene: its name, tiles and patch file digest (``part_metadata(scene)``: its metadata)."""
    out = []
    for s in scenes:
        emb, _ = part_metadata(s)
        info = emb["patch_embeddings"]
        out.append({"scene": s.name, "tiles": int(info["shape"][0]), "digest": info.get("digest")})
    return out


class AnnIndex:
    """An opened ``idx/ann/``: ``search(queries, k)`` -> (scene name, tile row) pairs per query."""

    def __init__(self, index: Any, meta: dict) -> None:
        self.index = index
        self.meta = meta
        self.offsets = np.asarray([p["offset"] for p in meta["parts"]], dtype=np.int64)
        self.names = [p["scene"] for p in meta["parts"]]
        self.hw = int(meta["patches_per_tile"])

    @classmethod
    def load(cls, root: Path) -> AnnIndex | None:
        d = ann_dir(root)
        if not (d / "ann.json").is_file() or not (d / "patches.faiss").is_file():
            return None
        faiss = _faiss()
        meta = json.loads((d / "ann.json").read_text())
        return cls(faiss.read_index(str(d / "patches.faiss")), meta)

    def is_current(self, coll: Any) -> bool:
        state = _parts_state(coll.scenes, coll.part_metadata)
        return [(p["scene"], p["tiles"], p["digest"]) for p in state] == \
            [(p["scene"], p["tiles"], p["digest"]) for p in self.meta["parts"]]

    def search(self, queries: np.ndarray, k: int) -> dict[str, np.ndarray]:
        """The tiles holding the ``k`` nearest patches of any query: scene -> sorted tile rows."""
        self.index.nprobe = NPROBE
        q = np.ascontiguousarray(queries, dtype=np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True).clip(1e-12)
        _, ids = self.index.search(q, int(k))
        ids = np.unique(ids[ids >= 0])
        part = np.searchsorted(self.offsets, ids, side="right") - 1
        rows = (ids - self.offsets[part]) // self.hw
        out: dict[str, np.ndarray] = {}
        for k_part in np.unique(part):
            out[self.names[int(k_part)]] = np.unique(rows[part == k_part])
        return out


def _cached(coll: Any) -> tuple[AnnIndex | None, bool]:
    """The collection's ANN index and whether it covers the collection's parts, loaded once per
    version of ``ann.json`` (reading a 300 MB index for every query would cost more than it saves)."""
    meta = ann_dir(coll.root) / "ann.json"
    key = meta.stat().st_mtime_ns if meta.is_file() else None
    hit = coll._ann_cache
    if hit is not None and hit[0] == key:
        return hit[1], hit[2]
    ann = AnnIndex.load(coll.root) if key is not None else None
    current = ann is not None and ann.is_current(coll)
    coll._ann_cache = (key, ann, current)
    return ann, current


def choose(coll: Any, exact: bool | None) -> AnnIndex | None:
    """The ANN index a query of ``coll`` goes through, or None for the exact scan (see
    :meth:`SceneCollection.find`)."""
    if exact:
        return None
    ann, current = _cached(coll)
    if exact is False:
        if ann is None:
            raise InputError(f"{coll.root} has no ANN index: build it with geoalign index --ann ...", param="exact")
        if not current:
            raise InputError(f"the ANN index of {coll.root} is older than its scenes: rebuild it with "
                             "geoalign index --ann ...", param="exact")
        return ann
    if ann is None or coll.n_patches() < ANN_MIN_PATCHES:
        return None
    if not current:
        warnings.warn(f"the ANN index of {coll.root} is older than its scenes; searching exactly (rebuild it "
                      "with geoalign index --ann ...)", UserWarning, stacklevel=3)
        return None
    return ann


def candidate_tiles(ann: AnnIndex, enc: Any, phrases: list[str], max_results: int) -> dict[str, np.ndarray]:
    """scene -> tile rows holding the nearest patches of the phrases (``enc``: their text model)."""
    texts = enc.encode_phrases(phrases).float().cpu().numpy()
    k = max(ANN_K_MIN, ANN_K_PER_RESULT * int(max_results))
    return ann.search(texts, k)


def build_ann(root: str | os.PathLike, *, progress: Callable[[int, int], None] | None = None,
              seed: int = 0) -> dict:
    """Build ``root/ann/`` over every indexed scene of the collection ``root``; returns its facts.

    IVF with ``nlist = 2 sqrt(N)`` lists (16 .. 16,384), trained on up to 100,000 patches
    sampled evenly over the scenes; PQ with ``D/8`` sub-quantisers of 8 bits (64 bytes per
    512-d patch, 1/8 of the int8 patch file). Written to a temporary folder, then renamed.
    """
    faiss = _faiss()
    t0 = time.perf_counter()
    root = Path(root)
    scenes = [s for s in manifest_scenes(read_manifest(root)) if s.part(root).exists()]
    if not scenes:
        raise InputError(f"{root} holds no indexed scene yet: nothing to build an ANN index of", param="ann")
    parts = _parts_state(scenes, lambda s: read_metadata(s.part(root)))
    mats = [np.load(s.patches(root), mmap_mode="r") for s in scenes]
    hw, d = int(mats[0].shape[1]), int(mats[0].shape[2])
    total = sum(int(m.shape[0]) * hw for m in mats)
    nlist = int(min(16384, max(16, 2 * math.sqrt(total))))
    m = pq_subquantizers(d)
    sizes = np.asarray([int(mm.shape[0]) * hw for mm in mats])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    xt = sample_evenly([int(n) for n in sizes], min(total, max(_TRAIN_MAX, 40 * nlist)), seed,
                       lambda i, rows: np.asarray(mats[i].reshape(-1, d)[rows]))
    if len(xt) < nlist * 39 // 10:  # FAISS wants ~39 training points per list
        nlist = max(1, len(xt) // 39)
    cpu_index = ivfpq_index(faiss, d, nlist, m, 8)
    on_gpu = hasattr(faiss, "index_cpu_to_all_gpus") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
    index = faiss.index_cpu_to_all_gpus(cpu_index) if on_gpu else cpu_index  # a GPU build of FAISS: train there
    index.train(xt)
    done = 0
    step = max(1, (1 << 18) // hw)  # tiles added per call
    for i, mm in enumerate(mats):
        for lo in range(0, int(mm.shape[0]), step):
            block = np.asarray(mm[lo : lo + step])
            ids = offsets[i] + np.arange(lo * hw, lo * hw + block.shape[0] * hw, dtype=np.int64)
            index.add_with_ids(unit_vectors(block), ids)
            done += block.shape[0] * hw
            if progress is not None:
                progress(done, total)
    tmp = root / f".ann.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    faiss.write_index(faiss.index_gpu_to_cpu(index) if on_gpu else index, str(tmp / "patches.faiss"))
    meta = {"format": "geoalign-ann", "version": 1, "kind": f"IVF{nlist},PQ{m}x8 (inner product)",
            "patches": total, "patches_per_tile": hw, "dim": d, "nlist": nlist, "pq_m": m,
            "parts": [dict(p, offset=int(o)) for p, o in zip(parts, offsets)],
            "seconds": round(time.perf_counter() - t0, 2), "built_on": "gpu" if on_gpu else "cpu"}
    (tmp / "ann.json").write_text(json.dumps(meta, indent=1))
    final = ann_dir(root)
    old = root / f".ann.{os.getpid()}.old"
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return meta
