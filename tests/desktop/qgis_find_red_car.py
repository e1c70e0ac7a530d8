"""Run inside the real QGIS desktop app (``qgis --code``): the analyst's first session.

Installs the plugin from its zip with QGIS's own installer (Plugins > Install from ZIP),
loads the scene, opens the dock with the toolbar button, types "red car", presses Find,
waits for the result layer, shows a heatmap, takes a screenshot; then indexes the scene
(Index this raster), types a second phrase (answered from the index as it is typed), drags a
box around one car with Find similar, takes a second screenshot; then the harder moments:
2,000 phrases pasted (never searched by themselves, refused by Find), a region drawn and a
phrase typed (answered inside the region only), a second raster added (the dock follows it),
a fine-tune from the labels' polygon layer over a small map view (GEOALIGN_DESKTOP_LABELS; the
new model is then chosen and used), a third screenshot; writes a JSON report and quits QGIS
through its Exit action. Driven by tests/test_qgis_desktop.py through the environment:
GEOALIGN_DESKTOP_ZIP, GEOALIGN_DESKTOP_RASTER, GEOALIGN_DESKTOP_OUT (a folder).
"""

import json
import os
import sys
import time
import traceback

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction
from qgis.utils import iface

ZIP = os.environ["GEOALIGN_DESKTOP_ZIP"]
RASTER = os.environ["GEOALIGN_DESKTOP_RASTER"]
OUT = os.environ["GEOALIGN_DESKTOP_OUT"]
PHRASE = os.environ.get("GEOALIGN_DESKTOP_PHRASE", "red car")
TYPED = os.environ.get("GEOALIGN_DESKTOP_TYPED", "swimming pool")
#: the example box of Find similar, in the raster's CRS (one red car of the sample scene)
EXAMPLE = [float(v) for v in os.environ.get("GEOALIGN_DESKTOP_EXAMPLE",
                                            "500373.5,4999635.8,500375.5,4999639.9").split(",")]
TIMEOUT_S = float(os.environ.get("GEOALIGN_DESKTOP_TIMEOUT", "240"))
LABELS = os.environ.get("GEOALIGN_DESKTOP_LABELS", "")
#: the map view the fine-tune is limited to (raster CRS): a small corner of the scene, so that it fits the suite
FT_VIEW = [float(v) for v in os.environ.get("GEOALIGN_DESKTOP_FT_VIEW",
                                            "500000,4999800,500200,5000000").split(",")]
FT_STEPS = int(os.environ.get("GEOALIGN_DESKTOP_FT_STEPS", "2"))
HEAVY = ("torch", "torchvision", "open_clip", "rasterio", "geopandas", "shapely", "pyproj", "pyogrio", "triton")

report = {"steps": [], "errors": []}
state = {"t0": time.monotonic(), "step": "install", "dock": None, "deadline": None}


def log(step):
    report["steps"].append([round(time.monotonic() - state["t0"], 1), step])


