"""Scene indexes (geoalign_core.index, ``geoalign index``, ``--index``): the files, what a query from an
index returns against the live run on the raster, refusals (another model, a changed raster, a missing
patch file), an interrupted build resumed, an index with nothing in it, and ``similar``.

Models: GeoAlign-Tiny with random weights for the mechanics (one session model, so the index and the
queries share its fingerprint); the bundled demo model where results must mean something (the
sample scene's top-10 reproduced from the index).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
import torch
from cli_helpers import assert_bad, cli
from generate import sample_crop, textured_raster
from rasterio.windows import Window

import geoalign_core.index.build as build_mod
from geoalign_core.errors import InputError
from geoalign_core.geo import read_geopackage_metadata
from geoalign_core.index import IndexMismatch, SceneIndex, build_index, patches_path
from geoalign_core.index.build import partial_dir
from geoalign_core.index.store import dequantize, quantize
from geoalign_core.inference import Cancelled, Predictor


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def reproduced(live: gpd.GeoDataFrame, other: gpd.GeoDataFrame, iou: float = 0.5) -> int:
    """How many boxes of ``live`` have a box in ``other`` overlapping them by ``iou``."""
    return sum(1 for a in live.geometry if any(_iou(a, b) >= iou for b in other.geometry))


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return Predictor(tiny_model, batch_size=8)


@pytest.fixture(scope="module")
def crop_512(tmp_path_factory) -> Path:
    return sample_crop(tmp_path_factory.mktemp("crop512") / "crop.tif", size=512, col=640, row=640)


@pytest.fixture(scope="module")
def tiny_index(tiny, crop_512, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "crop.parquet"
    build_index(tiny, crop_512, out)
    return out


# ---------------------------------------------------------------------------- the files
def test_quantisation_round_trip_is_close():
    x = torch.randn(3, 16, 4, 5) * torch.rand(3, 1, 4, 5) * 5
    q, scale, norm = quantize(x)
    assert q.dtype == np.int8 and q.shape == (3, 20, 16) and scale.shape == (3, 20)
    back = dequantize(q, scale, (4, 5))
    err = (back - x).abs().amax(dim=1) / x.abs().amax(dim=1)
    assert float(err.max()) <= 0.5 / 127 + 1e-6  # half a step of each vector's own scale
    assert np.allclose(norm, x.norm(dim=1).permute(0, 1, 2).reshape(3, 20).numpy(), rtol=1e-5)


def test_index_is_geoparquet_that_other_tools_read(tiny, tiny_index, crop_512):
    gdf = gpd.read_parquet(tiny_index)
    with rasterio.open(crop_512) as ds:
        crs, bounds = ds.crs, shapely.box(*ds.bounds)
    assert gdf.crs == crs and len(gdf) == 36  # 512 px, 112 px tiles, stride 84: 6 x 6
    assert gdf.geometry.within(bounds.buffer(1e-6)).all()
    emb = np.stack(gdf["embedding"].to_numpy())
    assert emb.shape == (36, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    kv = pq.read_schema(tiny_index).metadata
    meta, info = json.loads(kv[b"geoalign"]), json.loads(kv[b"emb"])
    assert json.loads(kv[b"geo"])["columns"]["geometry"]["encoding"] == "WKB"
    assert info["embedding"]["dim"] == 128 and info["patch_embeddings"]["dtype"] == "int8"
    assert info["patch_embeddings"]["grid"] == [14, 14] and info["model"]["fingerprint"] == tiny.model.fingerprint()
    assert meta["raster"]["path"] == str(Path(crop_512).resolve()) and meta["tiling"]["tile_size"] == 112
    patches = np.load(patches_path(tiny_index), mmap_mode="r")
    assert patches.shape == (36, 196, 128) and patches.dtype == np.int8
    duckdb = pytest.importorskip("duckdb")
    n, dim = duckdb.connect().execute(f"select count(*), max(len(embedding)) from '{tiny_index}'").fetchall()[0]
    assert (n, dim) == (36, 128)


# ---------------------------------------------------------------------------- queries = live runs
def test_tile_classify_from_the_index_is_the_live_one(tiny, tiny_index, crop_512):
    idx = SceneIndex.open(tiny_index, tiny)
    live = tiny.tile_classify(crop_512, ["road", "building", "tree"], overlap=0.25)
    stored = idx.tile_classify(["road", "building", "tree"])
    assert list(stored["label"]) == list(live["label"])
    assert np.allclose(stored["score"], live["score"], atol=1e-5)
    assert stored.attrs["geoalign"]["index"] == str(tiny_index)


def test_find_heatmap_and_regions_from_the_index_match_the_live_runs(tiny, tiny_index, crop_512, tmp_path):
    idx = SceneIndex.open(tiny_index, tiny)
    live = tiny.find(crop_512, ["red car"], refine=False, max_results=10, min_score=0.0)
    stored = idx.find(["red car"], max_results=10, min_score=0.0)
    assert len(stored) == 10 and reproduced(live, stored) >= 8  # int8 patches: a box or two may move
    a = rasterio.open(tiny.heatmap(crop_512, "red car", tmp_path / "live.tif")).read(1)
    b = rasterio.open(idx.heatmap("red car", tmp_path / "index.tif")).read(1)
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.mean() > 0.99 and np.abs(a[ok] - b[ok]).max() < 0.02
    with rasterio.open(crop_512) as ds:
        t = ds.transform
    # two boxes inside tiles (pooled from the same tile as live) and one over several tiles (piecewise)
    boxes = [(20, 20, 60, 50), (300, 200, 340, 260), (40, 40, 400, 380)]
    regions = gpd.GeoDataFrame({"n": [1, 2, 3]}, crs="EPSG:32633", geometry=[
        shapely.box(*(t * (x0, y1)), *(t * (x1, y0))) for x0, y0, x1, y1 in boxes])
    lr = tiny.match_regions(crop_512, regions, ["car", "tree"])
    ir = idx.match_regions(regions, ["car", "tree"])
    assert np.abs(lr["car"].to_numpy()[:2] - ir["car"].to_numpy()[:2]).max() < 0.05
    assert 0 <= float(ir["car"].iloc[2]) <= 1


def test_find_scans_only_the_tiles_that_can_score(tiny, tiny_index):
    idx = SceneIndex.open(tiny_index, tiny)
    high = idx.find(["a car"], min_score=0.99)
    low = idx.find(["a car"], min_score=0.0, max_results=1000)
    assert high.attrs["geoalign"]["n_windows_scored"] <= low.attrs["geoalign"]["n_windows_scored"] == 36


def test_demo_model_reproduces_the_live_top_10_from_the_index(tmp_path):
    """The issue's target on the sample scene (a 1024 px crop here): >= 8 of the live top-10 per phrase."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = Predictor("geoalign-demo", device="cpu", batch_size=16)
    crop = sample_crop(tmp_path / "crop.tif", size=1024, col=512, row=512)
    build_index(p, crop, tmp_path / "crop.parquet")
    idx = SceneIndex.open(tmp_path / "crop.parquet", p)
    for phrase in ("red car", "swimming pool", "tennis court", "building with a red roof"):
        live = p.find(crop, [phrase], refine=False, max_results=10, min_score=0.0)
        stored = idx.find([phrase], max_results=10, min_score=0.0)
        assert reproduced(live, stored) >= 8, phrase


