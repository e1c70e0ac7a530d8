"""``geoalign finetune``: prepare + stage II + a before/after report on a spatially held-out part, in one
command (GeoAlign-Tiny with random weights on a generated 512 px scene: the mechanics, not the quality)."""

from __future__ import annotations

import json

import geopandas as gpd
import pytest
import rasterio
from cli_helpers import assert_bad, cli

from geoalign_core import load_model
from geoalign_core.geo.vectors import boxes_to_pixels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_finetune_end_to_end(scene_1002, tiny_ckpt, tmp_path, capsys):
    tif, gpkg = scene_1002
    out = tmp_path / "ft"
    rc, stdout, err = cli(capsys, "finetune", tif, gpkg, "--class-field", "class", "--from", tiny_ckpt, "--out", out,
                          "--steps", "2", "--batch-size", "4", "--name", "mine", "--quiet",
                          "--set", "weight_decay=0.01")
    assert rc == 0, err
    model = out / "mine.safetensors"
    assert model.is_file() and load_model(str(model), device="cpu") is not None
    report = json.loads((out / "report.json").read_text())
    # the classes' median labelled sizes (metres) travel with the model, for find
    sizes = load_model(str(model), device="cpu").spec.extra["object_sizes"]
    assert sizes == report["object_sizes_m"] and set(sizes) == set(report["classes"])
    labels = gpd.read_file(gpkg)
    cls = report["classes"][0]
    b = labels[labels["class"].str.replace("_", " ").str.lower() == cls].geometry.bounds
    assert sizes[cls] == pytest.approx([float((b.maxx - b.minx).median()), float((b.maxy - b.miny).median())],
                                       rel=0.15)
    assert report["steps"] == 2 and report["batch_size"] == 4 and report["classes"]
    # the training objective: HNA with find's background phrases; --set keys land in train.yaml
    import yaml

    cfg = yaml.safe_load((out / "train.yaml").read_text())
    assert cfg["lambdas"][:3] == [1.0, 1.0, 1.0] and cfg["background_negatives"] is True and cfg["distill"] == 10.0
    assert cfg["weight_decay"] == 0.01 and report["overrides"] == {"weight_decay": 0.01}
    for when in ("before", "after"):
        assert 0.0 <= report[when]["labelled_found"] <= 1.0
    for when in ("before", "after"):
        assert 0.0 <= report[when]["region_top1"] <= 1.0 and report[when]["n_regions"] > 0
        assert report[when]["n_background"] > 0 and 0.0 <= report[when]["background_called_a_class"] <= 1.0
        assert 0.0 <= report[when]["reference_top1"] <= 1.0  # forgetting: a generated held-out scene
    assert (out / "reference" / "data" / "samples.jsonl").is_file()
    # weight interpolation: the largest tried share that keeps the reference scene, else the best kept
    tried = report["alphas_tried"]
    assert tried[0][0] == 1.0 and report["alpha"] in [a for a, _ in tried]
    start_ref = report["before"]["reference_top1"]
    ok = [a for a, v in tried if v >= start_ref - 0.05]
    assert report["alpha"] == (ok[0] if ok else max(tried, key=lambda t: t[1])[0])
    assert abs(report["after"]["reference_top1"] - dict(map(tuple, tried))[report["alpha"]]) < 1e-6
    md = (out / "report.md").read_text()
    assert "| region top-1" in md and "| background boxes called a class" in md and "| forgetting" in md
    assert md.strip() in stdout
    # the fine-tuned model's card: its domain (the scene it was fine-tuned on: generated) and its scores,
    # calibrated on the held-out part or said to be uncalibrated; find's precision there is measured against
    # every box that is not on a label (real negatives), never without them
    from geoalign_core.card import card_path, load_card

    card = load_card(model)
    assert card is not None and card_path(model).is_file() and card.domain.kind == "synthetic"
    assert card.domain.bands == 3 and card.domain.gsd_m is not None
    assert "find on the held-out part" in md or "find on the held-out part | not measured" in md
    after = report["after"].get("find_held_out")
    if card.calibrated:
        assert after is not None and after["n"] > after["n_right"] > 0  # right and wrong boxes both
        assert 0.0 <= after["ece"] <= 1.0 and after["objects"] > 0
    else:
        assert "not calibrated" in report["calibration"]["note"] and "not calibrated" in md
    cmds = (out / "commands.sh").read_text().splitlines()
    assert cmds[3].startswith("geoalign prepare ") and "--val-fraction 0.3" in cmds[3]
    assert cmds[4] == f"geoalign train {out / 'train.yaml'} --overwrite"
    assert sum(c.startswith("geoalign eval regions --data ") for c in cmds) == 2
    data = out / "data" / tif.stem
    assert (data / "samples.jsonl").is_file() and (data / "samples_val.jsonl").is_file()
    # the commands are real: the prepare line, run again, reproduces the prepared data
    again = cmds[3].split()[2:]
    rc, _, err = cli(capsys, "prepare", *again[:-1], "--quiet", "--overwrite")
    assert rc == 0, err
    # a non-empty --out needs --overwrite
    assert_bad(capsys, ["finetune", tif, gpkg, "--class-field", "class", "--from", tiny_ckpt, "--out", out],
               tmp_path, "not empty")


