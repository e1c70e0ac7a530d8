"""The user's journey on real data: ``scene.tif + labels.gpkg`` -> prepare -> train (both stages) -> eval.

SpaceNet-4 Atlanta (``../shared/real_data``; skipped when absent): a one-band uint16
panchromatic GeoTIFF (0.5 m, nodata 0, EPSG:32616) and 43 real building footprints. The
footprints are written as a GeoPackage in EPSG:4326 (so ``prepare`` has to reproject them),
with a ``type`` field: the larger half ``building``, the smaller half ``house``. Everything
runs through the CLI, as the README's three commands do.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely

from geoalign_core.cli import main as cli_main
from geoalign_core.data import read_image, read_samples

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_data"
RASTER = REAL / "spacenet_atlanta_pan.tif"
FOOTPRINTS = REAL / "spacenet_atlanta_buildings.geojson"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (RASTER.is_file() and FOOTPRINTS.is_file()),
                                                   reason="../shared/real_data (SpaceNet Atlanta) not present")]


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    d = tmp_path_factory.mktemp("journey")
    utm = gpd.read_file(FOOTPRINTS)[["geometry"]]
    area = utm.geometry.area
    utm["type"] = np.where(area >= area.median(), "building", "house")
    labels = d / "labels.gpkg"
    utm.to_crs("EPSG:4326").to_file(labels, driver="GPKG", layer="footprints")
    data = d / "data"
    assert cli_main(["prepare", str(RASTER), str(labels), "--class-field", "type", "--out", str(data),
                     "--stride", "56", "--quiet"]) == 0
    return d, utm, data


def test_prepare_reprojects_real_footprints(journey):
    _, utm, data = journey
    samples = read_samples(data)
    assert len(samples) >= 10
    regions = [(s, r) for s in samples for r in s["regions"]]
    assert {r["class"] for _, r in regions} == {"building", "house"}
    with rasterio.open(RASTER) as src:
        scene_crs = src.crs
    # every region box, taken back to map coordinates through its chip's transform, is the
    # bounding box of a real footprint clipped to the chip: the labels were reprojected from EPSG:4326
    matched = 0
    for s, r in regions:
        with rasterio.open(s["image"]) as chip:
            assert chip.crs == scene_crs and chip.count == 3 and chip.dtypes[0] == "uint8"
            t, w, h = chip.transform, chip.width, chip.height
        x0, y0, x1, y1 = r["bbox"]
        (mx0, my0), (mx1, my1) = t * (x0 * w, y0 * h), t * (x1 * w, y1 * h)
        box = shapely.box(min(mx0, mx1), min(my0, my1), max(mx0, mx1), max(my0, my1))
        chip_box = shapely.box(*rasterio.transform.array_bounds(h, w, t))
        best = 0.0
        for g in utm.geometry:
            clipped = g.intersection(chip_box)
            if not clipped.is_empty:
                clipped = shapely.box(*clipped.bounds)
                best = max(best, box.intersection(clipped).area / box.union(clipped).area)
        matched += best > 0.9
    assert matched == len(regions), (matched, len(regions))
    # the one-band uint16 scene became three equal uint8 bands in [0, 1] after reading
    img = read_image(samples[0]["image"])
    assert img.shape[0] == 3 and np.array_equal(img[0], img[1]) and 0.0 <= img.min() <= img.max() <= 1.0


def test_train_both_stages_and_evaluate(journey, capsys):
    d, _, data = journey
    common = (f"data: [{data}]\nbatch_size: 8\nnum_workers: 0\nwarmup_steps: 1\nlog_every: 1\n"
              "regions_per_image: 4\nnum_candidates: 3\n")
    s1 = d / "stage1.yaml"
    s1.write_text(f"model: GeoAlign-Tiny\nstage: 1\nout_dir: {d / 's1'}\nexport: s1.safetensors\n" + common)
    assert cli_main(["train", str(s1), "--max-steps", "3", "--quiet"]) == 0
    s2 = d / "stage2.yaml"
    s2.write_text(f"model: {d / 's1' / 's1.safetensors'}\nstage: 2\nout_dir: {d / 's2'}\nexport: s2.safetensors\n"
                  "crop_size: 56\nvic_regions_per_image: 2\n" + common)
    assert cli_main(["train", str(s2), "--max-steps", "3", "--quiet", "--set", "export_half=true"]) == 0
    out = capsys.readouterr().out
    assert "done: step 3/3" in out
    model = d / "s2" / "s2.safetensors"
    n_regions = sum(len(s["regions"]) for s in read_samples(data))
    for task in ("regions", "hard-negatives"):
        js = d / f"{task}.json"
        assert cli_main(["eval", task, "--data", str(data), "--model", str(model), "--quiet", "--json", str(js)]) == 0
        res = json.loads(js.read_text())
        assert res["n"] == n_regions
    metrics = json.loads((d / "regions.json").read_text())["metrics"]
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["top5"] == 1.0  # two classes: top-5 always holds