def test_similar_ranks_the_example_first_from_raster_and_index(tiny, tiny_index, crop_512):
    idx = SceneIndex.open(tiny_index, tiny)
    with rasterio.open(crop_512) as ds:
        t = ds.transform
    box = (*(t * (100, 180)), *(t * (140, 140)))  # minx, miny, maxx, maxy
    for source in (crop_512, idx):
        res = tiny.similar(source, box, min_score=-1.0, max_results=20)
        # the example itself ranks first: its cosine with the query is 1, the highest there is
        assert bool(res["example"].iloc[0]) and res["score"].iloc[0] == pytest.approx(res["score"].max())
        assert list(res["rank"]) == list(range(1, len(res) + 1)) and res["score"].is_monotonic_decreasing
        area = shapely.box(*box).area
        others = res[~res["example"]]
        assert ((others.area >= area / 4 - 1e-6) & (others.area <= area * 4 + 1e-6)).all()
    steered = idx.similar(box, phrase="red car", min_score=-1.0, max_results=20)
    assert steered.attrs["geoalign"]["phrase"] == "red car"
    first = res["score"].iloc[0]
    assert steered["score"].iloc[0] < first  # the query is no longer the example alone
    with pytest.raises(InputError, match="example"):
        idx.similar([(5, 5, 1, 1)])


