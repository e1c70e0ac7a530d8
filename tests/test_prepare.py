"""``geoalign prepare``: a hand-made raster + labels (EPSG:4326 labels on a UTM raster) and a
generated sample scene -> chips + samples.jsonl."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from cli_helpers import assert_bad
from rasterio.transform import from_origin
from shapely.geometry import Point, Polygon

import geoalign_core.training.scenes as scenes
from geoalign_core.cli import main as cli_main
from geoalign_core.data import PrepareOptions, prepare_dataset, read_image, read_samples
from geoalign_core.data.text import number_word, plural

X0, Y0, RES = 500000.0, 5000000.0, 0.5
W, H, CHIP = 256, 192, 64
REQUIRED = ("image", "caption", "caption_detail", "regions")
REGION_KEYS = ("bbox", "phrase", "description", "hard_negatives", "hard_negative_types", "description_negatives",
               "description_negative_types", "class", "attributes", "position", "relation", "feature_id")


def _pixel_poly(x0, y0, x1, y1):
    """A pixel box as a polygon in the raster's UTM coordinates."""
    return shapely.box(X0 + x0 * RES, Y0 - y1 * RES, X0 + x1 * RES, Y0 - y0 * RES)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """256x192 UTM raster (nodata 0), 4x3 chips of 64 px, labels in EPSG:4326 (GeoJSON)."""
    d = tmp_path_factory.mktemp("handmade")
    rng = np.random.default_rng(0)
    img = rng.integers(50, 200, size=(3, H, W)).astype(np.uint8)
    img[:, 0:64, 128:192] = 0  # chip (2, 0): nodata
    img[:, 0:64, 192:256] = 128  # chip (3, 0): blank
    raster = d / "scene.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(X0, Y0, RES, RES), nodata=0,
                       photometric="RGB") as ds:
        ds.write(img)
    rows = [
        ("car", "red", _pixel_poly(10, 10, 20, 30)),  # chip (0,0)
        ("building", None, _pixel_poly(35, 30, 60, 55)),  # chip (0,0)
        ("parking lot", None, _pixel_poly(66, 2, 126, 62)),  # covers 88 % of chip (1,0)
        ("car", "blue", _pixel_poly(140, 10, 150, 20)),  # in the nodata chip
        ("car", "white", _pixel_poly(200, 10, 210, 20)),  # in the blank chip
        ("building", "grey", _pixel_poly(40, 80, 100, 100)),  # crosses chips (0,1) / (1,1)
        ("car", "black", _pixel_poly(62, 110, 72, 118)),  # 2 px sliver in (0,1), kept in (1,1)
        ("", None, _pixel_poly(10, 150, 20, 160)),  # empty class
        (None, None, _pixel_poly(30, 150, 40, 160)),  # missing class
        ("ufo", None, _pixel_poly(50, 150, 60, 160)),  # not in --classes
        ("car", None, None),  # no geometry
        ("car", None, Point(X0 + 5, Y0 - 5)),  # not a polygon
        ("car", None, _pixel_poly(300, 10, 310, 20)),  # outside the raster
    ]
    gdf = gpd.GeoDataFrame(
        {"kind": [r[0] for r in rows], "color": [r[1] for r in rows]},
        geometry=[r[2] for r in rows], crs="EPSG:32633",
    ).to_crs("EPSG:4326")
    labels = d / "labels.geojson"
    gdf.to_file(labels, driver="GeoJSON", engine="pyogrio")
    return raster, labels


def _run(raster, labels, out, *extra):
    return cli_main(["prepare", str(raster), str(labels), "--class-field", "kind", "--out", str(out),
                     "--chip-size", str(CHIP), "--classes", "car,building,parking lot", "--quiet", *extra])


