#!/usr/bin/env python3
"""Image-pass throughput on a GPU: km² per minute of 0.3 m imagery, and the share of the compute limit.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--device cuda] [--models ViT-B-16 GeoAlign-Tiny]
        [--batch-size N] [--workers N] [--seconds 20] [--peak-tflops T] [--write]
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --dry-run     # the script itself, on a CPU

For each model (random weights: the cost does not depend on them), two measurements:

* **model alone**: batches of random tiles already on the device, ``forward_visual(dense=True)``
  under the image pass's autocast (float16 on CUDA) and ``no_grad``: the most the model can do;
* **image pass**: :meth:`Encoder.image_pass <geoalign_core.inference.encoder.Encoder.image_pass>`
  over a tiled JPEG GeoTIFF made from the real aerial scene (``../shared/real_data``), with
  ``--workers`` tile readers (processes), pinned batches and non-blocking copies: what ``geoalign index``
  gets. Its ratio to the model alone says whether the readers keep the GPU busy.

km²/min: tiles/s x 60 / tiles per km² (the model's input size in pixels at ``--res`` m, stepped by
``1 - --overlap`` of it: 394 tiles/km² for 224 px at 0.3 m and overlap 0.25). FLOPs per tile:
counted by ``torch.utils.flop_counter`` on one tile (matrix products and attention; 2 per
multiply-add). Compute limit: ``--peak-tflops``, else the dense half-precision tensor-core peak of
the GPU's model from :data:`PEAK_TFLOPS` (vendor datasheets); on a CPU none is assumed and the
fraction is not shown unless ``--peak-tflops`` is given.

``--dry-run`` shrinks everything (batch 2, a 512 px raster, a few batches) so that the whole script
runs on a CPU in a minute or two: it checks the script, not the hardware.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, cpu_summary, git_commit, publish, table  # noqa: E402

sys.path.insert(0, str(ROOT))

HEADING = "## Feeding a GPU: km² per minute"
#: dense FP16/BF16 tensor-core peak in TFLOP/s (no sparsity), from the vendors' datasheets
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
               "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "V100": 125.0}


def peak_for(name: str) -> float | None:
    """The table's peak for a device name (the longest key it contains), else None."""
    hits = [k for k in PEAK_TFLOPS if k.lower() in name.lower()]
    return PEAK_TFLOPS[max(hits, key=len)] if hits else None


def tiles_per_km2(size: int, res: float, overlap: float) -> float:
    step_m = size * (1.0 - overlap) * res
    return (1000.0 / step_m) ** 2


def flops_per_tile(model, device) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, model.image_size, model.image_size, device=device)
    # with gradients on: under no_grad, nn.MultiheadAttention takes a fused fast path the counter does not see
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        model.forward_visual(model.preprocess(x), dense=True)
    return float(counter.get_total_flops())


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_alone(enc, seconds: float, min_batches: int) -> tuple[float, int]:
    """Tiles/s of the backbone on random tiles already on the device."""
    import torch

    model, device, b = enc.model, enc.device, enc.batch_size
    x = torch.rand(b, 3, model.image_size, model.image_size, device=device)
    with torch.no_grad(), enc.autocast():
        model.forward_visual(model.preprocess(x), dense=True)  # warm-up (kernels, cuDNN choices)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while n < min_batches or time.perf_counter() - t0 < seconds:
            model.forward_visual(model.preprocess(x), dense=True)
            n += 1
        _sync(device)
    return n * b / (time.perf_counter() - t0), n


def make_raster(path: Path, size: int) -> Path:
    """A ``size`` px tiled JPEG GeoTIFF mirrored from the real aerial scene (see bench_readers.py)."""
    from bench_readers import make_rasters

    made = make_rasters(path.parent, size)
    return made["tiled GeoTIFF (JPEG, YCbCr)"]


