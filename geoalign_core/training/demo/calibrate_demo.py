"""Calibrate the bundled demo model's scores and measure them on other held-out scenes.

    python geoalign_core/training/demo/calibrate_demo.py            (from the repository root, in the project venv)

1. Renders held-out synthetic scenes that never trained or tuned ``geoalign-demo`` (training used seeds
   1000-1029, its evaluation 2000-2002, the sample scene is seed 0): FIT seeds to fit the calibration,
   CHECK seeds to measure it.
2. Runs ``find`` (each phrase alone, min score 0, its default 100 boxes at most, no refinement, with the zoom
   view of every box) and ``tile-classify`` (several class sets) on every scene and labels each result right
   or wrong against the scene's labels (:mod:`geoalign_core.evaluation.reliability`).
3. Fits the logistic maps on the FIT scenes and writes ``geoalign_core/weights/geoalign-demo.card.json``
   (domain, vocabulary, calibration, and the CHECK scenes' measured precision and calibration error);
   with ``../shared/real_data`` present, also the map for real imagery (``find:real``: the demo model on
   real scenes, fitted on the NEON crowns and SpaceNet buildings with phrases of absent things, measured
   leaving one scene out), which ``find`` uses on rasters the generator did not make.
4. Writes the CHECK scenes' reliability tables to ``runs/calibration/check.json`` (the figures of
   ``docs/scores.md`` are made from it by ``benchmarks/bench_scores.py``) and every labelled result to
   ``runs/calibration/collected.npz`` (``--refit`` fits again from it without running anything).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

#: (seed, side in pixels): scenes of two sizes, since a scene's make-up moves the scene-relative features
FIT_SCENES = [(s, 2048) for s in range(5100, 5104)] + [(s, 1024) for s in range(5200, 5206)]
CHECK_SCENES = [(s, 2048) for s in range(6100, 6103)] + [(s, 1024) for s in range(6200, 6203)]
#: phrases that name things the generator draws (right where a labelled object of that kind is) ...
PRESENT = ["red car", "white car", "car", "swimming pool", "tree", "building", "red building", "tennis court",
           "ship", "pond", "parking lot"]
#: ... and things it never draws (always wrong: the model should find nothing)
ABSENT = ["airplane", "storage tanks", "baseball field", "bridge", "golf course"]
SIMILAR_CLASSES = ["car", "tree", "building", "swimming pool"]
TILE_SETS: list[list[str] | None] = [None, ["tree", "building", "road"], ["swimming pool", "parking lot", "river"],
                                     ["airplane", "golf course", "desert"], ["tennis court", "ship", "pond"],
                                     ["beach", "farmland", "storage tanks"]]


def scenes(work: Path, kind: str, specs) -> list[tuple[Path, Path]]:
    from geoalign_core.training.scenes import write_scene

    out = []
    for s, size in specs:
        tif, gpkg = work / f"{kind}_{s}.tif", work / f"{kind}_{s}_labels.gpkg"
        if not (tif.exists() and gpkg.exists()):
            write_scene(work, s, size=size, name=f"{kind}_{s}")
        out.append((tif, gpkg))
    return out


def training_vocabulary(work: Path, scene: tuple[Path, Path]) -> list[str]:
    """The words of everything the demo's text tower was trained on: the captions, phrases, descriptions and
    hard negatives ``prepare`` writes for a generated scene, the class names and the prompt templates."""
    from geoalign_core.data import PrepareOptions, prepare_dataset
    from geoalign_core.inference.vocabulary import PROMPT_TEMPLATES
    from geoalign_core.training.scenes import CLASSES

    d = work / "vocab_data"
    if not (d / "samples.jsonl").exists():
        prepare_dataset(scene[0], scene[1], d, PrepareOptions(class_field="class"), overwrite=True, progress=False)
    words: set[str] = set()

    def add(text: object) -> None:
        words.update(re.findall(r"[a-z]+", str(text).lower()))

    for line in (d / "samples.jsonl").read_text(encoding="utf-8").splitlines():
        sample = json.loads(line)
        add(sample.get("caption", ""))
        add(sample.get("caption_detail", ""))
        for r in sample.get("regions", []):
            for t in (r.get("phrase", ""), r.get("description", ""), *r.get("hard_negatives", [])):
                add(t)
    for t in (*CLASSES, *PROMPT_TEMPLATES):
        add(t)
    return sorted(words)


def training_object_sizes(seeds=range(1000, 1030), size: int = 1024, res: float = 0.3,
                          max_side_m: float = 0.5 * 112 * 0.3) -> dict[str, list[float]]:
    """Per class, the typical object size (metres, a square of the median bounding box's area: objects lie at
    every orientation) on the demo's TRAINING scenes, for the classes whose size varies little: those whose
    10th to 90th percentile bounding-box side lies within find's size window (``SIZE_RANGE`` x the area)
    around the median, so that the prior keeps at least 80 % of such objects, and that fit twice into one of
    the model's tiles (``max_side_m``: half of 112 px at 0.3 m). Pure function of the seeds."""
    from geoalign_core.inference.find import SIZE_RANGE
    from geoalign_core.training.scenes import render_scene

    sides: dict[str, list[float]] = {}
    for seed in seeds:
        _, labels = render_scene(seed, size, res)
        for lab in labels:
            x0, y0, x1, y1 = lab["geometry"].bounds
            sides.setdefault(lab["class"], []).append(float(np.sqrt((x1 - x0) * (y1 - y0))) * res)
    band = float(np.sqrt(SIZE_RANGE))
    out = {}
    for cls, s in sorted(sides.items()):
        p10, med, p90 = np.percentile(s, [10, 50, 90])
        if len(s) >= 10 and p90 <= med * band and p10 >= med / band and med <= max_side_m:
            out[cls] = [round(float(med), 2), round(float(med), 2)]
    return out


