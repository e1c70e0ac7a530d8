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
CRASH_SIGNS = ("double free", "free(): invalid", "Segmentation fault", "Aborted", "core dumped",
               "corrupted size", "malloc():", "Fatal Python error")


@pytest.mark.skipif(shutil.which("qgis") is None or shutil.which("xvfb-run") is None,
                    reason="needs the qgis desktop app and xvfb-run (make test installs them)")
@pytest.mark.skipif(not SCENE.is_file(), reason="needs the sample scene")
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
        GEOALIGN_ENGINE_PYTHON=sys.executable,
        GEOALIGN_DESKTOP_ZIP=str(plugin_zip), GEOALIGN_DESKTOP_RASTER=str(scene), GEOALIGN_DESKTOP_OUT=str(out),
    )
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24 +extension GLX", "qgis", "--nologo",
           "--noversioncheck", "--profiles-path", str(tmp_path / "profiles"), "--code", str(SCRIPT)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=scaled(420),
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
    assert "scanning tiles" in report["stages"] and "refining boxes" in report["stages"]
    assert report["heatmap_layer"] == "heatmap score: red car (scene)"
    assert report["group_expanded"] == [True, True]  # the results are visible in the layer tree
    # Index this raster, then a phrase answered from the index as it was typed, then Find similar
    assert report["index_started"] and report["index_file"], report.get("index_status")
    assert report["index_file"] == str(data / "scene.geoalign-demo.geoalign-index.parquet")
    assert "indexed: " in report["index_state"]
    assert report["typed_layers"] == ["as you type: swimming pool (scene)"] and report["typed_count"] > 0
    assert "from the index" in report["typed_status"]
    assert report["similar_tool"] == "QgsMapToolExtent" and report["similar_started"]
    assert report["similar_used_index"] and report["similar_count"] > 1 and report["similar_first_is_example"]
    # QGIS's process held Mesa's GL, and none of the packages that collide with it
    assert report["gl_loaded"]
    assert report["heavy"] == [], report["heavy"]
    # quitting QGIS ended the engine too
    proc_dir = Path(f"/proc/{report['engine_pid']}")
    assert report["engine_pid"] and (not proc_dir.exists() or (proc_dir / "stat").read_text().split()[2] == "Z")
    shot, shot2 = out / "qgis_desktop.png", out / "qgis_desktop_similar.png"
    assert shot.is_file() and shot.stat().st_size > 50_000 and shot2.is_file() and shot2.stat().st_size > 50_000
    if os.environ.get("GEOALIGN_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "qgis_screenshot.png")
        shutil.copy(shot2, ROOT / "docs" / "qgis_similar.png")
