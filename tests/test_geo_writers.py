"""Tests of geoalign_core.geo writers: output checks, atomic writes, GeoPackage, COG, heatmaps."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

from geoalign_core.errors import InputError
from geoalign_core.geo import (
    HeatmapAccumulator,
    atomic_output,
    check_output,
    read_geopackage_metadata,
    write_float_geotiff,
    write_geopackage,
)

UTM = "EPSG:32616"
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3700000.0)
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"


def _tiles_gdf(n: int = 3) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"label": [f"class {i}" for i in range(n)], "score": np.linspace(0.1, 0.9, n), "rank": np.arange(n)},
        geometry=[shapely.box(500000 + i, 3699990, 500001 + i, 3699991) for i in range(n)],
        crs=UTM,
    )


def _listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


# ---------------------------------------------------------------------------- check / atomic
def test_check_output(tmp_path: Path) -> None:
    out = tmp_path / "out.gpkg"
    assert check_output(out, overwrite=False) == out
    out.write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"):
        check_output(out)
    check_output(out, overwrite=True)
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "no" / "such" / "dir.gpkg")
    with pytest.raises(InputError, match="does not exist"):
        check_output(out / "child.gpkg")  # parent is a file
    with pytest.raises(InputError, match="directory"):
        check_output(tmp_path, overwrite=True)
    assert _listing(tmp_path) == ["out.gpkg"]  # the probe file is gone


def test_check_output_unwritable_dir() -> None:
    """A folder the user may not write into is refused before any work. Root writes anywhere, so as
    root (CI) the check runs as the unprivileged user ``nobody`` (setpriv), in a root-owned 0555 folder."""
    import shutil
    import subprocess
    import sys
    import tempfile

    ro = Path(tempfile.mkdtemp(prefix="geoalign-ro-", dir="/tmp"))  # /tmp: nobody can reach it
    try:
        ro.chmod(0o555)
        probe = ("import sys\nfrom geoalign_core.errors import InputError\nfrom geoalign_core.outputs import "
                 "check_output\ntry:\n    check_output(sys.argv[1])\nexcept InputError as e:\n    print(e)\n"
                 "    sys.exit(3)")
        cmd = [sys.executable, "-c", probe, str(ro / "x.tif")]
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to run this check unprivileged"
            cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        root = str(Path(__file__).resolve().parents[1])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/",
                              env={**os.environ, "PYTHONPATH": root, "HOME": "/tmp"})
        assert proc.returncode == 3, (proc.stdout, proc.stderr)
        assert "cannot write" in proc.stdout, proc.stdout
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)
        shutil.rmtree(ro, ignore_errors=True)


def test_atomic_output_success(tmp_path: Path) -> None:
    out = tmp_path / "result.tif"
    out.write_text("old")
    with atomic_output(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tif"
        tmp.write_text("new")
        assert out.read_text() == "old"  # untouched until the rename
    assert out.read_text() == "new"
    assert _listing(tmp_path) == ["result.tif"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_failure_keeps_existing(tmp_path: Path, exc: type[BaseException]) -> None:
    out = tmp_path / "result.gpkg"
    out.write_text("precious")
    fresh = tmp_path / "fresh.gpkg"
    for target in (out, fresh):
        with pytest.raises(exc):
            with atomic_output(target) as tmp:
                tmp.write_text("half")
                Path(str(tmp) + "-journal").write_text("sidecar")
                raise exc()
    assert out.read_text() == "precious"
    assert _listing(tmp_path) == ["result.gpkg"]


def test_atomic_output_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        with atomic_output(tmp_path / "x.gpkg"):
            pass
    assert _listing(tmp_path) == []


# ---------------------------------------------------------------------------- GeoPackage
def test_geopackage_metadata_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "tiles.gpkg"
    meta = {
        "model": "geoalign-demo",
        "classes": ["forest", "river", "parking lot"],
        "parameters": {"tile_size": 224, "overlap": 0.25, "bands": [1, 2, 3]},
    }
    write_geopackage(_tiles_gdf(), out, "tiles", meta)
    back = read_geopackage_metadata(out, "tiles")
    assert {k: back[k] for k in meta} == meta
    assert back["geoalign_version"] and back["created"].endswith("+00:00")
    assert read_geopackage_metadata(out) == back  # the first (only) layer
    # it really is in the gpkg_metadata tables, attached to the layer
    with sqlite3.connect(out) as con:
        rows = con.execute(
            "SELECT r.reference_scope, r.table_name, m.metadata FROM gpkg_metadata_reference r "
            "JOIN gpkg_metadata m ON m.id = r.md_file_id"
        ).fetchall()
    assert any(scope == "table" and table == "tiles" and "parking lot" in xml for scope, table, xml in rows)
    # readable items beside the JSON blob (what QGIS shows)
    items = pyogrio.read_info(out, layer="tiles")["layer_metadata"]
    assert items["model"] == "geoalign-demo" and items["classes"] == '["forest", "river", "parking lot"]'
    # features
    gdf = gpd.read_file(out, layer="tiles")
    assert list(gdf["label"]) == ["class 0", "class 1", "class 2"] and gdf.crs.to_epsg() == 32616
    assert _listing(tmp_path) == ["tiles.gpkg"]  # no temp file, no .aux.xml


def test_geopackage_version_1_2(tmp_path: Path) -> None:
    out = write_geopackage(_tiles_gdf(), tmp_path / "v.gpkg", "tiles", {})
    with sqlite3.connect(out) as con:
        assert con.execute("PRAGMA application_id").fetchone()[0] == GPKG_APPLICATION_ID
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10200


def test_geopackage_empty_layer(tmp_path: Path) -> None:
    empty = gpd.GeoDataFrame(
        {"phrase": pd.Series([], dtype=str), "score": pd.Series([], dtype=float), "rank": pd.Series([], dtype=int)},
        geometry=[],
        crs=UTM,
    )
    out = write_geopackage(empty, tmp_path / "none.gpkg", "matches", {"phrases": ["red car"]})
    info = pyogrio.read_info(out, layer="matches")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon"
    assert list(info["fields"]) == ["phrase", "score", "rank"]
    assert list(info["ogr_types"]) == ["OFTString", "OFTReal", "OFTInteger64"]
    assert read_geopackage_metadata(out, "matches")["phrases"] == ["red car"]


def test_geopackage_overwrite_rules(tmp_path: Path) -> None:
    out = tmp_path / "o.gpkg"
    write_geopackage(_tiles_gdf(2), out, "tiles", {"run": 1})
    before = out.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_geopackage(_tiles_gdf(3), out, "tiles", {"run": 2})
    assert out.read_bytes() == before
    # a failing write leaves the existing file as it was and no temporary behind
    bad = _tiles_gdf(1).assign(z=np.array([1 + 2j]))
    with pytest.raises(Exception):  # noqa: B017 - whatever pyogrio raises
        write_geopackage(bad, out, "tiles", {"run": 3}, overwrite=True)
    assert out.read_bytes() == before and _listing(tmp_path) == ["o.gpkg"]
    write_geopackage(_tiles_gdf(3), out, "tiles", {"run": 4}, overwrite=True)
    assert read_geopackage_metadata(out, "tiles")["run"] == 4
    assert len(gpd.read_file(out)) == 3


# ---------------------------------------------------------------------------- GeoTIFF
def test_float_geotiff_cog(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).random((600, 700)).astype(np.float32)
    arr[:50, :50] = np.nan
    out = write_float_geotiff(arr, tmp_path / "heat.tif", TRANSFORM, UTM)
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("float32",) and np.isnan(ds.nodata)
        assert ds.transform == TRANSFORM and ds.crs.to_epsg() == 32616
        assert ds.profile["tiled"] and ds.profile["compress"] == "deflate"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1)  # internal overviews
        back = ds.read(1)
        np.testing.assert_array_equal(np.isnan(back), np.isnan(arr))
        np.testing.assert_allclose(back[50:], arr[50:])
    with pytest.raises(InputError, match="already exists"):
        write_float_geotiff(arr, out, TRANSFORM, UTM)
    assert _listing(tmp_path) == ["heat.tif"]


def test_float_geotiff_numeric_nodata(tmp_path: Path) -> None:
    arr = np.ones((20, 30), dtype=np.float32)
    arr[0, 0] = np.nan
    out = write_float_geotiff(arr, tmp_path / "h.tif", TRANSFORM, None, nodata=-9999.0)
    with rasterio.open(out) as ds:
        assert ds.nodata == -9999.0 and ds.read(1)[0, 0] == -9999.0 and ds.read_masks(1)[0, 0] == 0


# ---------------------------------------------------------------------------- heatmaps
def test_heatmap_accumulator_averages_overlaps() -> None:
    acc = HeatmapAccumulator(10, 12, TRANSFORM, UTM)
    acc.add((0, 0), np.full((6, 8), 1.0))
    acc.add(Window(4, 2, 8, 8), np.full((8, 8), 3.0))
    m = acc.mean()
    assert m[0, 0] == 1.0 and m[9, 11] == 3.0
    assert m[3, 5] == 2.0  # overlap of both tiles: plain average
    assert np.isnan(m[9, 0])  # never covered
    acc.add((2, 4), np.full((1, 1), 5.0), weight=2.0)  # weighted: (1 + 3 + 2*5) / 4
    assert acc.mean()[2, 4] == pytest.approx(3.5)


def test_heatmap_nan_and_valid_contribute_nothing() -> None:
    acc = HeatmapAccumulator(4, 4, TRANSFORM, UTM)
    vals = np.full((4, 4), 2.0, dtype=np.float32)
    vals[0, 0] = np.nan
    valid = np.ones((4, 4), dtype=bool)
    valid[3, 3] = False
    acc.add((0, 0), vals, valid=valid)
    m = acc.mean()
    assert np.isnan(m[0, 0]) and np.isnan(m[3, 3]) and np.nansum(m) == 2.0 * 14


def test_heatmap_patch_grid_upsampled() -> None:
    # a 4 x 4 patch-grid score for a 32 x 32 px tile, smooth ramp: bilinear keeps it monotone
    acc = HeatmapAccumulator(32, 32, TRANSFORM, UTM)
    ramp = np.tile(np.arange(4, dtype=np.float32), (4, 1))
    acc.add(Window(0, 0, 32, 32), ramp)
    m = acc.mean()
    assert m.shape == (32, 32) and np.isfinite(m).all()
    assert np.all(np.diff(m[0]) >= 0) and m[0, 0] == 0.0 and m[0, -1] == 3.0
    near = HeatmapAccumulator(32, 32, TRANSFORM, UTM)
    near.add(Window(0, 0, 32, 32), ramp, resampling="nearest")
    np.testing.assert_array_equal(near.mean()[0], np.repeat(np.arange(4), 8))


def test_heatmap_coarse_grid_write(tmp_path: Path) -> None:
    acc = HeatmapAccumulator(100, 90, TRANSFORM, UTM, scale=4)
    assert (acc.out_height, acc.out_width) == (25, 23)
    assert acc.out_transform == Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 3700000.0)
    acc.add(Window(0, 0, 64, 64), np.ones((64, 64)))
    acc.add(Window(32, 0, 64, 64), np.full((64, 64), 3.0))
    valid = np.ones((100, 90), dtype=bool)
    valid[:, :4] = False  # first output column invalid in the input raster
    out = write_float_geotiff(acc.result(valid), tmp_path / "coarse.tif", acc.out_transform, UTM)
    with rasterio.open(out) as ds:
        assert (ds.height, ds.width) == (25, 23)
        assert ds.transform == acc.out_transform and ds.crs.to_epsg() == 32616
        h = ds.read(1)
    assert np.isnan(h[:, 0]).all()  # invalid input
    assert h[0, 1] == 1.0 and h[0, 10] == 2.0 and h[0, 20] == 3.0
    assert np.isnan(h[16:, :]).all()  # rows 64.. of the raster were never covered
    with pytest.raises(InputError):
        write_float_geotiff(acc.result(valid), out, acc.out_transform, UTM)
