"""Fine-tuning on real imagery, the issue's protocol: train on the west half of a scene, search the east half.

For each real scene of ``../shared/real_data/`` (NEON trees: the CSV of pixel boxes, phrase "tree";
SpaceNet Atlanta: the building polygons, phrase "building"):

1. the scene is cut by pixel column into a left (west) and a right (east) half;
2. ``geoalign finetune RASTER LABELS --class-field F --from geoalign-demo --bounds <left half>``
   (its own held-out part is the east end, or south end, of the left half);
3. on the RIGHT half, with the start model and with the fine-tuned one:

   * ``geoalign find RASTER PHRASE --bounds <right half> --max-results 10 --min-score 0``:
     P@10 = share of the 10 best boxes whose IoU with a label box (its bounding box, in map
     coordinates) is >= 0.3; the labels of the right half are those whose box centre lies in it.
     "hits >= min score" counts only the hits that also score >= the default ``--min-score``
     (the same ranking: NMS keeps a box only for a better one);
   * background called the class: up to 50 boxes in the right half of the labelled objects'
     median size, each at least half that size away from every label box (and from each other,
     on valid pixels; where fewer than 10 fit, as in the NEON canopy, half or a quarter that size),
     scored with ``geoalign find --regions boxes.gpkg --min-score 0``: the share
     scoring >= ``geoalign_core.defaults.DEFAULT_MIN_SCORE``, and their mean score against the mean
     score of the right half's label boxes (scored the same way).

Prints a Markdown table per scene (before / after) with the alpha ``finetune`` chose and its
reference-scene top-1 (forgetting). ``--write-docs`` replaces (or appends) the section
"## Real-data targets (bench_finetune.py)" of docs/finetune.md.

    python benchmarks/bench_finetune.py                      # both scenes, work in /tmp/geoalign-bench-finetune
    python benchmarks/bench_finetune.py --scenes spacenet --reuse --write-docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from report import ROOT, cpu_summary, publish, table

REAL = ROOT.parent / "shared" / "real_data"
DOC = ROOT / "docs" / "finetune.md"
SECTION = "## Real-data targets (bench_finetune.py)"
IOU = 0.3  #: a top-10 box is a hit when its IoU with a label box is at least this
TOP = 10
N_BACKGROUND = 50
MIN_BACKGROUND = 10  #: fewer background boxes of the labels' size than this: try half the size
MARGIN = 0.5  #: background boxes keep this share of their size clear of every label
START = "geoalign-demo"


@dataclass(frozen=True)
class Scene:
    key: str
    raster: str
    labels: str
    class_field: str
    phrase: str


SCENES = {
    "neon": Scene("neon", "neon_osbs029_rgb.tif", "neon_osbs029_trees_pixel_boxes.csv", "label", "tree"),
    "spacenet": Scene("spacenet", "spacenet_atlanta_pan.tif", "spacenet_atlanta_buildings.geojson", "building",
                      "building"),
}


def geoalign(*args: object, log: list[str]) -> str:
    """Run the ``geoalign`` CLI of this interpreter's environment; its stdout (stderr shown on failure)."""
    exe = Path(sys.executable).with_name("geoalign")
    cmd = [str(exe) if exe.exists() else "geoalign", *(str(a) for a in args)]
    log.append(shlex.join(["geoalign", *cmd[1:]]))
    print("$", log[-1], flush=True)
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout + res.stderr)
        raise SystemExit(f"failed ({res.returncode}): {log[-1]}")
    print(f"  ({time.perf_counter() - t:.0f} s)", flush=True)
    return res.stdout


def halves(raster: Path):
    """(left, right) bounds (minx, miny, maxx, maxy) cut at the middle pixel column, the transform,
    the size and the CRS."""
    import rasterio
    from rasterio.windows import Window, bounds

    with rasterio.open(raster) as ds:
        w, h, t, crs = ds.width, ds.height, ds.transform, ds.crs
    mid = w // 2
    left = bounds(Window(0, 0, mid, h), t)
    right = bounds(Window(mid, 0, w - mid, h), t)
    return left, right, t, (w, h), crs, mid


