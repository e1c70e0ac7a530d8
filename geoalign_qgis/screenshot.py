"""Offscreen rendering of layers to an image (README screenshot, tests, reports)."""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapLayer,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter
from qgis.PyQt.QtWidgets import QApplication, QWidget


def render_map(layers: list[QgsMapLayer], extent: QgsRectangle, crs: QgsCoordinateReferenceSystem,
               width: int = 900, height: int = 900) -> QImage:
    """Render ``layers`` (top first) with their styles and labels; returns the image."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(crs)
    settings.setOutputSize(QSize(width, height))
    settings.setExtent(extent)
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    return job.renderedImage()


def compose(map_image: QImage, panel: QWidget | None = None, panel_width: int = 400) -> QImage:
    """The map image with a widget (the dock) grabbed to its right."""
    if panel is None:
        return map_image
    panel.resize(panel_width, map_image.height())
    panel.show()
    for _ in range(3):  # let the resize and the layout settle before grabbing
        QApplication.processEvents()
    grabbed = panel.grab().toImage()
    out = QImage(map_image.width() + grabbed.width(), max(map_image.height(), grabbed.height()),
                 QImage.Format.Format_ARGB32)
    out.fill(QColor("white"))
    painter = QPainter(out)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.drawImage(0, 0, map_image)
    painter.drawImage(map_image.width(), 0, grabbed)
    painter.setPen(QColor(160, 160, 160))
    painter.drawLine(map_image.width(), 0, map_image.width(), out.height())
    painter.end()
    return out


__all__ = ["compose", "render_map"]
