"""Fine-tuning through the engine (the ``finetune`` request the plugin's "Fine-tune" button sends),
and the user's own models in ``list_models``; and the phrase limit of find, in the engine and the CLI.

The engine is this interpreter (as QGIS would start it); the model is GeoAlign-Tiny (random
weights) on a generated 512 px scene with its labels, two training steps.
"""

from __future__ import annotations

import sys
import threading

import pytest
from cli_helpers import cli
from qgis_helpers import carded_tiny_model

from geoalign_qgis.engine import EngineCancelled, EngineClient, EngineError

MODEL = carded_tiny_model()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    c = EngineClient(sys.executable, tmp_path_factory.mktemp("engine") / "engine.log")
    yield c
    c.stop()


@pytest.mark.slow
def test_finetune_request_reports_steps_and_the_model_joins_the_list(client, scene_1002, tmp_path):
    raster, labels = scene_1002
    models = tmp_path / "models"
    events: list[tuple[str, int, int]] = []
    result = client.request("finetune", {
        "rasters": [str(raster)], "labels": [str(labels)], "class_field": "class", "model": MODEL,
        "out": str(models / "mine"), "name": "mine", "steps": 2, "batch_size": 4, "device": "cpu",
        "log": str(models / "mine.log")}, on_progress=lambda s, d, t: events.append((s, d, t)), timeout=900)
    stages = [s for s, _, _ in events]
    assert stages[0] == "preparing chips" and "evaluating and calibrating" in stages
    training = [(s, d, t) for s, d, t in events if s.startswith("training")]
    assert training and training[-1][1:] == (2, 2) and "loss" in training[-1][0]  # step 2 of 2, with its loss
    assert result["name"] == "mine" and result["model"].endswith("mine.safetensors")
    assert 0.0 <= result["after"]["region_top1"] <= 1.0 and "region_top1" in result["before"]
    assert (models / "mine" / "report.md").is_file() and (models / "mine.log").is_file()
    listed = client.request("list_models", {"folders": [str(models)]})["models"]
    mine = listed[0]  # the user's own models come first
    assert mine["name"] == "mine" and mine["source"] == result["model"] and mine["calibrated"]
    assert "geoalign-demo" in [m["name"] for m in listed]
    # the new model answers at once
    found = client.request("find", {"raster": str(raster), "phrases": ["car"], "model": mine["source"],
                                    "device": "cpu", "out": str(tmp_path / "f.gpkg"), "min_score": 0.0,
                                    "max_results": 3})
    assert found["count"] >= 1


@pytest.mark.slow
def test_finetune_cancel_stops_the_child_and_keeps_nothing(client, scene_1002, tmp_path):
    raster, labels = scene_1002
    out = tmp_path / "models" / "stopped"
    stop = threading.Event()
    seen: list[str] = []

    def progress(stage: str, done: int, total: int) -> None:
        seen.append(stage)
        stop.set()  # cancel as soon as it runs

    with pytest.raises(EngineCancelled):
        client.request("finetune", {"rasters": [str(raster)], "labels": [str(labels)], "class_field": "class",
                                    "model": MODEL, "out": str(out), "steps": 50, "batch_size": 4, "device": "cpu"},
                       on_progress=progress, cancelled=stop.is_set, timeout=300)
    assert seen and not out.exists()


def test_finetune_bad_input_is_one_line(client, tmp_path):
    with pytest.raises(EngineError) as err:
        client.request("finetune", {"rasters": [str(tmp_path / "none.tif")], "labels": [str(tmp_path / "l.gpkg")],
                                    "class_field": "class", "out": str(tmp_path / "m")})
    assert err.value.kind == "input" and "file not found" in str(err.value) and "\n" not in str(err.value)


def test_find_refuses_more_phrases_than_it_can_hold(client, crop, tmp_path, capsys):
    from geoalign_core.defaults import MAX_PHRASES

    phrases = [f"thing {i}" for i in range(MAX_PHRASES + 1)]
    with pytest.raises(EngineError) as err:
        client.request("find", {"raster": str(crop), "phrases": phrases, "model": MODEL, "device": "cpu",
                                "out": str(tmp_path / "f.gpkg")})
    assert err.value.kind == "input" and f"at most {MAX_PHRASES}" in str(err.value)
    assert not (tmp_path / "f.gpkg").exists()
    # the CLI: the same bound, one line, exit code 2
    rc, _, err = cli(capsys, "find", str(crop), *phrases, "--model", MODEL, "--device", "cpu",
                     "--out", str(tmp_path / "c.gpkg"))
    assert rc == 2 and f"at most {MAX_PHRASES}" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c.gpkg").exists()


def test_object_size_is_accepted_by_the_engine(client, crop, tmp_path):
    res = client.request("find", {"raster": str(crop), "phrases": ["car"], "model": MODEL, "device": "cpu",
                                  "out": str(tmp_path / "f.gpkg"), "object_size": 5.0, "min_score": 0.0,
                                  "max_results": 3})
    assert res["metadata"]["object_sizes_m"]