def label_boxes(scene: Scene, raster: Path):
    """The label boxes (shapely boxes in the raster's CRS) and their pixel boxes."""
    import geopandas as gpd
    import numpy as np
    import shapely

    from geoalign_core.geo.raster import RasterSource
    from geoalign_core.geo.vectors import boxes_to_pixels

    labels = REAL / scene.labels
    if labels.suffix == ".csv":
        from geoalign_core.data.labels import read_pixel_boxes

        src = RasterSource(raster)
        try:
            gdf, skip = read_pixel_boxes(labels, src)
            t = src.transform
        finally:
            src.close()
        gdf = gdf[[i not in skip and g is not None for i, g in enumerate(gdf.geometry)]]
    else:
        import rasterio

        with rasterio.open(raster) as ds:
            t, crs = ds.transform, ds.crs
        gdf = gpd.read_file(labels).to_crs(crs)
    boxes = [shapely.box(*g.bounds) for g in gdf.geometry]
    return boxes, np.asarray(boxes_to_pixels(gpd.GeoSeries(boxes), t))


def background_boxes(raster: Path, pix, mid: int, size: tuple[int, int], n: int, seed: int = 0):
    """Up to ``n`` pixel boxes of the labels' median size in the right half, each with MARGIN of its
    size clear of every label box, not overlapping each other, on valid pixels. Where fewer than
    :data:`MIN_BACKGROUND` fit (a canopy labelled wall to wall), the size is halved, down to a
    quarter; returns the boxes and the size used."""
    import numpy as np
    import rasterio

    with rasterio.open(raster) as ds:
        valid = ds.dataset_mask() > 0
    w, h = size
    for scale in (1.0, 0.5, 0.25):
        bw = scale * float(np.median(pix[:, 2] - pix[:, 0]))
        bh = scale * float(np.median(pix[:, 3] - pix[:, 1]))
        rng = np.random.default_rng(seed)
        out: list[list[float]] = []
        for _ in range(20000):
            if len(out) >= n:
                break
            x0 = float(rng.uniform(mid, w - bw))
            y0 = float(rng.uniform(0, h - bh))
            mx, my = MARGIN * bw, MARGIN * bh
            c = (x0 - mx, y0 - my, x0 + bw + mx, y0 + bh + my)
            if ((pix[:, 0] < c[2]) & (c[0] < pix[:, 2]) & (pix[:, 1] < c[3]) & (c[1] < pix[:, 3])).any():
                continue
            if any(x0 < b[2] and b[0] < x0 + bw and y0 < b[3] and b[1] < y0 + bh for b in out):
                continue
            if not valid[int(y0):int(np.ceil(y0 + bh)), int(x0):int(np.ceil(x0 + bw))].all():
                continue
            out.append([x0, y0, x0 + bw, y0 + bh])
        if len(out) >= MIN_BACKGROUND:
            break
    return out, (bw, bh), scale


def write_boxes(path: Path, polys, crs) -> Path:
    import geopandas as gpd

    gpd.GeoDataFrame({"n": list(range(len(polys)))}, geometry=list(polys), crs=crs).to_file(path, driver="GPKG")
    return path


def scores(path: Path) -> list[float]:
    import geopandas as gpd

    return [float(s) for s in gpd.read_file(path, layer="matches")["score"]]


