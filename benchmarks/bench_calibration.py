"""The cost of find's score calibration (geoalign_core.inference.calibration): ``find`` as it runs (scene
statistics and the zoom view, geoalign_core.inference.zoom), without the zoom view (the card's ``find:zoom`` map
set aside: the scan's map scores), and without either (scene statistics left empty: no image pass over sample
tiles), same raster and phrase, best of 5 after a warm-up.

    PYTHONPATH=. python benchmarks/bench_calibration.py [RASTER ...] [--phrase "red car"] [--write]

Default rasters: the sample scene and a 256 px crop of it (9 tiles: every one of them is sampled).
``--write`` puts the table into docs/benchmarks.md ("find: the cost of the calibrated score").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from report import ROOT, cpu_summary, git_commit, publish, table

HEADING = "## find: the cost of the calibrated score"


def best_of(predictor, raster: str, phrase: str, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        predictor.find(raster, [phrase], refine=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def crop_of_sample(folder: Path, size: int = 256) -> Path:
    import rasterio
    from rasterio.windows import Window

    src = ROOT / "sample_data" / "scene.tif"
    out = folder / f"scene_crop{size}.tif"
    with rasterio.open(src) as ds:
        win = Window(640, 640, size, size)
        profile = dict(ds.profile, width=size, height=size, transform=ds.window_transform(win))
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(ds.read(window=win))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rasters", nargs="*")
    p.add_argument("--phrase", default="red car")
    p.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = p.parse_args()
    from geoalign_core.inference import Predictor, calibration

    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rasters = args.rasters or [str(ROOT / "sample_data" / "scene.tif"), str(crop_of_sample(Path(tmp)))]
        predictor = Predictor("geoalign-demo", device="cpu", batch_size=16)
        for raster in rasters:
            best_of(predictor, raster, args.phrase, 1)  # warm-up
            with_cal = best_of(predictor, raster, args.phrase)
            card = predictor.model.card
            zoom_map = card.calibration.pop("find:zoom")
            measure = calibration.measure
            try:
                no_zoom = best_of(predictor, raster, args.phrase)
                calibration.measure = lambda enc, src, windows, texts, n, cancel=None: calibration.Scorer(
                    calibration.SceneStats.empty(n), enc.score_map("find"))  # no sampled regions: no image pass
                without = best_of(predictor, raster, args.phrase)
            finally:
                calibration.measure = measure
                card.calibration["find:zoom"] = zoom_map
            import rasterio

            with rasterio.open(raster) as ds:
                size = f"{ds.width} x {ds.height} px"
            name = os.path.relpath(raster, ROOT) if raster.startswith(str(ROOT)) else Path(raster).name
            rows.append([f"{name} ({size})", f"{with_cal:.2f} s", f"{no_zoom:.2f} s", f"{without:.2f} s",
                         f"{with_cal / without:.2f}x", f"{with_cal / no_zoom:.2f}x"])
            print(f"{raster}: find {args.phrase!r} --no-refine, best of 5: {with_cal:.2f} s as it runs, "
                  f"{no_zoom:.2f} s without the zoom view, {without:.2f} s without either", flush=True)
    load = os.getloadavg()[0]
    text = "\n".join([
        HEADING, "",
        f"Measured {time.strftime('%Y-%m-%d')} at commit {git_commit()} on {cpu_summary()}, load average "
        f"{load:.1f} at the end. `find \"{args.phrase}\"` with the demo model, without box refinement, best of 5 "
        "after a warm-up (100 boxes returned at most); *no zoom view* sets the card's `find:zoom` map aside (the "
        "scan's map scores, no second look at the boxes); *neither* also replaces the scene statistics by empty "
        "ones (no image pass over the sample tiles). Regenerate: "
        "`PYTHONPATH=. python benchmarks/bench_calibration.py --write`.", "",
        table(["raster", "as it runs", "no zoom view", "neither", "as it runs / neither",
               "zoom view's share (as it runs / no zoom view)"], rows), "",
        "The scene statistics take an image pass on up to 16 tiles spread over the area and pool their sliding "
        "windows; on a large raster that is a small share, on a raster of 16 tiles or fewer it repeats the "
        "whole image pass (tens of milliseconds with the demo model). From a scene index they come from stored "
        "patches, measured once per area and phrase set. The zoom view reads and encodes one window of half "
        "the tile size per returned box (100 of them here: about a second on the full scene when measured alone, "
        "`find` run twice with and once without it). On this 2-core machine repeated runs of the full scene differ "
        "by up to about a second, so its columns differ by less than their noise.", ""])
    publish(text, HEADING, args.write)


if __name__ == "__main__":
    main()
