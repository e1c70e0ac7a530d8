"""The "GeoAlign" Processing provider. It loads even when torch is missing: each algorithm
then refuses to run (``canExecute``) and says what to install."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import deps
from .algorithms import ALGORITHMS

ICON = Path(__file__).resolve().parent.parent / "icon.svg"


class GeoAlignProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoalign"

    def name(self) -> str:
        return "GeoAlign"

    def longName(self) -> str:  # noqa: N802
        status = deps.check()
        if status.ok:
            return "GeoAlign: find objects in imagery by text"
        return f"GeoAlign (not usable: {', '.join(status.missing)} missing)"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802
        return str(ICON)

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in ALGORITHMS:
            self.addAlgorithm(cls())