def write_report():
    report["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY and sys.modules[m] is not None)
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read()
        report["mesa_llvm_loaded"] = "libLLVM" in maps
        report["gl_loaded"] = "libGLX_mesa" in maps or "libGL.so" in maps
    except OSError:
        pass
    with open(os.path.join(OUT, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)


def quit_qgis(task_running=False):
    """Exit through QGIS's action. ``task_running``: a run the user started still goes on, so QGIS asks
    whether to cancel it: the answer is yes, and the question must name that run only (never a task the
    dock started by itself)."""
    state["step"] = "done"
    log("quit")
    write_report()
    QgsProject.instance().setDirty(False)  # no "save the project?" question
    # whatever makes the project dirty again while QGIS quits is a bug (QGIS then asks to save): say where
    QgsProject.instance().isDirtyChanged.connect(_dirtied_while_quitting)
    if task_running:
        QTimer.singleShot(100, answer_task_prompt)
    QTimer.singleShot(60000 if task_running else 20000, exit_blocked)  # runs inside a modal dialog's loop too
    iface.actionExit().trigger()


def _dirtied_while_quitting(dirty):
    if dirty:
        report.setdefault("dirtied_while_quitting", []).append("".join(traceback.format_stack(limit=12)))
        write_report()


def answer_task_prompt():
    from qgis.PyQt.QtWidgets import QApplication, QMessageBox

    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    if not boxes and time.monotonic() < state.setdefault("prompt_deadline", time.monotonic() + 30):
        QTimer.singleShot(100, answer_task_prompt)  # answered as soon as QGIS asks: the run must still be going
        return
    report["quit_prompts"] = [b.text() for b in boxes]
    report["quit_run_going_at_prompt"] = state["dock"].is_running()
    write_report()
    for box in boxes:
        yes = box.button(QMessageBox.StandardButton.Yes)
        if yes is not None:
            yes.click()
    # QGIS cancels the tasks and stays open (its own behaviour): once they have ended, Exit again
    QTimer.singleShot(500, exit_when_idle)


def exit_when_idle():
    if QgsApplication.taskManager().countActiveTasks() > 0:
        QTimer.singleShot(500, exit_when_idle)
        return
    report["quit_again"] = True
    write_report()
    QgsProject.instance().isDirtyChanged.disconnect(_dirtied_while_quitting)  # QGIS's own exit clears it
    iface.actionExit().trigger()


def exit_blocked():
    """QGIS did not quit: name the dialog that holds it, then end with status 3."""
    from qgis.PyQt.QtWidgets import QApplication, QDialog, QMessageBox

    dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]
    texts = [(w.windowTitle() + ": " + (w.text() if isinstance(w, QMessageBox) else "")).strip() for w in dialogs]
    report["errors"].append(f"QGIS did not quit after Exit; open dialogs: {texts}")
    write_report()
    os._exit(3)


def fail(message):
    report["errors"].append(message)
    quit_qgis()


def install():
    import pyplugin_installer

    iface.mainWindow().showMaximized()
    pyplugin_installer.instance().installFromZipFile(ZIP)
    import qgis.utils

    report["plugin_loaded"] = "geoalign_qgis" in qgis.utils.plugins
    report["plugin_file"] = getattr(sys.modules.get("geoalign_qgis"), "__file__", None)
    log("installed from zip")
    layer = iface.addRasterLayer(RASTER, "scene")
    if layer is None or not layer.isValid():
        return fail(f"cannot load {RASTER}")
    iface.mapCanvas().setExtent(layer.extent())
    iface.mapCanvas().refresh()
    action = iface.mainWindow().findChild(QAction, "GeoAlignFindObjects")
    if action is None:
        return fail("no 'Find objects by text' action in the main window")
    action.trigger()  # the toolbar button
    plugin = qgis.utils.plugins["geoalign_qgis"]
    state["dock"] = dock = plugin.dock
    dock.set_raster_layer(layer)
    report["setup_visible"] = not dock.setup_panel.isHidden()
    log("dock open")
    state["step"] = "models"
    state["deadline"] = time.monotonic() + TIMEOUT_S
    QTimer.singleShot(200, tick)


def press(button):
    button.click()


def tick():
    """One look at the dock every 200 ms until the run is over (never blocks QGIS's event loop)."""
    try:
        _tick()
    except Exception:
        fail(traceback.format_exc())
    if state["step"] not in ("done", "shot", "shot2", "shot3", "pasted_wait"):
        QTimer.singleShot(200, tick)


def _tick():
    dock = state["dock"]
    if time.monotonic() > state["deadline"]:
        return fail(f"timed out in step {state['step']}: {dock.status.text()}")
    step = state["step"]
    if step == "models":
        if dock.models_task is not None:
            return None
        report["models"] = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
        report["model_state"] = dock.model_state.text()  # the model card's line under the model field
        log("models listed")
        dock.phrase_edit.setPlainText(PHRASE)  # typed into the dock
        press(dock.find_button)
        report["find_started"] = dock.is_running()
        state["step"] = "find"
        state["stages"] = []
        if dock.task is not None:
            dock.task.stageChanged.connect(state["stages"].append)
    elif step == "find":
        if dock.is_running():
            return None
        layer = dock.last_layer
        report["find_status"] = dock.status.text()
        report["stages"] = state["stages"]
        if layer is None:
            return fail(f"no result layer: {dock.status.text()}")
        report["layer_name"] = layer.name()
        report["count"] = layer.featureCount()
        report["layer_in_project"] = layer.id() in QgsProject.instance().mapLayers()
        report["boxes"] = [[round(v, 2) for v in (f.geometry().boundingBox().xMinimum(),
                                                  f.geometry().boundingBox().yMinimum(),
                                                  f.geometry().boundingBox().xMaximum(),
                                                  f.geometry().boundingBox().yMaximum())] + [f["score"]]
                           for f in layer.getFeatures()]
        report["output"] = str(dock.last_output)
        renderer = layer.renderer()
        report["legend"] = [r.label() for r in renderer.ranges()] if hasattr(renderer, "ranges") else []
        log("find done")
        press(dock.heatmap_button)
        state["step"] = "heatmap"
    elif step == "heatmap":
        if dock.is_running():
            return None
        report["heatmap_status"] = dock.status.text()
        report["heatmap_layer"] = dock.last_layer.name() if dock.last_layer is not None else None
        log("heatmap done")
        from geoalign_qgis.tasks import engine_client

        report["engine_pid"] = engine_client().pid
        group = QgsProject.instance().layerTreeRoot().findGroup("GeoAlign")
        view = iface.layerTreeView()
        report["group_expanded"] = [group.isExpanded(), view.isExpanded(view.node2index(group))]
        if dock.table.rowCount():  # the analyst double-clicks the best row, then zooms out a little
            dock.zoom_to_row(0)
            iface.mapCanvas().zoomByFactor(float(os.environ.get("GEOALIGN_DESKTOP_ZOOM_OUT", "8")))
            dock.table.selectRow(0)
        state["step"] = "shot"
        QTimer.singleShot(2000, lambda: screenshot("qgis_desktop.png", index_scene))  # let the canvas render
    elif step == "index":
        if dock.is_running() or dock.index_info_task is not None:
            return None
        report["index_status"] = dock.status.text()
        report["index_state"] = dock.index_state.text()
        report["index_file"] = str(dock.index_file) if dock.index_file else None
        if dock.index_file is None:
            return fail(f"no index after indexing: {dock.status.text()} / {dock.index_state.text()}")
        log("indexed")
        dock.as_you_type.setChecked(True)
        dock.phrase_edit.setPlainText(TYPED)  # typed: answered from the index after a pause
        state["step"] = "typed"
    elif step == "typed":
        typed = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name().startswith("as you type")]
        if not typed or dock.typed_task is not None:
            return None
        report["typed_layers"] = [lyr.name() for lyr in typed]
        report["typed_count"] = typed[0].featureCount()
        report["typed_status"] = dock.status.text()
        log("answered as typed")
        dock.similar_button.setChecked(True)  # Find similar: a box dragged around one car
        from qgis.core import QgsCoordinateTransform, QgsRectangle

        report["similar_tool"] = type(iface.mapCanvas().mapTool()).__name__
        canvas_crs = iface.mapCanvas().mapSettings().destinationCrs()
        to_map = QgsCoordinateTransform(dock.raster_layer().crs(), canvas_crs, QgsProject.instance())
        x0, y0, x1, y1 = EXAMPLE
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # the analyst looks at the car, then drags a box around it (in the map's CRS)
        iface.mapCanvas().setExtent(to_map.transformBoundingBox(QgsRectangle(cx - 60, cy - 40, cx + 60, cy + 40)))
        iface.mapCanvas().refresh()
        report["canvas_crs"] = canvas_crs.authid()
        dock.similar_tool.extentChanged.emit(to_map.transformBoundingBox(QgsRectangle(*EXAMPLE)))
        report["similar_started"] = dock.is_running()
        state["step"] = "similar"
    elif step == "similar":
        if dock.is_running():
            return None
        layer = dock.last_layer
        report["similar_status"] = dock.status.text()
        if layer is None or not layer.name().startswith("like the drawn box"):
            return fail(f"no similar layer: {dock.status.text()}")
        report["similar_layer"] = layer.name()
        report["similar_count"] = layer.featureCount()
        report["similar_first_is_example"] = dock.table.item(0, 2).text() == "yes"
        report["similar_used_index"] = "index" in (dock.last_task.params if dock.last_task else {})
        log("similar done")
        from qgis.core import QgsRectangle

        state["step"] = "shot2"
        QTimer.singleShot(2000, lambda: screenshot("qgis_desktop_similar.png", journey))
    elif step == "pasted":
        # 2,000 pasted phrases: nothing started by itself 2 s later; Find refuses with a message
        report["paste_typed_started"] = dock.typed_task is not None or dock._typing_timer.isActive()
        report["paste_typing_status"] = dock.status.text()
        press(dock.find_button)
        report["paste_find_started"] = dock.is_running()
        report["paste_find_status"] = dock.status.text()
        log("pasted list refused")
        e = dock.raster_layer().extent()
        from qgis.core import QgsRectangle

        region = QgsRectangle(e.xMinimum(), e.center().y(), e.center().x(), e.yMaximum())  # the north-west quarter
        state["region"] = region
        report["region"] = [region.xMinimum(), region.yMinimum(), region.xMaximum(), region.yMaximum()]
        dock.map_tool.add_rectangle(region, dock.raster_layer().crs())
        dock.set_scope("regions")
        dock.max_results.setValue(30)
        dock.phrase_edit.setPlainText("car")  # typed: answered from the index, inside the region
        state["step"] = "regions_typed"
    elif step == "regions_typed":
        typed = [lyr for lyr in QgsProject.instance().mapLayers().values()
                 if lyr.name().startswith("as you type: car")]
        if not typed or dock.typed_task is not None:
            return None
        region = state["region"]
        centres = [f.geometry().boundingBox().center() for f in typed[0].getFeatures()]
        report["regions_typed_count"] = len(centres)
        report["regions_typed_inside"] = sum(1 for c in centres if region.contains(c))
        log("typed inside the region")
        dock.map_tool.clear()
        second = iface.addRasterLayer(RASTER, "scene (second copy)")
        report["followed_second_raster"] = dock.raster_layer() is not None and dock.raster_layer().id() == second.id()
        QgsProject.instance().removeMapLayer(second.id())
        report["back_on_scene"] = dock.raster_layer() is not None and dock.raster_layer().name() == "scene"
        log("second raster followed")
        if not LABELS:
            return finish()
        labels = iface.addVectorLayer(LABELS, "my labels", "ogr")
        iface.setActiveLayer(dock.raster_layer())
        from qgis.core import QgsCoordinateTransform, QgsRectangle

        to_map = QgsCoordinateTransform(dock.raster_layer().crs(), iface.mapCanvas().mapSettings().destinationCrs(),
                                        QgsProject.instance())
        iface.mapCanvas().setExtent(to_map.transformBoundingBox(QgsRectangle(*FT_VIEW)))
        iface.mapCanvas().refresh()
        dock.set_scope("view")
        dock.ft_layer.setLayer(labels)
        dock.ft_field.setField("class")
        dock.ft_steps.setValue(FT_STEPS)
        dock.ft_name.setText("desktop-finetuned")
        state["ft_stages"] = []
        press(dock.finetune_button)
        report["finetune_started"] = dock.is_running()
        report["finetune_params"] = dict(dock.task.params) if dock.task is not None else None
        if dock.task is not None:
            dock.task.stageChanged.connect(state["ft_stages"].append)
        state["step"] = "finetune"
        state["deadline"] = time.monotonic() + float(os.environ.get("GEOALIGN_DESKTOP_FT_TIMEOUT", "900"))
    elif step == "finetune":
        if dock.is_running() or dock.models_task is not None:
            return None
        report["finetune_status"] = dock.status.text()
        report["finetune_stages"] = state["ft_stages"]
        report["finetune_model"] = dock.model_name()
        report["finetune_in_list"] = [dock.model_combo.itemText(i) for i in range(dock.model_combo.count())]
        report["finetune_model_state"] = dock.model_state.text()
        log("fine-tuned")
        dock.set_scope("view")
        dock.min_score.setValue(0.0)
        dock.max_results.setValue(10)
        dock.phrase_edit.setPlainText("car")
        press(dock.find_button)
        state["step"] = "finetuned_find"
    elif step == "finetuned_find":
        if dock.is_running():
            return None
        task = dock.last_task
        report["finetuned_find_model"] = task.params.get("model") if task is not None else None
        report["finetuned_find_status"] = dock.status.text()
        report["finetuned_find_count"] = dock.last_layer.featureCount() if dock.last_layer is not None else 0
        log("found with the fine-tuned model")
        finish()


