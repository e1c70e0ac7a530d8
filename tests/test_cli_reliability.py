"""Odd inputs that once went wrong (the reliability issue), each through the real CLI on
generated data: rasters placed by GCPs or RPCs, paletted rasters, phrases named like columns,
output formats by extension, a full disk, --overwrite on a multi-layer GeoPackage, an output
that is an input, point / line regions, multi-layer vector files, duplicate and overlong
phrases, BOM class files, reprojection failures in prepare, interrupted prepare runs, model
file modes, and a CLI that refuses bad input without loading the model stack.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from cli_helpers import assert_bad, cli
from generate import SAMPLE_SCENE, geostationary_raster, textured_raster
from timeouts import scaled

from geoalign_core.geo import read_metadata

SAMPLE = SAMPLE_SCENE.parent


def _gcp_vrt(folder: Path, tif: Path) -> Path:
    """A VRT georeferenced only by a GCPList over ``tif`` (the raw-mosaic case)."""
    with rasterio.open(tif) as ds:
        w, h, t = ds.width, ds.height, ds.transform
    gcps = "".join(f'<GCP Id="{i}" Pixel="{c}" Line="{r}" X="{(t * (c, r))[0]}" Y="{(t * (c, r))[1]}"/>'
                   for i, (c, r) in enumerate(((0, 0), (w, 0), (0, h), (w, h))))
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp><SimpleSource>'
                    f'<SourceFilename relativeToVRT="0">{tif}</SourceFilename><SourceBand>{b}</SourceBand>'
                    f'</SimpleSource></VRTRasterBand>' for b, ci in ((1, "Red"), (2, "Green"), (3, "Blue")))
    vrt = folder / "gcps.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><GCPList Projection="EPSG:32633">{gcps}'
                   f'</GCPList>{bands}</VRTDataset>')
    return vrt


def test_gcp_raster_outputs_land_on_the_ground(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    vrt = _gcp_vrt(tmp_path, textured)
    with rasterio.open(textured) as ds:
        ground = shapely.box(*ds.bounds)
    rc, out, err = cli(capsys, "tile-classify", vrt, "--classes", "a,b", "--model", tiny_ckpt, "--out",
                       tmp_path / "t.gpkg", "--quiet")
    assert rc == 0, err
    tiles = gpd.read_file(tmp_path / "t.gpkg")
    assert tiles.crs.to_epsg() == 32633
    assert tiles.union_all().difference(ground.buffer(1e-6)).area < 1e-6  # within the ground footprint
    assert tiles.union_all().area == pytest.approx(ground.area, rel=1e-6)
    assert read_metadata(tmp_path / "t.gpkg", "tiles")["georeferencing"] == "gcps"


def test_paletted_raster_is_read_in_colour(capsys, tiny_ckpt, tmp_path):  # noqa: F811
    idx = np.zeros((1, 128, 128), dtype=np.uint8)
    idx[0, :, 64:] = 1
    path = tmp_path / "pal.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=rasterio.transform.from_origin(500000, 4100000, 0.5, 0.5)) as dst:
        dst.write(idx)
        dst.write_colormap(1, {0: (0, 160, 0, 255), 1: (200, 30, 30, 255)})
    rc, _, err = cli(capsys, "heatmap", path, "red roof", "--model", tiny_ckpt, "--out", tmp_path / "h.tif", "--quiet")
    assert rc == 0, err
    from geoalign_core.geo import RasterSource

    with RasterSource(path) as src:  # what the model saw: colours, not grey palette indexes
        data, _ = src.read_raw(rasterio.windows.Window(0, 0, 128, 128))
    assert tuple(data[:, 0, 0]) == (0, 160, 0) and tuple(data[:, 0, 100]) == (200, 30, 30)


def test_phrases_named_like_columns(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    with rasterio.open(textured) as ds:
        left, _, _, top = ds.bounds
        crs = ds.crs
    feats = gpd.GeoDataFrame({"building": ["yes", "no"], "score": [7.0, 8.0], "FID_X": [1, 2]},
                             geometry=[shapely.box(left + 5, top - 30, left + 25, top - 10),
                                       shapely.box(left + 40, top - 60, left + 70, top - 35)], crs=crs)
    src = tmp_path / "footprints.gpkg"
    feats.to_file(src, layer="footprints")
    out = tmp_path / "m.gpkg"
    rc, _, err = cli(capsys, "match-regions", textured, src, "Building", "fid", "geometry", "score", "SCORE ",
                     "--model", tiny_ckpt, "--out", out, "--quiet")
    assert rc == 0, err
    res = gpd.read_file(out, layer="regions")
    cols = [c for c in res.columns if c != "geometry"]
    assert len({c.lower() for c in cols}) == len(cols)  # no two columns differ only in case
    assert list(res["building_input"]) == ["yes", "no"] and list(res["score_input"]) == [7.0, 8.0]
    meta = read_metadata(out, "regions")
    assert meta["phrases"] == ["Building", "fid", "geometry", "score"]  # "SCORE " is "score" again
    assert meta["phrase_columns"] == {"Building": "Building", "fid": "score_fid", "geometry": "score_geometry",
                                      "score": "score_score"}
    assert meta["renamed_input_columns"] == {"building": "building_input", "score": "score_input"}
    for col in meta["phrase_columns"].values():
        assert ((res[col] >= 0) & (res[col] <= 1)).all()
    assert np.allclose(res["score"], res[list(meta["phrase_columns"].values())].max(axis=1))


@pytest.mark.parametrize("ext, driver", [(".geojson", "GeoJSON"), (".fgb", "FlatGeobuf"),
                                         (".shp", "ESRI Shapefile"), (".csv", "CSV"), (".parquet", None)])
def test_output_format_follows_the_extension(capsys, tiny_ckpt, textured, tmp_path, ext, driver):  # noqa: F811
    out = tmp_path / f"matches{ext}"
    rc, stdout, err = cli(capsys, "find", textured, "red car", "--min-score", "0", "--max-results", "3",
                          "--no-refine", "--model", tiny_ckpt, "--out", out, "--quiet")
    assert rc == 0, err
    assert f"to {out};" in stdout
    if driver is None:
        gdf = gpd.read_parquet(out)
        assert read_metadata(out)["phrases"] == ["red car"]  # GeoParquet keeps the run's metadata
    else:
        assert pyogrio.read_info(out)["driver"] == driver
        gdf = gpd.read_file(out)
    assert len(gdf) == 3 and set(gdf["phrase"]) == {"red car"}
    if ext != ".csv":
        assert gdf.crs.to_epsg() == 32633
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_unknown_extensions_are_refused(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    assert_bad(capsys, ["find", textured, "car", "--out", tmp_path / "x.png", "--model", tiny_ckpt], tmp_path,
               "'.png' is not a format")
    assert_bad(capsys, ["heatmap", textured, "car", "--out", tmp_path / "h.png", "--model", tiny_ckpt], tmp_path,
               "use one of .tif (GeoTIFF)")


def test_overwrite_replaces_only_the_layer(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    out = tmp_path / "project.gpkg"
    other = gpd.GeoDataFrame({"note": ["keep me"]}, geometry=[shapely.Point(500001, 4099999)], crs="EPSG:32633")
    other.to_file(out, layer="my_notes")
    for _ in range(2):  # a second run replaces its own layer again
        rc, _, err = cli(capsys, "find", textured, "car", "--min-score", "0", "--max-results", "2", "--no-refine",
                         "--model", tiny_ckpt, "--out", out, "--overwrite", "--quiet")
        assert rc == 0, err
    layers = {name for name, _ in pyogrio.list_layers(out)}
    assert layers == {"my_notes", "matches"}
    assert list(gpd.read_file(out, layer="my_notes")["note"]) == ["keep me"]
    assert len(gpd.read_file(out, layer="matches")) == 2


def test_output_that_is_an_input_is_refused(capsys, tiny_ckpt, textured, regions_geojson, tmp_path):  # noqa: F811
    before = textured.read_bytes()
    assert_bad(capsys, ["heatmap", textured, "car", "--out", textured, "--overwrite", "--model", tiny_ckpt],
               textured.parent, "is an input of this run")
    assert textured.read_bytes() == before
    copy = tmp_path / "regions.gpkg"
    gpd.read_file(regions_geojson).to_file(copy)
    assert_bad(capsys, ["match-regions", textured, copy, "car", "--out", copy, "--overwrite", "--model", tiny_ckpt],
               tmp_path, "is an input of this run")


def test_points_and_lines_need_a_buffer(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    with rasterio.open(textured) as ds:
        left, _, _, top = ds.bounds
        crs = ds.crs
    line = shapely.LineString([(left + 40, top - 40), (left + 60, top - 50)])
    pts = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.Point(left + 20, top - 20), line], crs=crs)
    path = tmp_path / "pts.gpkg"
    pts.to_file(path)
    assert_bad(capsys, ["match-regions", textured, path, "car", "--out", tmp_path / "m.gpkg", "--model", tiny_ckpt],
               tmp_path, "are not polygons (LineString, Point)")
    rc, _, err = cli(capsys, "match-regions", textured, path, "car", "--buffer", "5", "--out", tmp_path / "m.gpkg",
                     "--model", tiny_ckpt, "--quiet")
    assert rc == 0, err
    res = gpd.read_file(tmp_path / "m.gpkg")
    assert len(res) == 2 and (res.geom_type.str.contains("Polygon")).all()
    assert res.geometry.iloc[0].area == pytest.approx(np.pi * 25, rel=0.05)


def test_multi_layer_vector_files(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    with rasterio.open(textured) as ds:
        left, _, _, top = ds.bounds
        crs = ds.crs
    path = tmp_path / "two.gpkg"
    gpd.GeoDataFrame({"n": [1]}, geometry=[shapely.box(left + 5, top - 30, left + 25, top - 10)],
                     crs=crs).to_file(path, layer="first")
    gpd.GeoDataFrame({"n": [1, 2]}, geometry=[shapely.box(left + 5, top - 30, left + 25, top - 10),
                                              shapely.box(left + 40, top - 60, left + 70, top - 35)],
                     crs=crs).to_file(path, layer="second")
    rc, _, err = cli(capsys, "match-regions", textured, path, "car", "--out", tmp_path / "a.gpkg", "--model", tiny_ckpt,
                     "--quiet")
    assert rc == 0 and len(gpd.read_file(tmp_path / "a.gpkg")) == 1
    assert err.strip().splitlines() == [
        "warning: two.gpkg has 2 layers (first, second); reading the first, 'first' (choose another with --layer)"]
    for layer in ("second", "1"):
        out = tmp_path / f"b{layer}.gpkg"
        rc, _, err = cli(capsys, "match-regions", textured, path, "car", "--layer", layer, "--out", out,
                         "--model", tiny_ckpt, "--quiet")
        assert rc == 0 and err == "" and len(gpd.read_file(out)) == 2
    assert_bad(capsys, ["find", textured, "car", "--regions", path, "--layer", "third", "--out", tmp_path / "c.gpkg",
                        "--model", tiny_ckpt], tmp_path, "has no layer 'third'; its layers: first, second")


def test_duplicate_and_overlong_phrases(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    long = " ".join(["a very long description of a parking lot"] * 12)
    rc, out, err = cli(capsys, "find", textured, "red car", "Red Car ", long, "--min-score", "0", "--max-results", "1",
                       "--no-refine", "--model", tiny_ckpt, "--out", tmp_path / "f.gpkg", "--quiet")
    assert rc == 0, err
    assert read_metadata(tmp_path / "f.gpkg", "matches")["phrases"] == ["red car", long]
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("warning: phrase 'a very long description of a parking ...' is 98 tokens long")
    assert "the model reads the first 77, the rest is ignored" in lines[0]


def test_classes_file_with_a_bom(capsys, tiny_ckpt, textured, tmp_path):  # noqa: F811
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffcar\nroad\n".encode())
    rc, _, err = cli(capsys, "tile-classify", textured, "--classes-file", classes, "--model", tiny_ckpt, "--out",
                     tmp_path / "t.gpkg", "--quiet")
    assert rc == 0, err
    assert read_metadata(tmp_path / "t.gpkg", "tiles")["classes"] == ["car", "road"]


def test_exported_model_follows_the_umask(tiny_ckpt, tmp_path):  # noqa: F811
    from geoalign_core import load_model, save_model

    old = os.umask(0o022)
    try:
        out = save_model(load_model(tiny_ckpt, device="cpu"), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    except OSError:
        return False
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="tmpfs")
def test_disk_full_is_one_line_and_leaves_nothing(tiny_ckpt, textured, tmp_path):  # noqa: F811
    """A 64 KB file system: every command fails with exit 2, one line, and leaves nothing."""
    small = tmp_path / "small"
    if not _tmpfs(small, "64k"):
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        big = textured_raster(tmp_path / "big.tif", width=900, height=900)
        for args in (["heatmap", big, "car", "--out", small / "h.tif"],
                     ["tile-classify", big, "--classes", "a,b", "--tile-size", "16", "--out", small / "t.gpkg"],
                     ["find", big, "car", "--min-score", "0", "--max-results", "5000", "--no-refine",
                      "--out", small / "f.geojson"],
                     ["prepare", SAMPLE / "scene.tif", SAMPLE / "labels.gpkg", "--class-field", "class",
                      "--out", small / "ds"]):
            if args[0] == "prepare" and not (SAMPLE / "scene.tif").is_file():
                continue
            args = [*args, "--model", tiny_ckpt] if args[0] != "prepare" else args
            proc = subprocess.run([sys.executable, "-m", "geoalign_core.cli", *map(str, args), "--quiet"],
                                  capture_output=True, text=True, timeout=scaled(300))
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, proc.stderr
            assert len(lines) == 1 and "no space left on device" in lines[0] and "nothing was written" in lines[0], \
                proc.stderr
            assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.slow
def test_file_size_limit_is_one_line_too(tiny_ckpt, textured, tmp_path):  # noqa: F811
    """Without root: RLIMIT_FSIZE makes writes fail with EFBIG ("file too large"), the same path."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        from geoalign_core.cli import main
        sys.exit(main(["heatmap", {str(textured)!r}, "car", "--out", {str(tmp_path / 'h.tif')!r}, "--model",
                       {tiny_ckpt!r}, "--quiet"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=scaled(300))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "file too large" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused_without_the_model_stack(textured, tmp_path):  # noqa: F811
    """torch and open_clip made unimportable: bad input is still refused with exit 2 and one line."""
    block = "import sys; [sys.modules.__setitem__(m, None) for m in ('torch', 'open_clip', 'torchvision')]; "
    cases = [["find", str(tmp_path / "missing.tif"), "car"], ["find", str(textured), ""],
             ["find", str(textured), "car", "--out", str(tmp_path / "x.png")], ["--help"], ["find", "--help"]]
    for args in cases:
        proc = subprocess.run([sys.executable, "-c", block + "from geoalign_core.cli import main; "
                               f"sys.exit(main({args!r}))"], capture_output=True, text=True, timeout=scaled(60))
        if "--help" in args:
            assert proc.returncode == 0 and "usage: geoalign" in proc.stdout, proc.stderr
        else:
            assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
            assert len(proc.stderr.strip().splitlines()) == 1


def test_prepare_reports_reprojection_failures(capsys, tmp_path):
    path = textured_raster(tmp_path / "r.tif", width=200, height=200)
    with rasterio.open(path) as ds:
        b = ds.bounds
    on = shapely.box(b.left + 5, b.bottom + 5, b.left + 40, b.bottom + 40)
    labels = gpd.GeoDataFrame({"cls": ["field", "field"]}, geometry=[on, on], crs="EPSG:32633").to_crs("EPSG:4326")
    # the second polygon on the far side of the earth: no place in a geostationary view of Europe
    labels.loc[1, "geometry"] = shapely.box(170, 0, 171, 1)
    geos = geostationary_raster(tmp_path, path)
    vec = tmp_path / "labels.gpkg"
    labels.to_file(vec)
    rc, out, err = cli(capsys, "prepare", geos, vec, "--class-field", "cls", "--out", tmp_path / "ds", "--keep-empty")
    text = out + err
    assert "cannot be reprojected to the raster's CRS" in text
    assert "not a polygon" not in text or "0 not a polygon" in text


@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE / "scene.tif").is_file(), reason="needs the sample scene")
def test_prepare_killed_then_rerun_cleans_up(tmp_path):
    import signal
    import time

    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "geoalign_core.cli", "prepare", str(SAMPLE / "scene.tif"), str(SAMPLE / "labels.gpkg"),
           "--class-field", "class", "--out", str(out), "--chip-size", "56", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not list(out.glob(".prepare-*/chips/*.tif")) and time.monotonic() - t0 < 120 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "prepare finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".prepare-*"))  # kill -9 leaves its work folder ...
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled(600))
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".prepare-*"))  # ... which the next run removes
    assert "removed 1 work folder(s) left in" in done.stderr


def test_interrupted_prepare_leaves_no_lasting_work_folder(tmp_path):
    from geoalign_core.data.prepare import OWNER_FILE, WORK_PREFIX, remove_stale_work_folders

    out = tmp_path / "ds"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f"{WORK_PREFIX}dead"
    (stale / "chips").mkdir(parents=True)
    import socket

    (stale / OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    live = out / f"{WORK_PREFIX}live"
    live.mkdir()
    (live / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert remove_stale_work_folders(out) == 1
    assert not stale.exists() and live.exists()  # a running prepare's folder is left alone