def run_scene(scene: Scene, work: Path, reuse: bool, steps: int | None, alpha: float | None = None,
              lr: float | None = None, sets: list[str] | None = None, quality_filter: str | None = None) -> dict:
    sets = sets or []
    import geopandas as gpd
    import numpy as np
    import shapely

    from geoalign_core.defaults import DEFAULT_MIN_SCORE
    from geoalign_core.geo.vectors import pixel_boxes_to_polygons

    raster, labels = REAL / scene.raster, REAL / scene.labels
    d = work / scene.key
    d.mkdir(parents=True, exist_ok=True)
    log: list[str] = []
    left, right, t, size, crs, mid = halves(raster)
    fmt = ",".join(repr(float(v)) for v in left)
    ft = d / "ft"
    model = ft / f"{START}-finetuned.safetensors"
    t0 = time.perf_counter()
    if not (reuse and model.is_file() and (ft / "report.json").is_file()):
        geoalign("finetune", raster, labels, "--class-field", scene.class_field, "--from", START, "--bounds", fmt,
                 "--out", ft, "--overwrite", "--quiet", *(["--steps", steps] if steps else []),
                 *(["--alpha", alpha] if alpha is not None else []), *(["--lr", lr] if lr is not None else []),
                 *[a for kv in sets for a in ("--set", kv)],
                 *(["--quality-filter", quality_filter] if quality_filter else []), log=log)
    ft_seconds = time.perf_counter() - t0
    report = json.loads((ft / "report.json").read_text())

    boxes, pix = label_boxes(scene, raster)
    rx0, _, rx1, _ = right
    right_labels = [b for b in boxes if rx0 <= b.centroid.x <= rx1] if rx0 < rx1 else []
    right_pix = np.array([p for b, p in zip(boxes, pix) if rx0 <= b.centroid.x <= rx1])
    bg_pix, (bw, bh), bg_scale = background_boxes(raster, pix, mid, size, N_BACKGROUND)
    bg_gpkg = write_boxes(d / "background.gpkg", pixel_boxes_to_polygons(bg_pix, t), crs)
    lab_gpkg = write_boxes(d / "labels_right.gpkg", right_labels, crs)
    rfmt = ",".join(repr(float(v)) for v in right)

    rows = {}
    for when, m in (("before", START), ("after", model)):
        found = d / f"find_{when}.gpkg"
        geoalign("find", raster, scene.phrase, "--bounds", rfmt, "--max-results", TOP, "--min-score", 0,
                 "--model", m, "--out", found, "--overwrite", "--quiet", log=log)
        top = gpd.read_file(found, layer="matches").sort_values("score", ascending=False).head(TOP)
        best = []
        for g in top.geometry:
            ious = [g.intersection(b).area / g.union(b).area for b in right_labels if g.intersects(b)]
            best.append(max(ious, default=0.0))
        hits = [i >= IOU for i in best]
        strong = [h and s >= DEFAULT_MIN_SCORE for h, s in zip(hits, top["score"])]
        tb = [shapely.bounds(g) for g in top.geometry]
        top_px = [((b[2] - b[0]) / abs(t.a), (b[3] - b[1]) / abs(t.e)) for b in tb]
        bg_s, lab_s = [], []
        for name, gpkg, acc in (("background", bg_gpkg, bg_s), ("labels", lab_gpkg, lab_s)):
            out = d / f"regions_{name}_{when}.gpkg"
            geoalign("find", raster, scene.phrase, "--regions", gpkg, "--min-score", 0, "--max-results", 100000,
                     "--model", m, "--out", out, "--overwrite", "--quiet", log=log)
            acc.extend(scores(out))
        from geoalign_core.geo.writers import read_metadata

        score_kind = read_metadata(found, "matches").get("score", "")
        rows[when] = {
            "score": score_kind, "median_top_box_px": [round(float(np.median([w for w, _ in top_px])), 1),
                                                      round(float(np.median([h for _, h in top_px])), 1)]
            if top_px else None,
            "top_on_a_label": int(sum(any(g.intersects(b) for b in boxes) for g in top.geometry)),
            "p_at_10": sum(hits) / TOP, "hits": int(sum(hits)), "hits_above_min_score": int(sum(strong)),
            "n_found": len(top), "top_scores": [round(float(s), 4) for s in top["score"]],
            "top_best_iou": [round(float(i), 3) for i in best], "top_size_px": [[round(a, 1), round(b, 1)]
                                                                               for a, b in top_px],
            "background_called": float(np.mean([s >= DEFAULT_MIN_SCORE for s in bg_s])) if bg_s else None,
            "background_mean": float(np.mean(bg_s)) if bg_s else None,
            "labels_mean": float(np.mean(lab_s)) if lab_s else None,
            "n_background": len(bg_s), "n_labels": len(lab_s),
        }
    res = {
        "scene": scene.key, "raster": scene.raster, "phrase": scene.phrase, "left": list(left), "right": list(right),
        "n_labels_right": len(right_labels),
        "label_size_px_median": [round(float(np.median(pix[:, 2] - pix[:, 0])), 1),
                                 round(float(np.median(pix[:, 3] - pix[:, 1])), 1)],
        "background_size_px": [round(bw, 1), round(bh, 1)], "background_scale": bg_scale,
        "label_size_px": {"w": np.percentile(right_pix[:, 2] - right_pix[:, 0], [10, 50, 90]).round(1).tolist(),
                          "h": np.percentile(right_pix[:, 3] - right_pix[:, 1], [10, 50, 90]).round(1).tolist()}
        if len(right_pix) else None,
        "alpha": report["alpha"], "alphas_tried": report["alphas_tried"], "steps": report["steps"],
        "train_chips": report["train_chips"], "finetune_seconds": report.get("seconds", round(ft_seconds, 1)),
        "reference_top1": [report["before"].get("reference_top1"), report["after"].get("reference_top1")],
        "heldout_background": [report["before"].get("background_called_a_class"),
                               report["after"].get("background_called_a_class")],
        "min_score": DEFAULT_MIN_SCORE, "rows": rows, "commands": log,
    }
    (d / "result.json").write_text(json.dumps(res, indent=1))
    return res


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def scene_table(r: dict) -> str:
    ms = r["min_score"]
    head = [f"{r['scene']} (`find {r['phrase']}`, right half)", f"P@10 (IoU >= {IOU})",
            f"hits scoring >= {ms:g}", "top 10: on a label / median size (px)",
            f"background boxes scoring >= {ms:g}", "mean score: background", "mean score: label boxes",
            "reference top-1"]
    rows = []
    for when, ref in zip(("before", "after"), r["reference_top1"]):
        x = r["rows"][when]
        rows.append([f"{when} ({START})" if when == "before" else f"after (alpha {r['alpha']:g})",
                     f"{x['p_at_10']:.1f} ({x['hits']}/{TOP})", f"{x['hits_above_min_score']}/{TOP}",
                     f"{x['top_on_a_label']}/{x['n_found']}, "
                     + ("n/a" if not x["median_top_box_px"] else
                        f"{x['median_top_box_px'][0]:g} x {x['median_top_box_px'][1]:g}"),
                     f"{_pct(x['background_called'])} of {x['n_background']}", _f(x["background_mean"]),
                     f"{_f(x['labels_mean'])} ({x['n_labels']})", _f(ref)])
    return table(head, rows)