def journey():
    """After the second screenshot: the harder moments (see the module docstring)."""
    dock = state["dock"]
    state["deadline"] = time.monotonic() + TIMEOUT_S
    dock.as_you_type.setChecked(True)
    dock.phrase_edit.setPlainText("\n".join(f"thing number {i}" for i in range(2000)))  # pasted
    state["step"] = "pasted_wait"
    QTimer.singleShot(2000, lambda: (state.update(step="pasted"), tick()))


def finish():
    state["step"] = "shot3"
    QTimer.singleShot(2000, lambda: screenshot("qgis_desktop_finetune.png", quit_while_running))


def quit_while_running():
    """The analyst starts Classify tiles (a live run over the whole scene) and quits QGIS while it runs."""
    dock = state["dock"]
    dock.set_scope("layer")
    press(dock.classify_button)
    report["quit_task_running"] = dock.is_running()
    QTimer.singleShot(500, lambda: quit_qgis(task_running=True))


def index_scene():
    """After the first screenshot: Index this raster."""
    state["step"] = "index"
    state["deadline"] = time.monotonic() + TIMEOUT_S
    press(state["dock"].index_button)
    report["index_started"] = state["dock"].is_running()
    QTimer.singleShot(200, tick)


def screenshot(name, then):
    try:
        iface.mapCanvas().refresh()
        QgsApplication.processEvents()
        shot = iface.mainWindow().grab()
        report.setdefault("screenshots", []).append(os.path.join(OUT, name))
        report["screenshot"] = report["screenshots"][0]
        shot.save(os.path.join(OUT, name))
        log(f"screenshot {name}")
    except Exception:
        report["errors"].append(traceback.format_exc())
        return quit_qgis()
    then()


def start():
    try:
        install()
    except Exception:
        fail(traceback.format_exc())


QTimer.singleShot(500, start)
