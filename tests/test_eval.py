"""``geoalign eval``: metric code on embeddings with known answers, and every mode end to end
with the random GeoAlign-Tiny model on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from geoalign_core.cli import main as cli_main
from geoalign_core.data import PrepareOptions, prepare_dataset
from geoalign_core.data.text import fill_template
from geoalign_core.evaluation import (
    DEFAULT_TEMPLATES,
    hard_negative_accuracy,
    load_scene_dataset,
    load_templates,
    per_class_accuracy,
    recall_at_k,
    topk_accuracy,
)
from geoalign_core.evaluation.common import format_table

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*RANDOM initialisation"),
    pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning"),
]


# ------------------------------------------------------------------ metric code
def _unit(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def test_topk_perfect_and_known():
    classes = _unit(6)
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    images = classes[targets] + 0.01 * _unit(8, seed=1)  # every image next to its class
    acc = topk_accuracy(images @ classes.T, targets, (1, 5))
    assert acc == {1: 1.0, 5: 1.0}
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    t = torch.tensor([0, 1, 2, 1])
    acc = topk_accuracy(scores, t, (1, 2, 5))
    assert acc[1] == pytest.approx(0.5)  # row 4 ties: counted as wrong
    assert acc[2] == pytest.approx(1.0) and acc[5] == 1.0  # k clipped to the number of classes
    pc = per_class_accuracy(scores, t, ["a", "b", "c"])
    assert pc == {"a": {"n": 1, "top1": 1.0}, "b": {"n": 2, "top1": 0.0}, "c": {"n": 1, "top1": 1.0}}
    const = torch.zeros(4, 3)
    assert topk_accuracy(const, t, (1,))[1] == 0.0  # a constant model is never right by ties


def test_recall_perfect_and_duplicates():
    emb = _unit(12, seed=2)
    rec = recall_at_k(emb @ emb.T, torch.eye(12, dtype=torch.bool), (1, 5, 10))
    assert rec == {"image_to_text": {1: 1.0, 5: 1.0, 10: 1.0}, "text_to_image": {1: 1.0, 5: 1.0, 10: 1.0}}
    rec = recall_at_k(-(emb @ emb.T), torch.eye(12, dtype=torch.bool), (1, 11, 12))
    assert rec["image_to_text"][1] == 0.0 and rec["image_to_text"][11] == 0.0 and rec["image_to_text"][12] == 1.0
    # 3 images, 2 texts; images 0 and 1 share text 0
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.1, 0.7]])
    pos = torch.tensor([[True, False], [True, False], [False, True]])
    rec = recall_at_k(sim, pos, (1, 2))
    assert rec["image_to_text"] == {1: pytest.approx(2 / 3), 2: 1.0}
    assert rec["text_to_image"] == {1: 0.5, 2: 1.0}  # text 1's best image is image 1 (wrong), image 2 second
    with pytest.raises(ValueError):
        recall_at_k(sim, torch.zeros(3, 2, dtype=torch.bool))


def test_hard_negative_accuracy():
    pos = torch.tensor([0.9, 0.5, 0.3])
    negs = [torch.tensor([0.1, 0.2]), torch.tensor([0.4, 0.6]), torch.tensor([0.3])]
    assert hard_negative_accuracy(pos, negs) == pytest.approx(1 / 3)  # a tie is a failure
    assert hard_negative_accuracy(pos, [torch.tensor([0.0])] * 3) == 1.0
    assert np.isnan(hard_negative_accuracy(pos, [torch.zeros(0)] * 3))


def test_templates(tmp_path):
    assert load_templates("default") == DEFAULT_TEMPLATES and load_templates("none") == ("{}",)
    assert fill_template("an aerial image of {a}.", "airplane") == "an aerial image of an airplane."
    assert fill_template("a photo of a {}.", "car") == "a photo of a car."
    f = tmp_path / "t.txt"
    f.write_text("# comment\nsatellite view of {}\n")
    assert load_templates(str(f)) == ("satellite view of {}",)
    f.write_text("no placeholder\n")
    with pytest.raises(Exception, match="placeholder"):
        load_templates(str(f))
    assert "metric" in format_table([("top1", 0.5)], ("metric", "value"))


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def scene(scene_1002, tmp_path_factory):
    tif, gpkg = scene_1002
    out = tmp_path_factory.mktemp("evalscene") / "ds"
    prepare_dataset(tif, gpkg, out, PrepareOptions(class_field="class"), progress=False)
    return tif, gpkg, out


@pytest.fixture(scope="module")
def scene_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("scenes")
    rng = np.random.default_rng(0)
    rows = ["image,label"]
    for cls, ext, driver, dtype in (("water", ".png", "PNG", "uint8"), ("bare_soil", ".tif", "GTiff", "uint16")):
        (d / cls).mkdir()
        for i in range(3):
            p = d / cls / f"{i}{ext}"
            data = rng.integers(0, 255 if dtype == "uint8" else 4000, size=(3, 40, 48)).astype(dtype)
            with rasterio.open(p, "w", driver=driver, width=48, height=40, count=3, dtype=dtype) as ds:
                ds.write(data)
            rows.append(f"{cls}/{i}{ext},{cls}")
    (d / "list.csv").write_text("\n".join(rows) + "\n")
    return d


def _eval(mode, *args):
    return cli_main(["eval", mode, "--model", "GeoAlign-Tiny", "--device", "cpu", "--quiet", *args])


def _in_unit(x):
    return x is None or 0.0 <= x <= 1.0


def test_scene_mode(scene_folder, tmp_path, capsys):
    paths, labels = load_scene_dataset(scene_folder)
    assert len(paths) == 6 and sorted(set(labels)) == ["bare soil", "water"]
    out = tmp_path / "m.json"
    assert _eval("scene", "--data", str(scene_folder), "--json", str(out)) == 0
    res = json.loads(out.read_text())
    assert res["task"] == "scene" and res["n"] == 6 and res["classes"] == ["bare soil", "water"]
    assert all(_in_unit(v) for v in res["metrics"].values()) and res["metrics"]["top5"] == 1.0
    assert "top1" in capsys.readouterr().out
    assert _eval("scene", "--data", str(scene_folder / "list.csv"), "--templates", "none",
                 "--json", str(tmp_path / "c.json")) == 0
    assert json.loads((tmp_path / "c.json").read_text())["n"] == 6


def test_regions_mode(scene, tmp_path, capsys):
    _, _, data = scene
    out = tmp_path / "r.json"
    assert _eval("regions", "--data", str(data), str(data / "samples.jsonl"), "--json", str(out),
                 "--batch-size", "4") == 0
    res = json.loads(out.read_text())
    n = sum(len(json.loads(x)["regions"]) for x in (data / "samples.jsonl").read_text().splitlines())
    assert res["n"] == 2 * n  # the same data given twice
    assert all(_in_unit(v) for v in res["metrics"].values())
    assert set(res["per_class"]) <= set(res["classes"]) and all(_in_unit(d["top1"]) for d in res["per_class"].values())
    text = capsys.readouterr().out
    assert "per class" in text and "top5" in text


def test_retrieval_mode(scene, tmp_path):
    _, _, data = scene
    for key in ("caption", "caption_detail"):
        out = tmp_path / f"{key}.json"
        assert _eval("retrieval", "--data", str(data), "--caption-key", key, "--json", str(out)) == 0
        res = json.loads(out.read_text())
        assert set(res["metrics"]) == {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10",
                                       "mean_recall"}
        assert all(_in_unit(v) for v in res["metrics"].values())
        assert res["metrics"]["i2t_R@1"] <= res["metrics"]["i2t_R@5"] <= res["metrics"]["i2t_R@10"]


def test_hard_negatives_mode(scene, tmp_path, capsys):
    _, _, data = scene
    out = tmp_path / "h.json"
    assert _eval("hard-negatives", "--data", str(data), "--json", str(out)) == 0
    res = json.loads(out.read_text())["metrics"]
    assert {"all", "colour", "category"} <= set(res["phrase"])
    assert {"size", "position", "colour", "category"} <= set(res["description"])
    for level in res.values():
        assert all(_in_unit(v) for k, v in level.items() if not k.startswith("n"))
        # a region that beats all its negatives beats those of each type: of the all * n regions that
        # beat all, at most n - n_type have no negative of that type, the rest count for the type
        n = level["n"]
        for kind, v in level.items():
            if kind.startswith("n") or kind == "all":
                continue
            n_kind = level[f"n_{kind}"]
            assert v * n_kind >= level["all"] * n - (n - n_kind) - 1e-9, (kind, level)
    assert "colour" in capsys.readouterr().out


def test_tiles_mode(scene, tmp_path):
    tif, gpkg, _ = scene
    out = tmp_path / "t.json"
    assert _eval("tiles", "--raster", str(tif), "--labels", str(gpkg), "--class-field", "class",
                 "--min-cover", "0.2", "--json", str(out)) == 0
    res = json.loads(out.read_text())
    assert res["tile_size"] == 112 and res["tiles_in_grid"] == 5 * 5 and 0 < res["n"] <= 25  # 512 px scene
    assert all(_in_unit(v) for v in res["metrics"].values())


def test_tiles_mode_measures_what_tile_classify_does(scene, tiny_ckpt, tmp_path):
    """Same grid, same tile reader, same templates and class encoder: every evaluated tile's
    prediction is the label ``geoalign tile-classify`` writes for that tile."""

    import geopandas as gpd
    import rasterio

    tif, gpkg, _ = scene
    ckpt = tiny_ckpt  # random weights: both commands must see the same ones
    out = tmp_path / "t.json"
    assert cli_main(["eval", "tiles", "--model", ckpt, "--device", "cpu", "--quiet", "--raster", str(tif),
                     "--labels", str(gpkg), "--class-field", "class", "--min-cover", "0.2", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    classes = ",".join(res["classes"])
    assert cli_main(["tile-classify", str(tif), "--classes", classes, "--model", ckpt, "--device", "cpu",
                     "--out", str(tmp_path / "tiles.gpkg"), "--quiet"]) == 0
    tiles = gpd.read_file(tmp_path / "tiles.gpkg")
    with rasterio.open(tif) as ds:
        inv = ~ds.transform
    labels = {}
    # tile-classify's best class per tile: the first of its top_k (its label, unless that is "none of these")
    for geom, label in zip(tiles.geometry, [json.loads(t)[0]["label"] for t in tiles["top_k"]]):
        col, row = inv * (geom.bounds[0], geom.bounds[3])
        labels[(round(col), round(row))] = label
    assert res["tiles"] and all(labels[(t["col"], t["row"])] == t["predicted"] for t in res["tiles"])


def test_bad_input_exit_2(scene, scene_folder, tmp_path, capsys):
    _, _, data = scene
    out = tmp_path / "x.json"
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,kind\na.png,water\n")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"image": "a.tif", "caption": "x", "regions": [{"bbox": [0.5, 0, 0.2, 1], "phrase": "a"}]}\n')
    cases = [
        ("regions", "--data", str(tmp_path / "absent")),
        ("scene", "--data", str(bad_csv)),
        ("regions", "--data", str(bad_jsonl)),
        ("retrieval", "--data", str(tmp_path)),
        ("regions", "--data", str(data), "--templates", str(tmp_path / "absent.txt")),
        ("regions", "--data", str(data), "--classes", "car"),
        ("tiles", "--raster", str(tmp_path / "no.tif"), "--labels", "x.gpkg", "--class-field", "class"),
    ]
    for args in cases:
        capsys.readouterr()
        assert _eval(*args, "--json", str(out)) == 2, args
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(err) == 1, (args, err)
        assert not out.exists()
    # an existing --json is refused before any work
    out.write_text("{}")
    assert _eval("regions", "--data", str(data), "--json", str(out)) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "{}"
