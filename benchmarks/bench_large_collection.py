"""Search a collection larger than the memory a search may use: one process and a 2-worker Dask cluster.

Every search process runs under an enforced address-space limit (``RLIMIT_AS``, as ``ulimit -v``;
default 4 GiB): the single-process searches in a child process started with it, each Dask worker
after it started (``client.run``), with Dask's own per-worker memory limit on top. Their peak
resident memory (``VmHWM``) is reported beside the limit. The text tower does not run in them:
the client encodes a phrase and sends 512 floats (its time is measured apart, below).

    python benchmarks/simulated_collection.py runs/sim20m --patches 20000000     # ~10 GB
    python -m geoalign_core.index.large build-ann runs/sim20m --shards 2 --nlist 256 --pq-bits 4
    python benchmarks/bench_large_collection.py runs/sim20m --limit-gb 4 > runs/bench_large.md

Queries are :func:`simulated_collection.query_vectors`: new directions, never used to make
the patches. The exact top-10 of each (the streamed scan, one pass for all queries) is the
reference; the on-disk ANN search is timed per query, as a new phrase would arrive.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulated_collection import query_vectors  # noqa: E402


def _limit(gb: float) -> None:
    n = int(gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (n, n))


def _peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _vm_peak_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(root: str, q: np.ndarray, k: int, gb: float, memory_mb: float, method: str, out: mp.Queue) -> None:
    """One search process under the limit: ``exact`` (all queries in one pass) or ``ann`` (one by one)."""
    _limit(gb)
    try:
        from geoalign_core.index import ondisk, stream

        res: dict = {"method": method}
        if method == "exact":
            t0 = time.perf_counter()
            hits = stream.exact_search(root, q, k, memory_mb)
            res["seconds"] = time.perf_counter() - t0
            res["ids"] = [list(zip(hits.shard[t].tolist(), hits.patch[t].tolist())) for t in range(len(q))]
        else:
            times, ids = [], []
            for t in range(len(q)):
                t0 = time.perf_counter()
                hits = ondisk.ondisk_search(root, q[t:t + 1], k)
                times.append(time.perf_counter() - t0)
                ids.append(list(zip(hits.shard[0].tolist(), hits.patch[0].tolist())))
            res["times"], res["ids"] = times, ids
        res["peak_rss_mb"], res["vm_peak_mb"] = _peak_mb(), _vm_peak_mb()
        out.put(res)
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent (MemoryError under the limit)
        out.put({"method": method, "error": f"{type(exc).__name__}: {exc}", "peak_rss_mb": _peak_mb()})


def _in_child(*args) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_child, args=(*args, out))
    p.start()
    res = out.get()
    p.join()
    return res


def _worker_limit(gb: float) -> float:
    _limit(gb)
    return _vm_peak_mb()


def _worker_peak() -> float:
    return _peak_mb()


@contextlib.contextmanager
def _cluster(a: argparse.Namespace):
    """A local cluster whose workers run under the limit (Dask's memory limit, then RLIMIT_AS set in each)."""
    from geoalign_core.index.distributed import local_cluster

    client = local_cluster(a.workers, memory_limit=f"{a.limit_gb}GiB")
    try:
        client.run(_worker_limit, a.limit_gb)
        yield client
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


def _recall(got: list, ref: list) -> int:
    return len({tuple(x) for x in got} & {tuple(x) for x in ref})


def _text_tower_ms() -> str:
    """A new phrase through a ViT-B/16 text tower (open_clip, random weights: the time, not the answer)."""
    code = ("import time, torch, open_clip; torch.set_num_threads(1); m = open_clip.create_model('ViT-B-16');"
            "tok = open_clip.get_tokenizer('ViT-B-16'); m.eval();\n"
            "with torch.no_grad():\n m.encode_text(tok(['warm up']))\n t = time.perf_counter();"
            " m.encode_text(tok(['a solar farm beside a river'])); print((time.perf_counter() - t) * 1000)")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return f"{float(proc.stdout.strip()):.0f} ms"
    except (ValueError, subprocess.TimeoutExpired):
        return "not measured"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--limit-gb", type=float, default=4.0)
    ap.add_argument("--queries", type=int, default=5)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--memory-mb", type=float, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stage", choices=("exact", "ann", "all", "rerank"), default="all",
                    help="exact: the reference scans (no ANN index needed); ann: the ANN searches (after exact); "
                         "all: both; rerank: the ANN's recall and time for several --nprobe / --rerank (after "
                         "exact). Results are kept in ROOT/bench_large.json between stages")
    a = ap.parse_args()
    state_path = Path(a.root) / "bench_large.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() and a.stage in ("ann", "rerank") else {}
    from geoalign_core.index import ondisk, stream
    from geoalign_core.index.distributed import cluster_search

    shards = stream.collection_shards(a.root)
    n = sum(s.n for s in shards)
    disk = sum(os.path.getsize(s.path) for s in shards)
    q = query_vectors(a.queries, dim=shards[0].dim)
    if a.stage in ("exact", "all"):
        state = {"rows": [], "load": []}
        exact = _in_child(a.root, q, a.k, a.limit_gb, a.memory_mb, "exact")
        if "error" in exact:
            sys.exit(f"the exact scan failed under the limit: {exact['error']}")
        state["ref"] = [[list(x) for x in ids] for ids in exact["ids"]]
        state["rows"].append(("one process", "exact (streamed)",
                              f"{exact['seconds']:.1f} s for {a.queries} queries in one pass",
                              f"{a.k}/{a.k} (reference)", exact["peak_rss_mb"]))
        with _cluster(a) as client:
            t0 = time.perf_counter()
            hits = cluster_search(client, a.root, q, a.k, method="exact", memory_mb=a.memory_mb)
            dt = time.perf_counter() - t0
            same = [[list(x) for x in zip(hits.shard[t].tolist(), hits.patch[t].tolist())] for t in range(len(q))] \
                == state["ref"]
            peaks = client.run(_worker_peak)
        state["rows"].append((f"Dask, {a.workers} workers", "exact (streamed, a scene per task)",
                              f"{dt:.1f} s for {a.queries} queries in one pass",
                              f"{a.k}/{a.k}, {'identical to' if same else 'DIFFERENT from'} one process",
                              max(peaks.values())))
        state["load"].append(os.getloadavg()[0])
        state_path.write_text(json.dumps(state))
    if a.stage == "exact":
        return
    if "ref" not in state:
        sys.exit(f"run --stage exact first (no {state_path})")
    ref = state["ref"]
    if a.stage == "rerank":
        _rerank_sweep(a.root, q, a.k, ref)
        return
    rows = state["rows"]
    meta = json.loads((Path(a.root) / ondisk.DIRNAME / ondisk.META).read_text())
    ann = _in_child(a.root, q, a.k, a.limit_gb, a.memory_mb, "ann")
    if "error" in ann:
        sys.exit(f"the ANN search failed under the limit: {ann['error']}")
    rec = [_recall(g, r) for g, r in zip(ann["ids"], ref)]
    rows.append(("one process", "on-disk ANN", _times(ann["times"]), _recalls(rec, a.k), ann["peak_rss_mb"]))
    with _cluster(a) as client:
        times, ids = [], []
        for t in range(a.queries):
            t0 = time.perf_counter()
            hits = cluster_search(client, a.root, q[t:t + 1], a.k, method="ann")
            times.append(time.perf_counter() - t0)
            ids.append(list(zip(hits.shard[0].tolist(), hits.patch[0].tolist())))
        rec = [_recall(g, r) for g, r in zip(ids, ref)]
        peaks = client.run(_worker_peak)
    rows.append((f"Dask, {a.workers} workers", "on-disk ANN (a shard per worker)", _times(times),
                 _recalls(rec, a.k), max(peaks.values())))
    rows = [rows[0], rows[2], rows[1], rows[3]]
    state["load"].append(os.getloadavg()[0])
    print(f"| where | search | time per new phrase | exact top-{a.k} found | peak RSS (MB) | limit |")
    print("|---|---|---|---|---|---|")
    for where, how, t, r, rss in rows:
        print(f"| {where} | {how} | {t} | {r} | {rss:.0f} | RLIMIT_AS {a.limit_gb:g} GiB |")
    print()
    print(f"Collection: {n:,} simulated patches (512-d int8, 196 a tile) in {len(shards)} scenes, "
          f"{disk / 1e9:.2f} GB; on-disk ANN `{meta['kind']}`, {len(meta['shards'])} shards, "
          f"{meta['bytes'] / 1e9:.2f} GB on disk, built in {meta['seconds'] / 60:.0f} min. "
          f"Exact scan chunks: {a.memory_mb:g} MB. Text tower for a new phrase (ViT-B/16, client side): "
          f"{_text_tower_ms()}. Machine: {os.cpu_count()} cores shared with other jobs (load average "
          f"{' / '.join(f'{x:.1f}' for x in state['load'])} after each stage), {platform.machine()}, "
          f"Python {platform.python_version()}.")


