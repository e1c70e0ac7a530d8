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
__all__ = ["ROOT", "SCENE", "TEST_MODEL", "RASTER_EPSG", "sample_crop", "wait_until", "wait_for_dock", "files_in"]


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
