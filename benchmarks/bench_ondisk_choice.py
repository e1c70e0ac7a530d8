"""FAISS on-disk inverted lists vs a Lance dataset with an IVF_PQ index, on the same patches: which one the
on-disk approximate search (geoalign_core.index.ondisk) is built on.

Same index shape for both: IVF with 256 lists, PQ with 64 sub-quantisers of 8 bits, 32 lists probed,
the 1,000 nearest PQ candidates re-scored exactly (FAISS: from the int8 patch files, as
``ondisk_search`` does; Lance: ``refine_factor`` over its own stored vectors). Each query is timed
alone. Lance (``pylance``) is not a GeoAlign dependency: install it to run this.

    python benchmarks/simulated_collection.py runs/sim250k --patches 250000 --scenes 2
    python benchmarks/bench_ondisk_choice.py runs/sim250k
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulated_collection import query_vectors  # noqa: E402


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--queries", type=int, default=5)
    a = ap.parse_args()
    import lance
    import pyarrow as pa

    from geoalign_core.index import ondisk, stream

    root = Path(a.root)
    shards = stream.collection_shards(root)
    n = sum(s.n for s in shards)
    d = shards[0].dim
    q = query_vectors(a.queries, dim=d)
    exact = stream.exact_search(root, q, 10)
    ref = [set(zip(exact.shard[t].tolist(), exact.patch[t].tolist())) for t in range(len(q))]

    t0 = time.perf_counter()
    meta = ondisk.build_ondisk(root, nlist=256)
    f_build = time.perf_counter() - t0
    f_times, f_rec = [], []
    for t in range(len(q)):
        t0 = time.perf_counter()
        hits = ondisk.ondisk_search(root, q[t:t + 1], 10, nprobe=32, rerank=1000)
        f_times.append(time.perf_counter() - t0)
        f_rec.append(len(set(zip(hits.shard[0].tolist(), hits.patch[0].tolist())) & ref[t]))

    uri = root / "lance-choice.lance"
    shutil.rmtree(uri, ignore_errors=True)
    schema = pa.schema([("shard", pa.int32()), ("patch", pa.int64()), ("vector", pa.list_(pa.float32(), d))])

    def batches():
        for j, sh in enumerate(shards):
            mm = np.load(sh.path, mmap_mode="r").reshape(-1, d)
            for lo in range(0, sh.n, 65536):
                x = np.asarray(mm[lo:lo + 65536]).astype(np.float32)
                x /= np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
                yield pa.record_batch([pa.array(np.full(len(x), j, np.int32)),
                                       pa.array(np.arange(lo, lo + len(x), dtype=np.int64)),
                                       pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d)], schema=schema)

    t0 = time.perf_counter()
    ds = lance.write_dataset(pa.RecordBatchReader.from_batches(schema, batches()), str(uri))
    ds.create_index("vector", index_type="IVF_PQ", num_partitions=256, num_sub_vectors=64, metric="dot")
    l_build = time.perf_counter() - t0
    ds = lance.dataset(str(uri))
    l_times, l_rec = [], []
    for t in range(len(q)):
        t0 = time.perf_counter()
        tab = ds.to_table(columns=["shard", "patch"], nearest={"column": "vector", "q": q[t], "k": 10,
                                                               "nprobes": 32, "refine_factor": 100})
        l_times.append(time.perf_counter() - t0)
        l_rec.append(len(set(zip(tab["shard"].to_pylist(), tab["patch"].to_pylist())) & ref[t]))
    l_bytes = _size(uri)
    shutil.rmtree(uri, ignore_errors=True)

    print(f"{n:,} patches, {d}-d int8 ({sum(os.path.getsize(s.path) for s in shards) / 1e9:.2f} GB of patch files), "
          f"{len(q)} new query vectors, exact top-10 as reference; {os.cpu_count()} cores shared with other jobs "
          f"(load average {os.getloadavg()[0]:.1f})\n")
    print("| engine | build | extra disk | per patch | query: median (max) | exact top-10 found (min / mean) |")
    print("|---|---|---|---|---|---|")
    for name, build, size, times, rec in [
            (f"FAISS `{meta['kind']}` + rerank from the int8 files", f_build, meta["bytes"], f_times, f_rec),
            ("Lance IVF_PQ (256 partitions, 64 sub-vectors) + refine_factor 100", l_build, l_bytes, l_times, l_rec)]:
        print(f"| {name} | {build:.0f} s | {size / 1e9:.2f} GB | {size / n:.0f} B | "
              f"{statistics.median(times) * 1000:.0f} ms ({max(times) * 1000:.0f} ms) | "
              f"{min(rec)} / {np.mean(rec):.1f} |")


if __name__ == "__main__":
    main()