def _rerank_sweep(root: str, q: np.ndarray, k: int, ref: list) -> None:
    """The on-disk ANN's recall of the exact top-k and its time per query for a few (nprobe, rerank), in this
    process (no memory limit)."""
    from geoalign_core.index import ondisk

    print(f"| nprobe | rerank | exact top-{k} found per query | time per query |")
    print("|---|---|---|---|")
    for nprobe, rerank in [(32, 1000), (32, 5000), (64, 5000), (128, 5000), (32, 20000)]:
        rec, ts = [], []
        for t in range(len(q)):
            t0 = time.perf_counter()
            hits = ondisk.ondisk_search(root, q[t:t + 1], k, nprobe=nprobe, rerank=rerank)
            ts.append(time.perf_counter() - t0)
            rec.append(_recall(list(zip(hits.shard[0].tolist(), hits.patch[0].tolist())), ref[t]))
        print(f"| {nprobe} | {rerank} | {', '.join(map(str, rec))} | median {statistics.median(ts):.2f} s, "
              f"max {max(ts):.2f} s |", flush=True)


def _times(ts: list[float]) -> str:
    return f"median {statistics.median(ts):.2f} s, max {max(ts):.2f} s (first, opening the index: {ts[0]:.2f} s)"


def _recalls(rec: list[int], k: int) -> str:
    return f"min {min(rec)}/{k}, mean {np.mean(rec):.1f}/{k} over {len(rec)} queries"


if __name__ == "__main__":
    main()
