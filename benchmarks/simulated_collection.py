"""A simulated collection index of any size, in the real on-disk format, written streaming with NumPy.

``idx/manifest.json``, ``idx/parts/<scene>.parquet`` (a tile table with the metadata a search
reads) and ``idx/patches/<scene>.npy`` (int8 ``[tiles, h*w, D]``), for searches of
collections larger than memory (:mod:`geoalign_core.index.stream`, ``.ondisk``,
``.distributed``). No model runs: patch vectors are drawn around ``clusters`` random centres
(image patches of one kind of ground are alike) with per-tile drift (neighbouring patches
are alike), on the int8 scale of ``geoalign index``'s quantised patches.

    python benchmarks/simulated_collection.py runs/sim --patches 20000000

Query vectors for it: :func:`query_vectors` (a new direction near a few centres, off the
patches' own distribution as a text embedding is: CLIP's modality gap).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HW, DIM = 196, 512  # ViT-B/16 at 224 px: a 14 x 14 patch grid, 512-d


def centres(clusters: int, dim: int, seed: int) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal((clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def query_vectors(n: int, dim: int = DIM, clusters: int = 1024, seed: int = 0, query_seed: int = 1000) -> np.ndarray:
    """``n`` query vectors never used to make the patches: each a mix of 3 centres plus a shared
    offset (the modality gap) plus noise."""
    c = centres(clusters, dim, seed)
    rng = np.random.default_rng(query_seed)
    gap = rng.standard_normal(dim).astype(np.float32)
    gap /= np.linalg.norm(gap)
    out = []
    for _ in range(n):
        pick = rng.choice(clusters, 3, replace=False)
        v = c[pick].T @ rng.dirichlet([1, 1, 1]).astype(np.float32) + 0.8 * gap
        v += 0.3 * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def write_scene(root: Path, name: str, tiles: int, rng: np.random.Generator, c: np.ndarray,
                block_tiles: int = 256) -> None:
    hw, dim = HW, c.shape[1]
    ppath = root / "patches" / f"{name}.npy"
    mm = np.lib.format.open_memmap(ppath, mode="w+", dtype=np.int8, shape=(tiles, hw, dim))
    cq = np.round(c * (127.0 / np.abs(c).max())).astype(np.int16)  # centres on the int8 scale
    for lo in range(0, tiles, block_tiles):
        n = min(block_tiles, tiles - lo)
        tile_c = rng.integers(0, len(c), n)  # a tile's ground type
        own = rng.integers(0, len(c), (n, hw))  # some patches hold something else
        mix = rng.random((n, hw, 1), dtype=np.float32) < 0.3
        x = np.where(mix, cq[own], cq[tile_c][:, None, :])
        x += rng.integers(-4, 5, (n, 1, dim), dtype=np.int16)  # per-tile drift
        x += rng.integers(-78, 79, (n, hw, dim), dtype=np.int8)  # noise, std ~1.2 x a centre's
        mm[lo:lo + n] = np.clip(x, -127, 127).astype(np.int8)
    mm.flush()
    del mm
    digest = "sim-" + os.urandom(8).hex()
    emb = {"model": "simulated", "embedding": {"dim": dim},
           "patch_embeddings": {"file": f"../patches/{name}.npy", "shape": [tiles, hw, dim], "grid": [14, 14],
                                "dim": dim, "dtype": "int8", "digest": digest}}
    meta = {"format": "geoalign-scene-index", "version": 1, "simulated": True, "n_tiles": tiles}
    table = pa.table({"scene": pa.array([name] * tiles), "id": pa.array(np.arange(tiles, dtype=np.int32))})
    table = table.replace_schema_metadata({b"emb": json.dumps(emb).encode(), b"geoalign": json.dumps(meta).encode()})
    pq.write_table(table, root / "parts" / f"{name}.parquet")


def write_collection(root: str | os.PathLike, patches: int, scenes: int = 40, clusters: int = 1024,
                     seed: int = 0, verbose: bool = False) -> dict:
    root = Path(root)
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "patches").mkdir(exist_ok=True)
    c = centres(clusters, DIM, seed)
    tiles_total = -(-patches // HW)
    per = [tiles_total // scenes + (1 if i < tiles_total % scenes else 0) for i in range(scenes)]
    names = [f"sim{i:03d}" for i in range(scenes)]
    rng = np.random.default_rng(seed + 1)
    t0 = time.perf_counter()
    for i, (name, tiles) in enumerate(zip(names, per)):
        write_scene(root, name, tiles, rng, c)
        if verbose:
            print(f"  {name}: {tiles} tiles ({i + 1}/{scenes}, {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    doc = {"format": "geoalign-index-collection", "version": 1,
           "settings": {"model": "simulated", "model_fingerprint": "simulated", "tile_size": 224, "overlap": 0.0},
           "scenes": [{"name": n, "raster": f"simulated/{n}.tif", "pixels": t * 224 * 224,
                       "part": f"parts/{n}.parquet"} for n, t in zip(names, per)]}
    (root / "manifest.json").write_text(json.dumps(doc, indent=1))
    return {"scenes": scenes, "tiles": sum(per), "patches": sum(per) * HW,
            "bytes": sum(p.stat().st_size for p in (root / "patches").iterdir()),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--patches", type=int, default=20_000_000)
    ap.add_argument("--scenes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(write_collection(a.root, a.patches, a.scenes, seed=a.seed, verbose=True)))


if __name__ == "__main__":
    main()
