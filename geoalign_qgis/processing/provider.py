"""The "GeoAlign" Processing provider. It loads even when no engine environment is set up yet:
each algorithm then refuses to run (``canExecute``) and says how to set one up."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from ..tasks import engine_location
from .algorithms import ALGORITHMS
from .more_algorithms import MORE_ALGORITHMS

ICON = Path(__file__).resolve().parent.parent / "icon.svg"


class GeoAlignProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoalign"

    def name(self) -> str:
        return "GeoAlign"

    def longName(self) -> str:  # noqa: N802
        if engine_location().found:
            return "GeoAlign: find objects in imagery by text"
        return "GeoAlign (not set up yet: open the GeoAlign dock)"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def svgIconPath(self) -> str:  # noqa: N802
        return str(ICON)

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]  # the engine writes (Cloud-Optimised) GeoTIFFs

    def loadAlgorithms(self) -> None:  # noqa: N802
        for cls in ALGORITHMS + MORE_ALGORITHMS:
            self.addAlgorithm(cls())
