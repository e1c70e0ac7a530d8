"""The region map tool: synthetic mouse events on a canvas in EPSG:3857 become rectangles
that are transformed (not relabelled) into the raster's CRS (EPSG:32633)."""

from __future__ import annotations

import pytest

pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRectangle,
)
from qgis.gui import QgsMapMouseEvent  # noqa: E402
from qgis.PyQt.QtCore import QEvent, QPointF, Qt  # noqa: E402
from qgis.PyQt.QtGui import QMouseEvent  # noqa: E402

pytestmark = pytest.mark.qgis

WEB = QgsCoordinateReferenceSystem("EPSG:3857")
UTM = QgsCoordinateReferenceSystem("EPSG:32633")
# the sample scene's footprint in UTM 33N; 600 m wide, near 45 N: far from the zone's
# central meridian would distort more, so put it 300 km east of it as well
SCENE_UTM = QgsRectangle(800000.0, 4999385.6, 800614.4, 5000000.0)


def mouse(canvas, kind: QEvent.Type, x: int, y: int, button=Qt.MouseButton.LeftButton) -> QgsMapMouseEvent:
    buttons = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseButtonRelease else button
    qt_event = QMouseEvent(kind, QPointF(x, y), button, buttons, Qt.KeyboardModifier.NoModifier)
    return QgsMapMouseEvent(canvas, qt_event)


def drag(tool, canvas, x0: int, y0: int, x1: int, y1: int) -> None:
    tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, x0, y0))
    tool.canvasMoveEvent(mouse(canvas, QEvent.Type.MouseMove, (x0 + x1) // 2, (y0 + y1) // 2))
    tool.canvasMoveEvent(mouse(canvas, QEvent.Type.MouseMove, x1, y1))
    tool.canvasReleaseEvent(mouse(canvas, QEvent.Type.MouseButtonRelease, x1, y1))


@pytest.fixture()
def web_canvas(qgis_canvas, qgis_parent):
    from qgis.core import QgsApplication

    qgis_parent.show()  # a shown (offscreen) canvas has its real 600 x 600 viewport
    qgis_canvas.resize(600, 600)
    QgsApplication.processEvents()
    assert qgis_canvas.mapSettings().outputSize().width() > 500  # (minus the frame)
    qgis_canvas.setDestinationCrs(WEB)
    to_web = QgsCoordinateTransform(UTM, WEB, QgsProject.instance())
    qgis_canvas.setExtent(to_web.transformBoundingBox(SCENE_UTM))
    yield qgis_canvas
    qgis_canvas.setDestinationCrs(UTM)  # later tests draw in the raster's CRS, as the canvas of a new project
    qgis_canvas.setExtent(SCENE_UTM)


def test_drag_gives_rectangle_in_raster_crs(web_canvas):
    from geoalign_qgis.map_tool import RegionsMapTool

    canvas = web_canvas
    tool = RegionsMapTool(canvas)
    canvas.setMapTool(tool)
    counts = []
    tool.regionsChanged.connect(counts.append)
    try:
        drag(tool, canvas, 100, 120, 260, 300)
        drag(tool, canvas, 300, 310, 302, 400)  # 2 px wide: a click, not a rectangle
        assert tool.count() == 1 and counts == [1]

        # what the canvas says the pixels are, in its CRS (EPSG:3857)
        px = canvas.getCoordinateTransform()
        a, b = px.toMapCoordinates(100, 120), px.toMapCoordinates(260, 300)
        (rect, crs), = tool.rectangles()
        assert crs == WEB
        assert rect.xMinimum() == pytest.approx(min(a.x(), b.x()), abs=1e-6)
        assert rect.yMaximum() == pytest.approx(max(a.y(), b.y()), abs=1e-6)

        # the same rectangle in the raster's CRS: every corner transformed by PROJ
        ct = QgsCoordinateTransform(WEB, UTM, QgsProject.instance())
        (region,) = tool.regions(UTM)
        vertices = [QgsPointXY(v.x(), v.y()) for v in region.vertices()]
        for corner in (QgsPointXY(rect.xMinimum(), rect.yMinimum()), QgsPointXY(rect.xMaximum(), rect.yMinimum()),
                       QgsPointXY(rect.xMaximum(), rect.yMaximum()), QgsPointXY(rect.xMinimum(), rect.yMaximum())):
            expected = ct.transform(corner)
            nearest = min(vertices, key=lambda v: v.distance(expected))
            assert nearest.distance(expected) < 1e-6
        # ... which is NOT the canvas numbers relabelled: web mercator metres at 45 N are
        # about 1.4x ground metres, and the origins differ by thousands of km
        assert abs(region.boundingBox().xMinimum() - rect.xMinimum()) > 1e5
        bottom_edge = ct.transform(QgsPointXY(rect.xMinimum(), rect.yMinimum())).distance(
            ct.transform(QgsPointXY(rect.xMaximum(), rect.yMinimum())))
        assert bottom_edge == pytest.approx(rect.width() * 0.707, rel=0.02)
        # it lies inside the scene, where it was drawn
        assert SCENE_UTM.contains(region.boundingBox())
        # densified edges: a rotated, slightly curved quadrilateral, not just 4 corners
        assert len(vertices) > 8
        box = tool.region_boxes(UTM)[0]
        expected_box = ct.transformBoundingBox(rect)
        for got, want in ((box.xMinimum(), expected_box.xMinimum()), (box.yMaximum(), expected_box.yMaximum())):
            assert got == pytest.approx(want, abs=1e-6)

        # right click removes the last rectangle
        tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, 10, 10, Qt.MouseButton.RightButton))
        assert tool.count() == 0 and counts[-1] == 0
    finally:
        canvas.unsetMapTool(tool)
        tool.dispose()


