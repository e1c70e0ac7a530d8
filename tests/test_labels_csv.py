"""Labels as a CSV of PIXEL boxes (DeepForest style: image_path,xmin,ymin,xmax,ymax,label): each row a
box of the raster's own pixel grid, mapped to its CRS through its transform; ``image_path`` picks the
raster's rows; a CSV with a WKT column stays an ordinary vector file."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from cli_helpers import assert_bad, cli
from generate import REAL_DATA, textured_raster

from geoalign_core.data import read_samples
from geoalign_core.data.labels import is_pixel_box_csv, load_labels, read_pixel_boxes
from geoalign_core.errors import InputError
from geoalign_core.geo.raster import RasterSource

# a north-up grid whose pixels are neither square nor on whole metres: a wrong mapping shows
TRANSFORM = Affine(0.3, 0.0, 500010.5, 0.0, -0.6, 4100020.25)
SIZE = 256
CHIP = 64
#: boxes wholly inside one 64 px chip each (x0, y0, x1, y1 in pixels)
BOXES = [(10, 12, 30, 40), (70.5, 80, 100, 110.25), (140, 20, 170, 50), (200, 150, 240, 190)]


@pytest.fixture(scope="module")
def raster(tmp_path_factory) -> Path:
    return textured_raster(tmp_path_factory.mktemp("csv") / "scene.tif", width=SIZE, height=SIZE,
                           transform=TRANSFORM)


def _csv(path: Path, rows: list[dict]) -> Path:
    cols = list(rows[0])
    lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(boxes, label="Tree", image=None) -> list[dict]:
    out = []
    for x0, y0, x1, y1 in boxes:
        r = {} if image is None else {"image_path": image}
        out.append(r | {"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1, "label": label})
    return out


def test_boxes_land_on_their_pixels(raster, tmp_path, capsys):
    bad = [
        {"xmin": 5, "ymin": 5, "xmax": 20, "ymax": 20, "label": ""},  # no class value
        {"xmin": 50, "ymin": 5, "xmax": 50, "ymax": 20, "label": "Tree"},  # degenerate: xmax <= xmin
        {"xmin": 60, "ymin": 30, "xmax": 70, "ymax": 10, "label": "Tree"},  # degenerate: ymax < ymin
        {"xmin": 300, "ymin": 5, "xmax": 320, "ymax": 20, "label": "Tree"},  # outside the raster
        {"xmin": -30, "ymin": 5, "xmax": 0, "ymax": 20, "label": "Tree"},  # touches the edge only: outside
        {"xmin": "", "ymin": 5, "xmax": 20, "ymax": 20, "label": "Tree"},  # missing coordinate
    ]
    csv = _csv(tmp_path / "boxes.csv", _rows(BOXES) + bad)
    assert is_pixel_box_csv(csv)
    src = RasterSource(raster)
    try:
        labels = load_labels(csv, src, "label")
        gdf, skip = read_pixel_boxes(csv, src)
    finally:
        src.close()
    assert labels.n_read == len(BOXES) + len(bad) and len(labels.features) == len(BOXES)
    assert labels.classes == ["tree"]
    for f, box in zip(labels.features, BOXES):  # in the raster's pixel grid: exactly the box
        assert f.geom.bounds == pytest.approx(box, abs=1e-6) and f.geom.area == pytest.approx(
            (box[2] - box[0]) * (box[3] - box[1]), rel=1e-9)
    # in map coordinates through the transform: the upper-left corner is transform * (xmin, ymin)
    x0, y0, x1, y1 = BOXES[1]
    left, top = TRANSFORM * (x0, y0)
    right, bottom = TRANSFORM * (x1, y1)
    assert gdf.geometry.iloc[1].bounds == pytest.approx((left, bottom, right, top), abs=1e-6)
    with rasterio.open(raster) as ds:
        assert gdf.crs == ds.crs
    s = labels.skips
    assert (s.no_class, s.degenerate_box, s.outside_raster, s.empty_geometry) == (1, 2, 2, 1)
    assert s.total == len(bad)

    # through prepare: every region box of the chips is the CSV box, in the chip's own pixels
    out = tmp_path / "ds"
    rc, stdout, err = cli(capsys, "prepare", raster, csv, "--class-field", "label", "--out", out, "--chip-size",
                          CHIP, "--background", "0", "--quiet")
    assert rc == 0, err
    assert "skipped, degenerate pixel box (xmax <= xmin or ymax <= ymin): 2" in stdout
    assert "skipped, outside the raster: 2" in stdout
    got = []
    for smp in read_samples(out):
        col, row = smp["window"][:2]
        for r in smp["regions"]:
            got.append(tuple(float(v) * CHIP + o for v, o in zip(r["bbox"], (col, row, col, row))))
            assert r["class"] == "tree"
    np.testing.assert_allclose(sorted(got), sorted(BOXES), atol=1e-3)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["summary"]["features_skipped"]["degenerate pixel box (xmax <= xmin or ymax <= ymin)"] == 2


def test_image_path_picks_the_rasters_rows(raster, tmp_path, capsys):
    src = RasterSource(raster)
    try:
        # rows for this raster (by file name; by stem, and a path, too) and for another image
        rows = (_rows(BOXES[:2], image="scene.tif") + _rows(BOXES[2:3], image="/data/tiles/SCENE.png")
                + _rows(BOXES[3:], image="other.tif"))
        csv = _csv(tmp_path / "mixed.csv", rows)
        with pytest.warns(UserWarning, match=r"1 of the 4 rows of mixed.csv are for other images \(other.tif\)"):
            labels = load_labels(csv, src, "label")
        np.testing.assert_allclose([f.geom.bounds for f in labels.features], BOXES[:3], atol=1e-6)
        assert labels.n_read == 3
        # every row for one other image (a renamed file): all used, with a warning
        one = _csv(tmp_path / "one.csv", _rows(BOXES, image="OSBS_029.tif"))
        with pytest.warns(UserWarning, match="every row of one.csv is for OSBS_029.tif, not scene.tif"):
            assert len(load_labels(one, src, "label").features) == len(BOXES)
        # only rows for several other images: an error
        others = _csv(tmp_path / "others.csv", _rows(BOXES[:2], image="a.tif") + _rows(BOXES[2:], image="b.tif"))
        with pytest.raises(InputError, match=r"no row of .*others.csv is for scene.tif.*\(a.tif, b.tif\)"):
            load_labels(others, src, "label")
        # all rows for this raster: no warning
        mine = _csv(tmp_path / "mine.csv", _rows(BOXES, image="scene.tif"))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(load_labels(mine, src, "label").features) == len(BOXES)
    finally:
        src.close()
    # the CLI: one warning line, then the run
    rc, _, err = cli(capsys, "prepare", raster, csv, "--class-field", "label", "--out", tmp_path / "o",
                     "--chip-size", CHIP, "--quiet")
    assert rc == 0 and err.count("warning:") == 1 and "are for other images" in err
    assert_bad(capsys, ["prepare", raster, others, "--class-field", "label", "--out", tmp_path / "x"], tmp_path,
               "no row of")


@pytest.mark.parametrize("header, row, message", [
    ("xmin,ymin,xmax,label", "1,2,10,Tree", "missing: ymax"),
    ("x,y,label", "1,2,Tree", "needs the pixel-box columns xmin,ymin,xmax,ymax"),
    ("xmin,ymin,xmax,ymax,label", "a,b,c,d,Tree", "column 'xmin' of"),
    ("xmin,ymin,xmax,ymax,kind", "1,2,10,12,Tree", "class field 'label' is not a field"),
])
def test_bad_csv_exit_2_one_line(raster, tmp_path, capsys, header, row, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(f"{header}\n{row}\n")
    assert_bad(capsys, ["prepare", raster, csv, "--class-field", "label", "--out", tmp_path / "o", "--quiet"],
               tmp_path, message)
    # finetune reads its labels the same way; the bad CSV is refused as a labels file, not as a raster
    assert_bad(capsys, ["finetune", raster, csv, "--class-field", "label", "--from", "GeoAlign-Tiny", "--out",
                        tmp_path / "ft", "--steps", "1"], tmp_path, message)


def test_wkt_csv_is_still_a_vector_file(raster, tmp_path, capsys):
    """A CSV with a WKT column keeps GDAL's reading: polygons in map coordinates (the raster's CRS)."""
    x0, y0, x1, y1 = BOXES[0]
    (lf, t), (r, b) = TRANSFORM * (x0, y0), TRANSFORM * (x1, y1)
    wkt = f'"POLYGON (({lf} {b}, {r} {b}, {r} {t}, {lf} {t}, {lf} {b}))"'
    csv = tmp_path / "wkt.csv"
    csv.write_text(f"WKT,label,xmin,ymin,xmax,ymax\n{wkt},Tree,0,0,1,1\n")
    assert not is_pixel_box_csv(csv)
    src = RasterSource(raster)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no CRS in a CSV: the raster's is assumed
            labels = load_labels(csv, src, "label")
    finally:
        src.close()
    assert len(labels.features) == 1 and labels.features[0].geom.bounds == pytest.approx(BOXES[0], abs=1e-6)


def test_finetune_tells_a_pixel_box_csv_from_a_raster(tmp_path):
    """GDAL's XYZ driver opens a CSV of numbers laid out on a grid as a raster: finetune must not."""
    from geoalign_core.commands.finetune import _is_raster

    csv = tmp_path / "grid.csv"
    csv.write_text("xmin,ymin,xmax,ymax\n0,0,5,5\n10,0,15,5\n0,10,5,15\n10,10,15,15\n")
    with rasterio.open(csv) as ds:  # the trap: GDAL takes it for an XYZ grid
        assert ds.driver == "XYZ"
    assert is_pixel_box_csv(csv) and not _is_raster(str(csv))


def test_real_neon_pixel_boxes_as_labels(tmp_path):
    raster = REAL_DATA / "neon_osbs029_rgb.tif"
    csv = REAL_DATA / "neon_osbs029_trees_pixel_boxes.csv"
    if not (raster.is_file() and csv.is_file()):
        pytest.skip("real data absent")
    src = RasterSource(raster)
    try:
        with pytest.warns(UserWarning, match="every row of neon_osbs029_trees_pixel_boxes.csv is for OSBS_029.tif"):
            labels = load_labels(csv, src, "label")
    finally:
        src.close()
    boxes = np.loadtxt(csv, delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    assert len(labels.features) == 61 and labels.classes == ["tree"] and labels.skips.total == 0
    np.testing.assert_allclose([f.geom.bounds for f in labels.features], boxes, atol=1e-6)
