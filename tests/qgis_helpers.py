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

SCENE = SAMPLE_SCENE
TEST_MODEL = "GeoAlign-Tiny"
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