def test_rectangles_follow_a_canvas_crs_change(web_canvas):
    from geoalign_qgis.map_tool import RegionsMapTool

    canvas = web_canvas
    tool = RegionsMapTool(canvas)
    try:
        drag(tool, canvas, 50, 50, 200, 220)
        before = tool.regions(UTM)[0].asWkt(3)
        canvas.setDestinationCrs(UTM)  # the analyst switches the project CRS
        canvas.setExtent(SCENE_UTM)
        assert tool.regions(UTM)[0].asWkt(3) == before  # stored with the CRS it was drawn in
        band = tool._bands[0].asGeometry().boundingBox()  # redrawn in the new canvas CRS
        assert band.intersects(SCENE_UTM)
        tool.clear()
        assert tool.count() == 0 and tool._bands == []
        assert tool.regions(UTM) == []
    finally:
        tool.dispose()


def test_draw_boxes_makes_the_fine_tune_labels_layer(web_canvas, qgis_iface, project, dock, tmp_path):
    """Fine-tune from the map: two rectangles dragged on a canvas in EPSG:3857, two classes (one typed, one
    asked for), into "GeoAlign training boxes" in the raster's CRS, outlined (the image shows through) and
    labelled, chosen as the fine-tune layer with its class field."""
    from qgis.core import QgsRasterLayer
    from qgis_helpers import sample_crop

    from geoalign_qgis.dock_finetune import TRAINING_LAYER

    raster = QgsRasterLayer(str(sample_crop(tmp_path / "crop.tif", size=224)), "crop")
    QgsProject.instance().addMapLayer(raster)
    dock.set_raster_layer(raster)
    canvas = web_canvas
    canvas.setExtent(QgsCoordinateTransform(raster.crs(), WEB, QgsProject.instance()).transformBoundingBox(
        raster.extent()))
    dock.ft_boxes_button.setChecked(True)
    tool = dock.box_tool
    assert canvas.mapTool() is tool
    asked = []
    dock.ask_class = lambda: asked.append(1) or "swimming pool"
    try:
        dock.ft_class.setCurrentText("car")
        drag(tool, canvas, 150, 160, 260, 250)
        dock.ft_class.setCurrentText("")  # nothing typed: the class is asked for
        drag(tool, canvas, 300, 320, 420, 400)
        drag(tool, canvas, 300, 310, 302, 400)  # 2 px wide: a click, no box
        assert asked == [1]
        layer = dock.training_layer(create=False)
        assert layer is not None and layer.name() == TRAINING_LAYER and layer.providerType() == "memory"
        assert QgsProject.instance().mapLayer(layer.id()) is layer
        assert layer.crs() == raster.crs() == UTM and [f.name() for f in layer.fields()] == ["class"]
        feats = list(layer.getFeatures())
        assert [f["class"] for f in feats] == ["car", "swimming pool"]
        to_utm = QgsCoordinateTransform(WEB, UTM, QgsProject.instance())
        px = canvas.getCoordinateTransform()
        first = to_utm.transformBoundingBox(QgsRectangle(px.toMapCoordinates(150, 160), px.toMapCoordinates(260, 250)))
        got = feats[0].geometry().boundingBox()
        for a, b in ((got.xMinimum(), first.xMinimum()), (got.yMaximum(), first.yMaximum())):
            assert a == pytest.approx(b, abs=1e-6)  # transformed into the raster's CRS, not relabelled
        assert all(raster.extent().intersects(f.geometry().boundingBox()) for f in feats)
        # the fine-tune form picked it, with its class field
        assert dock.ft_layer.currentLayer() is layer and dock.ft_field.currentField() == "class"
        assert dock.ft_class.findText("car") >= 0 and dock.ft_class.findText("swimming pool") >= 0
        # outlines only, labelled with the class: the image under a box stays visible
        symbol = layer.renderer().symbol()
        fill = symbol.symbolLayer(0)
        assert fill.fillColor().alpha() == 0 or fill.brushStyle() == Qt.BrushStyle.NoBrush
        assert fill.strokeColor().alpha() == 255 and fill.strokeWidth() > 0
        assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "class"
        # what the engine gets: a GeoPackage of the two boxes with their classes
        from geoalign_qgis.vector_io import open_result

        path, name = dock._labels_file(layer)
        src = open_result(path, name)
        assert sorted(f["class"] for f in src.getFeatures()) == ["car", "swimming pool"]
        del src
        from geoalign_qgis.tasks import remove_outputs

        remove_outputs(dock._temp_files)
        # right click removes the last box
        tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, 10, 10, Qt.MouseButton.RightButton))
        assert [f["class"] for f in layer.getFeatures()] == ["car"]
        # another map tool: the button lets go
        dock.draw_button.setChecked(True)
        assert not dock.ft_boxes_button.isChecked() and canvas.mapTool() is dock.map_tool
        dock.draw_button.setChecked(False)
    finally:
        dock.ft_boxes_button.setChecked(False)


