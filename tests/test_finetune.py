"""``geoalign finetune``: prepare + stage II + a before/after report on a spatially held-out part, in one
command (GeoAlign-Tiny with random weights on a generated 512 px scene: the mechanics, not the quality)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_bad, cli

from geoalign_core import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_finetune_end_to_end(scene_1002, tiny_ckpt, tmp_path, capsys):
    tif, gpkg = scene_1002
    out = tmp_path / "ft"
    rc, stdout, err = cli(capsys, "finetune", tif, gpkg, "--class-field", "class", "--from", tiny_ckpt, "--out", out,
                          "--steps", "2", "--batch-size", "4", "--name", "mine", "--quiet")
    assert rc == 0, err
    model = out / "mine.safetensors"
    assert model.is_file() and load_model(str(model), device="cpu") is not None
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["batch_size"] == 4 and report["classes"]
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
