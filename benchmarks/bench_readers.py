#!/usr/bin/env python3
"""Tile-reader throughput against the number of readers (``--workers``), no model.

    PYTHONPATH=. python benchmarks/bench_readers.py [--workers 1 2] [--repeat 5] [--size 8192] [--write]

Two rasters are made from the real aerial scene ``oam_manila_bridge_rgb.tif`` (2048 px, RGB,
``../shared/real_data``; the committed synthetic ``sample_data/scene.tif`` when it is absent),
mirrored into a ``--size`` px square: a tiled GeoTIFF (256 px blocks, deflate) and a tiled
JPEG-compressed one (YCbCr, quality 90). Each is read the way the image pass reads a raster
(:func:`geoalign_core.inference._reader.iter_batches`: 224 px windows at overlap 0.25, read,
normalised, invalid pixels filled, copied into batches of 16) with 1 reader (a background thread
of this process) and 2, ... reader processes (:mod:`geoalign_core.geo.tile_workers`).

The machine may be shared: the worker counts are run interleaved (their order alternates from one
repeat to the next), each repeat gives a ratio of its own, and the table shows the median over the
repeats, with the best and worst ratio. CPU time per tile is split between this process and the
reader processes (read from ``/proc``), to show whether the extra readers only spread the same
work or add some.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, cpu_summary, git_commit, publish, table  # noqa: E402

sys.path.insert(0, str(ROOT))

HEADING = "## Tile readers: throughput against reader processes"
OLD_HEADING = "## Tile readers: throughput against reader threads"
REAL = ROOT.parent / "shared" / "real_data" / "oam_manila_bridge_rgb.tif"
TILE, OVERLAP, BATCH = 224, 0.25, 16


def make_rasters(workdir: Path, size: int) -> dict[str, Path]:
    """The two test rasters (see the module docstring), ``size`` px square."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    src_path = REAL if REAL.is_file() else ROOT / "sample_data" / "scene.tif"
    with rasterio.open(src_path) as src:
        data = src.read(indexes=[1, 2, 3])
        crs = src.crs
    _, h, w = data.shape
    if size < min(h, w):  # the middle of the scene (its borders may be nodata)
        y0, x0 = (h - size) // 2, (w - size) // 2
        data = data[:, y0 : y0 + size, x0 : x0 + size]
        _, h, w = data.shape
    reps_y, reps_x = -(-size // h), -(-size // w)
    rows = [np.concatenate([data if (i + j) % 2 == 0 else data[:, :, ::-1] for j in range(reps_x)], axis=2)
            for i in range(reps_y)]
    rows = [r if i % 2 == 0 else r[:, ::-1, :] for i, r in enumerate(rows)]
    mosaic = np.ascontiguousarray(np.concatenate(rows, axis=1)[:, :size, :size])
    base = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
            "crs": crs or "EPSG:32651", "transform": from_origin(500000.0, 1600000.0, 0.3, 0.3), "tiled": True,
            "blockxsize": 256, "blockysize": 256}
    out = {"tiled GeoTIFF (deflate)": workdir / "tiled_deflate.tif",
           "tiled GeoTIFF (JPEG, YCbCr)": workdir / "tiled_jpeg.tif"}
    profiles = [{"compress": "deflate"}, {"compress": "jpeg", "photometric": "ycbcr", "jpeg_quality": 90}]
    for path, extra in zip(out.values(), profiles):
        with rasterio.open(path, "w", **base, **extra) as dst:
            dst.write(mosaic)
    return out


