"""What a score means, measured: the figures and reliability diagrams of docs/scores.md.

    python benchmarks/bench_scores.py [--write-docs]

1. ``geoalign-demo`` on held-out synthetic scenes (``geoalign_core/training/demo/calibrate_demo.py``'s CHECK
   scenes, never used to train, tune or calibrate it; the script is run first when
   ``runs/calibration/check.json`` is missing):
   the reliability diagram and expected calibration error (ECE, 10 bins) of every box ``find`` returns for its
   phrases, and ``find`` with its defaults (live, box refinement on) for "red car", "swimming pool" and "tree":
   precision among boxes scoring >= 0.5, ECE over all returned boxes (``--min-score 0``).
2. The sample scene: "red car" top 10, how many are on a red car and their scores.
3. Absent phrases on real scenes (``../shared/real_data``): boxes scoring >= 0.5 among the best 100, and what
   ``find`` writes with its defaults.
4. ``tile-classify`` with three classes absent from the scene: the share of tiles labelled "none of these".
5. The NEON fine-tune (``geoalign finetune`` on the NEON crop's tree crowns, default options): its card's
   calibration measured on its held-out part by spatial two-fold cross-validation, with its reliability diagram.

``--write-docs`` rewrites the generated section of docs/scores.md and the two SVG diagrams beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from report import ROOT, cpu_summary, table, write_section

sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "real_data"
DOC = ROOT / "docs" / "scores.md"
SECTION = "## Measured (bench_scores.py)"
WORK = ROOT / "runs" / "calibration"
PRESENT = ["red car", "swimming pool", "tree"]
ABSENT_REAL = {
    "neon_osbs029_rgb.tif": ["airplane", "ship", "tennis court", "swimming pool"],
    "spacenet_atlanta_pan.tif": ["airplane", "ship", "tennis court"],
}
ABSENT_CLASSES = ["airplane", "golf course", "desert"]


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _auc(score: np.ndarray, right: np.ndarray) -> float | None:
    """The chance that a right box scores above a wrong one (ties count half); None without both kinds."""
    r, w = score[right], score[~right]
    if len(r) == 0 or len(w) == 0:
        return None
    return float(((r[:, None] > w[None, :]).sum() + 0.5 * (r[:, None] == w[None, :]).sum()) / (len(r) * len(w)))


def demo_check(predictor) -> tuple[list[list[object]], dict, list[list[object]]]:
    """Per phrase on the CHECK scenes, live ``find`` with its defaults (min score 0 for the ECE); and per scene
    for the first phrase ("red car"): boxes, right ones, the objects they hit, mean score, and how well the
    score tells right from wrong (area under the ROC curve)."""
    import geopandas as gpd

    from geoalign_core.evaluation.reliability import _object_of, phrase_rule, reliability
    from geoalign_core.training.demo.calibrate_demo import CHECK_SCENES, scenes

    pairs = scenes(WORK, "check", CHECK_SCENES)
    rows, pooled_p, pooled_y, scene_rows = [], [], [], []
    for ph in PRESENT:
        ps, ys = [], []
        for tif, gpkg in pairs:
            lab = gpd.read_file(gpkg)
            g = predictor.find(tif, [ph], min_score=0.0)
            truth = phrase_rule(ph, lab, "class").select(lab, "class").reset_index(drop=True)
            obj = _object_of(g.geometry, truth)
            ps.append(g.score.to_numpy())
            ys.append(obj >= 0)
            if ph == PRESENT[0]:
                auc = _auc(ps[-1], ys[-1])
                scene_rows.append([tif.name, len(g), int(ys[-1].sum()), f"{len(set(obj[obj >= 0]))} of {len(truth)}",
                                   f"{float(ps[-1].mean()):.2f}", f"{float(ys[-1].mean()):.2f}",
                                   "n/a" if auc is None else f"{auc:.2f}"])
        p, y = np.concatenate(ps), np.concatenate(ys)
        pooled_p.append(p)
        pooled_y.append(y)
        rel = reliability(p, y)
        hi = p >= 0.5
        rows.append([ph, len(p), int(hi.sum()), f"{rel['precision_at_0.5']:.2f}" if hi.any() else "n/a",
                     f"{rel['ece']:.3f}", f"{float(y.mean()):.2f}"])
    rel_all = reliability(np.concatenate(pooled_p), np.concatenate(pooled_y))
    return rows, rel_all, scene_rows


def sample_red_car(predictor) -> list[object]:
    import geopandas as gpd

    from geoalign_core.evaluation.reliability import _object_of, phrase_rule

    scene = ROOT / "sample_data" / "scene.tif"
    lab = gpd.read_file(ROOT / "sample_data" / "labels.gpkg")
    g = predictor.find(scene, ["red car"], max_results=10)
    truth = phrase_rule("red car", lab, "class").select(lab, "class").reset_index(drop=True)
    right = _object_of(g.geometry, truth) >= 0
    return [f"{int(right.sum())} of {len(g)}", f"{g.score.min():.3f} .. {g.score.max():.3f}",
            " ".join(f"{v:.3f}" for v in g.score)]


def absent_real(predictor) -> list[list[object]]:
    rows = []
    for name, phrases in ABSENT_REAL.items():
        path = REAL / name
        if not path.exists():
            rows.append([name, "(missing)", "", "", ""])
            continue
        for ph in phrases:
            every = predictor.find(path, [ph], min_score=0.0)
            default = predictor.find(path, [ph])
            best = f"{every.score.max():.3f}" if len(every) else "n/a"
            rows.append([name, ph, int((every.score >= 0.5).sum()), len(default), best])
    return rows


def tiles_absent(predictor) -> list[list[object]]:
    from geoalign_core.inference.vocabulary import NONE_LABEL
    from geoalign_core.training.demo.calibrate_demo import CHECK_SCENES, scenes

    rows = []
    for tif, _ in scenes(WORK, "check", CHECK_SCENES)[:2] + [(ROOT / "sample_data" / "scene.tif", None)]:
        t = predictor.tile_classify(tif, ABSENT_CLASSES)
        rows.append([tif.name, len(t), f"{float((t['label'] == NONE_LABEL).mean()):.0%}"])
    return rows


def neon_finetune(work: Path) -> dict | None:
    raster, labels = REAL / "neon_osbs029_rgb.tif", REAL / "neon_osbs029_trees_pixel_boxes.csv"
    if not raster.exists():
        return None
    out = work / "neon_finetune"
    report = out / "report.json"
    if not report.exists():
        cmd = [sys.executable, "-m", "geoalign_core.cli", "finetune", str(raster), str(labels), "--class-field",
               "label", "--from", "geoalign-demo", "--out", str(out), "--overwrite", "--quiet"]
        subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geoalign-bench-scores"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    from geoalign_core.evaluation.reliability import reliability_svg
    from geoalign_core.inference import Predictor

    t0 = time.perf_counter()
    if not (WORK / "check.json").exists():
        subprocess.run([sys.executable, str(ROOT / "training" / "demo" / "calibrate_demo.py")], check=True)
    check = json.loads((WORK / "check.json").read_text())
    predictor = Predictor("geoalign-demo", device="cpu")
    card = predictor.model.card
    print("demo check scenes (index, all phrases):", {k: check["find"][k] for k in ("n", "ece", "precision_at_0.5")})
    live_rows, live_rel, scene_rows = demo_check(predictor)
    print(table(["phrase", "boxes", ">= 0.5", "precision >= 0.5", "ECE", "share right"], live_rows))
    scene_head = ["scene", "boxes", "right", "red cars hit", "mean score", "share right", "ROC area"]
    print(table(scene_head, scene_rows))
    red = sample_red_car(predictor)
    print("sample scene red car top 10:", red)
    absent = absent_real(predictor)
    print(table(["scene", "phrase", ">= 0.5 of best 100", "written with defaults", "best score"], absent))
    tiles = tiles_absent(predictor)
    print(table(["scene", "tiles", "none of these"], tiles))
    args.work.mkdir(parents=True, exist_ok=True)
    neon = neon_finetune(args.work)
    neon_rel = (neon or {}).get("after", {}).get("find_held_out")
    took = time.perf_counter() - t0
    if not args.write_docs:
        return 0
    date = dt.date.today().isoformat()
    (DOC.parent / "scores_reliability_demo.svg").write_text(reliability_svg(
        {"find, all phrases (index)": check["find"], "find, 3 phrases (live, defaults)": live_rel,
         "tile-classify": check["tiles"], "similar": check["similar"]},
        "geoalign-demo on held-out synthetic scenes"))
    if neon_rel:
        (DOC.parent / "scores_reliability_neon.svg").write_text(reliability_svg(
            {"find tree (2-fold CV)": neon_rel}, "NEON fine-tune, its held-out part"))
    pp = check["per_phrase"]
    per_phrase = [[ph, r["n"], r["n_at_0.5"], f"{r['precision_at_0.5']:.2f}" if r["precision_at_0.5"] is not None
                   else "n/a", f"{r['ece']:.3f}"] for ph, r in pp.items()]
    bins = [[b["bin"], b["n"], "" if b["predicted"] is None else f"{b['predicted']:.3f}",
             "" if b["observed"] is None else f"{b['observed']:.3f}"] for b in check["find"]["bins"]]
    lines = [
        SECTION, "",
        f"Measured {date} at commit {_commit()} on {cpu_summary()} with `python benchmarks/bench_scores.py "
        f"--write-docs` ({took / 60:.0f} min; the calibration itself: "
        "`python geoalign_core/training/demo/calibrate_demo.py`). "
        f"Model card: {card.domain_line() if card else 'none'}.", "",
        "### geoalign-demo, held-out synthetic scenes", "",
        f"Every box `find` returned (its default 100 per phrase at most, `--min-score 0`, from each scene's index) on "
        f"{card.measured['find']['on'] if card else '?'}: {check['find']['n']} boxes, {check['find']['n_right']} "
        f"right; ECE **{check['find']['ece']:.3f}**, precision among the {check['find']['n_at_0.5']} boxes "
        f"scoring >= 0.5: **{check['find']['precision_at_0.5']:.2f}**.", "",
        "![reliability diagram of geoalign-demo](scores_reliability_demo.svg)", "",
        table(["score bin", "boxes", "mean score", "share right"], bins), "",
        "Per phrase (same boxes):", "",
        table(["phrase", "boxes", ">= 0.5", "precision >= 0.5", "ECE"], per_phrase), "",
        "`find` as a user runs it (live raster, box refinement on, `--min-score 0` to see every returned box) "
        "on the same scenes:", "",
        table(["phrase", "boxes", ">= 0.5", "precision >= 0.5", "ECE", "share right"], live_rows), "",
        f"\"{PRESENT[0]}\" scene by scene (same runs; *ROC area*: the chance that a right box scores above a wrong "
        "one, 0.5 = no better than chance):", "",
        table(scene_head, scene_rows), "",
        f"Tile classification: ECE {check['tiles']['ece']:.3f} over {check['tiles']['n']} tiles; `similar` "
        f"(two labelled examples): ECE {check['similar']['ece']:.3f} over {check['similar']['n']} results, precision "
        f"{(check['similar']['precision_at_0.5'] or 0):.2f} among those >= 0.5.", "",
        "### The sample scene", "",
        f"`find sample_data/scene.tif \"red car\" --max-results 10`: {red[0]} boxes on a red car; scores "
        f"{red[2]}.", "",
        "### Absent things on real scenes", "",
        table(["scene", "phrase", "boxes >= 0.5 among the best 100", "boxes written with defaults",
               "best score"], absent), "",
        "### None of these", "",
        f"`tile-classify --classes \"{','.join(ABSENT_CLASSES)}\"` (none of them in the scene):", "",
        table(["scene", "tiles", "labelled none of these"], tiles), "",
    ]
    if neon:
        a, b = neon["after"], neon["before"]
        fa, fb = a.get("find_held_out") or {}, b.get("find_held_out") or {}

        def cell(f: dict, key: str, fmt: str) -> str:
            v = f.get(key)
            return "n/a" if v is None else format(v, fmt)

        lines += [
            "### The NEON fine-tune, on its held-out part", "",
            f"`geoalign finetune neon_osbs029_rgb.tif neon_osbs029_trees_pixel_boxes.csv --class-field label --from "
            f"geoalign-demo` (defaults: the east 30 % held out). Its card: "
            f"{neon.get('calibration', {}).get('note', 'calibrated on the held-out part')}.", "",
            table(["model", "boxes >= 0.5 on a crown (precision)", "crowns found (recall at 0.5)", "ECE"],
                  [["geoalign-demo (its scores as users get them on real imagery)",
                    f"{cell(fb, 'precision_at_0.5', '.2f')} of "
                    f"{fb.get('n_at_0.5', 0)}", f"{fb.get('objects_found', 'n/a')} of {fb.get('objects', 'n/a')}",
                    cell(fb, "ece", ".3f")],
                   ["fine-tuned (2-fold cross-validated)", f"{cell(fa, 'precision_at_0.5', '.2f')} of "
                    f"{fa.get('n_at_0.5', 0)}", f"{fa.get('objects_found', 'n/a')} of {fa.get('objects', 'n/a')}",
                    cell(fa, "ece", ".3f")]]), "",
        ]
        if neon_rel:
            lines += ["![reliability diagram of the NEON fine-tune](scores_reliability_neon.svg)", ""]
    lines.append("Real data: NEON (CC0), SpaceNet (CC BY-SA 4.0).")
    write_section("\n".join(lines), SECTION, DOC)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