# ---------------------------------------------------------------------------- refusals
def test_another_model_or_a_changed_raster_is_refused(tiny, tiny_index, crop_512, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        demo = Predictor("geoalign-demo", device="cpu")
    with pytest.raises(IndexMismatch, match="built with the model"):
        SceneIndex.open(tiny_index, demo)
    idx = SceneIndex.open(tiny_index, tiny)
    with pytest.raises(InputError, match="112 px tiles"):
        idx.find(["car"], tile_size=224)
    with pytest.raises(InputError, match="overlap"):
        idx.find(["car"], overlap=0.5)
    # a changed raster: a copy indexed, then one block rewritten
    raster = Path(shutil.copy(crop_512, tmp_path / "r.tif"))
    build_index(tiny, raster, tmp_path / "r.parquet")
    with rasterio.open(raster, "r+") as ds:
        ds.write(np.zeros((3, 64, 64), dtype="uint8"), window=Window(200, 200, 64, 64))
    with pytest.raises(IndexMismatch, match="changed since it was indexed"):
        SceneIndex.open(tmp_path / "r.parquet", tiny)
    with pytest.raises(IndexMismatch, match="is the index of"):
        SceneIndex.open(tiny_index, tiny).check_raster(raster)
    raster.unlink()  # the raster gone: the index still answers, only the refinement needs it
    idx = SceneIndex.open(tmp_path / "r.parquet", tiny)
    assert len(idx.find(["car"], min_score=0.0)) > 0
    with pytest.raises(InputError, match="not there any more"):
        idx.find(["car"], min_score=0.0, refine=True)


def test_a_missing_or_foreign_patch_file_is_refused(tiny, tiny_index, tmp_path):
    copy = tmp_path / "c.parquet"
    shutil.copy(tiny_index, copy)
    with pytest.raises(InputError, match="patch file is missing"):
        SceneIndex.open(copy)
    np.save(patches_path(copy), np.zeros((36, 196, 128), dtype=np.int8))
    with pytest.raises(InputError, match="does not belong"):
        SceneIndex.open(copy)
    (tmp_path / "x.parquet").write_text("no")
    with pytest.raises(InputError, match="not a GeoAlign index"):
        SceneIndex.open(tmp_path / "x.parquet")


# ---------------------------------------------------------------------------- building
def test_an_interrupted_build_resumes(tiny, crop_512, tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "PART_BYTES", 8 * 196 * 136)  # 8 tiles per part: 5 parts
    out = tmp_path / "r.parquet"
    calls = []

    def cancel():
        calls.append(1)
        return len(list(partial_dir(out).glob("part-*.npz"))) >= 2

    with pytest.raises(Cancelled):
        build_index(tiny, crop_512, out, cancel=cancel)
    # parts are written in the background: the one being written when the cancel came is finished too
    kept = len(list(partial_dir(out).glob("part-*.npz")))
    assert not out.exists() and 2 <= kept <= 4 and not list(partial_dir(out).glob(".*tmp*"))
    built = build_index(tiny, crop_512, out)
    assert built["resumed_tiles"] == 8 * kept and built["n_tiles"] == 36 and not partial_dir(out).exists()
    fresh = tmp_path / "fresh.parquet"
    build_index(tiny, crop_512, fresh)
    assert np.array_equal(np.load(patches_path(out)), np.load(patches_path(fresh)))
    assert gpd.read_parquet(out).drop(columns="geometry").equals(gpd.read_parquet(fresh).drop(columns="geometry"))


def test_other_settings_start_the_build_over(tiny, crop_512, tmp_path, monkeypatch):
    monkeypatch.setattr(build_mod, "PART_BYTES", 8 * 196 * 136)
    out = tmp_path / "r.parquet"
    with pytest.raises(Cancelled):
        build_index(tiny, crop_512, out, cancel=lambda: len(list(partial_dir(out).glob("*.npz"))) >= 1)
    with pytest.warns(UserWarning, match="starting over"):
        built = build_index(tiny, crop_512, out, overlap=0.0)
    assert built["resumed_tiles"] == 0 and built["n_tiles"] == 25  # 512 / 112: 5 x 5 without overlap too


def test_an_index_of_nothing_is_refused_and_nothing_is_written(tiny, tmp_path):
    empty = textured_raster(tmp_path / "nodata.tif", 200, 150, nodata=0, fill=lambda a: a.fill(0))
    with pytest.raises(InputError, match="no tile has a valid pixel"):
        build_index(tiny, empty, tmp_path / "e.parquet")
    assert not (tmp_path / "e.parquet").exists() and not patches_path(tmp_path / "e.parquet").exists()


def test_an_existing_index_is_kept_without_overwrite(tiny, tiny_index, crop_512):
    before = tiny_index.stat().st_mtime_ns
    with pytest.raises(InputError, match="already exists"):
        build_index(tiny, crop_512, tiny_index)
    assert tiny_index.stat().st_mtime_ns == before


# ---------------------------------------------------------------------------- the CLI
def test_cli_index_and_queries(capsys, tiny_ckpt, crop_512, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli(capsys, "index", crop_512, "--model", tiny_ckpt, "--out", "c.parquet", "--quiet")
    assert rc == 0 and "indexed 36 tiles" in out, err
    rc, out, _ = cli(capsys, "index", "c.parquet", "--info")
    assert rc == 0 and "36 tiles of 112 px" in out
    # the model comes from the index; the raster may be left out
    rc, out, err = cli(capsys, "find", "--index", "c.parquet", "red car", "blue car", "--min-score", "0", "--quiet")
    assert rc == 0 and "to c_matches.gpkg" in out, err
    assert set(gpd.read_file("c_matches.gpkg")["phrase"]) == {"red car", "blue car"}
    rc, out, err = cli(capsys, "find", "c.parquet", "tree", "--out", "t.gpkg", "--min-score", "0", "--quiet")
    assert rc == 0, err
    rc, out, err = cli(capsys, "find", crop_512, "tree", "--index", "c.parquet", "--out", "t2.gpkg", "--refine",
                       "--min-score", "0", "--quiet")
    assert rc == 0 and read_geopackage_metadata(tmp_path / "t2.gpkg", "matches")["refine"] is True, err
    rc, out, err = cli(capsys, "heatmap", "--index", "c.parquet", "tree", "--quiet")
    assert rc == 0 and "c_heatmap.tif" in out, err
    rc, out, err = cli(capsys, "tile-classify", "--index", "c.parquet", "--classes", "a,b", "--quiet")
    assert rc == 0 and "wrote 36 tiles" in out, err
    regions = tmp_path / "regions.geojson"
    with rasterio.open(crop_512) as ds:
        gpd.GeoDataFrame(geometry=[shapely.box(*ds.bounds).centroid.buffer(5)], crs=ds.crs).to_file(regions)
    rc, out, err = cli(capsys, "match-regions", "--index", "c.parquet", regions, "car", "--quiet")
    assert rc == 0 and "wrote 1 regions" in out, err
    with rasterio.open(crop_512) as ds:
        x, y = ds.transform * (120, 160)
    rc, out, err = cli(capsys, "similar", "c.parquet", "--box", f"{x},{y},{x + 10},{y + 10}", "--quiet")
    assert rc == 0 and "1 of them example(s)" in out, err
    assert bool(gpd.read_file("c_similar.gpkg")["example"].iloc[0])


def test_cli_refusals_are_one_line(capsys, tiny_ckpt, crop_512, tiny_index, tmp_path):
    args = ["find", "--index", str(tiny_index), "car", "--out", str(tmp_path / "o.gpkg")]
    assert_bad(capsys, args + ["--model", "geoalign-demo"], tmp_path, "built with the model")
    assert_bad(capsys, args + ["--model", tiny_ckpt, "--tile-size", "64"], tmp_path, "112 px tiles")
    assert_bad(capsys, ["find", "--index", str(tmp_path / "no.parquet"), "car", "--out", str(tmp_path / "o.gpkg")],
               tmp_path, "index not found")
    assert_bad(capsys, ["index", str(crop_512), "--out", str(tmp_path / "i.gpkg"), "--model", tiny_ckpt],
               tmp_path, ".parquet")
    assert_bad(capsys, ["similar", str(tiny_index), "--out", str(tmp_path / "s.gpkg")], tmp_path, "--box")
    assert_bad(capsys, ["similar", str(tiny_index), "--box", "1,2,3", "--out", str(tmp_path / "s.gpkg")],
               tmp_path, "--box must be four numbers")
    assert_bad(capsys, ["heatmap", "--index", str(tiny_index), "a", "b", "--out", str(tmp_path / "h.tif")],
               tmp_path, "one phrase per heatmap")
