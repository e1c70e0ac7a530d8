"""Reliability, round three, except the concurrent writers (test_concurrent_outputs.py)
and the engine (test_engine.py): a raster placed by GCPs beside an identity geotransform and a
CRS, a full disk during ``index``, hand-edited or foreign index files, and misleading messages.
Each through the real CLI or library on small generated data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely
from cli_helpers import assert_bad, cli
from generate import geostationary_raster

from geoalign_core.geo import RasterSource, read_metadata


def _identity_vrt(folder: Path, tif: Path, gcps: bool) -> Path:
    """A VRT over ``tif`` whose GeoTransform is the identity and which declares an SRS, with or
    without a GCPList placing it where ``tif`` lies (the layout of rasterio's GCP test data)."""
    with rasterio.open(tif) as ds:
        w, h, t = ds.width, ds.height, ds.transform
    points = "".join(f'<GCP Id="{i}" Pixel="{c}" Line="{r}" X="{(t * (c, r))[0]}" Y="{(t * (c, r))[1]}"/>'
                     for i, (c, r) in enumerate(((0, 0), (w, 0), (0, h), (w, h))))
    gcp_list = f'<GCPList Projection="EPSG:32633">{points}</GCPList>' if gcps else ""
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp><SimpleSource>'
                    f'<SourceFilename relativeToVRT="0">{tif}</SourceFilename><SourceBand>{b}</SourceBand>'
                    f'</SimpleSource></VRTRasterBand>' for b, ci in ((1, "Red"), (2, "Green"), (3, "Blue")))
    vrt = folder / ("identity_gcps.vrt" if gcps else "identity.vrt")
    vrt.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32633</SRS>'
                   f'<GeoTransform>0, 1, 0, 0, 0, 1</GeoTransform>{gcp_list}{bands}</VRTDataset>')
    return vrt


# ------------------------------------------------------------------ bug 2: identity geotransform
def test_identity_transform_with_crs_and_gcps_is_placed_by_its_gcps(capsys, tiny_ckpt, textured, tmp_path):
    vrt = _identity_vrt(tmp_path, textured, gcps=True)
    with rasterio.open(vrt) as ds:
        assert ds.crs is not None and ds.transform.is_identity and ds.gcps[0]  # what the file says
    with rasterio.open(textured) as ds:
        ground = shapely.box(*ds.bounds)
    with RasterSource(vrt) as src:
        assert src.georeferencing == "gcps"
        assert tuple(src.bounds) == pytest.approx(tuple(ground.bounds), abs=0.01)
    rc, _, err = cli(capsys, "tile-classify", vrt, "--classes", "a,b", "--model", tiny_ckpt, "--out",
                     tmp_path / "t.gpkg", "--quiet")
    assert rc == 0, err
    tiles = gpd.read_file(tmp_path / "t.gpkg")
    assert tiles.crs.to_epsg() == 32633
    assert tiles.union_all().area == pytest.approx(ground.area, rel=1e-3)
    assert tiles.union_all().difference(ground.buffer(0.01)).area < 1e-6  # on the ground, not at x 0..300
    assert read_metadata(tmp_path / "t.gpkg", "tiles")["georeferencing"] == "gcps"


def test_identity_transform_with_crs_and_nothing_else_is_no_georeferencing(capsys, textured, tmp_path):
    vrt = _identity_vrt(tmp_path, textured, gcps=False)
    line = assert_bad(capsys, ["find", vrt, "car", "--out", tmp_path / "f.gpkg"], tmp_path,
                      "has a CRS but no georeferencing")
    assert "--allow-no-crs" in line
    with RasterSource(vrt, allow_no_crs=True) as src:  # allowed: pixel coordinates, no CRS claimed
        assert src.georeferencing == "none" and src.crs is None


