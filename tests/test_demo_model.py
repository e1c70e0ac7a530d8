"""The bundled demo model: ships offline, and finds the red cars of the sample scene."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import torch

from geoalign_core import load_model, zoo

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "sample_data" / "scene.tif"
LABELS = ROOT / "sample_data" / "labels.gpkg"
pytestmark = pytest.mark.slow  # the demo model on the 2048 px sample scene


def test_demo_weights_ship_in_the_package():
    path = zoo.weights_path(zoo.ZOO["geoalign-demo"])
    assert path.is_file(), "geoalign_core/weights/geoalign-demo.safetensors is missing"
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert zoo.is_available("geoalign-demo")
    m = load_model("geoalign-demo", device="cpu")
    assert m.spec.arch == "GeoAlign-Tiny" and m.dense_mode == "standard"
    with torch.no_grad():
        txt = m.encode_text(["red car", "blue car", "swimming pool"])
    # a trained text tower separates colours of one class
    assert float(txt[0] @ txt[1]) < 0.99


def _iou(a, b) -> float:
    inter = a.intersection(b).area
    return inter / (a.area + b.area - inter) if inter > 0 else 0.0


TOP10 = ["--max-results", "10", "--min-score", "0"]


@pytest.mark.parametrize(
    ("extra", "at_03"),
    [(TOP10, 9), ([], 9), (["--no-refine", *TOP10], 9), (["--tile-size", "56", *TOP10], 9)],
    ids=["top10", "defaults", "no-refine", "tiles-2x"],
)
def test_find_red_car_top10(tmp_path, extra, at_03):
    """`find "red car"` on the sample scene: the top 10 results sit on red cars, and score >= 0.5.

    The target: at least 8 of the 10 best-ranked boxes of `geoalign find sample_data/scene.tif "red car"`
    (``defaults``: the command as is) with IoU >= 0.3 to a red car, each scoring >= 0.5. The demo's model
    card gives "red car" the typical car size of its training scenes (a 3.1 m square), so its boxes are
    windows of about a car's size rather than the model's 8 px patch grid (a car is about 15 x 6 px): 9 of
    10 in every variant (box refinement leaves boxes of a known size as they are, so ``--no-refine`` gives
    the same). Before the size prior: 7 with the defaults, 5 without refinement. At least 9 of the 10
    boxes overlap a red car (IoU >= 0.1) in every variant.
    """
    from geoalign_core.cli import main

    out = tmp_path / "red_car.gpkg"
    rc = main(["find", str(SCENE), "red car", "--out", str(out), "--quiet", "--device", "cpu", *extra])
    assert rc == 0
    found = gpd.read_file(out, layer="matches").sort_values("rank").head(10)
    assert len(found) == 10
    labels = gpd.read_file(LABELS)
    red_cars = labels[(labels["class"] == "car") & (labels["color"] == "red")].geometry.tolist()
    assert len(red_cars) >= 10
    best = [max(_iou(box, car) for car in red_cars) for box in found.geometry]
    assert sum(b >= 0.1 for b in best) >= 9, best
    assert sum(b >= 0.3 for b in best) >= at_03, best
    assert (found["score"] >= 0.5).all(), found["score"].tolist()


@pytest.mark.parametrize("phrase", [
    "swimming pool",
    # the demo's five best "tennis court" boxes on the sample scene lie beside its three courts, not on them
    # (0 of the best 30 have their centre on a court, with this card and with the one before the size prior)
    pytest.param("tennis court", marks=pytest.mark.xfail(strict=True, reason="the demo's court boxes miss the "
                                                         "sample scene's courts; see docs/demo_model.md")),
])
def test_find_other_objects_returns_boxes_in_scene(tmp_path, phrase):
    from geoalign_core.cli import main

    out = tmp_path / "m.gpkg"
    assert main(["find", str(SCENE), phrase, "--out", str(out), "--max-results", "5", "--min-score", "0",
                 "--quiet", "--device", "cpu"]) == 0
    found = gpd.read_file(out, layer="matches")
    assert 1 <= len(found) <= 5
    import rasterio

    with rasterio.open(SCENE) as src:
        b = src.bounds
        assert found.crs == src.crs
    assert found.total_bounds[0] >= b.left - 1 and found.total_bounds[2] <= b.right + 1
    # and they find the phrase's objects: at least one of the five lies on a labelled one
    labels = gpd.read_file(LABELS)
    objects = labels[labels["class"] == phrase].to_crs(found.crs).geometry
    assert len(objects) >= 3
    on_object = [bool(objects.contains(box.centroid).any()) for box in found.sort_values("rank").geometry]
    assert any(on_object), on_object
