"""The plugin in the real QGIS desktop app (the ``qgis`` binary under Xvfb, GL through Mesa).

What an analyst does on first use, end to end: QGIS starts with a fresh profile, installs the
plugin from its zip with its own installer, loads the sample scene, the dock opens from the
toolbar button, "red car" is typed and Find pressed; the model runs in the engine process
(this venv's Python, via GEOALIGN_ENGINE_PYTHON); the result layer must appear with boxes,
a heatmap follows; the scene is indexed, a phrase typed is answered from the index, Find
similar finds cars like one boxed car; then QGIS quits through its Exit action. The test fails on a crash, an
abort at exit, a blocked exit, a missing layer, or a heavy package in QGIS's process.

The offscreen pytest-qgis tests never load QGIS's libraries the way the desktop app does (Mesa's
libLLVM, the system GEOS/PROJ/GDAL all in one process), so only this test sees those crashes.
Set GEOALIGN_SCREENSHOT=1 to (re)write docs/qgis_screenshot.png and docs/qgis_similar.png from it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from qgis_helpers import ROOT, SCENE
from timeouts import scaled

pytestmark = [pytest.mark.qgis, pytest.mark.slow]

SCRIPT = ROOT / "tests" / "desktop" / "qgis_find_red_car.py"
LABELS = ROOT / "sample_data" / "labels.gpkg"  # the sample scene's labelled polygons (field "class")
CRASH_SIGNS = ("double free", "free(): invalid", "Segmentation fault", "Aborted", "core dumped",
               "corrupted size", "malloc():", "Fatal Python error")


@pytest.mark.skipif(shutil.which("qgis") is None or shutil.which("xvfb-run") is None,
                    reason="needs the qgis desktop app and xvfb-run (make test installs them)")
@pytest.mark.skipif(not SCENE.is_file(), reason="needs the sample scene")
@pytest.mark.timeout(1800)  # the whole journey, fine-tune included, on a busy 2-core machine
def test_real_qgis_finds_red_cars_and_quits_cleanly(tmp_path):
    plugin_zip = tmp_path / "geoalign_qgis.zip"
    subprocess.run([sys.executable, str(ROOT / "geoalign_qgis" / "package.py"), "--out", str(plugin_zip),
                    "--quiet"], check=True, timeout=scaled(300))
    out = tmp_path / "out"
    qtmp = tmp_path / "tmp"  # QGIS calls layers under its temp folder "temporary": keep the profile out of it
    data = tmp_path / "data"  # the plugin keeps the scene's index beside it: a copy, not the repository's
    for d in (out, qtmp, data):
        d.mkdir()
    scene = Path(shutil.copy(SCENE, data / SCENE.name))
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DISPLAY")}
    env.update(
        PATH="/usr/bin:/bin", PYTHONNOUSERSITE="1", TMPDIR=str(qtmp), LIBGL_ALWAYS_SOFTWARE="1",
        GEOALIGN_ENGINE_PYTHON=sys.executable, GEOALIGN_ENGINE_PYTHONPATH=str(ROOT),
        GEOALIGN_DESKTOP_ZIP=str(plugin_zip), GEOALIGN_DESKTOP_RASTER=str(scene), GEOALIGN_DESKTOP_OUT=str(out),
        GEOALIGN_DESKTOP_LABELS=str(LABELS),
    )
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24 +extension GLX", "qgis", "--nologo",
           "--noversioncheck", "--profiles-path", str(tmp_path / "profiles"), "--code", str(SCRIPT)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(1500),
                          stdin=subprocess.DEVNULL)
    log = proc.stdout + proc.stderr
    report_file = out / "report.json"
    assert report_file.is_file(), f"QGIS ended (rc {proc.returncode}) without a report:\n{log[-3000:]}"
    report = json.loads(report_file.read_text())
    assert not report["errors"], report["errors"]
    assert proc.returncode == 0, f"QGIS exit code {proc.returncode}:\n{log[-3000:]}"
    assert not [s for s in CRASH_SIGNS if s in log], log[-3000:]

    # the plugin came from the zip, into the fresh profile, and no set-up was needed
    assert report["plugin_loaded"] and str(tmp_path / "profiles") in report["plugin_file"]
    assert not report["setup_visible"]
    assert "geoalign-demo" in report["models"]
    # the dock says what the model knows: its card's domain line
    assert "trained on synthetic" in report["model_state"] and "calibrated" in report["model_state"]
    # the result layer holds the found boxes
    assert report["layer_in_project"] and report["layer_name"] == "red car (scene)"
    assert report["count"] > 0 and len(report["boxes"]) == report["count"]
    assert all(0.0 <= b[4] <= 1.0 for b in report["boxes"])
    # the score legend's classes say something: no two read the same
    assert len(report["legend"]) >= 2 and len(set(report["legend"])) == len(report["legend"]), report["legend"]
    # "red car" has a size in the model card (a car): its boxes are sized, not refined at 2x zoom
    assert "scanning tiles" in report["stages"]
    assert report["heatmap_layer"] == "heatmap score: red car (scene)"
    assert report["group_expanded"] == [True, True]  # the results are visible in the layer tree
    # Index this raster, then a phrase answered from the index as it was typed, then Find similar
    assert report["index_started"] and report["index_file"], report.get("index_status")
    # an unsaved project: the index goes to the plugin's folder in the profile, never into the data folder
    assert report["index_file"].startswith(str(tmp_path / "profiles")) and not list(data.glob("*.parquet"))
    assert report["index_file"].endswith(".geoalign-demo.geoalign-index.parquet")
    assert "indexed: " in report["index_state"]
    assert report["typed_layers"] == ["as you type: swimming pool (scene)"] and report["typed_count"] > 0
    assert "from the index" in report["typed_status"]
    assert report["similar_tool"] == "QgsMapToolExtent" and report["similar_started"]
    assert report["similar_used_index"] and report["similar_count"] > 1 and report["similar_first_is_example"]
    # 2,000 pasted phrases: nothing ran by itself, Find refused with a message (the engine never saw them)
    assert not report["paste_typed_started"] and "too many to answer as you type" in report["paste_typing_status"]
    assert not report["paste_find_started"] and "at most 200" in report["paste_find_status"]
    # a region drawn, a phrase typed: every box inside the region
    assert report["regions_typed_count"] > 0
    assert report["regions_typed_inside"] == report["regions_typed_count"], report["region"]
    # a second raster added: the dock followed it (and came back when it was removed)
    assert report["followed_second_raster"] and report["back_on_scene"]
    # fine-tuned from the labels' polygon layer over the map view: the new model is listed and used
    assert report["finetune_started"], report.get("finetune_status")
    assert report["finetune_params"]["steps"] == 2 and report["finetune_params"]["bounds"]
    stages = report["finetune_stages"]
    assert any(s.startswith("training, step 2 of 2, loss") for s in stages), stages
    assert report["finetune_status"].startswith("Fine-tuned desktop-finetuned"), report["finetune_status"]
    assert report["finetune_model"].endswith("desktop-finetuned.safetensors")
    assert "desktop-finetuned" in report["finetune_in_list"]
    assert "your fine-tuned model" in report["finetune_model_state"]
    assert report["finetuned_find_model"] == report["finetune_model"] and report["finetuned_find_count"] > 0
    # quitting while Classify tiles ran: QGIS asked about that run only (never the dock's own checks), the
    # answer was yes (QGIS cancels and stays open), and Exit again quit
    assert report["quit_task_running"]
    prompts = report.get("quit_prompts") or []
    assert len(prompts) == 1 and "Classifying tiles" in prompts[0], prompts
    assert "GeoAlign index" not in prompts[0] and "GeoAlign models" not in prompts[0], prompts
    assert report["quit_run_going_at_prompt"] and report["quit_again"]
    assert not report.get("dirtied_while_quitting"), report["dirtied_while_quitting"]  # nothing added while quitting
    # QGIS's process held Mesa's GL, and none of the packages that collide with it
    assert report["gl_loaded"]
    assert report["heavy"] == [], report["heavy"]
    # quitting QGIS ended the engine too
    proc_dir = Path(f"/proc/{report['engine_pid']}")
    assert report["engine_pid"] and (not proc_dir.exists() or (proc_dir / "stat").read_text().split()[2] == "Z")
    shot, shot2, shot3 = out / "qgis_desktop.png", out / "qgis_desktop_similar.png", out / "qgis_desktop_finetune.png"
    for s in (shot, shot2, shot3):
        assert s.is_file() and s.stat().st_size > 50_000, s
    if os.environ.get("GEOALIGN_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "qgis_screenshot.png")
        shutil.copy(shot2, ROOT / "docs" / "qgis_similar.png")
        shutil.copy(shot3, ROOT / "docs" / "qgis_finetune.png")
