"""Collection indexes (many scenes): ``geoalign index A B C --out idx/``, torchrun ranks and ``--shard``
job-array tasks sharing the scenes, reruns that skip, a killed run resumed, a broken scene reported,
and ``find`` / ``tile-classify`` over all scenes as one (exact, and through the FAISS ANN index).

Scenes: a 512 px crop of the sample scene and two real rasters from ``../shared/real_data`` (NEON,
EPSG:32617 and SpaceNet, one band, EPSG:32616), or generated stand-ins when those are absent. The
model is GeoAlign-Tiny with random weights, saved as a checkpoint so that other processes load the
same weights (an index records its model's fingerprint).
"""

from __future__ import annotations

import json
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
import pyarrow.parquet as pq
import pytest
from cli_helpers import assert_bad, cli
from generate import REAL_DATA, free_port, sample_crop, textured_raster
from timeouts import scaled

from geoalign_core.index import SceneIndex, open_index
from geoalign_core.index.scenes import Scene, expand_inputs, parse_shard, scene_names, share
from geoalign_core.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("scenes")
    out = [sample_crop(d / "sample.tif", size=512)]
    for name in ("neon_osbs029_rgb.tif", "spacenet_atlanta_pan.tif"):
        real = REAL_DATA / name
        out.append(real if real.exists() else textured_raster(d / name, width=400, height=300))
    return out


@pytest.fixture(scope="module")
def reference(scenes, tiny_ckpt, tmp_path_factory) -> Path:
    """The collection indexed by one process (the CLI in this process)."""
    root = tmp_path_factory.mktemp("ref") / "idx"
    _run_cli(*scenes, "--out", root, "--model", tiny_ckpt)
    return root


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _run_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", *map(str, args), "--quiet"],
                          capture_output=True, text=True, env=_env(), timeout=scaled(600))
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def _same_collection(a: Path, b: Path) -> None:
    """Two collection folders hold the same scenes with byte-identical patches and equal tables."""
    names = sorted(p.stem for p in (a / "parts").glob("*.parquet"))
    assert names == sorted(p.stem for p in (b / "parts").glob("*.parquet")) and len(names) == 3
    for name in names:
        assert np.array_equal(np.load(a / "patches" / f"{name}.npy"), np.load(b / "patches" / f"{name}.npy"))
        ta, tb = pq.read_table(a / "parts" / f"{name}.parquet"), pq.read_table(b / "parts" / f"{name}.parquet")
        assert ta.equals(tb), name
    ma, mb = json.loads((a / "manifest.json").read_text()), json.loads((b / "manifest.json").read_text())
    assert ma == mb


# ---------------------------------------------------------------------------- planning
def test_shares_balance_pixels_not_files():
    scenes = [Scene("big", "a", 1000), Scene("s1", "b", 100), Scene("s2", "c", 100), Scene("s3", "d", 100),
              Scene("mid", "e", 600)]
    shares = [share(scenes, i, 2) for i in range(2)]
    assert [s.name for s in shares[0]] == ["big"]  # one large scene against four small ones
    assert [s.name for s in shares[1]] == ["s1", "s2", "s3", "mid"]
    assert sorted(s.name for sh in shares for s in sh) == sorted(s.name for s in scenes)  # each exactly once
    assert share(scenes, 0, 1) == scenes
    loads = [sum(s.pixels for s in share(scenes, i, 3)) for i in range(3)]
    assert sorted(loads) == [300, 600, 1000]  # largest first, each to the lightest share


def test_inputs_globs_lists_and_names(tmp_path):
    for n in ("a.tif", "b.tif"):
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.tif").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("\ufeff# scenes\nsub/a.tif\n\nb.tif\n", encoding="utf-8")
    got = expand_inputs([str(tmp_path / "*.tif")], lst)
    assert got == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif"), str(tmp_path / "sub" / "a.tif")]
    names = scene_names(got)
    assert names[1] == "b" and names[0].startswith("a-") and names[2].startswith("a-") and names[0] != names[2]
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "a/b", "1", "-1/2"):
        with pytest.raises(Exception, match="shard"):
            parse_shard(bad)


# ---------------------------------------------------------------------------- building
@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(scenes, reference, tiny_ckpt, tmp_path):
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "geoalign_core.cli", "index", *map(str, scenes), "--out", str(out), "--model", tiny_ckpt]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=scaled(600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0]" in proc.stdout and "[rank 1]" in proc.stdout  # both ranks indexed something
    assert "3 scene(s) indexed" in proc.stdout and "on 2 ranks" in proc.stdout
    _same_collection(reference, out)