def collect(predictor, pairs, what: str) -> tuple[dict, list[dict], dict]:
    from geoalign_core.defaults import DEFAULT_MAX_RESULTS
    from geoalign_core.evaluation.reliability import collect_find, collect_similar, collect_tiles
    from geoalign_core.index import SceneIndex
    from geoalign_core.inference import runs

    phrases = PRESENT + ABSENT
    f_parts, t_parts, s_parts = [], [], []
    for tif, gpkg in pairs:
        t0 = time.perf_counter()
        # one image pass per scene: its index (find, tile-classify and similar from it score the same
        # regions as a live pass, from int8-stored patches, and are many times faster for 16 phrases)
        ipath = tif.with_suffix(".parquet")
        if not ipath.exists():
            runs.index(predictor, tif, ipath)
        idx = SceneIndex.open(ipath, predictor)
        f = collect_find(predictor, idx, gpkg, "class", phrases, max_results=DEFAULT_MAX_RESULTS, zoom_view=True)
        f_parts.append(f)
        tiles = [collect_tiles(predictor, idx, gpkg, "class", cs) for cs in TILE_SETS]
        t_parts.append(tiles)
        s_parts.append(collect_similar(predictor, idx, gpkg, "class", SIMILAR_CLASSES))
        print(f"{what} {tif.name}: {len(f['y'])} boxes ({int(f['y'].sum())} right), "
              f"{sum(len(t['y']) for t in tiles)} tiles, {len(s_parts[-1]['y'])} similar, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    find = {k: np.concatenate([p[k] for p in f_parts]) for k in ("x", "y", "phrase", "zoomed")}
    tiles = [{k: np.concatenate([tp[i][k] for tp in t_parts]) for k in ("x", "y")} for i in range(len(TILE_SETS))]
    similar = {k: np.concatenate([p[k] for p in s_parts]) for k in ("x", "y")}
    return find, tiles, similar


#: real labelled scenes of ../shared/real_data for the calibration on real imagery ("find:real"): raster, labels,
#: the phrase of the labelled class, and phrases of things that are not there (a forest; a suburb, where a
#: backyard pool or a parked car may be unlabelled, so those are left out)
REAL_SCENES = [
    ("neon_osbs029_rgb.tif", "neon_osbs029_trees_pixel_boxes.csv", "tree",
     ["airplane", "ship", "tennis court", "swimming pool", "building", "car", "parking lot", "storage tanks"]),
    ("spacenet_atlanta_pan.tif", "spacenet_atlanta_buildings.geojson", "building",
     ["airplane", "ship", "tennis court", "storage tanks", "baseball field", "river"]),
]
REAL = ROOT.parent / "shared" / "real_data"


def _real_labels(raster: Path, labels: Path, cls: str):
    """The labels of a real scene as polygons in its CRS, every one of class ``cls`` (field ``class``)."""
    import geopandas as gpd

    from geoalign_core.training.calibrate import labels_frame

    if labels.suffix == ".csv":
        frame = labels_frame(str(raster), str(labels), "label", None)
    else:
        frame = gpd.read_file(labels)
    return gpd.GeoDataFrame({"class": [cls] * len(frame)}, geometry=frame.geometry.values, crs=frame.crs)


def calibrate_real(predictor, work: Path, refit: bool) -> tuple[dict, dict] | None:
    """The demo's map for real imagery (``"find:real"``), fitted on both real labelled scenes, and its
    leave-one-scene-out measurement (fitted on one scene, measured on the other); None without the data."""
    import torch

    from geoalign_core.evaluation.reliability import collect_find, fit_logistic, reliability
    from geoalign_core.inference.calibration import SCAN_FEATURES

    if not all((REAL / r).exists() and (REAL / lab).exists() for r, lab, _, _ in REAL_SCENES):
        return None
    path = work / "collected_real.npz"
    if refit and path.exists():
        saved = np.load(path)
        parts = [{k[len(f"{i}_"):]: saved[k] for k in saved.files if k.startswith(f"{i}_")}
                 for i in range(len(REAL_SCENES))]
    else:
        parts = []
        for raster, labels, cls, absent in REAL_SCENES:
            frame = _real_labels(REAL / raster, REAL / labels, cls)
            parts.append(collect_find(predictor, REAL / raster, frame, "class", [cls, *absent]))
            print(f"real {raster}: {len(parts[-1]['y'])} boxes ({int(parts[-1]['y'].sum())} right)", flush=True)
        np.savez(path, **{f"{i}_{k}": v for i, p in enumerate(parts) for k, v in p.items()})
    for p in parts:  # the scan's features: the demo has no zoom-view map for real imagery
        p["x"] = p["x"][:, : len(SCAN_FEATURES)]
    x = np.concatenate([p["x"] for p in parts])
    y = np.concatenate([p["y"] for p in parts])

    def loso(l2: float) -> tuple[np.ndarray, np.ndarray]:
        """Leave one scene out: each scene's probabilities from a map fitted on the others."""
        ps, ys = [], []
        for i, p in enumerate(parts):
            rest = [q for j, q in enumerate(parts) if j != i]
            rx, ry = np.concatenate([q["x"] for q in rest]), np.concatenate([q["y"] for q in rest])
            if ry.all() or not ry.any():  # one kind of result only: the best estimate is its rate
                ps.append(np.full(len(p["y"]), float(np.clip(ry.mean(), 1e-3, 1 - 1e-3))))
            else:
                ps.append(fit_logistic(rx, ry, SCAN_FEATURES, l2=l2).probability(torch.from_numpy(p["x"])).numpy())
            ys.append(p["y"])
        return np.concatenate(ps), np.concatenate(ys)

    def log_loss(p: np.ndarray, t: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.mean(np.where(t, np.log(p), np.log1p(-p))))

    # the penalty is chosen by how well a map fitted on one real scene predicts the other: where the demo's
    # evidence does not carry over between real scenes, the strongest penalty wins and the map stays near the
    # base rate (it says "rarely right" everywhere instead of trusting evidence that does not transfer)
    grid = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    losses = {l2: log_loss(*loso(l2)) for l2 in grid}
    best = min(grid, key=lambda k: (round(losses[k], 6), -k))
    fmap = fit_logistic(x, y, SCAN_FEATURES, l2=best)
    p_cv, y_cv = loso(best)
    rel = reliability(p_cv, y_cv)
    names = " and ".join(f"{r} ({c})" for r, _, c, _ in REAL_SCENES)
    entry = {"map": fmap.to_dict(), "fitted_on": f"{len(REAL_SCENES)} real labelled scenes: {names}",
             "n": int(len(y)), "n_right": int(y.sum()),
             "applies_to": "rasters not made by the project's scene generator (real imagery)",
             "l2": best, "l2_log_loss": {str(k): round(v, 5) for k, v in losses.items()},
             "rule": "a box is right when its centre lies in a labelled object of its class; phrases of things not "
                     "in the scene are always wrong"}
    measured = {"on": "the same real scenes, leave one scene out (fitted on the other)",
                **{k: v for k, v in rel.items() if k != "bins"}}
    return entry, {"measured": measured, "reliability": rel}


MIN_PHRASE = 20  #: a phrase gets its own recalibration with at least this many right and this many wrong boxes


def recalibrate_phrases(fmap, x: np.ndarray, y: np.ndarray, phrase: np.ndarray, names: list[str]) -> dict:
    """Per phrase with enough right and wrong boxes, ``(a, b)``: ``a * logit + b`` of the map's logit refitted on
    that phrase's boxes alone (Platt scaling per phrase; ``a`` kept positive so that the ranking holds)."""
    import torch

    from geoalign_core.evaluation.reliability import fit_logistic

    logit = (torch.from_numpy(x) @ fmap.vector() + fmap.bias).numpy()
    out = {}
    for i, name in enumerate(names):
        m = phrase == i
        if m.sum() == 0 or y[m].sum() < MIN_PHRASE or (~y[m]).sum() < MIN_PHRASE:
            continue
        r = fit_logistic(logit[m][:, None], y[m], ("logit",), nonnegative=("logit",))
        a = r.weights["logit"]
        if a >= 0.05:
            out[name] = [round(a, 6), round(r.bias, 6)]
    return out


def phrase_steps(fmap, recal: dict, x: np.ndarray, y: np.ndarray, phrase: np.ndarray, names: list[str]) -> dict:
    """Per recalibrated phrase, ``[knots, values]``: the non-decreasing step from its recalibrated probability to
    the share of right boxes (:func:`~geoalign_core.evaluation.reliability.fit_isotonic`): where the evidence
    saturates (the demo's best-scored "red car" boxes are no more often right than its middling ones), the
    score stops growing instead of promising more than the boxes keep."""
    from geoalign_core.evaluation.reliability import fit_isotonic

    p = probabilities(fmap, recal, x, phrase, names)
    out = {}
    for i, name in enumerate(names):
        m = phrase == i
        if name in recal:
            knots, values = fit_isotonic(p[m], y[m])
            out[name] = [[round(k, 6) for k in knots], [round(v, 6) for v in values]]
    return out


def probabilities(fmap, recal: dict, x: np.ndarray, phrase: np.ndarray, names: list[str],
                  steps: dict | None = None) -> np.ndarray:
    """The card's probabilities of boxes ``x`` of phrases ``phrase`` (indexes into ``names``)."""
    import torch

    from geoalign_core.inference.calibration import isotonic_apply

    logit = (torch.from_numpy(x) @ fmap.vector() + fmap.bias).numpy()
    for i, name in enumerate(names):
        if name in recal:
            a, b = recal[name]
            logit[phrase == i] = a * logit[phrase == i] + b
    p = 1.0 / (1.0 + np.exp(-logit))
    for i, name in enumerate(names):
        if steps and name in steps and (phrase == i).any():
            p[phrase == i] = isotonic_apply(torch.from_numpy(p[phrase == i]), *steps[name]).numpy()
    return p


def _collected(work: Path, predictor, fit_pairs, check_pairs, refit: bool) -> dict[str, np.ndarray]:
    """The labelled results of every scene: collected (and saved to ``collected.npz``), or read back (``refit``)."""
    path = work / "collected.npz"
    if refit and path.exists():
        saved = dict(np.load(path))
        if "fit_find_zoomed" in saved:  # collected with the zoom view
            return saved
    fit_find, fit_tiles, fit_sim = collect(predictor, fit_pairs, "fit")
    check_find, check_tiles, check_sim = collect(predictor, check_pairs, "check")
    data = {**{f"fit_find_{k}": v for k, v in fit_find.items()},
            **{f"check_find_{k}": v for k, v in check_find.items()},
            "fit_tiles_x": np.concatenate([t["x"] for t in fit_tiles]),
            "fit_tiles_y": np.concatenate([t["y"] for t in fit_tiles]),
            "fit_sim_x": fit_sim["x"], "fit_sim_y": fit_sim["y"], "check_sim_x": check_sim["x"],
            "check_sim_y": check_sim["y"],
            **{f"check_tiles_{i}_{k}": t[k] for i, t in enumerate(check_tiles) for k in ("x", "y")}}
    np.savez(path, **data)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "calibration")
    ap.add_argument("--card", type=Path, default=ROOT / "geoalign_core" / "weights" / "geoalign-demo.card.json")
    ap.add_argument("--refit", action="store_true", help="fit again from the saved collected.npz (no new runs)")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from geoalign_core.card import Domain, ModelCard, save_card
    from geoalign_core.evaluation.reliability import TILE_FEATURES, fit_logistic, reliability
    from geoalign_core.inference import Predictor
    from geoalign_core.inference.calibration import FEATURES, SCAN_FEATURES, SIMILAR_FEATURES

    torch.manual_seed(0)
    args.work.mkdir(parents=True, exist_ok=True)
    fit_pairs = scenes(args.work, "fit", FIT_SCENES)
    check_pairs = scenes(args.work, "check", CHECK_SCENES)
    card = ModelCard(
        name="geoalign-demo",
        description="GeoAlign-Tiny (4-layer ViT, patch 8, 112 px) trained from scratch on this project's synthetic "
                    "scenes (docs/demo_model.md): a demonstration of the pipeline, not a model for real imagery",
        domain=Domain(kind="synthetic", sensor="rendered aerial", gsd_m=(0.3, 0.3), bands=3, region="",
                      description="30 generated 1024 px scenes, seeds 1000-1029: roads, parking lots, buildings, cars, "
                                  "swimming pools, trees, ponds, a river, tennis courts, ships"),
        vocabulary=training_vocabulary(args.work, fit_pairs[0]),
        object_sizes=training_object_sizes(),
    )
    predictor = Predictor("geoalign-demo", device="cpu")
    predictor.model.card = card  # vocabulary known (the 'unknown' feature), no calibration yet
    d = _collected(args.work, predictor, fit_pairs, check_pairs, args.refit)
    if not (d["fit_find_zoomed"].all() and d["check_find_zoomed"].all()):
        raise SystemExit("the zoom view was not measured for every box: are the scenes' rasters beside their indexes?")
    names = PRESENT + ABSENT
    # the scan's map ("find": regions, collections, an index without its raster) ...
    scan_x, check_scan_x = d["fit_find_x"][:, : len(SCAN_FEATURES)], d["check_find_x"][:, : len(SCAN_FEATURES)]
    smap_find = fit_logistic(scan_x, d["fit_find_y"], SCAN_FEATURES)
    scan_recal = recalibrate_phrases(smap_find, scan_x, d["fit_find_y"], d["fit_find_phrase"], names)
    scan_steps = phrase_steps(smap_find, scan_recal, scan_x, d["fit_find_y"], d["fit_find_phrase"], names)
    # ... and the zoom view's ("find:zoom": find on a raster, or an index whose raster is there)
    fmap = fit_logistic(d["fit_find_x"], d["fit_find_y"], FEATURES)
    per_phrase_recal = recalibrate_phrases(fmap, d["fit_find_x"], d["fit_find_y"], d["fit_find_phrase"], names)
    steps = phrase_steps(fmap, per_phrase_recal, d["fit_find_x"], d["fit_find_y"], d["fit_find_phrase"], names)
    tmap = fit_logistic(d["fit_tiles_x"], d["fit_tiles_y"], TILE_FEATURES)
    smap = fit_logistic(d["fit_sim_x"], d["fit_sim_y"], SIMILAR_FEATURES)
    fitted_on = (f"{len(fit_pairs)} held-out synthetic scenes (seeds {FIT_SCENES[0][0]}-{FIT_SCENES[-1][0]}, "
                 f"{' and '.join(sorted({f'{z} px' for _, z in FIT_SCENES}))})")
    rule = "a box is right when its centre lies in a labelled object of the phrase's class (and colour)"
    card.calibration = {
        "find": {"map": smap_find.to_dict(), "fitted_on": fitted_on, "n": int(len(d["fit_find_y"])),
                 "n_right": int(d["fit_find_y"].sum()), "phrases": names, "per_phrase": scan_recal,
                 "per_phrase_steps": scan_steps, "rule": rule},
        "find:zoom": {"map": fmap.to_dict(), "fitted_on": fitted_on, "n": int(len(d["fit_find_y"])),
                      "n_right": int(d["fit_find_y"].sum()), "phrases": names, "per_phrase": per_phrase_recal,
                      "per_phrase_steps": steps, "rule": rule},
        "tiles": {"map": tmap.to_dict(), "fitted_on": fitted_on, "n": int(len(d["fit_tiles_y"])),
                  "n_right": int(d["fit_tiles_y"].sum()),
                  "rule": "a tile's label is right when its class covers >= 10 % of the tile"},
        "similar": {"map": smap.to_dict(), "fitted_on": fitted_on, "n": int(len(d["fit_sim_y"])),
                    "n_right": int(d["fit_sim_y"].sum()),
                    "rule": f"two labelled {', '.join(SIMILAR_CLASSES)} objects as examples; a result is right when "
                            "its centre lies in an object of the same class"},
    }
    p_find = probabilities(fmap, per_phrase_recal, d["check_find_x"], d["check_find_phrase"], names, steps)
    rel_find = reliability(p_find, d["check_find_y"])
    p_scan = probabilities(smap_find, scan_recal, check_scan_x, d["check_find_phrase"], names, scan_steps)
    rel_scan = reliability(p_scan, d["check_find_y"])
    tile_sets = [(d[f"check_tiles_{i}_x"], d[f"check_tiles_{i}_y"]) for i in range(len(TILE_SETS))]
    p_tiles = [tmap.probability(torch.from_numpy(x)).numpy() for x, _ in tile_sets]
    rel_tiles = reliability(np.concatenate(p_tiles), np.concatenate([y for _, y in tile_sets]))
    rel_sim = reliability(smap.probability(torch.from_numpy(d["check_sim_x"])).numpy(), d["check_sim_y"])
    on = f"{len(check_pairs)} other held-out synthetic scenes (seeds {CHECK_SCENES[0][0]}-{CHECK_SCENES[-1][0]})"
    card.measured = {"find": {"on": on, **{k: v for k, v in rel_find.items() if k != "bins"}},
                     "find:scan": {"on": on, **{k: v for k, v in rel_scan.items() if k != "bins"}},
                     "tiles": {"on": on, **{k: v for k, v in rel_tiles.items() if k != "bins"}},
                     "similar": {"on": on, **{k: v for k, v in rel_sim.items() if k != "bins"}}}
    real = calibrate_real(predictor, args.work, args.refit)
    if real is not None:
        card.calibration["find:real"] = real[0]
        card.measured["find:real"] = real[1]["measured"]
    save_card(card, args.card)
    per_phrase = {}
    for i, ph in enumerate(PRESENT + ABSENT):
        m = d["check_find_phrase"] == i
        per_phrase[ph] = reliability(p_find[m], d["check_find_y"][m])
    none_rate = {}
    for cs, pt in zip(TILE_SETS, p_tiles):
        none_rate[",".join(cs) if cs else "default vocabulary"] = float((pt < 0.5).mean())
    check = {"find": rel_find, "find_scan": rel_scan, "tiles": rel_tiles, "similar": rel_sim, "per_phrase": per_phrase,
             "find_real": real[1]["reliability"] if real is not None else None,
             "tile_none_rate": none_rate, "fit": {"find": smap_find.to_dict(), "find:zoom": fmap.to_dict(),
                                                  "tiles": tmap.to_dict(),
                                                  "similar": smap.to_dict()}}
    (args.work / "check.json").write_text(json.dumps(check, indent=1))
    print(f"wrote {args.card}: find (zoom view) precision {rel_find['precision_at_0.5']:.3f} at >= 0.5, ECE "
          f"{rel_find['ece']:.3f}; find (scan only) precision {rel_scan['precision_at_0.5']:.3f}, "
          f"ECE {rel_scan['ece']:.3f}; "
          f"tiles ECE {rel_tiles['ece']:.3f}; similar ECE {rel_sim['ece']:.3f}")
    for ph, r in per_phrase.items():
        print(f"  {ph:15} >= 0.5: {r['n_at_0.5']:4}, precision {r['precision_at_0.5'] or 0:.2f}, ECE {r['ece']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