def render(results: list[dict]) -> str:
    date = dt.date.today().isoformat()
    out = [SECTION, "",
           f"Measured {date} on {cpu_summary()} with `python benchmarks/bench_finetune.py`: `finetune --from "
           f"{START} --bounds <left half>` (default options), then on the right half `find PHRASE --bounds "
           f"<right half> --max-results {TOP} --min-score 0` (P@10: IoU >= {IOU} with a label box whose centre is "
           f"in the right half) and `find PHRASE --regions` for {N_BACKGROUND} background boxes (the labels' median "
           f"size, half a size clear of every label) and for the right half's label boxes. Scores: "
           f"{results[0]['rows']['after'].get('score') or 'as find writes them'}.", ""]
    for r in results:
        out += [f"**{r['scene']}** ({r['raster']}; {r['n_labels_right']} labels in the right half, median "
                f"{r['label_size_px_median'][0]:g} x {r['label_size_px_median'][1]:g} px"
                + ("" if r["background_scale"] == 1 else
                   f"; background boxes {r['background_size_px'][0]:g} x {r['background_size_px'][1]:g} px "
                   f"({r['background_scale']:g} x the median size: too few of the full size fit)")
                + "; finetune: "
                f"{r['train_chips']} training chips, {r['steps']} steps, alpha {r['alpha']:g} chosen of "
                + ", ".join(f"{a:g}: {v:.3f}" for a, v in r["alphas_tried"])
                + f"; held-out background called the class {_pct(r['heldout_background'][0])} -> "
                f"{_pct(r['heldout_background'][1])}; {r['finetune_seconds']:.0f} s)", "", scene_table(r), ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", default="neon,spacenet", help="comma-separated: neon, spacenet (default: both)")
    p.add_argument("--work", type=Path, default=Path("/tmp/geoalign-bench-finetune"), help="work folder")
    p.add_argument("--reuse", action="store_true", help="reuse a finished finetune in the work folder")
    p.add_argument("--steps", type=int, default=None, help="finetune --steps (default: finetune's own)")
    p.add_argument("--alpha", type=float, default=None, help="finetune --alpha (default: finetune's own choice)")
    p.add_argument("--lr", type=float, default=None, help="finetune --lr (default: finetune's own)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="finetune --set (repeatable)")
    p.add_argument("--quality-filter", default=None, metavar="NAME", help="finetune --quality-filter NAME (--keep 0.3)")
    p.add_argument("--write-docs", action="store_true", help=f"write the section {SECTION!r} of docs/finetune.md")
    args = p.parse_args()
    keys = [k.strip() for k in args.scenes.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SCENES]
    if unknown:
        raise SystemExit(f"unknown scene(s) {', '.join(unknown)}; choose from {', '.join(SCENES)}")
    missing = [f for k in keys for f in (SCENES[k].raster, SCENES[k].labels) if not (REAL / f).is_file()]
    if missing:
        raise SystemExit(f"real data absent in {REAL}: {', '.join(missing)}")
    results = [run_scene(SCENES[k], args.work, args.reuse, args.steps, args.alpha, args.lr, args.set,
                         args.quality_filter) for k in keys]
    text = render(results)
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    publish(text, SECTION, args.write_docs, DOC)
    if args.write_docs:
        print(f"wrote the section {SECTION!r} of {DOC}")


if __name__ == "__main__":
    main()