@pytest.mark.slow  # three index builds of three scenes (about a minute)
def test_shards_equal_one_process_and_rerun_skips(scenes, reference, tiny_ckpt, tmp_path):
    out = tmp_path / "idx"
    lst = tmp_path / "scenes.txt"
    lst.write_text("\n".join(map(str, scenes)) + "\n")
    done = []
    for i in range(2):
        proc = _run_cli("--from-list", lst, "--out", out, "--model", tiny_ckpt, "--shard", f"{i}/2")
        done.append(len(list((out / "parts").glob("*.parquet"))))
    assert done[0] in (1, 2) and done[1] == 3  # each task did its share only
    _same_collection(reference, out)
    # the manifest and the STAC description (idx/stac/) are rewritten by every run; the parts are not
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")
              if p.is_file() and p.name != "manifest.json" and "stac" not in p.relative_to(out).parts}
    proc = subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", "--from-list", str(lst), "--out",
                           str(out), "--model", tiny_ckpt], capture_output=True, text=True, env=_env(),
                          timeout=scaled(600))
    assert proc.returncode == 0 and "0 scene(s) indexed" in proc.stdout and "3 already done" in proc.stdout
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_broken_part_is_redone(scenes, reference, tiny_ckpt, tmp_path):
    import shutil

    out = tmp_path / "idx"
    shutil.copytree(reference, out)
    (out / "patches" / "sample.npy").write_bytes(b"truncated")  # a patch file that is not the part's
    proc = _run_cli(*scenes, "--out", out, "--model", tiny_ckpt)
    assert proc.returncode == 0
    _same_collection(reference, out)


@pytest.mark.slow
def test_killed_run_resumes(scenes, reference, tiny_ckpt, tmp_path):
    """kill -9 in the middle of the first scene (small chunks, so that there is a middle), then the
    same command again: the finished chunks are reused and the collection equals the reference."""
    out = tmp_path / "idx"
    script = ("import sys, geoalign_core.index.build as b; b.PART_BYTES = 1 << 16; from geoalign_core.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    args = ["index", *map(str, scenes), "--out", str(out), "--model", tiny_ckpt, "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", script, *args], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    work = out / "work"
    t0 = time.time()
    while time.time() - t0 < 120 and len(list(work.glob("*/part-*.npz"))) < 2:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = list(work.glob("*/part-*.npz"))
    assert len(kept) >= 2 and len(list((out / "parts").glob("*.parquet"))) < 3, "the run ended before the kill"
    again = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=_env(),
                           timeout=scaled(600))
    assert again.returncode == 0, again.stderr
    _same_collection(reference, out)
    assert not any(work.iterdir())  # unfinished work is gone once every scene is done