def test_finetune_bad_input(scene_1002, tiny_ckpt, tmp_path, capsys):
    tif, gpkg = scene_1002
    base = ["--class-field", "class", "--from", tiny_ckpt, "--out", tmp_path / "o"]
    assert_bad(capsys, ["finetune", tif, *base], tmp_path, "no labels file")
    assert_bad(capsys, ["finetune", gpkg, *base], tmp_path, "no raster")
    assert_bad(capsys, ["finetune", tif, tif, gpkg, gpkg, gpkg, *base], tmp_path, "one per raster")
    assert_bad(capsys, ["finetune", tif, tmp_path / "missing.gpkg", *base], tmp_path, "not found")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--val-fraction", "0"], tmp_path, "val fraction")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--alpha", "2"], tmp_path, "--alpha")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--bounds", "1,2,3"], tmp_path, "--bounds must be four numbers")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--bounds", "0,0,10,10"], tmp_path, "do not overlap")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--set", "data=x"], tmp_path, "finetune sets it itself")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--set", "no_such_key=1"], tmp_path, "no_such_key")
    assert_bad(capsys, ["finetune", tif, gpkg, *base, "--set", "lambdas"], tmp_path, "KEY=VALUE")


@pytest.mark.slow
def test_finetune_pixel_box_csv_inside_bounds(scene_1002, tiny_ckpt, tmp_path, capsys):
    """Labels as a CSV of pixel boxes (told apart from the raster by content) and --bounds: only chips
    inside the bounds, for training and the held-out part alike; the prepare line carries them."""
    tif, gpkg = scene_1002
    polys = gpd.read_file(gpkg)
    with rasterio.open(tif) as ds:
        (left, bottom, _, top), res = ds.bounds, ds.res[0]
        px = boxes_to_pixels(polys, ds.transform)
    csv = tmp_path / "boxes.csv"
    csv.write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "".join(
        f"{tif.name},{x0:.3f},{y0:.3f},{x1:.3f},{y1:.3f},{c}\n" for (x0, y0, x1, y1), c in zip(px, polys["class"])))
    bounds = [left, bottom, left + 256 * res, top]  # the left half: 256 x 512 px
    out = tmp_path / "ft"
    rc, _, err = cli(capsys, "finetune", tif, csv, "--class-field", "label", "--from", tiny_ckpt, "--out", out,
                     "--bounds", ",".join(map(str, bounds)), "--steps", "1", "--batch-size", "4", "--alpha", "1",
                     "--quiet")
    assert rc == 0, err
    data = out / "data" / tif.stem
    train = [json.loads(x) for x in (data / "samples.jsonl").read_text().splitlines()]
    val = [json.loads(x) for x in (data / "samples_val.jsonl").read_text().splitlines()]
    assert train and val
    assert all(s["window"][0] + s["window"][2] <= 256 for s in train + val)  # inside the bounds
    assert all(s["bounds"][2] <= bounds[2] + 1e-6 for s in train + val)
    # the held-out part is the south end of the bounds (taller than wide), below every training chip
    assert min(s["window"][1] for s in val) >= max(s["window"][1] + s["window"][3] for s in train)
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["parameters"]["bounds"] == pytest.approx(bounds) and meta["area"][2] == 256
    prep = next(c for c in (out / "commands.sh").read_text().splitlines() if c.startswith("geoalign prepare "))
    assert f" {csv} " in prep and f"--bounds {','.join(map(str, bounds))}" in prep
    report = json.loads((out / "report.json").read_text())
    assert report["bounds"] == pytest.approx(bounds) and report["alpha"] == 1.0
    assert "Only chips inside the bounds" in (out / "report.md").read_text()


def test_report_never_prints_a_precision_without_negatives():
    """With no background box, the object-vs-background rows say so instead of a share computed on positives
    alone; find's held-out rows give precision and recall only where they were measured."""
    from geoalign_core.training.finetune import _report_lines

    base = {"region_top1": 0.5, "n_regions": 10, "labelled_found": 1.0, "background_called_a_class": None,
            "n_background": 0, "reference_top1": 0.9}
    report = {"model": "m.safetensors", "start": "s", "steps": 2, "batch_size": 4, "train_chips": 8, "lr": 1e-4,
              "classes": ["tree"], "seconds": 3.0, "alpha": 1.0, "alphas_tried": [[1.0, 0.9]], "val_fraction": 0.3,
              "before": dict(base), "after": dict(base), "card": "m.card.json", "calibration": {}}
    md = "\n".join(_report_lines(report))
    assert "100%" not in md and "not measured: no background box" in md
    assert "find on the held-out part | not measured" in md
    held = {"precision_at_0.5": 0.8, "n_at_0.5": 10, "objects_found": 7, "objects": 9, "recall_at_0.5": 7 / 9,
            "ece": 0.05}
    report["after"]["find_held_out"] = held
    report["after"]["n_background"] = report["before"]["n_background"] = 5
    report["after"]["background_called_a_class"] = report["before"]["background_called_a_class"] = 0.2
    md = "\n".join(_report_lines(report))
    assert "80% of 10" in md and "7 of 9" in md and "| background boxes called a class" in md
