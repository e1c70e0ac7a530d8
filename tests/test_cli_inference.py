"""End-to-end tests of `geoalign tile-classify | find | match-regions | heatmap`.

* every bad-input case of the issue: exit 2, exactly one ``error: ...`` line on stderr, no
  traceback, nothing written;
* Ctrl-C in the middle of a run (a real SIGINT to a subprocess): exit 2, no partial file;
* the sample scene (a crop) and every raster in ``../shared/real_data`` (skipped when absent):
  geometry inside the raster, CRS, complete tile grid, fields and metadata — never scores.

Models: a GeoAlign-Tiny checkpoint with random weights saved into a temporary directory
(no download, no "random weights" warning on stderr).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
import torch
from cli_helpers import assert_bad, cli
from generate import REAL_DATA, SAMPLE_LABELS, SAMPLE_SCENE, textured_raster
from timeouts import scaled

from geoalign_core import load_model
from geoalign_core.geo import count_tiles, read_geopackage_metadata

SAMPLE = SAMPLE_SCENE
REAL = REAL_DATA
COMMANDS = ("tile-classify", "find", "match-regions", "heatmap")


def command_args(cmd: str, textured, out: Path, regions_geojson=None, phrase="red car") -> list[str]:
    if cmd == "tile-classify":
        return [cmd, textured, "--classes", "forest,road", "--out", out]
    if cmd == "find":
        return [cmd, textured, phrase, "--out", out, "--min-score", "0"]
    if cmd == "match-regions":
        return [cmd, textured, regions_geojson, phrase, "--out", out]
    return [cmd, textured, phrase, "--out", out]


def out_name(cmd: str, d: Path) -> Path:
    return d / ("heat.tif" if cmd == "heatmap" else "out.gpkg")


# ---------------------------------------------------------------------------- help / basics
def test_help_lists_commands_and_options(capsys):
    for cmd in COMMANDS:
        rc, out, _ = cli(capsys, cmd, "--help")
        assert rc == 0
        for opt in ("--model", "--device", "--quiet", "--out", "--overwrite", "--bands", "--tile-size",
                    "--overlap", "--batch-size", "--allow-no-crs", "--bounds"):
            assert opt in out, (cmd, opt)


def test_default_output_name_and_overwrite(capsys, tiny_ckpt, textured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "tile-classify", textured, "--classes", "forest, road", "--model", tiny_ckpt)
    assert rc == 0, err
    target = tmp_path / "scene_tiles.gpkg"
    assert target.is_file() and "wrote 6 tiles" in out
    # existing output: refused BEFORE the model loads (an unknown model would fail later)
    mtime = target.stat().st_mtime_ns
    assert_bad(capsys, ["tile-classify", textured, "--model", "no-such-model"], tmp_path, "already exists")
    assert target.stat().st_mtime_ns == mtime
    rc, _, err = cli(capsys, "tile-classify", textured, "--classes", "a,b", "--model", tiny_ckpt, "--overwrite",
                     "--quiet")
    assert rc == 0, err
    assert read_geopackage_metadata(target, "tiles")["classes"] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene_tiles.gpkg"]  # no temp files


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cmd", COMMANDS)
def test_missing_raster(capsys, tiny_ckpt, regions_geojson, tmp_path, cmd):
    args = command_args(cmd, tmp_path / "nope.tif", out_name(cmd, tmp_path), regions_geojson) + ["--model", tiny_ckpt]
    assert_bad(capsys, args, tmp_path, "raster not found")


def test_corrupt_raster_and_not_a_raster(capsys, tiny_ckpt, textured, tmp_path):
    data = textured.read_bytes()
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(data[: len(data) // 3])
    line = assert_bad(capsys, ["tile-classify", bad, "--out", tmp_path / "o.gpkg", "--model", tiny_ckpt], tmp_path, "")
    assert "corrupt" in line or "not a readable raster" in line
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image\n")
    assert_bad(capsys, ["find", text, "car", "--out", tmp_path / "o.gpkg", "--model", tiny_ckpt], tmp_path,
               "not a readable raster")


def test_no_crs_needs_allow_no_crs(capsys, tiny_ckpt, tmp_path):
    path = textured_raster(tmp_path / "nocrs.tif", crs=None)
    out = tmp_path / "o.gpkg"
    assert_bad(capsys, ["tile-classify", path, "--out", out, "--model", tiny_ckpt], tmp_path, "--allow-no-crs")
    rc, _, err = cli(capsys, "tile-classify", path, "--out", out, "--model", tiny_ckpt, "--classes", "a,b",
                     "--allow-no-crs")
    assert rc == 0, err
    gdf = gpd.read_file(out, layer="tiles")
    with rasterio.open(path) as ds:  # no CRS: the raster's own (transform) coordinates
        assert gdf.crs is None and tuple(gdf.total_bounds) == tuple(ds.bounds)


def test_raster_smaller_than_one_tile_works(capsys, tiny_ckpt, tmp_path):
    path = textured_raster(tmp_path / "small.tif", width=40, height=30)
    rc, _, err = cli(capsys, "tile-classify", path, "--out", tmp_path / "t.gpkg", "--model", tiny_ckpt,
                     "--classes", "a")
    assert rc == 0, err
    gdf = gpd.read_file(tmp_path / "t.gpkg", layer="tiles")
    assert len(gdf) == 1
    with rasterio.open(path) as ds:
        assert gdf.geometry.iloc[0].equals_exact(shapely.box(*ds.bounds).normalize(), 1e-6) or \
            math.isclose(gdf.geometry.iloc[0].area, shapely.box(*ds.bounds).area)
    rc, _, err = cli(capsys, "heatmap", path, "x", "--out", tmp_path / "h.tif", "--model", tiny_ckpt)
    assert rc == 0, err
    with rasterio.open(tmp_path / "h.tif") as ds:
        assert (ds.width, ds.height) == (40, 30) and np.isfinite(ds.read(1)).all()


@pytest.mark.parametrize("cmd", ["find", "match-regions", "heatmap"])
@pytest.mark.parametrize("phrase", ["", "   "])
def test_empty_phrase(capsys, tiny_ckpt, textured, regions_geojson, tmp_path, cmd, phrase):
    args = command_args(cmd, textured, out_name(cmd, tmp_path), regions_geojson, phrase=phrase) + ["--model", tiny_ckpt]
    assert_bad(capsys, args, tmp_path, "empty phrase")


def test_no_classes(capsys, tiny_ckpt, textured, tmp_path):
    out = tmp_path / "o.gpkg"
    assert_bad(capsys, ["tile-classify", textured, "--classes", " , ,", "--out", out, "--model", tiny_ckpt], tmp_path,
               "no classes")
    empty = tmp_path / "classes.txt"
    empty.write_text("# nothing here\n\n")
    assert_bad(capsys, ["tile-classify", textured, "--classes-file", empty, "--out", out, "--model", tiny_ckpt],
               tmp_path, "no classes")


@pytest.mark.parametrize("cmd", ["match-regions", "find"])
def test_vectors_without_features_or_overlap(capsys, tiny_ckpt, textured, tmp_path, cmd):
    empty = tmp_path / "empty.gpkg"
    gpd.GeoDataFrame({"a": []}, geometry=[], crs="EPSG:32633").to_file(empty, driver="GPKG")
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(10, 10, 11, 11)], crs="EPSG:4326").to_file(far)
    out = tmp_path / "o.gpkg"
    for vec, match in ((empty, "no features"), (far, "overlap the raster")):
        if cmd == "find":
            args = ["find", textured, "car", "--regions", vec, "--out", out, "--model", tiny_ckpt]
        else:
            args = ["match-regions", textured, vec, "car", "--out", out, "--model", tiny_ckpt]
        assert_bad(capsys, args, tmp_path, match)


def test_unknown_model(capsys, textured, tmp_path):
    assert_bad(capsys, ["tile-classify", textured, "--out", tmp_path / "o.gpkg", "--model", "no-such-model"],
               tmp_path, "unknown model")


def test_checkpoint_for_another_architecture(capsys, tiny_ckpt, textured, tmp_path, monkeypatch):
    """A cached 'remoteclip-vit-b-32' file that really holds a GeoAlign-Tiny state_dict."""
    cache = tmp_path / "cache"
    target = cache / "remoteclip-vit-b-32" / "RemoteCLIP-ViT-B-32.pt"
    target.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(load_model(tiny_ckpt, device="cpu").clip.state_dict(), target)
    monkeypatch.setenv("GEOALIGN_CACHE", str(cache))
    work = tmp_path / "work"
    work.mkdir()
    assert_bad(capsys, ["find", textured, "car", "--out", work / "o.gpkg", "--model", "remoteclip-vit-b-32"], work,
               "does not fit architecture ViT-B-32")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_output_not_writable(capsys, tiny_ckpt, textured, regions_geojson, tmp_path, cmd):
    out = tmp_path / "missing_dir" / out_name(cmd, tmp_path).name
    assert_bad(capsys, command_args(cmd, textured, out, regions_geojson) + ["--model", tiny_ckpt], tmp_path,
               "output directory does not exist")
    (tmp_path / "adir.gpkg").mkdir()
    args = command_args(cmd, textured, tmp_path / "adir.gpkg", regions_geojson) + ["--model", tiny_ckpt]
    assert_bad(capsys, args, tmp_path, "is a directory")


@pytest.mark.parametrize("cmd", COMMANDS)
def test_existing_output_without_overwrite(capsys, textured, regions_geojson, tmp_path, cmd):
    out = out_name(cmd, tmp_path)
    out.write_bytes(b"precious")
    assert_bad(capsys, command_args(cmd, textured, out, regions_geojson) + ["--model", "no-such-model"], tmp_path,
               "already exists")
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--bands", "4,5,6"], "--bands"),
        (["--bands", "x"], "--bands"),
        (["--overlap", "0.95"], "--overlap"),
        (["--tile-size", "2"], "--tile-size"),
        (["--batch-size", "0"], "--batch-size"),
        (["--bounds", "1,2,3"], "--bounds"),
        (["--bounds", "0,0,1,1"], "do not overlap"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_bad_options(capsys, tiny_ckpt, textured, tmp_path, extra, match):
    assert_bad(capsys, ["tile-classify", textured, "--out", tmp_path / "o.gpkg", "--model", tiny_ckpt, "--classes", "a",
                        *extra], tmp_path, match)


@pytest.fixture(scope="module")
def big_textured(tmp_path_factory) -> Path:
    return textured_raster(tmp_path_factory.mktemp("big") / "big.tif", width=4000, height=4000, block=512)


@pytest.mark.slow
@pytest.mark.parametrize("prefetch", ["0", "2"])  # reading in the main thread / in the reader thread
def test_ctrl_c_leaves_no_partial_output(tmp_path, tiny_ckpt, big_textured, prefetch):
    """SIGINT while tiles are being processed: exit 2, one error line, no output or temp file."""
    big = big_textured
    outdir = tmp_path / "out"
    outdir.mkdir()
    env = dict(os.environ, PYTHONUNBUFFERED="1", GEOALIGN_PREFETCH=prefetch)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geoalign_core.cli", "tile-classify", str(big), "--model", tiny_ckpt, "--classes",
         "a,b", "--batch-size", "4", "--out", str(outdir / "tiles.gpkg")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=outdir,
        # a user's Ctrl-C: SIGINT at its default in the child, also when this suite runs with SIGINT
        # ignored (started in the background; Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = proc.stdout.readline()  # the model card's line, once the model is loaded
        assert line.startswith("model tiny: "), line
        line = proc.stdout.readline()  # printed right before the tile pass
        assert line.startswith("tile-classify:"), line
        time.sleep(1.5)
        assert proc.poll() is None, "finished before the interrupt"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=scaled(60))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "interrupted" in lines[0], err
    assert list(outdir.iterdir()) == []


# ---------------------------------------------------------------------------- end to end
def check_tiles(path: Path, textured: Path, tile_size: int, overlap: float, bounds=None):
    gdf = gpd.read_file(path, layer="tiles")
    with rasterio.open(textured) as ds:
        extent = shapely.box(*ds.bounds)
        assert gdf.crs == ds.crs
        area = shapely.box(*bounds) if bounds else extent
        w = round((area.bounds[2] - area.bounds[0]) / ds.res[0])
        h = round((area.bounds[3] - area.bounds[1]) / ds.res[1])
    assert list(gdf.columns) == ["label", "score", "top_k", "geometry"]
    assert gdf.geometry.within(area.buffer(1e-6)).all()
    assert len(gdf) <= count_tiles(w, h, tile_size, overlap)
    assert gdf["score"].between(0, 1).all()
    assert all(isinstance(json.loads(t), list) for t in gdf["top_k"])
    meta = read_geopackage_metadata(path, "tiles")
    assert meta["command"] == "tile-classify" and meta["tile_size"] == tile_size and meta["model"]
    return gdf, area


def check_matches(path: Path, textured: Path, phrases, area=None):
    gdf = gpd.read_file(path, layer="matches")
    with rasterio.open(textured) as ds:
        assert gdf.crs == ds.crs
        area = area or shapely.box(*ds.bounds)
    assert list(gdf.columns) == ["phrase", "score", "rank", "geometry"]
    assert gdf.geometry.within(area.buffer(1e-6)).all()
    assert set(gdf["phrase"]) <= set(phrases)
    for _, grp in gdf.groupby("phrase"):
        assert sorted(grp["rank"]) == list(range(1, len(grp) + 1))
    meta = read_geopackage_metadata(path, "matches")
    assert meta["phrases"] == list(phrases)
    return gdf


def check_heatmap(path: Path, textured: Path, bounds=None):
    with rasterio.open(textured) as src, rasterio.open(path) as ds:
        assert ds.crs == src.crs and ds.dtypes[0] == "float32" and math.isnan(ds.nodata)
        assert ds.block_shapes[0] == (min(512, ds.height), min(512, ds.width)) or ds.block_shapes[0] == (512, 512)
        if bounds is None:
            assert ds.transform == src.transform and (ds.width, ds.height) == (src.width, src.height)
        else:
            assert ds.transform.c == pytest.approx(bounds[0]) and ds.transform.f == pytest.approx(bounds[3])
        a = ds.read(1)
        assert "GEOALIGN_METADATA" in ds.tags()
    assert np.isfinite(a).any()
    return a


@pytest.mark.slow
@pytest.mark.skipif(not SAMPLE.is_file(), reason="sample_data/scene.tif not generated")
def test_sample_scene_crop_all_commands(capsys, tiny_ckpt, tmp_path):
    with rasterio.open(SAMPLE) as ds:
        left, _, _, top = ds.bounds
    bounds = (left + 30.0, top - 30.0 - 90.0, left + 30.0 + 90.0, top - 30.0)  # 300 x 300 px crop
    b = ",".join(str(v) for v in bounds)
    common = ["--model", tiny_ckpt, "--bounds", b, "--quiet"]
    rc, _, err = cli(capsys, "tile-classify", SAMPLE, "--out", tmp_path / "t.gpkg", *common)
    assert rc == 0, err
    gdf, area = check_tiles(tmp_path / "t.gpkg", SAMPLE, 112, 0.0, bounds)
    assert len(gdf) == count_tiles(300, 300, 112, 0.0)  # no nodata in the scene: grid complete
    assert math.isclose(gdf.union_all().area, area.area, rel_tol=1e-9)
    rc, _, err = cli(capsys, "find", SAMPLE, "red car", "swimming pool", "--out", tmp_path / "f.gpkg",
                     "--min-score", "0", "--max-results", "5", *common)
    assert rc == 0, err
    assert len(check_matches(tmp_path / "f.gpkg", SAMPLE, ["red car", "swimming pool"], area)) == 10
    rc, _, err = cli(capsys, "match-regions", SAMPLE, SAMPLE_LABELS, "car", "tree", "building",
                     "--out", tmp_path / "m.gpkg", *common)
    assert rc == 0, err
    m = gpd.read_file(tmp_path / "m.gpkg", layer="regions")
    labels = gpd.read_file(SAMPLE_LABELS)
    assert 0 < len(m) < len(labels) and m.geometry.intersects(area).all()
    assert {"class", "best_phrase", "score", "car", "tree", "building"} <= set(m.columns)
    meta = read_geopackage_metadata(tmp_path / "m.gpkg", "regions")
    assert meta["n_regions_outside"] == len(labels) - len(m)
    rc, _, err = cli(capsys, "heatmap", SAMPLE, "red car", "--out", tmp_path / "h.tif", *common)
    assert rc == 0, err
    a = check_heatmap(tmp_path / "h.tif", SAMPLE, bounds)
    assert a.shape == (300, 300) and np.isfinite(a).all()
    # --values score: the 0-1 probability of the phrase against background phrases, per patch
    rc, out, err = cli(capsys, "heatmap", SAMPLE, "red car", "--values", "score", "--out", tmp_path / "s.tif",
                       *common)
    assert rc == 0, err
    s = check_heatmap(tmp_path / "s.tif", SAMPLE, bounds)
    assert 0.0 <= s.min() <= s.max() <= 1.0 and s.std() > 0
    with rasterio.open(tmp_path / "s.tif") as ds:
        meta = json.loads(ds.tags()["GEOALIGN_METADATA"])
        assert meta["values"] == "score" and meta["competitors"] and ds.descriptions[0] == "red car (score)"
    assert "; score " in out


REAL_RASTERS = {
    # name: (tile size, phrase, vector labels or None)
    "spacenet_atlanta_pan.tif": (224, "building", "spacenet_atlanta_buildings.geojson"),
    "neon_osbs029_rgb.tif": (160, "tree", "neon_osbs029_trees_pixel_boxes.csv"),
    "oam_manila_bridge_rgb.tif": (512, "bridge", None),
    "landsat_rgb_byte.tif": (224, "river", None),
}


def _neon_boxes(csv: Path, textured: Path, out: Path) -> Path:
    df = pd.read_csv(csv)
    with rasterio.open(textured) as ds:
        t, crs = ds.transform, ds.crs
    geoms = [shapely.Polygon([t * (x, y) for x, y in ((r.xmin, r.ymin), (r.xmax, r.ymin), (r.xmax, r.ymax),
                                                        (r.xmin, r.ymax))]) for r in df.itertuples()]
    gpd.GeoDataFrame({"label": df["label"]}, geometry=geoms, crs=crs).to_file(out, driver="GPKG")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL_RASTERS))
def test_real_rasters_all_commands(capsys, tiny_ckpt, tmp_path, name):
    raster = REAL / name
    if not raster.is_file():
        pytest.skip(f"{raster} absent")
    tile, phrase, labels = REAL_RASTERS[name]
    common = ["--model", tiny_ckpt, "--tile-size", str(tile), "--quiet"]
    rc, _, err = cli(capsys, "tile-classify", raster, "--out", tmp_path / "t.gpkg", *common)
    assert rc == 0, err
    gdf, extent = check_tiles(tmp_path / "t.gpkg", raster, tile, 0.0)
    with rasterio.open(raster) as ds:
        n_grid = count_tiles(ds.width, ds.height, tile, 0.0)
        # tiles with at least one valid pixel (nodata: all bands equal the nodata value, or black
        # for the OAM scene whose outside is black without a nodata value)
        invalid = (ds.read() == (ds.nodata if ds.nodata is not None else 0)).all(axis=0)
        if ds.nodata is None and name != "oam_manila_bridge_rgb.tif":
            invalid[:] = False
        expected = sum(
            bool((~invalid[r:r + tile, c:c + tile]).any())
            for r in range(0, ds.height, tile) for c in range(0, ds.width, tile)
        )
    assert len(gdf) == expected  # grid complete: every tile with data, and only those
    if expected == n_grid:
        assert math.isclose(gdf.union_all().area, extent.area, rel_tol=1e-9)
    if name == "oam_manila_bridge_rgb.tif":
        assert expected < n_grid  # tiles inside the black nodata corner are skipped
    rc, _, err = cli(capsys, "find", raster, phrase, "--out", tmp_path / "f.gpkg", "--min-score", "0",
                     "--max-results", "3", *common)
    assert rc == 0, err
    assert len(check_matches(tmp_path / "f.gpkg", raster, [phrase])) == 3
    rc, _, err = cli(capsys, "heatmap", raster, phrase, "--out", tmp_path / "h.tif", *common)
    assert rc == 0, err
    a = check_heatmap(tmp_path / "h.tif", raster)
    with rasterio.open(raster) as ds:
        if name == "oam_manila_bridge_rgb.tif":
            assert np.isnan(a[:100, :100]).all()  # the black nodata corner stays nodata
        if ds.nodata is not None:  # a pixel is nodata when all its bands are
            nd = (ds.read() == ds.nodata).all(axis=0)
            assert np.isnan(a[nd]).all() and np.isfinite(a[~nd]).mean() > 0.99
    if labels is None:
        return
    vec = REAL / labels
    if vec.suffix == ".csv":
        vec = _neon_boxes(vec, raster, tmp_path / "boxes.gpkg")
    rc, _, err = cli(capsys, "match-regions", raster, vec, phrase, "road", "--out", tmp_path / "m.gpkg", *common)
    assert rc == 0, err
    m = gpd.read_file(tmp_path / "m.gpkg", layer="regions")
    src = gpd.read_file(vec)
    with rasterio.open(raster) as ds:
        assert m.crs == ds.crs
    assert len(m) == len(src) and {"best_phrase", "score", phrase, "road"} <= set(m.columns)
    assert read_geopackage_metadata(tmp_path / "m.gpkg", "regions")["phrases"] == [phrase, "road"]