EXPLAIN = (
    "How the readers work: with `--workers 1` a background thread of the main process reads the tiles and "
    "stacks the batches; with 2 or more, reader processes (`python -m geoalign_core.geo.reader_process`, "
    "started once per process and reused) each read one contiguous part of every row of tiles (worker 0 the "
    "west part, worker 1 the east part, the same in every row) and normalise every tile straight into shared "
    "memory, and the main process hands the batches on as views (its CPU per tile: the \"main process\" "
    "column). The *ceiling* row runs the same reading in independent processes, each reading one contiguous "
    "share of the windows with nothing handed over: what this many cores give this work on this machine (it "
    "is measured, so it is as noisy as the rest; a median above it is within that noise). Why the split by "
    "rows matters: neighbouring rows of tiles overlap and share the raster's compressed blocks. When whole "
    "batches were dealt out to the workers in turn (until 2026-12-07), both workers decoded most blocks and "
    "each spent 15-30 % more CPU per tile than one reader alone: 1.54x (deflate) and 1.47x (JPEG) with 2 "
    "processes in this benchmark (`--repeat 9`, commit 930afc4). Split by rows, each block is decoded by "
    "one worker, and a worker's CPU per tile is about one reader's (compare the CPU columns). Reader threads "
    "(the fallback where processes cannot start) gained 1.2-1.4x on these two cores (2026-12-07, same "
    "script): most of a tile's reading is NumPy work (masks, normalisation, the mean fill) that holds the "
    "GIL. A first try at processes (forked, each tile copied into its batch by the main process) tied with "
    "threads; what made the difference was the main process doing nothing per tile but hand on the batch."
)


def _readers_cpu() -> dict[int, float]:
    """CPU seconds used so far by each live reader process (Linux ``/proc``; empty elsewhere)."""
    from geoalign_core.geo.tile_workers import worker_pids

    out = {}
    for pid in worker_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def read_all(path: Path, workers: int) -> tuple[int, float, float, float]:
    """Tiles read, wall seconds, CPU seconds of this process and of the reader processes, for one
    pass over ``path``."""
    from geoalign_core.geo import RasterSource
    from geoalign_core.geo.grid import tile_windows
    from geoalign_core.inference._reader import iter_batches

    with RasterSource(path) as src:
        windows = tile_windows(src.width, src.height, TILE, OVERLAP)
        src.stats  # noqa: B018 - the scene statistics, once, outside the timing
        before = _readers_cpu()
        c0, t0 = time.process_time(), time.perf_counter()
        n = sum(len(b.tiles) for b in iter_batches(src, windows, TILE, BATCH, skip_empty=False, prefetch=2,
                                                   workers=workers))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        readers = sum(t - before.get(pid, 0.0) for pid, t in _readers_cpu().items())
        return n, wall, cpu, readers


# One of the "independent processes" of the ceiling row: reads its share of the windows with one
# reader, as --workers 1 does, each time a line arrives on stdin, and prints its tile count.
_INDEPENDENT = """
import sys
from geoalign_core.geo import RasterSource
from geoalign_core.geo.grid import tile_windows
from geoalign_core.inference._reader import iter_batches
path, part, parts, tile, overlap, batch = sys.argv[1], *map(int, sys.argv[2:4]), int(sys.argv[4]), \\
    float(sys.argv[5]), int(sys.argv[6])
with RasterSource(path) as src:
    windows = tile_windows(src.width, src.height, tile, overlap)
    mine = windows[part * len(windows) // parts : (part + 1) * len(windows) // parts]
    src.stats
    read = lambda ws: sum(len(b.tiles) for b in iter_batches(src, ws, tile, batch, skip_empty=False,
                                                           prefetch=2, workers=1))
    read(mine[:64])
    print("ready", flush=True)
    for line in sys.stdin:
        print(read(mine), flush=True)
"""


