"""Tests for the synthetic scene generator (geoalign_core/training/scenes, run by sample_data/make_sample.py) and its
committed output."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from timeouts import scaled

import geoalign_core.training.scenes as scenes

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_data"
SCRIPT = SAMPLE_DIR / "make_sample.py"
SCENE_TIF = SAMPLE_DIR / "scene.tif"
LABELS_GPKG = SAMPLE_DIR / "labels.gpkg"
FIELDS = ("class", "color", "size", "orientation", "description")


@pytest.fixture(scope="module")
def ms():
    """The generator package."""
    return scenes


@pytest.fixture(scope="module")
def committed_labels():
    gpd = pytest.importorskip("geopandas")
    return gpd.read_file(LABELS_GPKG, layer="labels", engine="pyogrio")


def _label_key(labels: list[dict]) -> list[tuple]:
    return [(lb["geometry"].wkb, *(lb[f] for f in FIELDS)) for lb in labels]


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_pixels_and_labels(ms):
    img1, lab1 = ms.render_scene(7, 512)
    img2, lab2 = ms.render_scene(7, 512)
    assert img1.dtype == np.uint8 and img1.shape == (512, 512, 3)
    assert img1.tobytes() == img2.tobytes()
    assert _label_key(lab1) == _label_key(lab2)


def test_different_seeds_differ(ms):
    img1, lab1 = ms.render_scene(7, 512)
    img2, lab2 = ms.render_scene(8, 512)
    assert not np.array_equal(img1, img2)
    assert _label_key(lab1) != _label_key(lab2)


def test_no_global_rng_use(ms):
    np.random.seed(123)
    before = np.random.random(3)
    np.random.seed(123)
    ms.render_scene(3, 256)
    assert np.array_equal(np.random.random(3), before)


def test_seed_ranges_documented(ms):
    assert ms.SAMPLE_SEED == 0
    assert (ms.TRAIN_SEEDS.start, ms.TRAIN_SEEDS.stop) == (1000, 2000)
    assert (ms.EVAL_SEEDS.start, ms.EVAL_SEEDS.stop) == (2000, 2100)
    assert "1000-1999" in ms.__doc__ and "2000-2099" in ms.__doc__


# ----------------------------------------------------------------------------- rendering
@pytest.mark.parametrize("size", [64, 256, 512])
def test_render_small_sizes_valid_labels(ms, size):
    from shapely.geometry import box

    img, labels = ms.render_scene(11, size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    frame = box(0, 0, size, size).buffer(1e-6)
    for lb in labels:
        g = lb["geometry"]
        assert g.geom_type == "Polygon" and g.is_valid and not g.is_empty
        assert frame.contains(g)
        assert lb["class"] in ms.CLASSES
        assert lb["size"] in ms.SIZES
        assert lb["orientation"] in ms.ORIENTATIONS
        assert isinstance(lb["color"], str) and lb["color"]
        assert isinstance(lb["description"], str) and len(lb["description"]) > 10


def test_attribute_variety(ms):
    _, labels = ms.render_scene(1000, 1024)
    cars = [lb for lb in labels if lb["class"] == "car"]
    assert len(cars) >= 10
    assert len({c["color"] for c in cars}) >= 4
    assert len({c["orientation"] for c in cars}) >= 2
    assert {c["color"] for c in cars} <= set(ms.CAR_COLORS)
    for c in cars:
        assert c["color"] in c["description"] and "car" in c["description"]
        if c["orientation"] != "none":
            assert c["orientation"] in c["description"]
    roofs = {lb["color"] for lb in labels if lb["class"] == "building"}
    assert roofs <= set(ms.ROOF_COLORS) and len(roofs) >= 2


def test_layout_varies_with_seed(ms):
    counts = [Counter(lb["class"] for lb in ms.render_scene(s, 512)[1]) for s in (1000, 1001, 1002)]
    assert len({tuple(sorted(c.items())) for c in counts}) > 1


# ----------------------------------------------------------------------------- writing
def test_write_scene_round_trip(ms, tmp_path):
    gpd = pytest.importorskip("geopandas")
    rasterio = pytest.importorskip("rasterio")
    from shapely import affinity
    from shapely.geometry import box

    img, labels = ms.render_scene(3, 256)
    tif, gpkg = ms.write_scene(tmp_path, 3, size=256)
    assert (tif.name, gpkg.name) == ("scene.tif", "labels.gpkg")
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 32633
        assert src.res == pytest.approx((0.3, 0.3))
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.nodata is None
        assert np.array_equal(np.moveaxis(src.read(), 0, -1), img)
        bounds, crs, transform = src.bounds, src.crs, src.transform
    gdf = gpd.read_file(gpkg, layer="labels", engine="pyogrio")
    assert gdf.crs == crs
    assert len(gdf) == len(labels)
    assert list(gdf["class"]) == [lb["class"] for lb in labels]
    frame = box(*bounds).buffer(1e-6)
    assert all(frame.contains(g) for g in gdf.geometry)
    # the map geometry is the pixel geometry under the raster's transform
    t = transform
    mat = [t.a, t.b, t.d, t.e, t.c, t.f]
    for g_map, lb in zip(gdf.geometry, labels):
        assert g_map.equals_exact(affinity.affine_transform(lb["geometry"], mat), 1e-6)


def test_write_scene_names_and_epsg(ms, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    tif, gpkg = ms.write_scene(tmp_path, 5, size=128, res=0.5, epsg=32632, name="tile_a")
    assert (tif.name, gpkg.name) == ("tile_a.tif", "tile_a_labels.gpkg")
    with rasterio.open(tif) as src:
        assert src.crs.to_epsg() == 32632 and src.res == pytest.approx((0.5, 0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile_a.tif", "tile_a_labels.gpkg"]


def test_cli_count(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--seed", "1000", "--count", "2", "--size", "128", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=scaled(120))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["scene_1000.tif", "scene_1000_labels.gpkg", "scene_1001.tif", "scene_1001_labels.gpkg"]


# ----------------------------------------------------------------------------- committed scene
def test_committed_scene_raster():
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import ColorInterp

    assert SCENE_TIF.stat().st_size < 6_000_000, "committed scene.tif should stay a few MB"
    with rasterio.open(SCENE_TIF) as src:
        assert src.crs.to_epsg() == 32633
        assert src.res == pytest.approx((0.3, 0.3))
        assert (src.width, src.height) == (2048, 2048)
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.profile.get("tiled") and src.block_shapes == [(256, 256)] * 3
        assert src.compression is not None and src.compression.value.upper() == "DEFLATE"
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.nodata is None
        assert 400_000 <= src.bounds.left <= 700_000 and 4_000_000 <= src.bounds.top <= 6_000_000


def test_committed_labels(committed_labels):
    rasterio = pytest.importorskip("rasterio")
    from shapely.geometry import box

    gdf = committed_labels
    for f in FIELDS:
        assert f in gdf.columns
        assert all(isinstance(v, str) and v for v in gdf[f])
    with rasterio.open(SCENE_TIF) as src:
        assert gdf.crs == src.crs
        frame = box(*src.bounds).buffer(1e-6)
    assert all(g.geom_type == "Polygon" and g.is_valid and not g.is_empty for g in gdf.geometry)
    assert all(frame.contains(g) for g in gdf.geometry)
    classes = Counter(gdf["class"])
    required = {"road", "parking lot", "building", "car", "swimming pool", "tree", "tennis court", "ship"}
    assert required <= set(classes), required - set(classes)
    assert {"pond", "river"} & set(classes)
    assert set(classes) <= set(
        ["road", "parking lot", "building", "car", "swimming pool", "tree", "pond", "river", "tennis court", "ship"]
    )
    cars = gdf[gdf["class"] == "car"]
    assert len(cars) >= 40
    assert (cars["color"] == "red").sum() >= 10
    assert cars["color"].nunique() >= 5
    assert cars["orientation"].nunique() >= 3
    assert classes["tennis court"] >= 2 and classes["swimming pool"] >= 3 and classes["building"] >= 10
    pools = gdf[gdf["class"] == "swimming pool"]["description"]
    assert any("rectangular" in d for d in pools)
    assert any(("kidney" in d) or ("freeform" in d) or ("oval" in d) for d in pools)
    assert set(gdf["size"]) <= {"small", "medium", "large"}
    assert set(gdf["orientation"]) <= {"north-south", "east-west", "diagonal", "none"}
    # car footprints are about 4.5 x 1.9 m
    areas = cars.geometry.area
    assert 5.0 < areas.min() and areas.max() < 12.0


def test_committed_labels_gpkg_version_and_layer():
    pyogrio = pytest.importorskip("pyogrio")
    layers = pyogrio.list_layers(LABELS_GPKG)
    assert [str(n) for n in layers[:, 0]] == ["labels"]
    with sqlite3.connect(f"file:{LABELS_GPKG}?mode=ro", uri=True) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10200  # GeoPackage 1.2


def test_committed_files_match_generator(ms, committed_labels):
    """The committed scene is seed 0 at 2048 px; regenerating reproduces it."""
    rasterio = pytest.importorskip("rasterio")
    img, labels = ms.render_scene(0, 2048)
    gdf = committed_labels
    assert len(gdf) == len(labels)
    for f in FIELDS:
        assert list(gdf[f]) == [lb[f] for lb in labels]
    with rasterio.open(SCENE_TIF) as src:
        committed = np.moveaxis(src.read(), 0, -1)
    # exact within one environment; allow tiny drift across library versions
    assert np.abs(committed.astype(np.int16) - img.astype(np.int16)).mean() < 1.0