# ------------------------------------------------------------------ bug 3: a full disk during index
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE")
def test_index_on_a_full_disk_is_one_line_and_leaves_nothing(capsys, tiny_ckpt, textured, tmp_path):
    """A file size limit (as a full disk: the write fails with EFBIG) while the build saves its
    first chunk: exit 2, one line, no index, nothing left in .partial/."""
    import resource
    import signal

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, hard))
    try:
        rc, out, err = cli(capsys, "index", textured, "--model", tiny_ckpt, "--tile-size", "32", "--out",
                           out_dir / "x.parquet", "--quiet")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: cannot write"), err
    assert "file too large" in lines[0] and "no index written" in lines[0]
    assert list(out_dir.iterdir()) == []  # no index, no .partial/, no temporary chunk


# ------------------------------------------------------------------ bug 6: foreign or edited index files
@pytest.fixture(scope="module")
def small_index(tiny_ckpt, textured, tmp_path_factory) -> Path:
    from geoalign_core.cli import main

    out = tmp_path_factory.mktemp("index") / "scene.parquet"
    assert main(["index", str(textured), "--model", tiny_ckpt, "--tile-size", "64", "--out", str(out), "--quiet"]) == 0
    return out


def _edited_copy(index: Path, folder: Path, *, meta=None, patches=None) -> Path:
    """A copy of ``index`` with its ``geoalign`` metadata and/or patch array replaced, the patch
    digest made to match (as a careful hand edit, or another tool, would leave it)."""
    import json

    import numpy as np
    import pyarrow.parquet as pq

    from geoalign_core.index.store import _digest

    copy = folder / "edited.parquet"
    ppath = Path(f"{copy}.patches.npy")
    if patches is None:
        ppath.write_bytes(Path(f"{index}.patches.npy").read_bytes())
    else:
        np.save(ppath, patches, allow_pickle=True)  # the foreign file under test; GeoAlign never loads pickles
    table = pq.read_table(index)
    kv = dict(table.schema.metadata)
    emb = json.loads(kv[b"emb"])
    emb["patch_embeddings"]["digest"] = _digest(ppath)
    kv[b"emb"] = json.dumps(emb).encode()
    if meta is not None:
        kv[b"geoalign"] = json.dumps(meta(json.loads(kv[b"geoalign"]))).encode()
    pq.write_table(table.replace_schema_metadata(kv), copy)
    return copy


