"""A map tool to draw one or more rectangles (regions) on the canvas.

Rectangles are kept in the CRS of the canvas at the moment they were drawn, together with
that CRS, so they can be *transformed* (not relabelled) into any other CRS later -- the
raster's, for matching. A rectangle becomes a densified polygon before the transform, so
its edges follow the curvature of the target projection; its bounding box in the target
CRS is :meth:`QgsCoordinateTransform.transformBoundingBox`.

Left drag: draw a rectangle. Right click or Backspace: remove the last one. Esc: abort
the rectangle being drawn. Each rectangle carries its number (1, 2, ...) on the map: the
"Region" column of the dock's results table and the ``region`` field of the result layer.

:class:`BoxesMapTool` (the fine-tune group's "Draw boxes") keeps nothing itself: each rectangle
dragged is announced with the canvas's CRS, and the dock adds it, with its class, to a layer.
"""

from __future__ import annotations

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
)
from qgis.gui import QgsMapCanvas, QgsMapCanvasItem, QgsMapMouseEvent, QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import QRectF, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QFont, QFontMetricsF, QKeyEvent, QPainter

from .compat import POLYGON_GEOMETRY

DENSIFY = 16  # extra vertices per edge before transforming
MIN_PIXELS = 3  # a drag shorter than this is a click, not a rectangle


def transform_rect_geometry(rect: QgsRectangle, src: QgsCoordinateReferenceSystem,
                            dst: QgsCoordinateReferenceSystem, project: QgsProject | None = None) -> QgsGeometry:
    """The rectangle as a polygon in ``dst`` (densified, so edges curve as they should)."""
    geom = QgsGeometry.fromRect(rect).densifyByCount(DENSIFY)
    if src.isValid() and dst.isValid() and src != dst:
        ct = QgsCoordinateTransform(src, dst, project or QgsProject.instance())
        geom.transform(ct)
    return geom


REGION_COLOUR = QColor(255, 140, 0)


class RegionLabel(QgsMapCanvasItem):
    """A number in an orange badge, pinned to a map point (a rectangle's upper left corner)."""

    def __init__(self, canvas: QgsMapCanvas, point: QgsPointXY, text: str) -> None:
        super().__init__(canvas)
        self._point = QgsPointXY(point)
        self.text = text
        self._font = QFont()
        self._font.setBold(True)
        self._font.setPointSizeF(9)
        metrics = QFontMetricsF(self._font)
        w = max(metrics.horizontalAdvance(text) + 8, metrics.height() + 2)
        self._rect = QRectF(0, 0, w, metrics.height() + 2)
        self.setZValue(20)
        self.updatePosition()

    def boundingRect(self) -> QRectF:  # noqa: N802
        return self._rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter: QPainter, option=None, widget=None) -> None:  # noqa: ARG002
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QColor(255, 255, 255))
        painter.setBrush(REGION_COLOUR)
        radius = self._rect.height() / 2
        painter.drawRoundedRect(self._rect, radius, radius)
        painter.setFont(self._font)
        painter.drawText(self._rect, int(Qt.AlignmentFlag.AlignCenter), self.text)

    def updatePosition(self) -> None:  # noqa: N802 (QGIS calls it when the map moves)
        self.setPos(self.toCanvasCoordinates(self._point))
        self.update()


