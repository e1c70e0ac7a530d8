"""The engine process and its protocol (docs/engine_protocol.md), through the plugin's client.

The engine runs as QGIS starts it: ``<python> -m geoalign_core.engine`` in its own process,
JSON lines on stdin / stdout. The model is GeoAlign-Tiny (random weights) on small rasters.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from qgis_helpers import carded_tiny_model, sample_crop

from geoalign_qgis.engine import (
    PROTOCOL_VERSION,
    EngineCancelled,
    EngineClient,
    EngineDied,
    EngineError,
    EngineStartError,
)

MODEL = carded_tiny_model()  # GeoAlign-Tiny with the test card: the calibrated score paths run


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = EngineClient(sys.executable, tmp_path_factory.mktemp("engine") / "engine.log")
    yield c
    c.stop()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    return sample_crop(tmp_path_factory.mktemp("big") / "big.tif", size=512, col=0, row=0)


def test_protocol_versions_agree():
    from geoalign_core.engine.protocol import PROTOCOL_VERSION as server

    assert PROTOCOL_VERSION == server


def test_hello_loads_no_model_stack(client):
    """(How fast the engine answers, and how fast it cancels, is benchmarks/bench_engine.py's.)"""
    hello = client.start()
    assert hello["protocol"] == PROTOCOL_VERSION and hello["python"] == sys.executable
    assert client.request("hello")["pid"] == client.pid


def test_two_requests_reuse_the_loaded_model(client, crop, tmp_path):
    pid = client.start()["pid"]
    stages = []
    first = client.request("find", {"raster": str(crop), "phrases": ["car"], "out": str(tmp_path / "a.gpkg"),
                                    "model": MODEL, "device": "cpu", "min_score": 0.0, "max_results": 3},
                           on_progress=lambda st, d, t: stages.append(st))
    second = client.request("find", {"raster": str(crop), "phrases": ["tree"], "out": str(tmp_path / "b.gpkg"),
                                     "model": MODEL, "device": "cpu", "min_score": 0.0, "max_results": 3})
    assert first["model_loaded"] is True and second["model_loaded"] is False
    assert client.pid == pid
    assert f"loading model {MODEL}" in stages and "scanning tiles" in stages
    assert first["layer"] == "matches" and 0 < first["count"] <= 3 and Path(first["path"]).is_file()
    assert first["summary"].startswith(f"wrote {first['count']} matches to ")
    from geoalign_core.geo import read_geopackage_metadata

    meta = read_geopackage_metadata(first["path"], "matches")
    assert meta["client"] == "engine" and meta["phrases"] == ["car"]


def test_every_request_type(client, crop, tmp_path):
    models = client.list_models()
    assert models["default"] == "geoalign-demo" and any(m["name"] == "geoalign-demo" for m in models["models"])
    tiles = client.request("tile_classify", {"raster": str(crop), "classes": ["car", "tree"], "model": MODEL,
                                             "device": "cpu", "out": str(tmp_path / "t.gpkg")})
    assert tiles["layer"] == "tiles" and tiles["count"] == 4
    heat = client.request("heatmap", {"raster": str(crop), "phrase": "car", "values": "score", "model": MODEL,
                                      "device": "cpu", "out": str(tmp_path / "h.tif")})
    assert heat["details"]["values"] == "score" and 0.0 <= heat["details"]["min"] <= heat["details"]["max"] <= 1.0
    regions = tmp_path / "r.geojson"
    import rasterio

    with rasterio.open(crop) as src:
        b = src.bounds
    poly = [[b.left, b.bottom], [b.left + 20, b.bottom], [b.left + 20, b.bottom + 20], [b.left, b.bottom + 20],
            [b.left, b.bottom]]
    feature = {"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "Polygon", "coordinates": [poly]}}
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}}
    regions.write_text(json.dumps({"type": "FeatureCollection", "crs": crs, "features": [feature]}))
    matched = client.request("match_regions", {"raster": str(crop), "regions": str(regions), "phrases": ["a", "b"],
                                               "model": MODEL, "device": "cpu", "out": str(tmp_path / "m.gpkg")})
    assert matched["layer"] == "regions" and matched["count"] == 1
    check = client.check(["json", "no_such_module_xyz"])
    assert not check["ok"] and check["missing"][0]["module"] == "no_such_module_xyz"