def image_pass(enc, raster: Path, seconds: float, overlap: float) -> tuple[float, int]:
    """Tiles/s of the whole image pass (readers, copies, model) over ``raster``, repeated for ``seconds``."""
    from geoalign_core.geo import RasterSource
    from geoalign_core.geo.grid import tile_windows

    with RasterSource(raster) as src:
        windows = tile_windows(src.width, src.height, enc.input_size, overlap)
        src.stats  # noqa: B018 - once, outside the timing
        for _ in enc.image_pass(src, windows[: 2 * enc.batch_size], dense=True):  # warm-up
            pass
        _sync(enc.device)
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < seconds:
            done = n
            for eb in enc.image_pass(src, windows, dense=True):
                n += len(eb.tiles)
            if n == done:
                raise SystemExit(f"error: {raster} has no valid tile to read")
        _sync(enc.device)
    return n / (time.perf_counter() - t0), n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--models", nargs="+", default=["ViT-B-16", "GeoAlign-Tiny"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: chosen for the device (as the CLI)")
    ap.add_argument("--workers", type=int, default=None,
                    help="tile readers (2 or more: reader processes; default: as the CLI)")
    ap.add_argument("--seconds", type=float, default=20.0, help="per measurement")
    ap.add_argument("--raster-size", type=int, default=8192, help="side of the test raster in pixels")
    ap.add_argument("--res", type=float, default=0.3, help="ground sample distance for km², metres")
    ap.add_argument("--overlap", type=float, default=0.25)
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's compute limit (default: table)")
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes: checks the script on a CPU")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    import torch

    from geoalign_core import load_model
    from geoalign_core.inference.encoder import Encoder
    from geoalign_core.zoo import resolve_device

    device = resolve_device(args.device)
    if args.dry_run:
        args.seconds, args.raster_size = 0.0, 512
        args.batch_size = args.batch_size or 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({cpu_summary()})"
    peak = args.peak_tflops or (peak_for(name) if device.type == "cuda" else None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoalign-bench-gpu-") as tmp:
        raster = make_raster(Path(tmp) / "scene.tif", args.raster_size)
        for arch in args.models:
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random initialisation
                model = load_model(arch, str(device)).eval()
            enc = Encoder(model, args.batch_size, workers=args.workers)
            flops = flops_per_tile(model, device)
            per_km2 = tiles_per_km2(model.image_size, args.res, args.overlap)
            alone, _ = model_alone(enc, args.seconds, 2 if args.dry_run else 10)
            full, n = image_pass(enc, raster, args.seconds, args.overlap)
            for what, rate in (("model alone", alone), (f"image pass, {enc.workers} reader(s)", full)):
                tflops = rate * flops / 1e12
                rows.append([arch, what, enc.batch_size, f"{flops / 1e9:.2f}", f"{rate:,.1f}",
                             f"{rate * 60 / per_km2:,.1f}", f"{tflops:.2f}",
                             f"{tflops / peak:.1%}" if peak else "n/a"])
                print(rows[-1], flush=True)
            rows.append([arch, "image pass / model alone", "", "", f"{full / alone:.2f}x", "", "", ""])
            del enc, model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    tab = table(["model", "measured", "batch", "GFLOP/tile", "tiles/s", f"km²/min at {args.res:g} m",
                 "TFLOP/s", "of the peak"], rows)
    commit = git_commit()
    text = "\n".join([
        HEADING, "",
        f"Measured {datetime.date.today().isoformat()} at commit {commit} on {name}"
        + (f", peak {peak:g} TFLOP/s dense half precision" if peak else ", no compute peak assumed")
        + (" -- a **dry run** on a CPU (batch 2, a 512 px raster, two batches): it checks the script, the numbers "
           "say nothing about a GPU. No GPU was lent to the session that wrote this; on one, run "
           "`PYTHONPATH=. python benchmarks/bench_gpu.py --device cuda --write` (a few minutes) to replace "
           "this table" if args.dry_run else "")
        + f". Random weights; overlap {args.overlap:g}; tiles per km² at {args.res:g} m from each model's input "
        f"size ({tiles_per_km2(224, args.res, args.overlap):,.0f} for 224 px, "
        f"{tiles_per_km2(112, args.res, args.overlap):,.0f} for 112 px). The compute limit in km²/min is "
        "peak / (FLOP per tile x tiles per km²) x 60: for ViT-B/16 on an H100 or H200 (989 TFLOP/s) about "
        "4,450 at 0.3 m and overlap 0.25. Regenerate: "
        "`PYTHONPATH=. python benchmarks/bench_gpu.py" + (" --device cpu --dry-run" if args.dry_run else "")
        + " --write`.", "",
        tab,
    ])
    publish(text, HEADING, args.write)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    sys.exit(main())
