"""The QGIS plugin under real QGIS 3.22 (pytest-qgis, offscreen): loading, the dock's find /
match / heatmap / tile-classify runs through the engine process, cancellation, errors, and
what the dock shows (stages, styles, the table, the raster combo).

The engine is this test interpreter (tests/conftest.py sets GEOALIGN_ENGINE_PYTHON); the
real desktop app is exercised by tests/test_qgis_desktop.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

qgis_core = pytest.importorskip("qgis.core")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QAction  # noqa: E402
from qgis_helpers import (  # noqa: E402
    ROOT,
    SCENE,
    add_raster,
    files_in,
    fill_search,
    finished,
    sample_crop,
    wait_for_dock,
    wait_until,
)

from geoalign_qgis.compat import LABEL_OUTSIDE  # noqa: E402
from geoalign_qgis.results import EMPTY_HEADERS  # noqa: E402

pytestmark = pytest.mark.qgis


def geoalign_group_layers() -> list:
    group = QgsProject.instance().layerTreeRoot().findGroup("GeoAlign")
    return [] if group is None else [n.layer() for n in group.findLayers()]


@pytest.fixture()
def messages(qgis_app):
    """GeoAlign's entries in QGIS's message log during the test: (level, text)."""
    log = []

    def keep(text, tag, level):
        if tag == "GeoAlign":
            log.append((int(level), text))

    QgsApplication.messageLog().messageReceived.connect(keep)
    yield log
    QgsApplication.messageLog().messageReceived.disconnect(keep)


def table_headers(dock) -> list[str]:
    return [dock.table.horizontalHeaderItem(i).text() for i in range(dock.table.columnCount())]


# ---------------------------------------------------------------------------- loading
def test_plugin_loads_initgui_unload(qgis_iface):
    import geoalign_qgis
    from geoalign_qgis import engine

    plugin = geoalign_qgis.classFactory(qgis_iface)
    plugin.initGui()
    try:
        assert isinstance(plugin.action, QAction)
        assert plugin.action.text() == "Find objects by text"
        found = qgis_iface.mainWindow().findChildren(QAction, "GeoAlignFindObjects")
        assert plugin.action in found
        assert plugin.settings_action.text() == "Settings…"
        assert plugin.help_action.text() == "Help / About"
        about = plugin.show_help()
        from geoalign_qgis.help import GUIDE, help_url

        assert help_url() in about.text() and "Apache-2.0" in about.text() and (ROOT / GUIDE).is_file()
        about.close()
        provider = QgsApplication.processingRegistry().providerById("geoalign")
        assert provider is not None
        assert sorted(a.name() for a in provider.algorithms()) == [
            "findobjects", "findsimilar", "finetune", "heatmap", "indexraster", "matchregions", "tileclassify"]

        plugin.action.trigger()  # opens the dock, which asks the engine for its models
        dock = plugin.dock
        assert dock is not None and plugin.action.isChecked()
        assert dock.setup_panel.isHidden()  # an engine is configured: no set-up offered
        wait_until(lambda: dock.models_task is None, 120, "the model list")
        names = [dock.model_combo.itemData(i) for i in range(dock.model_combo.count())]
        assert "geoalign-demo" in names and "openai-vit-b-16" in names
        dock.set_model("geoalign-demo")
        assert dock.model_state.text().startswith("available offline")
        assert "trained on synthetic" in dock.model_state.text()  # the model card's domain line
        # the combo shows names only (never elided mid-word); the popup is as wide as the longest name
        assert all(dock.model_combo.itemText(i) == names[i] for i in range(len(names)))
        view = dock.model_combo.view()
        assert view.minimumWidth() >= view.sizeHintForColumn(0)
        dock.set_model("/tmp/custom.safetensors")  # custom paths / names are accepted
        assert dock.model_name() == "/tmp/custom.safetensors"
        assert "not found" in dock.model_state.text()
        pid = engine._shared.pid
        assert pid is not None
    finally:
        plugin.unload()
    assert QgsApplication.processingRegistry().providerById("geoalign") is None
    assert plugin.action is None and plugin.dock is None
    assert engine._shared is None  # unloading stops the engine process
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in _proc_state(pid), 20, "the engine to end")


def _proc_state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/status").read().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


def test_dock_scrolls_instead_of_squashing(qgis_iface, dock):
    """Docked under the Processing toolbox the dock gets little height: it scrolls, its fields keep their size."""
    from qgis.PyQt.QtWidgets import QScrollArea

    assert isinstance(dock.widget(), QScrollArea) and dock.widget().widgetResizable()
    dock.resize(320, 260)
    dock.show()
    QgsApplication.processEvents()
    assert dock.phrase_edit.height() >= dock.phrase_edit.minimumHeight() >= 60
    assert dock.widget().verticalScrollBar().maximum() > 0
    assert dock.widget().minimumWidth() <= 420  # fits beside the map on a laptop screen
    dock.hide()


# ---------------------------------------------------------------------------- find
@pytest.mark.slow
def test_dock_find_in_current_view(qgis_iface, project, dock, tmp_path):
    scene = SCENE if SCENE.is_file() else sample_crop(tmp_path / "scene.tif", size=512)
    raster = add_raster(scene)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    ext = raster.extent()
    view = QgsRectangle(ext.xMinimum() + 150, ext.yMaximum() - 250, ext.xMinimum() + 250, ext.yMaximum() - 150)
    canvas.setExtent(view)
    visible = canvas.mapSettings().visibleExtent()

    dock.set_raster_layer(raster)
    dock.set_phrases("red car\nswimming pool\n\nred car")
    assert dock.phrases() == ["red car", "swimming pool"]
    dock.set_scope("view")
    dock.min_score.setValue(0.0)
    dock.max_results.setValue(8)
    dock.refine.setChecked(True)  # the dock is shared by the module's tests: another may have turned it off
    stages, bar_texts = [], []
    task = dock.run_find()
    assert task is not None, dock.status.text()
    task.stageChanged.connect(lambda st: (stages.append(st), bar_texts.append(dock.progress.format())))
    wait_for_dock(dock)
    assert not task.error and not task.was_cancelled, task.error
    # stage signals cross from the task's thread as queued events: a loaded machine may still hold the last
    for _ in range(50):
        if "refining boxes" in stages:
            break
        QgsApplication.processEvents()
        time.sleep(0.1)
    # the engine reports what it is doing; the bar and the status line show it
    assert "scanning tiles" in stages and "refining boxes" in stages, stages
    assert any(t.startswith("refining boxes") for t in bar_texts), bar_texts
    # the result's status line does not widen the dock (no sideways scrolling)
    assert dock.widget().widget().minimumSizeHint().width() <= dock.widget().minimumWidth()
    assert dock.status.toolTip().endswith(".gpkg")

    layer = dock.last_layer
    assert isinstance(layer, QgsVectorLayer) and layer.isValid()
    assert layer.crs() == raster.crs()
    assert [f.name() for f in layer.fields()][-3:] == ["phrase", "score", "rank"]
    assert 0 < layer.featureCount() <= 16
    assert layer in geoalign_group_layers()
    assert layer.renderer().type() == "graduatedSymbol"
    assert layer.labelsEnabled() and layer.labeling().settings().fieldName == "phrase"
    for f in layer.getFeatures():  # the search stayed in the map view
        assert f.geometry().boundingBox().intersects(visible)
        assert f["phrase"] in ("red car", "swimming pool") and 0.0 <= f["score"] <= 1.0
    # saved next to the project, as a GeoPackage that records the run
    out = dock.last_output
    assert out.parent == tmp_path / "analysis_geoalign" and out.suffix == ".gpkg"
    from geoalign_core.geo import read_geopackage_metadata

    meta = read_geopackage_metadata(out, "matches")
    assert meta["phrases"] == ["red car", "swimming pool"] and meta["scope"] == "view"
    assert meta["client"] == "qgis" and meta["raster_layer"] == "scene"
    assert meta["refine"] is True and dock.refine.isChecked()  # the CLI's default
    # selecting rows outlines their boxes but does not select the features (no opaque yellow fill)
    assert dock.table.rowCount() == layer.featureCount()
    dock.table.selectRow(0)
    assert dock.table.outlined() == 1 and layer.selectedFeatureCount() == 0
    # double-click zooms to a feature (and flashes it)
    box = dock.zoom_to_row(0)
    assert box is not None and canvas.extent().contains(box.center())
    # ... but not far past the raster's own detail (one image pixel: at most 4 screen pixels)
    assert dock.table.min_scale > 0 and canvas.scale() >= dock.table.min_scale * 0.99
    labelling = layer.labeling().settings()
    assert layer.labelsEnabled() and labelling.placement == LABEL_OUTSIDE  # beside the box, not over it
    # without the 2x look at each box (the CLI's --no-refine)
    dock.refine.setChecked(False)
    finished(dock, dock.run_find())
    assert read_geopackage_metadata(dock.last_output, "matches")["refine"] is False


def test_dock_heatmap_layer(qgis_iface, project, dock, crop):
    from geoalign_core.geo import read_geopackage_metadata  # noqa: F401  (the test process may import it)

    raster = add_raster(crop, "crop")
    qgis_iface.mapCanvas().setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    dock.set_raster_layer(raster)
    fill_search(dock, "building\ntree", scope="layer", min_score=0.0, max_results=3)
    finished(dock, dock.run_find())
    matches = dock.last_layer
    row = next(r for r in range(dock.table.rowCount()) if dock.table.item(r, 0).text() == "tree")
    dock.table.selectRow(row)  # a result row of another phrase is selected ...
    finished(dock, dock.run_heatmap())
    heat = dock.last_layer
    assert heat.name() == "heatmap score: building (crop)"  # ... the typed (first) phrase is mapped
    assert isinstance(heat, QgsRasterLayer) and heat.isValid()
    renderer = heat.renderer()
    assert isinstance(renderer, QgsSingleBandPseudoColorRenderer) and renderer.opacity() == 1.0
    shader = renderer.shader().rasterShaderFunction()
    assert (shader.minimumValue(), shader.maximumValue()) == (0.0, 1.0)  # the 0-1 score of the boxes
    items = shader.colorRampItemList()
    assert [i.label for i in items][0] == "0.00" and items[-1].label == "1.00"
    assert items[0].color.alpha() == 0 and items[-1].color.alpha() > 200  # low scores see-through
    assert heat.crs() == raster.crs()
    a, b = heat.extent(), raster.extent()
    res = raster.rasterUnitsPerPixelX()
    for u, v in ((a.xMinimum(), b.xMinimum()), (a.yMinimum(), b.yMinimum()),
                 (a.xMaximum(), b.xMaximum()), (a.yMaximum(), b.yMaximum())):
        assert abs(u - v) < res
    group = geoalign_group_layers()
    assert heat in group and group.index(matches) < group.index(heat)  # boxes stay above the heatmap
    stats = heat.dataProvider().bandStatistics(1)
    assert 0.0 <= stats.minimumValue <= stats.maximumValue <= 1.0
    # a plugin output is never offered as the input raster, also after the project is reloaded
    assert dock.raster_layer() is raster
    assert heat in dock.layer_combo.exceptedLayerList() and matches in dock.layer_combo.exceptedLayerList()
    proj = QgsProject.instance()
    source = raster.source()
    assert proj.write()
    dock.layer_combo.setLayer(None)
    assert proj.read(proj.fileName())
    QgsApplication.processEvents()
    current = dock.raster_layer()
    assert current is not None and current.name() == "crop" and current.source() == source
    outputs = {lyr.name() for lyr in dock.layer_combo.exceptedLayerList()}
    assert {"heatmap score: building (crop)", "building, tree (crop)"} <= outputs


def test_dock_tile_classify(qgis_iface, project, dock, crop):
    from qgis.core import QgsCategorizedSymbolRenderer

    raster = add_raster(crop, "crop")
    dock.set_raster_layer(raster)
    fill_search(dock, "building\ntree\nwater", scope="layer")
    finished(dock, dock.run_tile_classify())
    tiles = dock.last_layer
    assert tiles.name() == "crop tiles: building, tree, water"
    assert tiles.featureCount() == 4  # 224 px in 112 px tiles, side by side
    renderer = tiles.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "label"
    assert all(c.symbol().color().alpha() < 255 for c in renderer.categories())
    assert sum(int(c.label().rsplit("(", 1)[1].rstrip(")")) for c in renderer.categories()) == 4
    headers = [dock.table.horizontalHeaderItem(i).text() for i in range(dock.table.columnCount())]
    assert headers == ["Class", "Tiles", "Mean score"]
    assert sum(int(dock.table.item(r, 1).text()) for r in range(dock.table.rowCount())) == 4


def test_dock_match_drawn_regions(qgis_iface, project, dock, crop):
    from qgis.core import QgsPointXY

    raster = add_raster(crop, "crop")
    canvas = qgis_iface.mapCanvas()
    web = QgsCoordinateReferenceSystem("EPSG:3857")
    canvas.setDestinationCrs(web)
    to_web = QgsCoordinateTransform(raster.crs(), web, QgsProject.instance())
    canvas.setExtent(to_web.transformBoundingBox(raster.extent()))
    e = raster.extent()
    tool = dock.map_tool
    for fx0, fy0, fx1, fy1 in ((0.1, 0.1, 0.4, 0.4), (0.5, 0.55, 0.9, 0.85)):
        a = to_web.transform(QgsPointXY(e.xMinimum() + fx0 * e.width(), e.yMinimum() + fy0 * e.height()))
        b = to_web.transform(QgsPointXY(e.xMinimum() + fx1 * e.width(), e.yMinimum() + fy1 * e.height()))
        tool.add_rectangle(QgsRectangle(a, b), web)
    assert dock.regions_label.text() == "2 regions" and dock.match_button.isEnabled()
    assert tool.labels() == ["1", "2"]  # the numbers on the map
    dock.set_raster_layer(raster)
    dock.set_phrases(["building", "tree"])
    finished(dock, dock.run_match_regions())
    layer = dock.last_layer
    assert layer.featureCount() == 2 and layer.crs() == raster.crs()
    names = [f.name() for f in layer.fields()]
    for col in ("region", "best_phrase", "score", "building", "tree"):
        assert col in names
    assert dock.table.rowCount() == 2
    headers = [dock.table.horizontalHeaderItem(i).text() for i in range(dock.table.columnCount())]
    assert headers == ["Region", "Best phrase", "Score", "building", "tree"]
    assert [dock.table.item(r, 0).text() for r in range(2)] == ["1", "2"]  # as numbered on the map
    header = dock.table.horizontalHeader()
    metrics = header.fontMetrics()
    for i, text in enumerate(headers):  # no header is cut
        assert header.sectionSize(i) >= metrics.horizontalAdvance(text)
    # a phrase named like an output column gets its own column; the table still shows the phrase
    dock.set_phrases(["tree", "Score"])
    finished(dock, dock.run_match_regions())
    names = [f.name() for f in dock.last_layer.fields()]
    assert "score_Score" in names and "tree" in names
    headers = [dock.table.horizontalHeaderItem(i).text() for i in range(dock.table.columnCount())]
    assert headers == ["Region", "Best phrase", "Score", "tree", "Score"]
    first = next(f for f in dock.last_layer.getFeatures() if f["region"] == 1)
    assert dock.table.item(0, 4).text() == f"{first['score_Score']:.3f}"
    layer = dock.last_layer
    # Find with "Search in: regions drawn on the map" searches inside them
    fill_search(dock, scope="regions", min_score=0.0, max_results=10)
    finished(dock, dock.run_find())
    drawn = [r for r in tool.region_boxes(raster.crs())]
    boxes = [f.geometry().boundingBox() for f in dock.last_layer.getFeatures()]
    assert len(boxes) > 2 and all(any(r.contains(b.center()) for r in drawn) for b in boxes)
    # each scored region is the drawn rectangle, in the raster's CRS
    region1 = next(f for f in layer.getFeatures() if f["region"] == 1).geometry().boundingBox()
    assert region1.xMinimum() == pytest.approx(e.xMinimum() + 0.1 * e.width(), abs=0.05)
    assert region1.yMaximum() == pytest.approx(e.yMinimum() + 0.4 * e.height(), abs=0.05)


def long_run(dock, tmp_path: Path) -> None:
    """Set the dock up for a long run: "car" on a 512 px raster in 16 px tiles, one per batch
    (~1700 tiles: plenty of time to cancel it or to kill its engine)."""
    dock.set_raster_layer(add_raster(sample_crop(tmp_path / "big.tif", size=512, col=0, row=0), "big"))
    dock.set_phrases("car")
    dock.set_scope("layer")
    dock.tile_size.setValue(16)
    dock.batch_size.setValue(1)


def test_cancel_leaves_no_layer_and_no_file(qgis_iface, project, dock, tmp_path):
    long_run(dock, tmp_path)
    dock.min_score.setValue(0.0)
    before = set(QgsProject.instance().mapLayers())
    results = tmp_path / "analysis_geoalign"

    from qgis.core import QgsTask

    statuses = []
    QgsApplication.taskManager().statusChanged.connect(lambda _tid, status: statuses.append(status))
    for run in (dock.run_find, lambda: dock.run_heatmap("car")):
        statuses.clear()
        task = run()
        assert task is not None, dock.status.text()
        wait_until(lambda t=task: t.progress() > 0 or not dock.is_running(), 60, "progress")
        dock.cancel()
        wait_for_dock(dock)
        assert task.was_cancelled and task.result is None
        assert dock.status.text().startswith("Cancelled")
        # a cancel ends the task as complete: QGIS announces a terminated task as "Task failed"
        assert QgsTask.Complete in statuses and QgsTask.Terminated not in statuses, statuses
        assert set(QgsProject.instance().mapLayers()) == before
        assert files_in(results) == []
        assert dock.find_button.isEnabled() and not dock.cancel_button.isEnabled()


def test_dock_reports_user_errors(qgis_iface, project, dock, crop, messages):
    raster = add_raster(crop, "crop")
    dock.set_raster_layer(raster)
    dock.set_phrases("")
    assert dock.run_find() is None and "phrase" in dock.status.text()
    dock.set_phrases("car")
    dock.set_scope("regions")
    assert dock.run_find() is None and "draw" in dock.status.text()
    dock.set_scope("view")
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(QgsRectangle(0, 0, 10, 10))  # far away from the raster
    assert dock.run_find() is None and "does not overlap" in dock.status.text()
    dock.set_scope("layer")
    dock.bands_edit.setText("red")
    assert dock.run_find() is None and "bands" in dock.status.text()
    dock.bands_edit.setText("")
    dock.set_model("no-such-model")
    task = dock.run_find()
    wait_for_dock(dock)
    assert task.error and "unknown model" in task.error and dock.last_layer is None
    assert task.error_kind == "model" and "unknown model" in dock.status.text()
    # expected input errors are information in the log, never Critical tracebacks
    assert messages and all(level == 0 and "Traceback" not in text for level, text in messages), messages


def test_raster_without_crs(qgis_iface, project, dock, tmp_path, messages):
    """The dock has its own remedy for a raster without a CRS (no CLI flags in its messages)."""
    import numpy as np
    import rasterio

    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8") as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    raster = add_raster(path, "nocrs")
    dock.set_raster_layer(raster)
    dock.set_scope("layer")
    dock.set_phrases("car")
    dock.min_score.setValue(0.0)
    task = dock.run_find()
    wait_for_dock(dock)
    assert task.error_code == "no_crs"
    text = dock.status.text()
    assert "Allow rasters without a CRS" in text and "--allow-no-crs" not in text
    assert all(level == 0 for level, _ in messages)
    dock.allow_no_crs.setChecked(True)
    QgsProject.instance().setCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    task = dock.run_find()
    wait_for_dock(dock)
    assert not task.error, task.error
    assert dock.last_layer is not None and dock.last_layer.featureCount() > 0
    # the result carries the project's CRS, not "Undefined SRS" (no transform warnings when the project reopens)
    assert dock.last_layer.crs().authid() == "EPSG:3857"
    # the boxes overlay the raster where QGIS shows it (x = column, y = -row)
    shown = raster.extent()
    assert shown.yMaximum() == 0 and shown.yMinimum() == -128
    for f in dock.last_layer.getFeatures():
        assert shown.contains(f.geometry().boundingBox())


def test_table_never_shows_stale_rows(qgis_iface, project, dock, crop):
    from qgis.core import QgsRectangle as Rect

    raster = add_raster(crop, "crop")
    dock.set_raster_layer(raster)
    dock.set_scope("layer")
    dock.set_phrases("car")
    dock.min_score.setValue(0.0)
    dock.max_results.setValue(3)
    dock.run_find()
    wait_for_dock(dock)
    assert dock.table.rowCount() == 3
    QgsProject.instance().removeMapLayer(dock.last_layer.id())  # the user deletes the result layer
    assert dock.table.rowCount() == 0 and table_headers(dock) == EMPTY_HEADERS
    dock.run_find()
    wait_for_dock(dock)
    dock.min_score.setValue(1.0)  # nothing scores 1: no objects
    dock.run_find()
    wait_for_dock(dock)
    assert dock.status.text().startswith("No objects found")
    assert dock.table.rowCount() == 0 and table_headers(dock) == EMPTY_HEADERS  # no headers of the run before
    dock.map_tool.add_rectangle(Rect(raster.extent()), raster.crs())
    dock.min_score.setValue(0.0)
    dock.run_find()
    wait_for_dock(dock)
    assert dock.table.rowCount() > 0 and dock.map_tool.count() == 1
    QgsProject.instance().clear()  # a new project
    assert dock.table.rowCount() == 0 and dock.map_tool.count() == 0 and dock.regions_label.text() == "0 regions"


# ---------------------------------------------------------------------------- screenshot
def test_screenshot(qgis_iface, project, dock, tmp_path):
    """Offscreen render of the scene with find results and a heatmap, next to the dock.

    Set GEOALIGN_SCREENSHOT=1 to (re)write docs/qgis_screenshot.png."""
    from geoalign_qgis.screenshot import compose, render_map

    scene = SCENE if SCENE.is_file() else sample_crop(tmp_path / "scene.tif", size=512)
    raster = add_raster(scene, "scene")
    e = raster.extent()
    view = QgsRectangle(e.xMinimum() + 100, e.yMaximum() - 260, e.xMinimum() + 260, e.yMaximum() - 100)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(view)
    dock.set_raster_layer(raster)
    dock.set_phrases(os.environ.get("GEOALIGN_SCREENSHOT_PHRASES", "red car\nswimming pool"))
    if os.environ.get("GEOALIGN_SCREENSHOT_MODEL"):
        dock.set_model(os.environ["GEOALIGN_SCREENSHOT_MODEL"])
    fill_search(dock, scope="view", min_score=0.0, max_results=6)
    finished(dock, dock.run_heatmap())
    heat = dock.last_layer
    finished(dock, dock.run_find())
    matches = dock.last_layer
    assert isinstance(heat, QgsRasterLayer) and isinstance(matches, QgsVectorLayer)

    image = render_map([matches, heat, raster], view, raster.crs(), 900, 900)
    shot = compose(image, dock)
    out = tmp_path / "shot.png"
    assert shot.save(str(out))
    colours = {shot.pixel(x, y) for x in range(0, shot.width(), 37) for y in range(0, shot.height(), 37)}
    assert len(colours) > 50  # a real picture, not a blank image
    if os.environ.get("GEOALIGN_SCREENSHOT"):
        shot.save(str(ROOT / "docs" / "qgis_screenshot.png"))


def test_no_match_adds_no_layer(qgis_iface, project, dock, crop, tmp_path):
    raster = add_raster(crop, "crop")
    dock.set_raster_layer(raster)
    dock.set_phrases("red car")
    dock.set_scope("layer")
    dock.min_score.setValue(1.0)  # a probability of exactly 1 never happens against background phrases
    before = set(QgsProject.instance().mapLayers())
    task = dock.run_find()
    wait_for_dock(dock)
    assert not task.error, task.error
    assert dock.status.text().startswith("No objects found")
    assert set(QgsProject.instance().mapLayers()) == before
    assert files_in(tmp_path / "analysis_geoalign") == []


@pytest.mark.slow
def test_engine_crash_is_one_message_and_the_next_run_restarts_it(qgis_iface, project, dock, tmp_path):
    import signal

    from geoalign_qgis.tasks import engine_client

    long_run(dock, tmp_path)
    client = engine_client()
    task = dock.run_heatmap()
    wait_until(lambda: task.progress() > 0 or not dock.is_running(), 60, "progress")
    old_pid = client.pid
    os.kill(old_pid, signal.SIGKILL)
    wait_for_dock(dock)
    # killed by signal 9, as the kernel's out-of-memory killer does: the dock says memory
    assert task.error_code == "engine_died" and "killed (signal 9)" in dock.status.text()
    assert "out of memory" in dock.status.text()
    assert "\n" not in task.error
    dock.tile_size.setValue(0)
    dock.batch_size.setValue(16)
    task = dock.run_heatmap()
    wait_for_dock(dock)
    assert not task.error, task.error
    assert client.pid != old_pid


@pytest.mark.slow
def test_one_click_setup_from_the_dock(qgis_iface, monkeypatch, tmp_path):
    """No engine configured: the dock offers the set-up; a (small, offline) set-up into the
    profile's private environment runs as a task, and then the dock uses it."""
    import sys

    from geoalign_qgis import environment, package, tasks
    from geoalign_qgis.dock import GeoAlignDock

    monkeypatch.delenv("GEOALIGN_ENGINE_PYTHON", raising=False)
    monkeypatch.setattr(tasks, "profile_dir", lambda: tmp_path / "profile")
    import geoalign_qgis.setup_panel as setup_panel

    monkeypatch.setattr(setup_panel, "profile_dir", lambda: tmp_path / "profile")
    tasks.set_configured_python("")
    dock = GeoAlignDock(qgis_iface)
    try:
        panel = dock.setup_panel
        assert not panel.isHidden() and panel.setup_button.isEnabled()
        assert "torch==2.14.1" in panel.plan_label.text()
        assert dock.run_find() is None and "not set up yet" in dock.status.text()
        wheel = package.build_wheel(tmp_path / "wheel")
        target = environment.private_env_dir(tmp_path / "profile")
        plan = environment.InstallPlan(target, sys.executable, packages=[str(wheel)],
                                       pip_args=["--no-deps", "--no-index"],
                                       check_modules=["geoalign_core", "geoalign_core.engine.server"], build="test")
        task = panel.start_setup(plan)
        assert task is not None and not panel.progress.isHidden() and not panel.cancel_button.isHidden()
        # while it runs the panel (progress, log, cancel) still fits a narrow dock
        assert dock.widget().widget().minimumSizeHint().width() <= 420
        wait_until(lambda: not panel.is_running(), 180, "the set-up")
        assert panel.isHidden(), panel.message.text()
        loc = tasks.engine_location()
        assert loc.source == "private environment" and loc.python == str(environment.venv_python(target))
        assert "engine started" in panel.log.toPlainText()
    finally:
        dock.dispose()
        dock.deleteLater()
        from geoalign_qgis.engine import stop_shared

        stop_shared()


def test_score_legend_tells_crowded_scores_apart(qgis_iface, tmp_path):
    """Calibrated scores of a confident model crowd near 1; the legend's class bounds must still differ."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsRectangle, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    from geoalign_qgis.layers import legend_digits, style_scores

    assert legend_digits(0.3, 1.0, 5) == 3 and legend_digits(0.9994, 0.99995, 5) == 5
    assert legend_digits(0.5, 0.5, 5) == 3
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "m", "memory")
    layer.dataProvider().addAttributes([QgsField("phrase", QVariant.String), QgsField("score", QVariant.Double)])
    layer.updateFields()
    feats = []
    for i, sc in enumerate((0.99941, 0.99950, 0.99953, 0.99991)):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(i, 0, i + 1, 1)))
        f.setAttributes(["red car", sc])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    style_scores(layer)
    labels = [r.label() for r in layer.renderer().ranges()]
    assert len(set(labels)) == len(labels) and "0.99941 - " in labels[0], labels