@pytest.mark.parametrize("edit", ["narrow_patches", "pickled_patches", "no_raster"])
def test_edited_or_foreign_index_is_one_line(capsys, tiny_ckpt, small_index, tmp_path, edit):
    import numpy as np

    good = np.load(f"{small_index}.patches.npy", mmap_mode="r")
    n, hw, d = good.shape
    if edit == "narrow_patches":  # patch vectors of another width
        copy = _edited_copy(small_index, tmp_path, patches=np.zeros((n, hw, d // 2), np.int8))
    elif edit == "pickled_patches":  # an object array: loading it would need pickle
        copy = _edited_copy(small_index, tmp_path, patches=np.array([{"a": 1}] * n, dtype=object))
    else:
        copy = _edited_copy(small_index, tmp_path, meta=lambda m: {k: v for k, v in m.items() if k != "raster"})
    line = assert_bad(capsys, ["find", "--index", copy, "car", "--model", tiny_ckpt, "--out",
                               tmp_path / "f.gpkg"], tmp_path, "not a usable GeoAlign index")
    assert "; rebuild it with geoalign index" in line, line
    assert_bad(capsys, ["index", "--info", copy], tmp_path, "not a usable GeoAlign index")


# ------------------------------------------------------------------ misleading messages
def test_match_regions_that_cannot_be_reprojected_says_so(capsys, tiny_ckpt, tmp_path):
    """Regions on the far side of the earth from a geostationary raster: the message says they
    cannot be reprojected (as prepare does), not "none of the 0 features overlap the raster"."""
    geos = geostationary_raster(tmp_path)
    far = tmp_path / "far.gpkg"
    gpd.GeoDataFrame({"n": [1, 2]}, geometry=[shapely.box(170, 0, 171, 1), shapely.box(172, 0, 173, 1)],
                     crs="EPSG:4326").to_file(far)
    line = assert_bad(capsys, ["match-regions", geos, far, "car", "--model", tiny_ckpt, "--out",
                               tmp_path / "m.gpkg", "--quiet"], tmp_path,
                      "none of the 2 features of far.gpkg can be reprojected to the raster's CRS")
    assert "overlap" not in line


def test_a_corrupt_scene_gets_the_same_clear_message_alone_and_in_a_collection(capsys, tiny_ckpt, tmp_path):
    """A GeoTIFF cut in half (its header intact, its tiles not): indexed alone, one line, exit 2;
    in a collection, the failed scene is reported with that message (GDAL's reason), never
    "RasterioIOError: Read failed. See previous exception for details."."""
    from generate import textured_raster

    good = textured_raster(tmp_path / "good.tif", width=200, height=200)
    cut = textured_raster(tmp_path / "cut.tif", width=200, height=200)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    alone = assert_bad(capsys, ["index", cut, "--model", tiny_ckpt, "--tile-size", "64", "--out",
                                out / "cut.parquet", "--quiet"], out, "(corrupt or truncated?)")
    reason = alone.split("(corrupt or truncated?): ", 1)[1]
    assert "previous exception" not in reason and "TIFF" in reason, alone
    rc, stdout, err = cli(capsys, "index", good, cut, "--model", tiny_ckpt, "--tile-size", "64", "--out",
                          out / "coll", "--quiet")
    assert rc == 1, (stdout, err)
    assert "1 scene(s) indexed" in stdout and "1 failed" in stdout, stdout
    failed = [x for x in stdout.splitlines() if x.strip().startswith("failed: cut")]
    assert len(failed) == 1 and "(corrupt or truncated?)" in failed[0] and reason in failed[0], stdout
    assert "previous exception" not in stdout + err and "RasterioIOError" not in stdout + err


def test_index_of_a_folder_is_refused_before_the_model(capsys, textured, tmp_path):
    """A folder given as a raster (``index DIR --out c/``): refused at once, exit 2, no collection
    written; the model is not loaded first (a missing checkpoint would be the error otherwise)."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    (folder / "scene.tif").write_bytes(textured.read_bytes())
    missing_model = tmp_path / "no-such-model.safetensors"
    line = assert_bad(capsys, ["index", folder, "--out", f"{tmp_path / 'c'}/", "--model", missing_model, "--quiet"],
                      tmp_path, f"not a raster: {folder} is a folder")
    assert f"'{folder}/*.tif'" in line, line
    line = assert_bad(capsys, ["index", textured, folder, "--out", tmp_path / "c2", "--model", missing_model],
                      tmp_path, f"not a raster: {folder} is a folder")


@pytest.mark.parametrize("case", ["two_rasters", "existing_folder"])
def test_a_collection_is_never_built_under_a_parquet_name(capsys, textured, tmp_path, case):
    """``index A B --out x.parquet`` and ``index A --out adir.parquet`` (an existing folder) would
    build a collection folder that passes for a single-scene index file: refused, one line,
    exit 2, before the model is loaded."""
    missing_model = tmp_path / "no-such-model.safetensors"
    if case == "two_rasters":
        other = tmp_path / "other.tif"
        other.write_bytes(textured.read_bytes())
        args, match = ["index", textured, other, "--out", tmp_path / "x.parquet"], "not a .parquet file"
    else:
        (tmp_path / "adir.parquet").mkdir()
        args, match = ["index", textured, "--out", tmp_path / "adir.parquet"], "adir.parquet is a folder"
    line = assert_bad(capsys, [*args, "--model", missing_model, "--quiet"], tmp_path, match)
    assert "folder name without .parquet" in line or f"e.g. {tmp_path / 'x'}/" in line, line
    assert not (tmp_path / "x.parquet").exists()
    if case == "existing_folder":
        assert list((tmp_path / "adir.parquet").iterdir()) == []


def test_an_existing_collection_under_a_parquet_name_still_resumes(capsys, tiny_ckpt, textured, tmp_path):
    """A collection folder that an earlier GeoAlign built under a .parquet name stays usable:
    the same command goes on with it (it is a collection already, nothing passes for a file)."""
    other = tmp_path / "other.tif"
    other.write_bytes(textured.read_bytes())
    common = ["--model", tiny_ckpt, "--tile-size", "64", "--quiet"]
    rc, out, err = cli(capsys, "index", textured, other, "--out", tmp_path / "coll", *common)
    assert rc == 0, err
    (tmp_path / "coll").rename(tmp_path / "old.parquet")
    rc, out, err = cli(capsys, "index", textured, other, "--out", tmp_path / "old.parquet", *common)
    assert rc == 0, err
    assert "0 scene(s) indexed" in out and "2 already done" in out, out


class _Hostile:
    """Unpickled, this would write ``marker``: the shape of a hostile checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def test_a_hostile_checkpoint_is_not_safe_and_no_advice_to_load_it_anyway(capsys, textured, tmp_path):
    """A .pt whose pickle calls a function: refused as "not a safe checkpoint", in one line, by the
    CLI and by a training resume; PyTorch's advice to re-run with ``weights_only=False`` is not
    relayed, and the code never ran."""
    import torch

    from geoalign_core.errors import CheckpointError
    from geoalign_core.training.checkpoints import read_checkpoint

    marker = tmp_path / "ran.txt"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Hostile(marker)}, evil)
    out = tmp_path / "out"
    out.mkdir()
    line = assert_bad(capsys, ["find", textured, "car", "--model", evil, "--out", out / "f.gpkg"], out,
                      f"{evil} is not a safe checkpoint")
    with pytest.raises(CheckpointError, match="is not a safe checkpoint") as caught:
        read_checkpoint(evil)
    for text in (line, str(caught.value)):
        assert "weights_only" not in text and "can still be loaded" not in text and "\x1b" not in text, text
        assert "GLOBAL exec" in text, text  # what made it unsafe
    assert not marker.exists()


def _engine_run(requests: list[dict], ids: list, timeout: float = 120.0) -> dict:
    """Run ``requests`` in an in-process engine (this checkout's code) until each of ``ids`` has its
    terminal event; returns those events by id."""
    import io
    import json
    import time

    from geoalign_core.engine.protocol import TERMINAL_EVENTS
    from geoalign_core.engine.server import Engine

    out = io.StringIO()
    engine = Engine(out)
    engine._worker.start()
    try:
        for r in requests:
            engine.handle_line(json.dumps(r))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = [json.loads(x) for x in out.getvalue().splitlines()]
            done = {e["id"]: e for e in events if e.get("event") in TERMINAL_EVENTS}
            if all(i in done for i in ids):
                return done
            time.sleep(0.05)
        raise AssertionError(f"no terminal events in {timeout} s: {out.getvalue()[-2000:]}")
    finally:
        engine.close()


def test_nan_weights_and_a_huge_tile_are_refused_with_a_reason(capsys, tiny_model, tiny_ckpt, textured, tmp_path):
    """A checkpoint of all-NaN weights gave "wrote 0 matches" and a 1e9 px tile 0 matches, both
    silently: each is refused with its reason, by the CLI (one line, exit 2) and by the engine
    (kind input / model, no output)."""
    import copy

    import torch

    from geoalign_core import save_model

    broken = copy.deepcopy(tiny_model)
    with torch.no_grad():
        for p in broken.clip.parameters():
            p.fill_(float("nan"))
    nan_ckpt = save_model(broken, tmp_path / "nan.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    line = assert_bad(capsys, ["find", textured, "car", "--model", nan_ckpt, "--out", out / "f.gpkg"], out,
                      "holds NaN weights")
    assert "nan.safetensors" in line
    line = assert_bad(capsys, ["find", textured, "car", "--model", tiny_ckpt, "--tile-size", "1000000000",
                               "--out", out / "f.gpkg", "--quiet"], out, "tile size 1000000000 px is far larger")
    assert "(300 x 200 px)" in line and "use at most" in line and "--tile-size" in line
    assert_bad(capsys, ["index", textured, "--model", tiny_ckpt, "--tile-size", "1000000000",
                        "--out", out / "i.parquet", "--quiet"], out, "tile size 1000000000 px is far larger")
    # the largest tile allowed still finds (a corner of padding, but the raster is there)
    rc, stdout, err = cli(capsys, "find", textured, "car", "--model", tiny_ckpt, "--tile-size", "1200",
                          "--min-score", "0", "--out", out / "ok.gpkg", "--quiet")
    assert rc == 0 and "wrote 0 matches" not in stdout, (stdout, err)
    (out / "ok.gpkg").unlink()

    common = {"raster": str(textured), "phrases": ["car"], "device": "cpu"}
    events = _engine_run([
        {"id": "nan", "type": "find", "params": common | {"model": str(nan_ckpt), "out": str(out / "n.gpkg")}},
        {"id": "tile", "type": "find", "params": common | {"model": tiny_ckpt, "tile_size": 1000000000,
                                                            "out": str(out / "t.gpkg")}},
    ], ["nan", "tile"])
    assert events["nan"]["event"] == "error" and "holds NaN weights" in events["nan"]["message"], events["nan"]
    assert events["nan"]["kind"] == "model"
    assert events["tile"]["event"] == "error" and events["tile"]["kind"] == "input", events["tile"]
    assert "tile size 1000000000 px is far larger" in events["tile"]["message"]
    assert list(out.iterdir()) == []


def test_the_engine_refuses_a_relative_out_and_the_plugin_never_sends_one(monkeypatch, tiny_ckpt, textured,
                                                                         tmp_path):
    """The engine resolved a relative ``out`` against its own working folder (a result landed in the
    repository): it is now a bad request (kind input, nothing written, wherever the engine runs);
    the plugin's client makes every ``out`` absolute against QGIS's working folder before sending."""
    import os

    from geoalign_core.engine import protocol
    from geoalign_qgis import engine as plugin_engine

    engine_cwd = tmp_path / "engine_cwd"
    engine_cwd.mkdir()
    monkeypatch.chdir(engine_cwd)
    common = {"raster": str(textured), "model": tiny_ckpt, "device": "cpu"}
    events = _engine_run([
        {"id": "f", "type": "find", "params": common | {"phrases": ["car"], "out": "rel.gpkg"}},
        {"id": "i", "type": "index", "params": common | {"out": os.path.join("sub", "..", "rel.parquet")}},
    ], ["f", "i"])
    for rid in ("f", "i"):
        assert events[rid]["event"] == "error" and events[rid]["kind"] == "input", events[rid]
        assert "out must be an absolute path" in events[rid]["message"], events[rid]
    assert list(engine_cwd.iterdir()) == []

    assert plugin_engine.ABSOLUTE_PATHS == protocol.ABSOLUTE_PATHS
    qgis_cwd = tmp_path / "qgis_cwd"
    qgis_cwd.mkdir()
    monkeypatch.chdir(qgis_cwd)
    sent = plugin_engine.absolute_paths({"out": "results/a.gpkg", "raster": str(textured), "phrases": ["car"]})
    assert sent == {"out": str(qgis_cwd / "results" / "a.gpkg"), "raster": str(textured), "phrases": ["car"]}
    protocol.check_params("find", sent)  # what the plugin sends passes the engine's check
    absolute = {"out": str(tmp_path / "b.gpkg"), "phrases": ["car"], "raster": str(textured)}
    assert plugin_engine.absolute_paths(absolute) == absolute