@pytest.fixture(scope="module")
def prepared(handmade, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "ds"
    assert _run(*handmade, out) == 0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    return out, {s["image"]: s for s in samples}, json.loads((out / "dataset.json").read_text())


def test_summary_counts(prepared, handmade, tmp_path, capsys):
    out, samples, meta = prepared
    summ = meta["summary"]
    assert summ["chips_total"] == 12 and summ["chips_written"] == 3
    assert summ["chips_dropped"] == {"mostly nodata": 1, "blank (no texture)": 1, "one region covers too much": 1,
                                     "no labelled region": 6, "across the train/val split": 0}
    assert summ["features_read"] == 13 and summ["features_used"] == 7
    assert summ["features_skipped"] == {"empty or missing class value": 2, "class value not in the given classes": 1,
                                        "empty or missing geometry": 1, "not a polygon (point or line)": 1,
                                        "cannot be reprojected to the raster's CRS (outside the area where it is "
                                        "defined)": 0, "outside the raster": 1,
                                        "degenerate pixel box (xmax <= xmin or ymax <= ymin)": 0}
    assert summ["unknown_class_values"] == {"ufo": 1}
    assert summ["regions_dropped_as_slivers"] == 1
    assert sorted(samples) == ["chips/000000.tif", "chips/000004.tif", "chips/000005.tif"]
    assert meta["classes"] == ["building", "car", "parking lot"]
    # printed summary
    assert _run(*handmade, tmp_path / "again") == 0
    text = capsys.readouterr().out
    assert "chips: 3 written of 12" in text and "dropped, mostly nodata: 1" in text
    assert "skipped, outside the raster: 1" in text and "'ufo' (1)" in text


def test_boxes_reprojected_and_clipped(prepared):
    _, samples, _ = prepared
    s0 = samples["chips/000000.tif"]
    boxes = {r["class"]: r["bbox"] for r in s0["regions"]}
    assert boxes["car"] == pytest.approx([10 / 64, 10 / 64, 20 / 64, 30 / 64], abs=1e-4)  # EPSG:4326 -> UTM
    assert boxes["building"] == pytest.approx([35 / 64, 30 / 64, 60 / 64, 55 / 64], abs=1e-4)
    left = samples["chips/000004.tif"]["regions"]  # chip (0, 1): building clipped at the right edge
    assert [r["class"] for r in left] == ["building"]  # the 2 px car sliver is dropped
    assert left[0]["bbox"] == pytest.approx([40 / 64, 16 / 64, 1.0, 36 / 64], abs=1e-4)
    assert left[0]["visible"] == pytest.approx(0.4, abs=1e-3)
    right = {r["class"]: r for r in samples["chips/000005.tif"]["regions"]}
    assert right["building"]["bbox"] == pytest.approx([0.0, 16 / 64, 36 / 64, 36 / 64], abs=1e-4)
    assert right["car"]["bbox"] == pytest.approx([0.0, 46 / 64, 8 / 64, 54 / 64], abs=1e-4)
    assert right["car"]["phrase"] == "black car" and right["building"]["phrase"] == "grey building"


def test_derived_attributes_and_texts(prepared):
    """No size / orientation fields: size from the area within the class, orientation from the shape."""
    _, samples, meta = prepared
    assert meta["fields"] == {"class": "kind", "description": None, "color": "color", "size": None,
                              "orientation": None}
    car = next(r for r in samples["chips/000000.tif"]["regions"] if r["class"] == "car")
    assert car["attributes"] == {"color": "red", "size": "large", "orientation": "north-south"}  # 2x median area
    assert car["description"] == "a large red car in the upper left, oriented north-south"
    right = {r["class"]: r for r in samples["chips/000005.tif"]["regions"]}
    assert right["building"]["attributes"]["orientation"] == "east-west"
    assert right["building"]["attributes"]["size"] is None  # fewer than 3 buildings: no size
    assert right["car"]["attributes"]["orientation"] is None  # nearly square
    assert right["car"]["relation"] is None  # 10 px from the building: farther than 8 % of the chip
    s0 = samples["chips/000000.tif"]
    assert s0["caption"] == "An aerial image of a building and a car."


def test_schema(prepared):
    out, samples, _ = prepared
    for s in samples.values():
        for k in REQUIRED:
            assert k in s
        assert isinstance(s["caption"], str) and s["caption"] and s["caption_detail"]
        assert s["crs"] == "EPSG:32633" and s["window"][2:] == [CHIP, CHIP]
        for r in s["regions"]:
            for k in REGION_KEYS:
                assert k in r, k
            x0, y0, x1, y1 = r["bbox"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert len(r["hard_negatives"]) == len(r["hard_negative_types"]) > 0
            assert len(r["description_negatives"]) == len(r["description_negative_types"])
            assert r["phrase"].lower() not in [n.lower() for n in r["hard_negatives"]]
            assert r["description"].lower() not in [n.lower() for n in r["description_negatives"]]
    assert len(read_samples(out)) == 3  # our own reader validates the schema


def test_chips_georeferenced(prepared, handmade):
    out, samples, _ = prepared
    raster, _ = handmade
    with rasterio.open(raster) as src:
        for name, s in samples.items():
            col, row, w, h = s["window"]
            with rasterio.open(out / name) as chip:
                assert chip.count == 3 and chip.dtypes[0] == "uint8" and (chip.width, chip.height) == (w, h)
                assert chip.crs == src.crs
                assert chip.transform.almost_equals(src.transform * Affine.translation(col, row))
                assert list(chip.bounds) == pytest.approx(s["bounds"], abs=1e-3)
                win = rasterio.windows.Window(col, row, w, h)
                assert np.array_equal(chip.read(), src.read(window=win))  # uint8 RGB: copied exactly
    img = read_image(out / "chips/000000.tif")
    assert img.shape == (3, CHIP, CHIP) and 0 <= img.min() and img.max() <= 1


def test_deterministic_and_overwrite(handmade, prepared, tmp_path, capsys):
    out, _, _ = prepared
    other = tmp_path / "ds2"
    assert _run(*handmade, other) == 0
    assert (other / "samples.jsonl").read_bytes() == (out / "samples.jsonl").read_bytes()
    for chip in (out / "chips").iterdir():
        assert (other / "chips" / chip.name).read_bytes() == chip.read_bytes()
    before = (other / "samples.jsonl").read_bytes()
    capsys.readouterr()
    assert _run(*handmade, other, "--seed", "5") == 2  # exists, no --overwrite
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: output already exists")
    assert (other / "samples.jsonl").read_bytes() == before
    assert _run(*handmade, other, "--seed", "5", "--overwrite", "--num-negatives", "2") == 0
    rows = [json.loads(x) for x in (other / "samples.jsonl").read_text().splitlines()]
    assert all(len(r["hard_negatives"]) <= 2 for s in rows for r in s["regions"])
    assert sorted(p.name for p in other.iterdir()) == ["chips", "dataset.json", "samples.jsonl"]


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--class-field", "nope"], "class field 'nope' is not a field"),
        (["--chip-size", "4"], "--chip-size"),
        (["--max-cover", "2"], "--max-cover"),
        (["--description-field", "nope"], "--description-field"),
        (["--bands", "7"], "--bands"),
    ],
)
def test_bad_input_exit_2_nothing_written(handmade, tmp_path, capsys, extra, message):
    out = tmp_path / "ds"
    assert _run(*handmade, out, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()


def test_missing_inputs_and_everything_outside(handmade, tmp_path, capsys):
    raster, labels = handmade
    assert _run(tmp_path / "absent.tif", labels, tmp_path / "a") == 2
    assert _run(raster, tmp_path / "absent.gpkg", tmp_path / "b") == 2
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"kind": ["car"]}, geometry=[Polygon([(0, 0), (0, 1), (1, 1)])], crs="EPSG:4326").to_file(far)
    assert _run(raster, far, tmp_path / "c") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("error:") for e in err)
    assert "overlap the raster" in err[2]
    assert not any((tmp_path / n).exists() for n in "abc")


