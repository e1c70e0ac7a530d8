"""Results made before the project was saved: offered a move into the project's folder on save.

While a project has no file, results go to the plugin's results folder in the QGIS profile
(:func:`~geoalign_qgis.layers.default_results_dir`). Saved afterwards, the project would point
into the profile (``../profiles/...``): not what anyone sends to a colleague. When the project is
saved and GeoAlign layers still read files from the profile's results folder, the dock asks once
whether to move them into ``<project>_geoalign/`` next to the project; the layers then read the
moved files and the project is written again.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from qgis.core import QgsMapLayer, QgsProject

from . import layers

SIDE_CARS = ("-journal", "-wal", "-shm", ".aux.xml", ".ovr")


def _file_of(layer: QgsMapLayer) -> Path:
    return Path(layer.source().split("|")[0])


def _under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def results_outside(project: QgsProject | None = None) -> list[QgsMapLayer]:
    """GeoAlign's result layers of a saved project whose files are still in the profile's results folder."""
    project = project or QgsProject.instance()
    if not project.fileName():
        return []
    folder = layers.default_results_dir()
    return [lyr for lyr in project.mapLayers().values()
            if layers.is_output(lyr) and _file_of(lyr).is_file() and _under(_file_of(lyr), folder)]


def move_results(to_move: list[QgsMapLayer], project: QgsProject | None = None) -> int:
    """Move the layers' files into the project's results folder and point the layers at them; the count moved."""
    project = project or QgsProject.instance()
    target = layers.output_dir(project)
    moved: dict[Path, Path] = {}
    for lyr in to_move:
        src = _file_of(lyr)
        if src not in moved:
            dest = target / src.name
            if dest.exists():
                dest = target / f"{src.stem}_{len(moved) + 1}{src.suffix}"
            shutil.move(str(src), dest)
            for suffix in SIDE_CARS:
                side = Path(str(src) + suffix)
                if side.exists():
                    with contextlib.suppress(OSError):
                        shutil.move(str(side), Path(str(dest) + suffix))
            moved[src] = dest
        rest = lyr.source()[len(str(src)):]  # "|layername=matches" and the like
        lyr.setDataSource(str(moved[src]) + rest, lyr.name(), lyr.providerType())
    return len(moved)


__all__ = ["move_results", "results_outside"]