def test_index_requests(client, crop, big, tmp_path):
    """index -> index_info -> find / similar from the index; a cancelled index request resumes."""
    idx = tmp_path / "crop.parquet"
    built = client.request("index", {"raster": str(crop), "out": str(idx), "model": MODEL, "device": "cpu"})
    assert built["count"] == 9 and built["path"] == str(idx) and Path(f"{idx}.patches.npy").is_file()
    info = client.request("index_info", {"index": str(idx)})
    assert info["tiles"] == 9 and info["raster_state"] == "ok" and info["model"] == MODEL
    # the model comes from the index (random weights here: the same device, the same loaded model)
    found = client.request("find", {"index": str(idx), "phrases": ["car"], "out": str(tmp_path / "f.gpkg"),
                                    "min_score": 0.0, "max_results": 3, "device": "cpu"})
    assert found["count"] == 3 and found["metadata"]["index"] == str(idx) and found["metadata"]["refine"] is False
    import rasterio

    with rasterio.open(crop) as src:
        left, bottom = src.bounds.left, src.bounds.bottom
    like = client.request("similar", {"index": str(idx), "examples": [[left + 10, bottom + 10, left + 20, bottom + 20]],
                                      "out": str(tmp_path / "s.gpkg"), "min_score": -1.0, "max_results": 5,
                                      "device": "cpu"})
    assert like["layer"] == "similar" and like["details"]["examples"] == 1
    with pytest.raises(EngineError, match="needs raster or index"):
        client.request("find", {"phrases": ["car"], "out": str(tmp_path / "x.gpkg")})
    # a cancelled build keeps its finished chunks; the same request continues from them
    out = tmp_path / "big.parquet"
    params = {"raster": str(big), "out": str(out), "model": MODEL, "device": "cpu", "tile_size": 16,
              "batch_size": 64}
    parts = Path(f"{out}.partial")
    with pytest.raises(EngineCancelled):
        client.request("index", params, cancelled=lambda: len(list(parts.glob("part-*.npz"))) >= 1)
    assert not out.exists() and list(parts.glob("part-*.npz"))
    again = client.request("index", params)
    assert again["details"]["resumed_tiles"] > 0 and not parts.exists()


def test_errors_are_one_line_with_a_kind(client, crop, tmp_path):
    with pytest.raises(EngineError) as err:
        client.request("find", {"raster": str(tmp_path / "missing.tif"), "phrases": ["car"],
                                "out": str(tmp_path / "x.gpkg"), "model": MODEL})
    assert err.value.kind == "input" and "raster not found" in str(err.value) and not err.value.detail
    with pytest.raises(EngineError) as err:
        client.request("find", {"raster": str(crop), "phrases": ["car"], "out": str(tmp_path / "x.gpkg"),
                                "model": "no-such-model"})
    assert err.value.kind == "model" and "unknown model" in str(err.value)
    out = tmp_path / "exists.gpkg"
    out.write_bytes(b"keep me")
    with pytest.raises(EngineError, match="exists"):
        client.request("find", {"raster": str(crop), "phrases": ["car"], "out": str(out), "model": MODEL})
    assert out.read_bytes() == b"keep me"  # nothing already on disk is lost
    import numpy as np
    import rasterio

    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 64, 64), dtype=np.uint8) + 100)
    with pytest.raises(EngineError) as err:
        client.request("heatmap", {"raster": str(nocrs), "phrase": "car", "out": str(tmp_path / "h.tif")})
    assert err.value.code == "no_crs"
    for params, why in (({"phrases": ["car"]}, "needs raster"), ({"raster": 3, "phrases": [], "out": "x"}, "text"),
                        ({"raster": "r", "phrases": ["a"], "out": "o", "colour": 1}, "does not take colour")):
        with pytest.raises(EngineError, match=why) as err:
            client.request("find", params)
        assert err.value.code == "bad_request"