def test_all_chips_dropped_is_an_error(handmade, tmp_path, capsys):
    assert _run(*handmade, tmp_path / "x", "--max-cover", "0.001") == 2
    assert "no chip left" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ a generated scene
@pytest.fixture(scope="module")
def generated(scene_1002, tmp_path_factory):
    tif, gpkg = scene_1002
    out = tmp_path_factory.mktemp("gen") / "ds"
    summary = prepare_dataset(tif, gpkg, out, PrepareOptions(class_field="class"), progress=False)
    return gpkg, out, summary


def test_generated_scene(generated):
    gpkg, out, summary = generated
    labels = gpd.read_file(gpkg)
    samples = read_samples(out)
    assert summary.chips_written == len(samples) > 0 and summary.chips_total == 25  # 512 / 112 -> 5 x 5
    assert set(summary.class_counts) <= set(scenes.CLASSES)
    n_regions = 0
    for s in samples:
        counts = {}
        for r in s["regions"]:
            n_regions += 1
            row = labels.iloc[r["feature_id"]]
            assert r["class"] == row["class"]
            assert r["phrase"] == f"{row['color']} {row['class']}"  # colour field used
            assert r["attributes"]["color"] == row["color"] and r["attributes"]["size"] == row["size"]
            assert r["position"] in r["description"] and row["color"] in r["description"]
            counts[r["class"]] = counts.get(r["class"], 0) + 1
        for cls, n in counts.items():  # counts in the captions
            want = f"{number_word(n)} {plural(cls)}" if n > 1 else f"a {cls}"
            assert want in s["caption_detail"], (want, s["caption_detail"])
    assert n_regions == summary.regions


