"""The "Find objects by text" dock: raster, model, phrases, scope -> result layers.

Every run is a request to the GeoAlign engine process (:class:`~geoalign_qgis.tasks.EngineTask`):
the dock sends paths and numbers, the engine writes a GeoPackage or a GeoTIFF, the dock loads
it. QGIS's process never imports the model stack. While no engine environment exists the
:class:`~geoalign_qgis.setup_panel.SetupPanel` at the top offers the one-click set-up.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayer, QgsProject, QgsRasterLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QWidget

from . import layers
from .compat import MSG_CRITICAL, MSG_INFO, MSG_SUCCESS, MSG_WARNING, push_message
from .dock_collection import DockCollection
from .dock_finetune import DockFinetune
from .dock_form import SCOPES, SETTINGS, DockForm  # noqa: F401 (SCOPES, SETTINGS: the dock's API)
from .dock_index import DockIndex
from .dock_requests import DockRequests, UserError
from .inputs import DEFAULT_MODEL
from .map_tool import RegionsMapTool
from .tasks import EngineTask, SideRequest, remove_outputs
from .widgets import disconnect_all


def plural(n: int, what: str) -> str:
    """ "1 region", "2 regions", "1 similar object"."""
    return f"{n} {what}{'' if n == 1 else 's'}"


def no_crs(raster: Any) -> bool:
    """The raster has no CRS (its results are in pixel coordinates)."""
    try:
        return raster is not None and not raster.crs().isValid()
    except RuntimeError:  # deleted meanwhile
        return False


def layer_gone(layer: Any) -> str:
    """The name of ``layer`` when it is no longer in the project (removed meanwhile), else ""."""
    if layer is None:
        return ""
    try:
        lid, name = layer.id(), layer.name()
    except RuntimeError:  # the layer object itself was deleted
        return "the raster"
    return "" if QgsProject.instance().mapLayer(lid) is not None else name


NO_CRS_HINT = ("{name} has no coordinate reference system (CRS). Tick 'Allow rasters without a CRS' under "
               "Advanced to work in pixel coordinates, or set the layer's CRS (Layer Properties > Source).")


class GeoAlignDock(DockForm, DockRequests, DockIndex, DockFinetune, DockCollection, QgsDockWidget):
    """Find objects by text, match drawn regions, classify tiles, show heatmaps, index a raster, find similar."""

    runFinished = pyqtSignal(str)  # noqa: N815  "ok" | "cancelled" | "error"
    modelsLoaded = pyqtSignal()  # noqa: N815

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("GeoAlign: find objects by text", parent)
        self.setObjectName("GeoAlignDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.task: EngineTask | None = None
        self.last_task: EngineTask | None = None
        self.models_task: SideRequest | None = None
        self.last_layer: QgsMapLayer | None = None
        self.last_output: Path | None = None
        self.models: list[dict] = []
        self.map_tool = RegionsMapTool(self.canvas)
        self.map_tool.regionsChanged.connect(self._regions_changed)
        self._previous_tool = None
        self._temp_files: list[Path] = []
        self._match_phrases: list[str] = []
        self._description = ""
        self._t0 = time.monotonic()
        self._build()
        self._init_index()
        self._restore_settings()
        self._connect_project()
        self._update_buttons()
        if self.setup_panel.refresh():
            self.load_models()
        self.refresh_index()

    # ---------------------------------------------------------------------------- models
    def load_models(self) -> SideRequest | None:
        """Ask the engine for its models (in the background, not a QGIS task; the engine starts if needed)."""
        if self.models_task is not None:
            return self.models_task
        self.model_state.setText("starting the GeoAlign engine…")
        self.models_task = SideRequest("Listing GeoAlign models", "list_models", self.models_params(),
                                       self._models_done)
        return self.models_task.start()

    def _models_done(self, task: SideRequest) -> None:
        self.models_task = None
        if task.error:
            self.model_state.setText("")
            if task.error_kind == "engine":
                self.setup_panel.refresh(task.error)
            else:
                self._set_status(f"cannot list the models: {task.error}", error=True)
            return
        result = task.result or {}
        current = self.model_name()
        self.models = list(result.get("models") or [])
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        for m in self.models:
            self.model_combo.addItem(m["name"], m.get("source") or m["name"])  # source: a fine-tuned model's file
            tip = f"{m['name']}: {m.get('description', '')}\n{m['state']}: {m.get('path', '')}"
            self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.blockSignals(False)
        self.set_model(current or result.get("default") or DEFAULT_MODEL)
        view = self.model_combo.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 24)
        self._show_model_state()
        self.modelsLoaded.emit()

    def _engine_ready(self) -> None:
        self._set_status("GeoAlign is ready")
        self.load_models()
        self.refresh_index()

    # ---------------------------------------------------------------------------- results
    def _finish(self, task: EngineTask, layer: QgsRasterLayer | None = None) -> bool:
        """Common end of a task; True when there is a result to show."""
        if task is self.task:
            self.task = None
            self._typed_resume(task)  # phrases typed while it ran are answered now
        remove_outputs(getattr(self, "_temp_files", []))
        self._temp_files = []
        self.progress.setRange(0, 100)
        self.progress.setFormat("%p%")
        self._update_buttons()
        if task.was_cancelled:
            self.progress.setValue(0)
            self._set_status("Cancelled; nothing was written")
            self.runFinished.emit("cancelled")
            return False
        if task.error or task.result is None:
            self.progress.setValue(0)
            if task.error_code == "no_crs" and layer is not None:
                self._set_status(NO_CRS_HINT.format(name=layer.name()), error=True)
            elif task.error_kind == "engine":
                self._set_status(task.error or "the GeoAlign engine failed", error=True, level=MSG_CRITICAL)
                if task.error_code in ("engine_start", "no_engine"):
                    self.setup_panel.refresh(task.error)
            else:
                level = MSG_CRITICAL if task.error_kind == "internal" else MSG_WARNING
                self._set_status(task.error or "failed (see the GeoAlign log)", error=True, level=level)
            self.runFinished.emit("error")
            return False
        self.progress.setValue(100)
        return True

    def _vector_done(self, task: EngineTask, title: str, kind: str, raster: QgsRasterLayer,
                     drawn: int = 0) -> None:
        """A vector result: its layer, the table, the status; ``drawn``: regions sent from the map."""
        if not self._finish(task, raster):
            return
        result = task.result or {}
        meta = result.get("metadata") or {}
        self._say_skipped_regions(meta, drawn, raster)
        if not result.get("path"):  # nothing found: no empty layer in the project
            self.last_layer, self.last_output = None, None
            self.table.clear_results()
            hint = (f" (none scores {self.min_score.value():g} or more: probably not in this area)"
                    if kind == "matches" else "")
            what = {"matches": "objects", "similar": "similar objects"}.get(kind, "regions")
            self._set_status(f"No {what} found{hint}")
            self.runFinished.emit("ok")
            return
        path = Path(result["path"])
        gone = layer_gone(raster)
        if gone:
            title += " (raster removed)"
        try:
            layer = layers.load_vector(path, kind, title, pixel_coordinates=no_crs(raster))
        except RuntimeError as exc:
            self._set_status(str(exc), error=True)
            self.runFinished.emit("error")
            return
        self.last_layer, self.last_output = layer, path
        n = layer.featureCount()
        if not gone:
            self.table.min_scale = layers.min_zoom_scale(raster)  # double-click stops at the image's detail
        if kind == "regions":
            self.table.show_regions(layer, meta.get("phrases") or self._match_phrases, meta.get("phrase_columns"))
        elif kind == "tiles":
            self.table.show_tiles(layer)
        elif kind == "similar":
            self.table.show_similar(layer)
        else:
            self.table.show_matches(layer)
        secs = time.monotonic() - self._t0
        what = {"matches": "object", "regions": "region", "tiles": "tile", "similar": "similar object"}[kind]
        self._set_status(f"{plural(n, what)} in {secs:.1f} s (saved in {path.parent.name}/; hover for the file)")
        self.status.setToolTip(str(path))
        if gone:
            push_message(self.iface, "GeoAlign", f"{gone} was removed while GeoAlign ran: its result was added "
                         f"anyway, as '{layer.name()}'", MSG_WARNING, 10)
        else:
            named = title.split(": ", 1)[-1] if kind not in ("matches", "similar") else title
            push_message(self.iface, "GeoAlign", f"{plural(n, what)}: {named}", MSG_SUCCESS if n else MSG_INFO, 5)
        self.runFinished.emit("ok")

    def _say_skipped_regions(self, meta: dict, drawn: int, raster: Any) -> None:
        """Drawn regions outside the raster are skipped by the engine: the message bar says how many."""
        if drawn <= 0:
            return
        used = meta.get("n_within", meta.get("n_regions"))
        if used is None:
            return
        skipped = drawn - int(used)
        if skipped > 0:
            name = raster.name() if not layer_gone(raster) else "the raster"
            push_message(self.iface, "GeoAlign", f"{skipped} of the {plural(drawn, 'drawn region')} lie outside "
                         f"{name} and were skipped", MSG_WARNING, 10)

    def _heatmap_done(self, task: EngineTask, phrase: str, raster_name: str) -> None:
        if not self._finish(task, self.raster_layer()):
            return
        path = Path(task.result["path"])
        try:
            layer = layers.load_heatmap(path, f"heatmap score: {phrase} ({raster_name})", score=True)
        except RuntimeError as exc:
            self._set_status(str(exc), error=True)
            self.runFinished.emit("error")
            return
        self.last_layer, self.last_output = layer, path
        self._set_status(f"Heatmap of '{phrase}' in {time.monotonic() - self._t0:.1f} s "
                         f"(saved in {path.parent.name}/; hover for the file)")
        self.status.setToolTip(str(path))
        self.runFinished.emit("ok")

    def _set_status(self, text: str, error: bool = False, level: Any = None) -> None:
        """Status line; errors also go to the message bar (warning, or ``level``)."""
        self.status.setText(text)
        self.status.setToolTip("")
        self.status.setStyleSheet("QLabel { color: #b00020; }" if error else "")
        if error:
            push_message(self.iface, "GeoAlign", text.splitlines()[0] if text else "error",
                         MSG_WARNING if level is None else level, 8)

    # ---------------------------------------------------------------------------- teardown
    def dispose(self) -> None:
        self._dispose_index()
        self._dispose_finetune()
        for task in (self.task, self.models_task):
            if task is not None:
                task.on_done = None
                task.cancel()
        self.task = self.models_task = None
        self.setup_panel.dispose()
        project = QgsProject.instance()
        with contextlib.suppress(AttributeError, TypeError, RuntimeError):
            self.iface.currentLayerChanged.disconnect(self._active_layer_changed)
        disconnect_all(((project.layersAdded, self._layers_changed), (project.layersAdded, self._layers_added),
                        (project.readProject, self._layers_changed), (project.projectSaved, self._project_saved),
                        (project.layersWillBeRemoved, self._layers_removed), (project.cleared, self._project_cleared)))
        self._release_map_tool(self.map_tool)
        self.map_tool.dispose()
        self.table.dispose()


__all__ = ["GeoAlignDock", "UserError"]