def test_bad_lines_leave_the_engine_running():
    proc = subprocess.Popen([sys.executable, "-m", "geoalign_core.engine"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "hello"
        lines = ["not json", "[1, 2]", '{"type": "hello"}', '{"id": "a", "type": "fly"}',
                 '{"id": "b", "type": "find", "params": []}', '{"id": "c", "type": "hello"}']
        for line in lines:
            proc.stdin.write(line + "\n")
        proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline()) for _ in lines]
        assert [a["event"] for a in answers] == ["error"] * 5 + ["result"]
        assert [a["id"] for a in answers] == [None, None, None, "a", "b", "c"]
        assert all(a["kind"] == "input" and a["message"].startswith("bad request") for a in answers[:5])
        assert "unknown type 'fly'" in answers[3]["message"]
    finally:
        proc.stdin.close()  # end of input: the engine ends by itself
        assert proc.wait(15) == 0
        proc.stdout.close()


def test_cancel_stops_the_run_and_leaves_nothing(client, big, tmp_path):
    out = tmp_path / "h.tif"
    started = threading.Event()
    flag = threading.Event()
    seen = []

    def progress(stage, done, total):
        seen.append((done, total))
        if done > 0:
            started.set()

    def cancel_after_start():
        started.wait(60)
        flag.set()

    threading.Thread(target=cancel_after_start, daemon=True).start()
    with pytest.raises(EngineCancelled):  # an engine that ignored it would answer with a result
        client.request("heatmap", {"raster": str(big), "phrase": "car", "out": str(out), "model": MODEL,
                                   "device": "cpu", "tile_size": 16, "batch_size": 1},
                       on_progress=progress, cancelled=flag.is_set)
    done, total = max(seen)
    assert total > 1000 and done < total / 2  # stopped early, not at the end
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_queued_request_can_be_cancelled(client, big, crop, tmp_path):
    """Model requests run one at a time: a second one waits, and cancelling it while it waits works."""
    results = {}

    def long():
        try:
            results["long"] = client.request("heatmap", {"raster": str(big), "phrase": "car", "model": MODEL,
                                                         "device": "cpu", "tile_size": 32,
                                                         "out": str(tmp_path / "long.tif")})
        except Exception as exc:
            results["long"] = exc

    th = threading.Thread(target=long)
    th.start()
    time.sleep(0.3)
    with pytest.raises(EngineCancelled):
        client.request("find", {"raster": str(crop), "phrases": ["car"], "model": MODEL, "device": "cpu",
                                "out": str(tmp_path / "queued.gpkg")}, cancelled=lambda: True)
    th.join(120)
    assert isinstance(results["long"], dict) and not (tmp_path / "queued.gpkg").exists()


def test_object_size_and_a_collection_folder_through_the_engine(client, crop, tmp_path):
    """The engine takes every find parameter the CLI takes: object_size (metres), and a collection
    index folder as the index (every scene, merged, with a scene column)."""
    import geopandas as gpd

    from geoalign_core.cli import main

    sized = client.request("find", {"raster": str(crop), "phrases": ["car"], "object_size": [3, 2], "min_score": 0.0,
                                    "max_results": 3, "model": MODEL, "device": "cpu", "refine": False,
                                    "out": str(tmp_path / "sized.gpkg")})
    assert sized["count"] == 3 and sized["metadata"]["object_sizes_m"] == {"car": [3.0, 2.0]}
    twin = tmp_path / "twin.tif"
    twin.write_bytes(Path(crop).read_bytes())
    folder = tmp_path / "idx"
    assert main(["index", str(crop), str(twin), "--out", str(folder), "--model", MODEL, "--device", "cpu",
                 "--quiet"]) == 0
    found = client.request("find", {"index": str(folder), "phrases": ["car"], "min_score": 0.0, "max_results": 4,
                                    "device": "cpu", "crs": "EPSG:4326", "out": str(tmp_path / "all.gpkg")})
    rows = gpd.read_file(found["path"])
    assert found["count"] == 4 == len(rows) and set(rows["scene"]) <= {Path(crop).stem, "twin"}
    assert rows.crs.to_epsg() == 4326 and found["metadata"]["n_scenes"] == 2
    with pytest.raises(EngineError, match="takes one scene"):
        client.request("heatmap", {"index": str(folder), "phrase": "car", "device": "cpu",
                                   "out": str(tmp_path / "h.tif")})
    with pytest.raises(EngineError, match="find does not take bogus"):  # refused by the plugin's client already
        client.request("find", {"raster": str(crop), "phrases": ["car"], "bogus": 1, "out": str(tmp_path / "b.gpkg")})