class Independent:
    """``parts`` processes, each reading its share of the windows alone (no hand-over to anyone): what
    ``parts`` cores give this work on this machine, the ceiling for the reader processes."""

    def __init__(self, path: Path, parts: int) -> None:
        import subprocess

        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.procs = [subprocess.Popen([sys.executable, "-c", _INDEPENDENT, str(path), str(k), str(parts), str(TILE),
                                        str(OVERLAP), str(BATCH)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env) for k in range(parts)]
        for p in self.procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def run(self) -> tuple[int, float]:
        """Tiles read and wall seconds, from the start signal until the last process is done."""
        t0 = time.perf_counter()
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        n = sum(int(p.stdout.readline()) for p in self.procs if p.stdout is not None)
        return n, time.perf_counter() - t0

    def close(self) -> None:
        for p in self.procs:
            if p.stdin is not None:
                p.stdin.close()
            p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=8192, help="side of the test rasters in pixels")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    os.environ.setdefault("GDAL_CACHEMAX", "256")  # as the CLI (commands/options.py)
    base = args.workers[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoalign-bench-readers-") as tmp:
        rasters = make_rasters(Path(tmp), args.size)
        for label, path in rasters.items():
            for w in args.workers:  # warm: the file in the page cache, the reader processes started
                read_all(path, w)
            res: dict[int, list[tuple[int, float, float, float]]] = {w: [] for w in args.workers}
            ceiling = Independent(path, max(args.workers))
            alone: list[tuple[int, float]] = []
            try:
                ceiling.run()  # warm
                for r in range(args.repeat):
                    order = args.workers if r % 2 == 0 else args.workers[::-1]
                    for w in order:
                        res[w].append(read_all(path, w))
                    alone.append(ceiling.run())
            finally:
                ceiling.close()
            for w in args.workers:
                ratios = [b[1] / x[1] for b, x in zip(res[base], res[w])]
                n = res[w][0][0]
                rates = [t[0] / t[1] for t in res[w]]
                main_ms = statistics.median(1e3 * t[2] / t[0] for t in res[w])
                readers_ms = statistics.median(1e3 * t[3] / t[0] for t in res[w])
                rows.append([label, w, "1 thread" if w == 1 else f"{w} processes", n,
                             f"{statistics.median(rates):.0f}", f"{main_ms:.2f}",
                             f"{readers_ms:.2f}" if w > 1 else "-",
                             f"**{statistics.median(ratios):.2f}x**", f"{min(ratios):.2f}x - {max(ratios):.2f}x"])
                print(rows[-1], flush=True)
            ratios = [b[1] / x[1] for b, x in zip(res[base], alone)]
            rows.append([label, "(ceiling)", f"{max(args.workers)} independent processes, 1 reader each, "
                         "each reading its share of the windows", alone[0][0],
                         f"{statistics.median(t[0] / t[1] for t in alone):.0f}", "-", "-",
                         f"{statistics.median(ratios):.2f}x", f"{min(ratios):.2f}x - {max(ratios):.2f}x"])
            print(rows[-1], flush=True)
    tab = table(["raster", "--workers", "readers", "tiles", "tiles/s (median)", "main process CPU ms/tile",
                 "reader processes CPU ms/tile", f"speed-up vs {base} (median)", "range over repeats"], rows)
    commit = git_commit()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        HEADING, "",
        f"Measured {datetime.date.today().isoformat()} at commit {commit} on {cpu_summary()}, load average "
        f"{load:.1f} when it ended (the machine was shared with other jobs). {args.size} px square rasters made "
        f"from oam_manila_bridge_rgb.tif, read as the image pass reads them ({TILE} px windows, overlap "
        f"{OVERLAP:g}, batches of {BATCH}, no model), {args.repeat} repeats interleaved; the ratio is taken per "
        "repeat. Regenerate: `PYTHONPATH=. python benchmarks/bench_readers.py --repeat "
        f"{args.repeat} --size {args.size} --write`.", "",
        tab, "",
        EXPLAIN,
    ])
    if args.write:  # the section's old title
        docs = ROOT / "docs" / "benchmarks.md"
        docs.write_text(docs.read_text(encoding="utf-8").replace(OLD_HEADING + "\n", HEADING + "\n"), encoding="utf-8")
    publish(text, HEADING, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
