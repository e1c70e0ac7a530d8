"""A tiny synthetic training set (coloured squares on a noisy background) in the sample schema.

For tests and benchmarks: ``make_squares_dataset(out_dir, n=8)`` writes ``out_dir/chips/*.tif``
(3-band uint8 GeoTIFFs) and ``out_dir/samples.jsonl``. Each chip holds ``min_squares`` to
``max_squares`` squares (every ``empty_every``-th chip none), of distinct colours up to four;
the brief caption lists the colours, the detailed one adds sizes; each square is a region
with phrase "<colour> square" and the other colours as hard negatives.
Chips with ``positional=True`` also name positions ("in the upper left").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 30),
}


def _write_tif(path: Path, rgb: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    h, w = rgb.shape[1:]
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8",
        crs="EPSG:3857", transform=from_origin(0, h, 1, 1),
    ) as ds:
        ds.write(rgb)


def _where(cx: float, cy: float) -> str:
    return f"in the {'upper' if cy < 0.5 else 'lower'} {'left' if cx < 0.5 else 'right'}"


def make_squares_dataset(
    out_dir: str | Path,
    n: int = 8,
    size: int = 96,
    seed: int = 0,
    max_squares: int = 3,
    min_squares: int = 1,
    empty_every: int = 4,
    positional_every: int = 0,
    unique_captions: bool = False,
) -> Path:
    """Write ``n`` chips + ``samples.jsonl``; every ``empty_every``-th chip has no region."""
    out = Path(out_dir)
    (out / "chips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    lines = []
    for i in range(n):
        img = rng.normal(110, 12, size=(3, size, size)).clip(0, 255)
        empty = bool(empty_every) and i % empty_every == empty_every - 1
        k = 0 if empty else int(rng.integers(min_squares, max_squares + 1))
        colours = [names[j] for j in rng.choice(len(names), size=k, replace=k > len(names))]
        regions = []
        positional = bool(positional_every) and i % positional_every == 0
        for c in colours:
            side = int(rng.integers(size // 5, size // 2))
            x0, y0 = (int(v) for v in rng.integers(0, size - side, size=2))
            img[:, y0 : y0 + side, x0 : x0 + side] = np.array(COLOURS[c]).reshape(3, 1, 1)
            bbox = [x0 / size, y0 / size, (x0 + side) / size, (y0 + side) / size]
            big = "large" if side > size // 3 else "small"
            desc = f"a {big} {c} square"
            if positional:
                desc += " " + _where((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)
            regions.append({
                "bbox": bbox,
                "phrase": f"{c} square",
                "description": desc,
                "hard_negatives": [f"{o} square" for o in names if o != c],
            })
        if colours:
            caption = "squares: " + ", ".join(sorted(set(colours)))
            detail = f"{len(colours)} squares on grey ground: " + "; ".join(r["description"] for r in regions)
        else:
            caption = "empty grey ground"
            detail = "an empty grey ground with noise and no squares"
        if unique_captions:  # every image its own captions (as in real data)
            caption, detail = f"scene {i}, {caption}", f"scene {i}: {detail}"
        name = f"chips/{i:05d}.tif"
        _write_tif(out / name, img.astype(np.uint8))
        lines.append(json.dumps({"image": name, "caption": caption, "caption_detail": detail, "regions": regions}))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
