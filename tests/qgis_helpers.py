"""Shared helpers of the QGIS plugin tests (tests/test_qgis_*.py).

The plugin runs under real QGIS (pytest-qgis, offscreen) with a real model: GeoAlign-Tiny
(open_clip architecture, random weights: works offline, scores are meaningless but every
code path runs).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from generate import ROOT, SAMPLE_SCENE, sample_crop
from timeouts import scaled

SCENE = SAMPLE_SCENE


def carded_tiny_model() -> str:
    """GeoAlign-Tiny (random weights, seed 0) saved as a checkpoint with the test model card beside it
    (conftest.tiny_card: fixed maps, so that the calibrated score paths of the plugin and the engine run);
    made once per machine in a subprocess (this process is QGIS's and never loads the model stack)."""
    import os
    import subprocess
    import sys
    import tempfile

    path = Path(tempfile.gettempdir()) / f"geoalign-test-model-{os.getuid()}" / "GeoAlign-Tiny.safetensors"
    if not (path.is_file() and path.with_name("GeoAlign-Tiny.card.json").is_file()):
        script = (
            "import sys, warnings, torch; sys.path.insert(0, sys.argv[2]); warnings.simplefilter('ignore')\n"
            "from pathlib import Path\n"
            "from geoalign_core import load_model, save_model\n"
            "from geoalign_core.card import card_path, save_card\n"
            "from conftest import tiny_card\n"
            "torch.manual_seed(0)\n"
            "out = Path(sys.argv[1]); tmp = out.with_name('.tmp-' + out.name)\n"
            "save_model(load_model('GeoAlign-Tiny', device='cpu'), tmp)\n"
            "save_card(tiny_card(), card_path(out)); tmp.replace(out)\n"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", script, str(path), str(Path(__file__).parent)], check=True,
                       timeout=scaled(300))
    return str(path)


TEST_MODEL = carded_tiny_model()
RASTER_EPSG = 32633
__all__ = ["ROOT", "SCENE", "TEST_MODEL", "RASTER_EPSG", "sample_crop", "wait_until", "wait_for_dock", "files_in",
           "add_raster", "fill_search", "finished", "drag_similar_box"]


def wait_until(cond, timeout: float = 120.0, what: str = "condition") -> None:
    """Process Qt events until ``cond()`` is true (tasks finish through queued signals)."""
    from qgis.core import QgsApplication

    t0 = time.monotonic()
    while not cond():
        QgsApplication.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
    QgsApplication.processEvents()


def wait_for_dock(dock, timeout: float = 120.0) -> None:
    wait_until(lambda: not dock.is_running(), timeout, "the GeoAlign task")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def add_raster(path: Path, name: str = "scene"):
    """The raster at ``path`` as a valid layer of the current project."""
    from qgis.core import QgsProject, QgsRasterLayer

    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid(), path
    QgsProject.instance().addMapLayer(layer)
    return layer


def fill_search(dock, phrases=None, *, scope: str | None = None, min_score: float | None = None,
                max_results: int | None = None) -> None:
    """Fill in the dock's search form; what is not given stays as it is."""
    if scope is not None:
        dock.set_scope(scope)
    if phrases is not None:
        dock.set_phrases(phrases)
    if min_score is not None:
        dock.min_score.setValue(min_score)
    if max_results is not None:
        dock.max_results.setValue(max_results)


def finished(dock, task):
    """``task`` (what a dock button returned) run to its end without an error; returns it."""
    assert task is not None, dock.status.text()
    wait_for_dock(dock)
    assert not task.error, task.error
    return task


def drag_similar_box(iface, dock, raster) -> None:
    """Press Find similar over the whole raster and drag a box near its lower left corner on the map."""
    from qgis.core import QgsRectangle
    from qgis.gui import QgsMapToolExtent

    dock.set_raster_layer(raster)
    dock.set_scope("layer")
    dock.similar_button.setChecked(True)
    assert isinstance(iface.mapCanvas().mapTool(), QgsMapToolExtent)
    e = raster.extent()
    box = QgsRectangle(e.xMinimum() + 20, e.yMinimum() + 20, e.xMinimum() + 32, e.yMinimum() + 30)
    dock.similar_tool.extentChanged.emit(box)  # what dragging a box on the map does