def test_description_field_used_verbatim(generated, tmp_path):
    gpkg, _, _ = generated
    tif = gpkg.with_name("scene.tif")
    prepare_dataset(tif, gpkg, tmp_path / "d", PrepareOptions(class_field="class", description_field="description",
                                                               num_negatives=3), progress=False)
    labels = gpd.read_file(gpkg)
    for s in read_samples(tmp_path / "d"):
        for r in s["regions"]:
            assert r["description"] == labels.iloc[r["feature_id"]]["description"]
            assert len(r["hard_negatives"]) <= 3 and r["description"] not in r["description_negatives"]


def test_bounds_and_spatial_val_split(scene_1002, tmp_path, capsys):
    """--bounds keeps chips inside the area; --val-fraction holds out its east end: every val chip
    starts after the line, every train chip ends before it, chips across it are dropped."""
    import rasterio as rio

    tif, gpkg = scene_1002
    with rio.open(tif) as ds:
        left, bottom, right, top = ds.bounds
        res = ds.res[0]
    out = tmp_path / "split"
    rc = cli_main(["prepare", str(tif), str(gpkg), "--class-field", "class", "--out", str(out), "--chip-size", "128",
                   "--stride", "96", "--val-fraction", "0.5", "--keep-empty", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    train = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    val = [json.loads(line) for line in (out / "samples_val.jsonl").read_text().splitlines()]
    assert train and val
    assert all(s["window"][0] + 128 <= 256 and s["split"] == "train" for s in train)
    assert all(s["window"][0] >= 256 and s["split"] == "val" for s in val)
    meta = json.loads((out / "dataset.json").read_text())
    summary = meta["summary"]
    assert summary["chips_val"] == len(val) and summary["chips_train"] == len(train)
    assert summary["chips_dropped"]["across the train/val split"] == 5  # the column of chips at 192..320
    assert f"({len(train)} train, {len(val)} val)" in printed and "samples_val.jsonl" in printed
    assert meta["split"]["val_fraction"] == 0.5

    half = tmp_path / "left"
    rc = cli_main(["prepare", str(tif), str(gpkg), "--class-field", "class", "--out", str(half), "--chip-size", "128",
                   "--bounds", f"{left},{bottom},{left + 256 * res},{top}", "--keep-empty", "--quiet"])
    capsys.readouterr()
    assert rc == 0 and not (half / "samples_val.jsonl").exists()
    windows = [json.loads(line)["window"] for line in (half / "samples.jsonl").read_text().splitlines()]
    assert windows and all(w[0] + w[2] <= 256 for w in windows)
    # too small an area for a chip, or for a split: one line, exit 2
    assert_bad(capsys, ["prepare", str(tif), str(gpkg), "--class-field", "class", "--out", str(tmp_path / "x"),
                        "--bounds", f"{left},{bottom},{left + 10 * res},{top}"], tmp_path, "less than one")
    assert_bad(capsys, ["prepare", str(tif), str(gpkg), "--class-field", "class", "--out", str(tmp_path / "y"),
                        "--val-fraction", "1.5"], tmp_path, "val fraction")


def test_background_regions_away_from_labels(scene_1002, tmp_path):
    """Background boxes: the labelled objects' size, clear of every label by half their size, on valid
    pixels; counted in the summary; read by training as regions with the phrase 'background'."""
    import shapely.ops

    from geoalign_core.data.background import BACKGROUND_MARGIN
    from geoalign_core.training.dataset import read_samples as train_samples

    tif, gpkg = scene_1002
    out = tmp_path / "bg"
    summary = prepare_dataset(tif, gpkg, out, PrepareOptions(class_field="class", chip_size=128, background=3),
                              progress=False)
    samples = read_samples(out)
    labels = gpd.read_file(gpkg)
    with rasterio.open(tif) as ds:
        inv = ~ds.transform
        assert labels.crs == ds.crs
    n = 0
    for s in samples:
        col, row = s["window"][:2]
        for r in s["background_regions"]:
            n += 1
            assert r["phrase"] == "background" and set(r["hard_negatives"]) <= set(summary.class_counts)
            x0, y0, x1, y1 = (v * 128 for v in r["bbox"])
            mx, my = BACKGROUND_MARGIN * (x1 - x0), BACKGROUND_MARGIN * (y1 - y0)
            clear = shapely.box(col + x0 - mx, row + y0 - my, col + x1 + mx, row + y1 + my)
            for geom in labels.geometry:  # label polygons in raster pixels
                px = shapely.ops.transform(lambda x, y, z=None: inv * (x, y), geom)
                assert not px.intersects(clear)
        assert len(s["background_regions"]) <= 3
    assert n == summary.background > 0
    assert summary.to_dict()["background_regions"] == n
    assert any("background (unlabelled" in line for line in summary.lines())
    phrases = [r.phrase for smp in train_samples(out) for r in smp.regions]
    assert phrases.count("background") == n
    none = prepare_dataset(tif, gpkg, tmp_path / "none", PrepareOptions(class_field="class", chip_size=128,
                                                                        background=0), progress=False)
    assert none.background == 0 and all(not s["background_regions"] for s in read_samples(tmp_path / "none"))


def test_yes_flag_class_field_names_the_class(tmp_path):
    """OSM style building=yes: the class is the field's name, with a warning."""
    from generate import textured_raster

    tif = textured_raster(tmp_path / "t.tif", width=256, height=256)
    with rasterio.open(tif) as ds:
        left, b, r, t = ds.bounds
        crs = ds.crs
    dx, dy = (r - left) / 8, (t - b) / 8
    polys = [shapely.box(left + i * dx, b + dy, left + i * dx + dx / 2, b + 1.5 * dy) for i in (1, 3, 5)]
    gpd.GeoDataFrame({"building": ["yes", "Yes", None]}, geometry=polys, crs=crs).to_file(tmp_path / "b.gpkg")
    with pytest.warns(UserWarning, match="the class is 'building'"):
        summary = prepare_dataset(tif, tmp_path / "b.gpkg", tmp_path / "out",
                                  PrepareOptions(class_field="building", chip_size=128, keep_empty=True),
                                  progress=False)
    assert set(summary.class_counts) == {"building"}
