"""The cost of find's score calibration (geoalign_core.inference.calibration): ``find`` with it and with
it replaced by the identity, same raster and phrase, best of 3 after a warm-up.

    python benchmarks/bench_calibration.py sample_data/scene.tif [PHRASE]
"""

from __future__ import annotations

import argparse
import time
import warnings


def best_of(predictor, raster: str, phrase: str, n: int = 3) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        predictor.find(raster, [phrase], refine=False)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("raster")
    p.add_argument("phrase", nargs="?", default="red car")
    args = p.parse_args()
    from geoalign_core.inference import Predictor, calibration

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = Predictor("geoalign-demo", device="cpu", batch_size=16)
        best_of(predictor, args.raster, args.phrase, 1)  # warm-up
        with_cal = best_of(predictor, args.raster, args.phrase)
        measure = calibration.measure
        calibration.measure = lambda enc, src, windows, texts, n, cancel=None: calibration.Calibration.identity(n)
        try:
            without = best_of(predictor, args.raster, args.phrase)
        finally:
            calibration.measure = measure
    print(f"{args.raster}: find {args.phrase!r} --no-refine, best of 3: {with_cal:.2f} s with calibration, "
          f"{without:.2f} s without ({with_cal / without:.2f}x)")


if __name__ == "__main__":
    main()