class RectangleTool(QgsMapTool):
    """Left drag draws a rectangle (``_live``, a rubber band a subclass makes, follows the mouse); right
    click, Backspace or Delete undoes the last one; Esc aborts the one being drawn. A subclass says what
    a finished rectangle (:meth:`_drawn`, in the canvas's CRS) and an undo (:meth:`_undo`) do."""

    _live: QgsRubberBand

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self._canvas = canvas
        self._start: QgsPointXY | None = None
        self._start_px = None
        self.setCursor(Qt.CursorShape.CrossCursor)

    def _drawn(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        raise TypeError(f"{type(self).__name__} does not define _drawn()")  # sip classes cannot be abstract

    def _undo(self) -> None:
        raise TypeError(f"{type(self).__name__} does not define _undo()")

    def canvasPressEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802
        if e.button() == Qt.MouseButton.LeftButton:
            self._start = e.mapPoint()
            self._start_px = e.pos()
        elif e.button() == Qt.MouseButton.RightButton:
            self._undo()

    def canvasMoveEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802
        if self._start is not None:
            self._live.setToGeometry(QgsGeometry.fromRect(QgsRectangle(self._start, e.mapPoint())), None)

    def canvasReleaseEvent(self, e: QgsMapMouseEvent) -> None:  # noqa: N802
        if e.button() != Qt.MouseButton.LeftButton or self._start is None:
            return
        start, self._start = self._start, None
        self._live.reset(POLYGON_GEOMETRY)
        moved = e.pos() - self._start_px
        if abs(moved.x()) < MIN_PIXELS or abs(moved.y()) < MIN_PIXELS:
            return  # a click, not a rectangle
        rect = QgsRectangle(start, e.mapPoint())
        rect.normalize()
        self._drawn(rect, QgsCoordinateReferenceSystem(self._canvas.mapSettings().destinationCrs()))

    def keyPressEvent(self, e: QKeyEvent) -> None:  # noqa: N802
        if e.key() == Qt.Key.Key_Escape:
            self._start = None
            self._live.reset(POLYGON_GEOMETRY)
        elif e.key() in (Qt.Key.Key_Backspace, Qt.Key.Key_Delete):
            self._undo()
        else:
            e.ignore()

    def deactivate(self) -> None:
        self._start = None
        self._live.reset(POLYGON_GEOMETRY)
        super().deactivate()


class RegionsMapTool(RectangleTool):
    """Collects rectangles drawn with the mouse; emits ``regionsChanged(count)``."""

    regionsChanged = pyqtSignal(int)  # noqa: N815 (Qt naming)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self._rects: list[tuple[QgsRectangle, QgsCoordinateReferenceSystem]] = []
        self._bands: list[QgsRubberBand] = []
        self._labels: list[RegionLabel] = []
        self._live = self._make_band(dashed=True)
        canvas.destinationCrsChanged.connect(self._redraw)

    # -- rubber bands ---------------------------------------------------------------
    def _make_band(self, dashed: bool = False) -> QgsRubberBand:
        band = QgsRubberBand(self._canvas, POLYGON_GEOMETRY)
        band.setStrokeColor(REGION_COLOUR)
        band.setFillColor(QColor(255, 140, 0, 40))
        band.setWidth(2)
        if dashed:
            band.setLineStyle(Qt.PenStyle.DashLine)
        return band

    def _drop_band(self, band: QgsRubberBand) -> None:
        band.reset(POLYGON_GEOMETRY)
        scene = self._canvas.scene()
        if scene is not None:
            scene.removeItem(band)

    def _drop_label(self, label: RegionLabel) -> None:
        scene = self._canvas.scene()
        if scene is not None:
            scene.removeItem(label)

    def _add_shape(self, rect: QgsRectangle, src: QgsCoordinateReferenceSystem) -> None:
        """The rubber band and the number of the next rectangle, in the canvas's CRS."""
        geom = transform_rect_geometry(rect, src, self._canvas.mapSettings().destinationCrs())
        band = self._make_band()
        band.setToGeometry(geom, None)
        self._bands.append(band)
        box = geom.boundingBox()
        self._labels.append(RegionLabel(self._canvas, QgsPointXY(box.xMinimum(), box.yMaximum()),
                                        str(len(self._labels) + 1)))

    def _redraw(self) -> None:
        for band in self._bands:
            self._drop_band(band)
        for label in self._labels:
            self._drop_label(label)
        self._bands, self._labels = [], []
        for rect, src in self._rects:
            self._add_shape(rect, src)

    # -- RectangleTool ---------------------------------------------------------------
    def _drawn(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        self.add_rectangle(rect, crs)

    def _undo(self) -> None:
        self.remove_last()

    # -- API ------------------------------------------------------------------------
    def add_rectangle(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        """Add a rectangle given in ``crs`` (what a drag does; also for scripts)."""
        self._rects.append((QgsRectangle(rect), QgsCoordinateReferenceSystem(crs)))
        self._add_shape(rect, crs)
        self.regionsChanged.emit(len(self._rects))

    def remove_last(self) -> None:
        if self._rects:
            self._rects.pop()
            self._drop_band(self._bands.pop())
            self._drop_label(self._labels.pop())
            self.regionsChanged.emit(len(self._rects))

    def clear(self) -> None:
        self._rects = []
        for band in self._bands:
            self._drop_band(band)
        for label in self._labels:
            self._drop_label(label)
        self._bands, self._labels = [], []
        self.regionsChanged.emit(0)

    def labels(self) -> list[str]:
        """The numbers shown on the map, in drawing order."""
        return [label.text for label in self._labels]

    def count(self) -> int:
        return len(self._rects)

    def rectangles(self) -> list[tuple[QgsRectangle, QgsCoordinateReferenceSystem]]:
        """The drawn rectangles, each in the CRS it was drawn in."""
        return [(QgsRectangle(r), QgsCoordinateReferenceSystem(c)) for r, c in self._rects]

    def regions(self, crs: QgsCoordinateReferenceSystem) -> list[QgsGeometry]:
        """The drawn rectangles as polygons transformed into ``crs``."""
        return [transform_rect_geometry(r, c, crs) for r, c in self._rects]

    def region_boxes(self, crs: QgsCoordinateReferenceSystem) -> list[QgsRectangle]:
        """Axis-aligned bounding boxes of the regions in ``crs``."""
        out = []
        for r, c in self._rects:
            if c.isValid() and crs.isValid() and c != crs:
                ct = QgsCoordinateTransform(c, crs, QgsProject.instance())
                out.append(ct.transformBoundingBox(r))
            else:
                out.append(QgsRectangle(r))
        return out

    def dispose(self) -> None:
        """Remove every rubber band from the canvas (plugin unload)."""
        try:
            self._canvas.destinationCrsChanged.disconnect(self._redraw)
        except (TypeError, RuntimeError):
            pass
        self.clear()
        self._drop_band(self._live)


BOX_COLOUR = QColor(0, 230, 255)


class BoxesMapTool(RectangleTool):
    """Drag rectangles around objects: each one is announced as ``boxDrawn(rect, crs)`` (in the canvas's
    CRS when it was drawn); right click or Backspace asks to remove the last one (``undoRequested``), Esc
    aborts the rectangle being drawn. The boxes themselves live in the layer the receiver adds them to."""

    boxDrawn = pyqtSignal(object, object)  # noqa: N815 (Qt naming)  QgsRectangle, QgsCoordinateReferenceSystem
    undoRequested = pyqtSignal()  # noqa: N815

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self._live = QgsRubberBand(canvas, POLYGON_GEOMETRY)
        self._live.setStrokeColor(BOX_COLOUR)
        self._live.setFillColor(QColor(0, 0, 0, 0))
        self._live.setWidth(2)
        self._live.setLineStyle(Qt.PenStyle.DashLine)

    def _drawn(self, rect: QgsRectangle, crs: QgsCoordinateReferenceSystem) -> None:
        self.boxDrawn.emit(rect, crs)

    def _undo(self) -> None:
        self.undoRequested.emit()

    def dispose(self) -> None:
        self._live.reset(POLYGON_GEOMETRY)
        scene = self._canvas.scene()
        if scene is not None:
            scene.removeItem(self._live)
