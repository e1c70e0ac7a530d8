"""The one-click set-up with the real package set, in the real QGIS desktop app (not a test:
it downloads PyTorch and takes minutes; run by hand, see README "QGIS plugin").

Inside ``qgis --code``: installs the plugin from its zip, opens the dock (no engine yet: the
set-up panel shows), presses "Set up GeoAlign", waits for it, then types "red car", presses
Find and quits. Writes ``report.json`` (times, the set-up's steps, the result) and
screenshots to GEOALIGN_DESKTOP_OUT. Environment: GEOALIGN_DESKTOP_ZIP, GEOALIGN_DESKTOP_RASTER,
GEOALIGN_DESKTOP_OUT; GEOALIGN_TORCH_INDEX if download.pytorch.org is not reachable.
"""

import json
import os
import time
import traceback

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QAction
from qgis.utils import iface

OUT = os.environ["GEOALIGN_DESKTOP_OUT"]
report = {"steps": [], "errors": [], "setup_steps": []}
state = {"t0": time.monotonic(), "step": "setup", "dock": None}


def log(step):
    report["steps"].append([round(time.monotonic() - state["t0"], 1), step])
    with open(os.path.join(OUT, "report.json"), "w") as fh:
        json.dump(report, fh, indent=2)


def shot(name):
    iface.mainWindow().grab().save(os.path.join(OUT, name))


def finish():
    log("quit")
    QgsProject.instance().setDirty(False)
    iface.actionExit().trigger()


def start():
    import pyplugin_installer
    import qgis.utils

    iface.mainWindow().showMaximized()
    pyplugin_installer.instance().installFromZipFile(os.environ["GEOALIGN_DESKTOP_ZIP"])
    layer = iface.addRasterLayer(os.environ["GEOALIGN_DESKTOP_RASTER"], "scene")
    iface.mapCanvas().setExtent(layer.extent())
    iface.mainWindow().findChild(QAction, "GeoAlignFindObjects").trigger()
    dock = state["dock"] = qgis.utils.plugins["geoalign_qgis"].dock
    dock.set_raster_layer(layer)
    report["panel_visible"] = not dock.setup_panel.isHidden()
    report["plan"] = dock.setup_panel.plan_label.text()
    shot("setup_offered.png")
    dock.setup_panel.setup_button.click()
    task = dock.setup_panel.task
    task.stepChanged.connect(lambda s: report["setup_steps"].append([round(time.monotonic() - state["t0"], 1), s]))
    log("set-up started")
    QTimer.singleShot(30000, lambda: shot("setup_running.png"))
    QTimer.singleShot(1000, tick)


def tick():
    try:
        dock = state["dock"]
        if state["step"] == "setup":
            if dock.setup_panel.is_running():
                return QTimer.singleShot(1000, tick)
            report["setup_message"] = dock.setup_panel.message.text()
            log("set-up finished")
            shot("setup_done.png")
            if not dock.setup_panel.isHidden():
                report["errors"].append(report["setup_message"])
                return finish()
            state["step"] = "models"
        if state["step"] == "models":
            if dock.models_task is not None:
                return QTimer.singleShot(500, tick)
            dock.phrase_edit.setPlainText("red car")
            dock.find_button.click()
            state["step"] = "find"
            log("find pressed")
        if state["step"] == "find":
            if dock.is_running():
                return QTimer.singleShot(500, tick)
            report["find_status"] = dock.status.text()
            report["count"] = dock.last_layer.featureCount() if dock.last_layer is not None else None
            log("find done")
            shot("find_done.png")
            return finish()
    except Exception:
        report["errors"].append(traceback.format_exc())
        finish()
    return None


QTimer.singleShot(500, start)
