"""Run inside the real QGIS desktop app (``qgis --code``): the analyst's first find.

Installs the plugin from its zip with QGIS's own installer (Plugins > Install from ZIP),
loads the scene, opens the dock with the toolbar button, types "red car", presses Find,
waits for the result layer, shows a heatmap, takes a screenshot, writes a JSON report and
quits QGIS through its Exit action. Driven by tests/test_qgis_desktop.py through the
environment: GEOALIGN_DESKTOP_ZIP, GEOALIGN_DESKTOP_RASTER, GEOALIGN_DESKTOP_OUT (a folder).
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
TIMEOUT_S = float(os.environ.get("GEOALIGN_DESKTOP_TIMEOUT", "240"))
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


def quit_qgis():
    state["step"] = "done"
    log("quit")
    write_report()
    QgsProject.instance().setDirty(False)  # no "save the project?" question
    QTimer.singleShot(20000, exit_blocked)  # runs inside a modal dialog's event loop too
    iface.actionExit().trigger()


def exit_blocked():
    """QGIS did not quit: name the dialog that holds it, then end with status 3."""
    from qgis.PyQt.QtWidgets import QApplication, QDialog, QMessageBox

    dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, QDialog) and w.isVisible()]
    texts = [(w.windowTitle() + ": " + (w.text() if isinstance(w, QMessageBox) else "")).strip() for w in dialogs]
    report["errors"].append(f"QGIS did not quit 20 s after Exit; open dialogs: {texts}")
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
    if state["step"] not in ("done", "shot"):
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
        QTimer.singleShot(2000, screenshot)  # let the canvas render


def screenshot():
    try:
        iface.mapCanvas().refresh()
        QgsApplication.processEvents()
        shot = iface.mainWindow().grab()
        report["screenshot"] = os.path.join(OUT, "qgis_desktop.png")
        shot.save(report["screenshot"])
        log("screenshot")
    except Exception:
        report["errors"].append(traceback.format_exc())
    quit_qgis()


def start():
    try:
        install()
    except Exception:
        fail(traceback.format_exc())


QTimer.singleShot(500, start)
