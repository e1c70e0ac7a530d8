"""Shared helpers of the QGIS plugin tests (tests/test_qgis_*.py). No tests here.

The plugin runs under real QGIS (pytest-qgis, offscreen) with a real model: GeoAlign-Tiny
(open_clip architecture, random weights: works offline, scores are meaningless but every
code path runs).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "sample_data" / "scene.tif"
TEST_MODEL = "GeoAlign-Tiny"
RASTER_EPSG = 32633


def write_crop(out: Path, size: int = 256, col: int = 640, row: int = 640) -> Path:
    """A ``size`` x ``size`` crop of the sample scene (or, without it, a textured raster)
    as a GeoTIFF in EPSG:32633 with the scene's pixel grid."""
    if SCENE.is_file():
        with rasterio.open(SCENE) as src:
            win = Window(col, row, size, size)
            data = src.read(window=win)
            profile = src.profile | {
                "width": size, "height": size, "transform": src.window_transform(win),
                "tiled": False, "compress": "deflate",
            }
            profile.pop("blockxsize", None)
            profile.pop("blockysize", None)
    else:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[0:size, 0:size]
        base = (np.sin(xx / 9.0) + np.cos(yy / 13.0)) * 40 + 120
        data = np.stack([base + rng.normal(0, 10, base.shape) for _ in range(3)]).clip(0, 255).astype("uint8")
        profile = {
            "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
            "crs": f"EPSG:{RASTER_EPSG}",
            "transform": rasterio.transform.from_origin(500000.0 + col * 0.3, 5000000.0 - row * 0.3, 0.3, 0.3),
        }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


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
