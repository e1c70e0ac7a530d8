"""``python -m geoalign_core.training.scenes`` (and ``sample_data/make_sample.py``): write scenes from the
command line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .files import write_scene
from .spec import DEFAULT_EPSG, DEFAULT_RES, DEFAULT_SIZE, SAMPLE_SEED

SAMPLE_DIR = Path(__file__).resolve().parents[3] / "sample_data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render synthetic georeferenced aerial scenes with ground truth.")
    ap.add_argument("--seed", type=int, default=SAMPLE_SEED, help="random seed (default 0, the sample scene)")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side length in pixels (square)")
    ap.add_argument("--res", type=float, default=DEFAULT_RES, help="pixel size in metres (default 0.3)")
    ap.add_argument("--epsg", type=int, default=DEFAULT_EPSG, help="CRS EPSG code (default 32633)")
    ap.add_argument("--name", default="scene", help='file stem; "scene" -> scene.tif + labels.gpkg')
    ap.add_argument("--count", type=int, default=None, help="write N scenes, seeds seed..seed+N-1, named NAME_SEED")
    ap.add_argument("--out", default=str(SAMPLE_DIR), help="output folder")
    args = ap.parse_args(argv)
    if args.size < 16:
        ap.error("--size must be >= 16")
    if args.res <= 0:
        ap.error("--res must be > 0")
    if args.count is not None and args.count < 1:
        ap.error("--count must be >= 1")
    jobs = (
        [(args.seed, args.name)]
        if args.count is None
        else [(s, f"{args.name}_{s}") for s in range(args.seed, args.seed + args.count)]
    )
    for seed, name in jobs:
        t0 = time.perf_counter()
        tif, gpkg = write_scene(args.out, seed, size=args.size, res=args.res, epsg=args.epsg, name=name)
        print(f"seed {seed}: {tif} ({tif.stat().st_size / 1e6:.2f} MB), {gpkg} in {time.perf_counter() - t0:.1f} s")
    return 0
