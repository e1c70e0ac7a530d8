"""The dock's results table: one row per found object / scored region / class, linked to the map.

Selecting rows outlines their features on the map (a rubber band: the features are not
selected, so QGIS's opaque yellow selection fill never hides the object); double-clicking a
row zooms to it and flashes it.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsMapCanvas, QgsRubberBand
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget

from .compat import POLYGON_GEOMETRY
from .layers import score_field

ROLE = Qt.ItemDataRole.UserRole
HIGHLIGHT = QColor(0, 255, 255)
ZOOM_MARGIN = 3.0  # the zoomed view is this many times the feature's box
EMPTY_HEADERS = ["result", "score", "rank"]  # before any result: words, not Qt's "1 2 3"


def _title(field: str) -> str:
    """Column header of a value field: "Score" (a probability), "Standout" / "Logodds" (uncalibrated)."""
    return {"logodds": "Log-odds"}.get(field, field.capitalize())


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "" if v is None else str(v)


class ResultsTable(QTableWidget):
    """Rows of a result layer; headers are sized to their text (never cut) and scroll sideways."""

    def __init__(self, canvas: QgsMapCanvas, parent: QWidget | None = None) -> None:
        super().__init__(0, 3, parent)
        self.canvas = canvas
        self.min_scale = 0.0  # zooming to a row stops here (the dock sets it from the raster's resolution)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(40)
        self.verticalHeader().setVisible(False)
        self.setToolTip("Select rows to outline them on the map; double-click a row to zoom to it")
        self.cellDoubleClicked.connect(lambda row, _col: self.zoom_to_row(row))
        self.itemSelectionChanged.connect(self._outline_selection)
        self._band = QgsRubberBand(canvas, POLYGON_GEOMETRY)
        self._band.setStrokeColor(HIGHLIGHT)
        self._band.setFillColor(QColor(0, 0, 0, 0))
        self._band.setWidth(3)
        self.kind = ""
        self.setHorizontalHeaderLabels(EMPTY_HEADERS)

    # ------------------------------------------------------------------ filling
    def _set_headers(self, headers: list[str]) -> None:
        self.clear()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        for i, h in enumerate(headers):
            self.horizontalHeaderItem(i).setToolTip(h)

    def _set_row(self, row: int, cells: list[str], layer: QgsVectorLayer, fid: int) -> None:
        for col, text in enumerate(cells):
            item = QTableWidgetItem(text)
            item.setData(ROLE, (layer.id(), fid))
            item.setToolTip(text)
            if col > 0 and _is_number(text):
                item.setTextAlignment(int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter))
            self.setItem(row, col, item)

    def show_matches(self, layer: QgsVectorLayer) -> None:
        """Found objects, best first: phrase, score, rank."""
        self.kind = "matches"
        sf = score_field(layer)
        feats = sorted(layer.getFeatures(), key=lambda f: -float(f[sf] or 0))
        self._set_headers(["Phrase", _title(sf), "Rank"])
        self.setRowCount(len(feats))
        for row, f in enumerate(feats):
            self._set_row(row, [str(f["phrase"]), _fmt(f[sf]), str(f["rank"])], layer, f.id())
        self._done()

    def show_similar(self, layer: QgsVectorLayer) -> None:
        """Objects like the drawn one, best first: rank, score (the probability of being the same kind of
        thing; ``similarity``, the cosine, for an uncalibrated model), whether it is the example."""
        self.kind = "similar"
        feats = sorted(layer.getFeatures(), key=lambda f: int(f["rank"] or 0))
        sf = score_field(layer)
        self._set_headers(["Rank", _title(sf), "Example"])
        self.setRowCount(len(feats))
        for row, f in enumerate(feats):
            self._set_row(row, [str(f["rank"]), _fmt(f[sf]), "yes" if f["example"] else ""], layer, f.id())
        self._done()

    def show_regions(self, layer: QgsVectorLayer, phrases: list[str], columns: dict[str, str] | None = None) -> None:
        """Scored regions in the order they were drawn: number (as on the map), best phrase, scores.

        ``columns`` maps each phrase to its score column (the run's ``phrase_columns``: a phrase
        such as "score" gets "score_score"); headers show the phrases.
        """
        self.kind = "regions"
        names = [f.name() for f in layer.fields()]
        columns = columns or {p: p for p in phrases}
        per_phrase = [p for p in phrases if columns.get(p, p) in names]
        sf = score_field(layer)
        self._set_headers(["Region", "Best phrase", _title(sf), *per_phrase])
        feats = sorted(layer.getFeatures(QgsFeatureRequest()),
                       key=lambda f: int(f["region"]) if "region" in names and f["region"] is not None else f.id())
        self.setRowCount(len(feats))
        for row, f in enumerate(feats):
            region = f["region"] if "region" in names else f.id()
            cells = [str(region), str(f["best_phrase"]), _fmt(f[sf])] + [_fmt(f[columns.get(p, p)])
                                                                              for p in per_phrase]
            self._set_row(row, cells, layer, f.id())
        self._done()

    def show_tiles(self, layer: QgsVectorLayer) -> None:
        """Tile classes by count: class, tiles, mean score (rows zoom to the class's tiles)."""
        self.kind = "tiles"
        by_class: dict[str, list[tuple[int, float]]] = {}
        sf = score_field(layer)
        for f in layer.getFeatures():
            by_class.setdefault(str(f["label"]), []).append((f.id(), float(f[sf] or 0)))
        self._set_headers(["Class", "Tiles", f"Mean {_title(sf).lower()}"])
        rows = sorted(by_class.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        self.setRowCount(len(rows))
        for row, (label, items) in enumerate(rows):
            mean = sum(s for _, s in items) / len(items)
            self._set_row(row, [label, str(len(items)), _fmt(mean)], layer, items[0][0])
            for col in range(3):
                self.item(row, col).setData(ROLE + 1, [fid for fid, _ in items])
        self._done()

    def _done(self) -> None:
        self.resizeColumnsToContents()
        self._band.reset(POLYGON_GEOMETRY)

    def clear_results(self) -> None:
        """No rows and no headers (nothing from an earlier run stays). (Not ``reset``: that is
        QAbstractItemView's, called by Qt itself.)"""
        self.kind = ""
        self.clear()
        self.setRowCount(0)
        self.setColumnCount(0)
        self.setColumnCount(len(EMPTY_HEADERS))
        self.setHorizontalHeaderLabels(EMPTY_HEADERS)
        self._band.reset(POLYGON_GEOMETRY)

    def layer_id(self) -> str | None:
        """The layer the rows come from."""
        item = self.item(0, 0)
        return item.data(ROLE)[0] if item is not None and item.data(ROLE) else None

    # ------------------------------------------------------------------ map
    def _features_of_row(self, row: int) -> tuple[QgsVectorLayer | None, list[int]]:
        item = self.item(row, 0)
        if item is None or not item.data(ROLE):
            return None, []
        layer_id, fid = item.data(ROLE)
        layer = QgsProject.instance().mapLayer(layer_id)
        fids = item.data(ROLE + 1) or [fid]
        return (layer if isinstance(layer, QgsVectorLayer) else None), list(fids)

    def _canvas_geometry(self, layer: QgsVectorLayer, fid: int) -> QgsGeometry | None:
        feat = layer.getFeature(fid)
        if not feat.isValid() or feat.geometry() is None or feat.geometry().isEmpty():
            return None
        geom = QgsGeometry(feat.geometry())
        dst = self.canvas.mapSettings().destinationCrs()
        if dst.isValid() and layer.crs().isValid() and dst != layer.crs():
            geom.transform(QgsCoordinateTransform(layer.crs(), dst, QgsProject.instance()))
        return geom

    def _outline_selection(self) -> None:
        """Outline the features of the selected rows (no feature selection, no yellow fill)."""
        self._band.reset(POLYGON_GEOMETRY)
        rows = sorted({i.row() for i in self.selectionModel().selectedRows()}) if self.selectionModel() else []
        for row in rows:
            layer, fids = self._features_of_row(row)
            if layer is None:
                continue
            for fid in fids:
                geom = self._canvas_geometry(layer, fid)
                if geom is not None:
                    self._band.addGeometry(geom, None)

    def outlined(self) -> int:
        """How many geometries are outlined now."""
        return self._band.size()

    def zoom_to_row(self, row: int) -> QgsRectangle | None:
        """Zoom the canvas to a row's feature(s) and flash them; returns the new extent."""
        layer, fids = self._features_of_row(row)
        if layer is None:
            return None
        geoms = [g for g in (self._canvas_geometry(layer, fid) for fid in fids) if g is not None]
        if not geoms:
            return None
        box = QgsRectangle(geoms[0].boundingBox())
        for g in geoms[1:]:
            box.combineExtentWith(g.boundingBox())
        if len(geoms) == 1:
            box.scale(ZOOM_MARGIN)
        self.canvas.setExtent(box)
        if self.min_scale > 0 and self.canvas.scale() < self.min_scale:  # never far past the image's pixels
            self.canvas.zoomScale(self.min_scale)
            box = self.canvas.extent()
        self.canvas.refresh()
        try:
            self.canvas.flashGeometries(geoms[:200], self.canvas.mapSettings().destinationCrs())
        except (AttributeError, TypeError):
            pass
        return box

    def selected_phrase(self) -> str | None:
        """The phrase of the first selected row of a matches table."""
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        if not rows or self.kind != "matches":
            return None
        item = self.item(rows[0].row(), 0)
        return item.text() if item else None

    def dispose(self) -> None:
        self._band.reset(POLYGON_GEOMETRY)
        scene = self.canvas.scene()
        if scene is not None:
            scene.removeItem(self._band)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


__all__ = ["ResultsTable"]