def test_a_scratch_labels_layer_is_outlined_a_file_layer_keeps_its_style(qgis_iface, project, dock, tmp_path):
    """Fine-tune's Labels: a scratch layer in QGIS's default opaque fill is drawn as outlines with its classes
    (the image under the polygons shows); a layer from a file keeps the style its owner gave it."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsVectorFileWriter, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    scratch = QgsVectorLayer("Polygon?crs=EPSG:32633", "my labels", "memory")
    scratch.dataProvider().addAttributes([QgsField("kind", QVariant.String)])
    scratch.updateFields()
    f = QgsFeature(scratch.fields())
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(800010, 4999400, 800030, 4999420)))
    f.setAttributes(["car"])
    scratch.dataProvider().addFeatures([f])
    assert scratch.renderer().symbol().symbolLayer(0).fillColor().alpha() == 255  # QGIS's default: opaque
    path = tmp_path / "labels.gpkg"
    QgsVectorFileWriter.writeAsVectorFormatV2(scratch, str(path), QgsProject.instance().transformContext(),
                                              QgsVectorFileWriter.SaveVectorOptions())
    from_file = QgsVectorLayer(str(path), "file labels", "ogr")
    QgsProject.instance().addMapLayers([scratch, from_file])
    file_colour = from_file.renderer().symbol().symbolLayer(0).fillColor()
    dock.ft_layer.setLayer(scratch)
    dock.ft_field.setField("kind")
    fill = scratch.renderer().symbol().symbolLayer(0)
    assert fill.fillColor().alpha() == 0 or fill.brushStyle() == Qt.BrushStyle.NoBrush
    assert scratch.labelsEnabled() and scratch.labeling().settings().fieldName == "kind"
    dock.ft_layer.setLayer(from_file)
    dock.ft_field.setField("kind")
    assert from_file.renderer().symbol().symbolLayer(0).fillColor() == file_colour and file_colour.alpha() > 0
