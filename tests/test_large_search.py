"""Patch search over collections larger than memory: the streamed exact scan (bounded chunks), the
on-disk FAISS index, and the same query fanned out over a local Dask cluster of 2 workers.

A real collection: three small rasters indexed by ``geoalign index`` with the random GeoAlign-Tiny
model. The distributed search must return exactly what one process returns (patches, order and
scores); the streamed scan must equal a plain NumPy search over the whole patch files, whatever
the chunk size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from generate import sample_crop, textured_raster

from geoalign_core.errors import InputError
from geoalign_core.index import ondisk, stream
from geoalign_core.index.large import encode_phrases, search

ROOT = Path(__file__).resolve().parents[1]
PHRASES = ["a swimming pool", "red roof", "parking lot with cars"]


def _needs(name: str):
    """The optional package, or a skip outside CI (in CI a missing extra is a failure)."""
    if os.environ.get("CI"):
        return __import__(name)
    return pytest.importorskip(name)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def coll(tiny_ckpt, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("large")
    rasters = [sample_crop(d / "a.tif", size=384), textured_raster(d / "b.tif", width=400, height=300),
               sample_crop(d / "c.tif", size=256, col=100, row=900)]
    root = d / "idx"
    proc = subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", *map(str, rasters), "--out", str(root),
                           "--model", tiny_ckpt, "--quiet"], capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def queries(coll, tiny_ckpt) -> np.ndarray:
    return encode_phrases(coll, PHRASES, tiny_ckpt)


def _brute_force(root: Path, q: np.ndarray, k: int) -> list[list[tuple[str, int, float]]]:
    """Every patch of every scene in memory at once, float64: (scene, patch, score) best first."""
    shards = stream.collection_shards(root)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    allx = [(sh.scene, np.load(sh.path).reshape(-1, sh.dim).astype(np.float64)) for sh in shards]
    out = []
    for t in range(len(qn)):
        cand = []
        for name, x in allx:
            s = (x @ qn[t]) / np.linalg.norm(x, axis=1)
            cand += [(name, int(i), float(s[i])) for i in np.argsort(-s)[:k]]
        out.append(sorted(cand, key=lambda c: -c[2])[:k])
    return out


def _same(a: stream.Hits, b: stream.Hits) -> bool:
    return np.array_equal(a.score, b.score) and np.array_equal(a.shard, b.shard) and np.array_equal(a.patch, b.patch)


def test_streamed_scan_is_exact_and_chunk_independent(coll, queries):
    k = 25
    big = stream.exact_search(coll, queries, k, memory_mb=512)
    shards = stream.collection_shards(coll)
    assert len(shards) == 3 and stream.chunk_patches(512, shards[0].dim, 3) > max(s.n for s in shards)
    small = stream.exact_search(coll, queries, k, memory_mb=0.5)  # chunks of ~1,000 patches: many per scene
    assert stream.chunk_patches(0.5, shards[0].dim, 3) < min(s.n for s in shards)
    assert _same(big, small)
    ref = _brute_force(coll, queries, k)
    for t, rows in enumerate(ref):
        np.testing.assert_allclose(big.score[t], [s for _, _, s in rows], atol=1e-5)
        got = [(shards[int(j)].scene, int(p)) for j, p in zip(big.shard[t], big.patch[t])]
        scores = [s for _, _, s in rows]
        for r in range(k - 1):  # the same patch at every rank that is not a near-tie
            if min(abs(scores[r] - scores[r + 1]), abs(scores[r] - scores[r - 1]) if r else 1) > 1e-5:
                assert got[r] == rows[r][:2], (t, r)
    rows = big.rows(PHRASES)
    assert len(rows) == 3 * k and rows[0]["rank"] == 1 and rows[0]["query"] == PHRASES[0]
    assert 0 <= rows[0]["patch"] < shards[0].hw


def test_file_url_streams_through_fsspec(coll, queries):
    _needs("fsspec")
    local = stream.exact_search(coll, queries, 10)
    remote = stream.exact_search(f"file://{coll}", queries, 10)
    assert _same(local, remote) and remote.shards[0].path.startswith("file://")


def test_coarser_codes_rescore_more_candidates_by_default(tmp_path):
    # measured at 20 M patches (docs/benchmarks.md): 4-bit codes need 20,000 candidates for the exact top-10
    assert ondisk.OnDiskAnn(tmp_path, {"pq_bits": 4}).default_rerank == ondisk.RERANK_BY_BITS[4] == 20000
    assert ondisk.OnDiskAnn(tmp_path, {"pq_bits": 8}).default_rerank == ondisk.DEFAULT_RERANK == 1000
    assert ondisk.OnDiskAnn(tmp_path, {}).default_rerank == ondisk.DEFAULT_RERANK  # an index made before the key


def test_on_disk_ann(coll, queries):
    _needs("faiss")
    meta = ondisk.build_ondisk(coll, shards=2, nlist=8)
    assert (coll / "ann-disk" / "shard-0.ivfdata").is_file() and (coll / "ann-disk" / "shard-1.ivfdata").is_file()
    assert meta["patches"] == sum(s.n for s in stream.collection_shards(coll)) and len(meta["shards"]) == 2
    exact = stream.exact_search(coll, queries, 10)
    # every list probed and every candidate scored exactly: the exact result (scores to float32 rounding:
    # the rerank's matrix product has other shapes than the scan's)
    full = ondisk.ondisk_search(coll, queries, 10, nprobe=8, rerank=meta["patches"])
    assert np.array_equal(full.shard, exact.shard) and np.array_equal(full.patch, exact.patch)
    np.testing.assert_allclose(full.score, exact.score, rtol=0, atol=1e-6)
    # fewer lists and candidates: an approximate answer (random weights give it no structure to use), whose
    # similarities are still the exact ones, best first, and whose recall grows with the lists probed
    recall = {}
    for nprobe, rerank in [(1, 100), (4, 1000)]:
        few = ondisk.ondisk_search(coll, queries, 10, nprobe=nprobe, rerank=rerank)
        recall[nprobe] = sum(len(set(zip(few.shard[t], few.patch[t])) & set(zip(exact.shard[t], exact.patch[t])))
                             for t in range(len(PHRASES)))
        assert np.all(np.diff(few.score, axis=1) <= 0)
        for t in range(len(PHRASES)):
            for j, p, s in zip(few.shard[t], few.patch[t], few.score[t]):
                sh = exact.shards[int(j)]
                x = np.load(sh.path, mmap_mode="r").reshape(-1, sh.dim)[int(p)].astype(np.float64)
                q = queries[t] / np.linalg.norm(queries[t])
                assert abs(float(x @ q / np.linalg.norm(x)) - float(s)) < 1e-5
    assert recall[4] >= recall[1] and recall[4] >= 10, recall
    assert search(coll, queries, 10, nprobe=8, rerank=meta["patches"]).shard.shape == (3, 10)  # auto: the ANN


def test_stale_on_disk_ann_is_refused(coll, queries, tmp_path):
    _needs("faiss")
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(coll, copy)
    if not (copy / "ann-disk").is_dir():
        ondisk.build_ondisk(copy, nlist=4)
    meta = json.loads((copy / "ann-disk" / "ondisk.json").read_text())
    meta["shards"][0]["scenes"][0]["digest"] = "0" * 32
    (copy / "ann-disk" / "ondisk.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="older than its scenes"):
        ondisk.ondisk_search(copy, queries, 5)


def test_cluster_search_equals_one_process(coll, queries):
    _needs("distributed")
    _needs("faiss")
    from geoalign_core.index.distributed import cluster_search, local_cluster

    if not (coll / "ann-disk").is_dir():
        ondisk.build_ondisk(coll, shards=2, nlist=8)
    client = local_cluster(2, memory_limit="2GB")
    try:
        assert len(client.scheduler_info()["workers"]) == 2
        one = stream.exact_search(coll, queries, 15, memory_mb=1)
        many = cluster_search(client, coll, queries, 15, method="exact", memory_mb=1)
        assert _same(one, many)
        one_ann = ondisk.ondisk_search(coll, queries, 10, nprobe=3, rerank=300)
        many_ann = cluster_search(client, coll, queries, 10, method="ann", nprobe=3, rerank=300)
        assert _same(one_ann, many_ann)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoalign_core.index.large", *args], capture_output=True,
                          text=True, env=_env(), timeout=600)


def test_command_line(coll, tmp_path):
    out = tmp_path / "hits.csv"
    proc = _cli("search", str(coll), "red roof", "-k", "7", "--exact", "--memory-mb", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    df = pd.read_csv(out)
    assert list(df.columns) == ["phrase", "rank", "scene", "tile", "patch", "similarity"] and len(df) == 7
    assert df["similarity"].is_monotonic_decreasing and set(df["phrase"]) == {"red roof"}
    for args, msg in [(("search", str(coll), "x", "-k", "0"), "k must be >= 1"),
                      (("search", str(tmp_path / "nope"), "x"), "not a collection index"),
                      (("search", str(coll), "x", "--out", str(out)), "exists"),
                      (("search", str(coll), "x", "--memory-mb", "-1", "--exact"), "memory_mb must be > 0"),
                      (("build-ann", str(tmp_path / "nope")), "not a local collection index")]:
        proc = _cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], (args, proc.stderr)