def test_broken_scene_is_reported_and_the_others_go_on(scenes, tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 this is not a GeoTIFF")
    out = tmp_path / "idx"
    rc, stdout, err = cli(capsys, "index", scenes[0], bad, scenes[1], "--out", out, "--model", tiny_ckpt)
    assert rc == 1, err
    assert "1 failed" in stdout and "failed: broken (" in stdout and "2 scene(s) indexed" in stdout
    assert sorted(p.stem for p in (out / "parts").glob("*.parquet")) == sorted(Path(s).stem for s in scenes[:2])
    with pytest.warns(UserWarning, match="1 of 3 scenes are not indexed"):
        coll = open_index(out, tiny_ckpt)
    assert len(coll) == 2


def test_bad_collection_input(scenes, tiny_ckpt, tmp_path, capsys):
    assert_bad(capsys, ["index", scenes[0], scenes[1], "--model", tiny_ckpt], tmp_path, "--out")
    assert_bad(capsys, ["index", str(tmp_path / "nothing-*.tif"), "--out", tmp_path / "i", "--model", tiny_ckpt],
               tmp_path, "no file matches")
    assert_bad(capsys, ["index", scenes[0], scenes[1], "--out", tmp_path / "i", "--shard", "2/2"], tmp_path,
               "shard must be")
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert_bad(capsys, ["index", scenes[0], scenes[1], "--out", f, "--model", tiny_ckpt], tmp_path, "is a file")
    assert_bad(capsys, ["index", scenes[0], "--ann", "--out", tmp_path / "a.parquet"], tmp_path, "collection")


# ---------------------------------------------------------------------------- querying
@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Predictor(tiny_ckpt, device="cpu", batch_size=8)


@pytest.mark.slow  # every scene queried alone, then the collection (tens of seconds)
def test_find_over_scenes_equals_each_scene_merged(reference, tiny):
    coll = open_index(reference, tiny)
    phrases = ["red car", "building"]
    got = coll.find(phrases, min_score=0.0, max_results=15)
    real = all((REAL_DATA / n).exists() for n in ("neon_osbs029_rgb.tif", "spacenet_atlanta_pan.tif"))
    if real:  # three CRSs: EPSG:4326 by default
        assert got.crs.to_epsg() == 4326
    per = []
    for s in coll.scenes:
        g = SceneIndex.open(s.part(reference), tiny).find(phrases, min_score=0.0, max_results=15).to_crs(got.crs)
        g.insert(0, "scene", s.name)
        per.append(g)
    want = pd.concat(per).sort_values(["phrase", "score"], ascending=[True, False], kind="stable")
    want = want.groupby("phrase").head(15)
    have = got.sort_values(["phrase", "score"], ascending=[True, False], kind="stable")
    assert len(have) == len(want) == 30
    assert np.allclose(have["score"].to_numpy(), want["score"].to_numpy())
    assert list(have["scene"]) == list(want["scene"])
    assert list(got.columns[:4]) == ["scene", "phrase", "score", "rank"]
    assert got.groupby("phrase")["rank"].apply(lambda r: list(r) == list(range(1, len(r) + 1))).all()
    meta = got.attrs["geoalign"]
    assert meta["search"] == "exact" and meta["n_scenes"] == 3
    utm = coll.find(phrases, max_results=5, crs="EPSG:32617")
    assert utm.crs.to_epsg() == 32617


def test_cli_find_and_tile_classify_from_a_collection(reference, tiny_ckpt, tmp_path, capsys):
    out = tmp_path / "m.gpkg"
    rc, stdout, err = cli(capsys, "find", "--index", reference, "road", "--out", out, "--model", tiny_ckpt,
                          "--min-score", "0", "--max-results", "7")
    assert rc == 0, err
    gdf = gpd.read_file(out)
    assert len(gdf) == 7 and "scene" in gdf.columns
    tiles = tmp_path / "t.gpkg"
    rc, _, err = cli(capsys, "tile-classify", reference, "--classes", "forest,road", "--out", tiles,
                     "--model", tiny_ckpt, "--crs", "EPSG:3857")
    assert rc == 0, err
    t = gpd.read_file(tiles)
    assert t.crs.to_epsg() == 3857 and set(t["scene"]) == {p.stem for p in (reference / "parts").glob("*.parquet")}
    n_tiles = sum(pq.read_metadata(p).num_rows for p in (reference / "parts").glob("*.parquet"))
    assert len(t) == n_tiles
    assert_bad(capsys, ["heatmap", "--index", reference, "road", "--out", tmp_path / "h.tif", "--model", tiny_ckpt],
               tmp_path, "takes one scene")
    one = reference / "parts" / "sample.parquet"
    rc, _, err = cli(capsys, "find", "--index", one, "road", "--out", tmp_path / "one.gpkg", "--model", tiny_ckpt,
                     "--min-score", "0", "--max-results", "3", "--crs", "EPSG:4326")  # --crs for one scene too
    assert rc == 0, err
    assert gpd.read_file(tmp_path / "one.gpkg").crs.to_epsg() == 4326
    assert_bad(capsys, ["find", "--index", one, "road", "--exact", "--out", tmp_path / "x.gpkg", "--model", tiny_ckpt],
               tmp_path, "for a collection index")
    assert_bad(capsys, ["find", "--index", reference, "road", "--crs", "EPSG:0", "--out", tmp_path / "y.gpkg"],
               tmp_path, "unknown CRS")
    rc, stdout, _ = cli(capsys, "index", "--info", reference)
    assert rc == 0 and "3 of 3 scene(s) indexed" in stdout


def test_ann_search_and_staleness(reference, tiny, tiny_ckpt, tmp_path, capsys):
    import shutil

    pytest.importorskip("faiss")
    root = tmp_path / "idx"
    shutil.copytree(reference, root)
    rc, stdout, err = cli(capsys, "index", *[json.loads((root / "manifest.json").read_text())["scenes"][i]["raster"]
                                           for i in range(3)], "--out", root, "--model", tiny_ckpt, "--ann")
    assert rc == 0, err
    assert "ANN index IVF" in stdout and (root / "ann" / "patches.faiss").is_file()
    coll = open_index(root, tiny)
    exact = coll.find(["road"], min_score=0.0, max_results=10, exact=True)
    approx = coll.find(["road"], min_score=0.0, max_results=10, exact=False)
    assert approx.attrs["geoalign"]["search"] == "ann" and exact.attrs["geoalign"]["search"] == "exact"
    assert len(approx) == 10
    assert set(approx["scene"]) <= set(exact["scene"]) | {s.name for s in coll.scenes}
    # the ANN only narrows which tiles are scored: every box it returns scores as the exact scan scores it
    assert (approx["score"].to_numpy() <= exact["score"].max() + 1e-6).all()
    # a scene added after the ANN index was built: the ANN index is stale and not used
    extra = textured_raster(tmp_path / "extra.tif")
    rc, _, err = cli(capsys, "index", extra, "--out", root, "--model", tiny_ckpt, "--no-ann")
    assert rc == 0, err
    import geoalign_core.index.ann as ann_mod

    coll = open_index(root, tiny)
    with pytest.raises(Exception, match="older than its scenes"):
        coll.find(["road"], exact=False)
    old = ann_mod.ANN_MIN_PATCHES
    ann_mod.ANN_MIN_PATCHES = 0
    try:
        with pytest.warns(UserWarning, match="searching exactly"):
            res = coll.find(["road"], min_score=0.0, max_results=3)
        assert res.attrs["geoalign"]["search"] == "exact"
    finally:
        ann_mod.ANN_MIN_PATCHES = old