@pytest.mark.slow
def test_engine_death_is_reported_and_the_next_request_restarts_it(tmp_path, big, crop):
    c = EngineClient(sys.executable, tmp_path / "engine.log")
    try:
        pid = c.start()["pid"]
        threading.Timer(3.0, lambda: os.kill(pid, signal.SIGKILL)).start()
        with pytest.raises(EngineDied) as err:
            c.request("heatmap", {"raster": str(big), "phrase": "car", "model": MODEL, "device": "cpu",
                                  "tile_size": 16, "batch_size": 1, "out": str(tmp_path / "h.tif")})
        # signal 9 is what the kernel's out-of-memory killer sends: the message says so
        assert "killed (signal 9)" in str(err.value) and "out of memory" in str(err.value)
        assert "\n" not in str(err.value)
        again = c.request("find", {"raster": str(crop), "phrases": ["car"], "model": MODEL, "device": "cpu",
                                   "min_score": 0.0, "max_results": 2, "out": str(tmp_path / "f.gpkg")})
        assert again["count"] == 2 and Path(again["path"]).is_file() and c.pid != pid and c.starts == 2
    finally:
        c.stop()


def test_start_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(EngineStartError, match="does not exist"):
        EngineClient(tmp_path / "nope" / "python").start()
    bare = Path("/usr/bin/python3")
    if not bare.is_file():
        pytest.skip("needs a Python without geoalign")
    env = {"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    with pytest.raises(EngineStartError, match="GeoAlign is not installed in that environment"):
        EngineClient(bare, tmp_path / "e.log", env=env, start_timeout=30).start()


def test_engine_env_drops_qgis_python_and_data_paths():
    from geoalign_qgis.engine import engine_env

    env = engine_env({"PATH": "/bin", "PYTHONHOME": "/q", "PYTHONPATH": "/q/python", "PROJ_LIB": "/q/proj",
                      "GDAL_DATA": "/q/gdal", "HOME": "/h"})
    assert env["PATH"] == "/bin" and env["HOME"] == "/h"
    assert not {"PYTHONHOME", "PYTHONPATH", "PROJ_LIB", "GDAL_DATA"} & set(env)


def test_internal_errors_carry_a_traceback(monkeypatch):
    """A bug in a handler ends its request with kind "internal" and the traceback; the engine goes on."""
    from geoalign_core.engine import jobs
    from geoalign_core.engine.server import Engine

    def broken(ctx, params):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(jobs.HANDLERS, "list_models", broken)
    out = io.StringIO()
    requests = io.StringIO('{"id": 1, "type": "list_models"}\n')
    engine = Engine(out)
    engine._worker.start()
    engine.handle_line(requests.readline())
    engine._side.shutdown(wait=True)
    engine.close()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    err = next(e for e in events if e.get("id") == 1)
    assert err["event"] == "error" and err["kind"] == "internal"
    assert err["message"] == "ZeroDivisionError: division by zero" and "Traceback" in err["detail"]


# ------------------------------------------------------------------ shutdown at any moment
def _shutdown_at(delay: float, requests: list[dict], spawn) -> tuple[int, list[dict]]:
    """Send ``requests``, then ``shutdown`` after ``delay`` s; the exit status and every event."""
    pid, stdin, stdout = spawn()
    events: list[dict] = []
    reader = threading.Thread(target=lambda: events.extend(json.loads(line) for line in stdout), daemon=True)
    reader.start()
    for r in requests:
        stdin.write(json.dumps(r) + "\n")
    stdin.flush()
    time.sleep(delay)
    stdin.write(json.dumps({"id": "bye", "type": "shutdown"}) + "\n")
    stdin.flush()
    reader.join(120)
    assert not reader.is_alive(), "the engine did not end after shutdown"
    code = spawn.wait(pid)
    stdin.close()
    stdout.close()
    return code, events


def _check_terminal_events(events: list[dict], ids: list[str]) -> None:
    terminal = [e for e in events if e.get("event") in ("result", "error", "cancelled")]
    for rid in [*ids, "bye"]:
        mine = [e for e in terminal if e.get("id") == rid]
        assert len(mine) == 1, (rid, events)
    assert [e for e in terminal if e["id"] == "bye"][0]["event"] == "result"
    for e in terminal:
        assert e["event"] != "error" or e.get("kind") != "internal", e


def _engine_requests(big: Path, crop: Path, tmp: Path, k: int) -> list[dict]:
    return [
        {"id": f"h{k}", "type": "heatmap", "params": {"raster": str(big), "phrase": "car", "model": MODEL,
                                                     "device": "cpu", "tile_size": 32,
                                                     "out": str(tmp / f"h{k}.tif")}},
        {"id": f"f{k}", "type": "find", "params": {"raster": str(crop), "phrases": ["car"], "model": MODEL,
                                                  "device": "cpu", "out": str(tmp / f"f{k}.gpkg")}},
        {"id": f"m{k}", "type": "list_models", "params": {}},
    ]


@pytest.mark.parametrize("times", [pytest.param(20, marks=pytest.mark.slow), 4])
def test_shutdown_at_random_moments_cancels_and_exits_0(big, crop, tmp_path, times):
    """20 (4 in the quick loop) shutdowns at random moments (model loading, scanning, writing, between requests): the
    engine always exits 0, every request gets exactly one terminal event, nothing half-written stays."""
    import random

    # real engine processes: a fork of this process (whose torch has run OpenMP threads in earlier tests) can
    # hang in the child's first parallel op
    spawn = _Process()
    rng = random.Random(27 + times)
    for k in range(times):
        out = tmp_path / f"run{k}"
        out.mkdir()
        code, events = _shutdown_at(rng.uniform(0.0, 1.5), _engine_requests(big, crop, out, k), spawn)
        assert code == 0, (k, events)
        _check_terminal_events(events, [f"h{k}", f"f{k}", f"m{k}"])
        done = {e["id"] for e in events if e.get("event") == "result"}
        expected = {f"h{k}.tif"} if f"h{k}" in done else set()
        expected |= {f"f{k}.gpkg"} if f"f{k}" in done else set()
        assert {p.name for p in out.iterdir()} == expected, (k, events)  # no temporary or lock file left


class _Process:
    def __init__(self) -> None:
        self.procs: dict[int, subprocess.Popen] = {}

    def __call__(self):
        p = subprocess.Popen([sys.executable, "-m", "geoalign_core.engine"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs[p.pid] = p
        return p.pid, p.stdin, p.stdout

    def wait(self, pid: int) -> int:
        return self.procs[pid].wait(60)


@pytest.mark.slow
def test_shutdown_of_a_real_engine_process_exits_0(big, crop, tmp_path):
    """As above in the engine process QGIS starts: shutdown while the model stack imports and loads."""
    spawn = _Process()
    for k, delay in enumerate((0.5, 4.0)):
        code, events = _shutdown_at(delay, _engine_requests(big, crop, tmp_path, k), spawn)
        assert code == 0, events
        _check_terminal_events(events, [f"h{k}", f"f{k}", f"m{k}"])


def test_a_nul_byte_in_a_path_is_an_input_error(tmp_path):
    """A NUL character in a path (or any text) is the client's mistake: kind "input", not "internal"."""
    from geoalign_core.engine.server import Engine

    out = io.StringIO()
    engine = Engine(out)
    engine._worker.start()
    engine.handle_line(json.dumps({"id": 1, "type": "find", "params": {
        "raster": str(tmp_path / "a\x00b.tif"), "phrases": ["car"], "out": str(tmp_path / "f.gpkg")}}))
    engine.handle_line(json.dumps({"id": 2, "type": "index_info", "params": {"index": "x\x00.parquet"}}))
    engine.close()
    events = {e["id"]: e for e in map(json.loads, out.getvalue().splitlines())}
    for rid in (1, 2):
        assert events[rid]["event"] == "error" and events[rid]["kind"] == "input", events[rid]
        assert "NUL" in events[rid]["message"] and "\n" not in events[rid]["message"]
    assert not list(tmp_path.iterdir())
