"""Fine-tuning from the map: the dock's "Fine-tune on your labels" group.

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock`. The analyst picks a polygon layer with a
class field over the dock's raster (a layer from a file, or a scratch layer drawn and labelled on
the map: it is written to a GeoPackage first), a name and a step count, and presses
**Fine-tune**. The engine runs ``geoalign finetune`` in the background (the ``finetune`` request):
the status line shows the stage, the step and the loss, Cancel stops it, and its log is one click
away. The new model (weights, report and model card with its calibration) goes to the plugin's
model folder, appears in the Model list at once and becomes the dock's model.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import QgsVectorLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QFormLayout, QHBoxLayout, QLineEdit, QSizePolicy, QSpinBox, QWidget

from .compat import MSG_SUCCESS, polygon_layer_filter, push_message
from .tasks import EngineTask, geoalign_dir
from .widgets import push_button

MODELS = "models"  #: the plugin's folder of fine-tuned models (in the QGIS profile's geoalign folder)


def models_dir() -> Path:
    """Where fine-tuned models go: one folder per model, ``<name>/<name>.safetensors`` + card + report."""
    folder = geoalign_dir() / MODELS
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def model_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip()).strip("-.")[:60]


class DockFinetune:
    """The fine-tune group, its request and its end (mixin, see the module docstring)."""

    def _build_finetune(self, body: QWidget) -> QgsCollapsibleGroupBox:
        box = QgsCollapsibleGroupBox("Fine-tune on your labels", body)
        form = QFormLayout(box)
        self.ft_layer = QgsMapLayerComboBox(box)
        self.ft_layer.setFilters(polygon_layer_filter())
        self.ft_layer.setAllowEmptyLayer(True)
        self.ft_layer.setMinimumContentsLength(12)
        self.ft_layer.setToolTip("Polygons over the raster, each with its class in a field (a layer from a file, "
                                 "or a scratch layer you drew and labelled)")
        form.addRow("Labels", self.ft_layer)
        self.ft_field = QgsFieldComboBox(box)
        self.ft_field.setToolTip("The field holding each polygon's class (e.g. car, tree, pool)")
        self.ft_layer.layerChanged.connect(self.ft_field.setLayer)
        form.addRow("Class field", self.ft_field)
        self.ft_steps = QSpinBox(box)
        self.ft_steps.setRange(0, 100000)
        self.ft_steps.setSpecialValueText("automatic")
        self.ft_steps.setToolTip("Training steps (automatic: about 4 passes over the chips, 30 to 400 steps)")
        form.addRow("Steps", self.ft_steps)
        self.ft_name = QLineEdit(box)
        self.ft_name.setPlaceholderText("<labels>-finetuned")
        self.ft_name.setToolTip("The new model's name in the Model list")
        form.addRow("Name", self.ft_name)
        row = QHBoxLayout()
        self.finetune_button = push_button(
            "Fine-tune", box, self.run_finetune,
            "Train the dock's model on these labels in the background (Cancel stops "
            "it); the new model joins the Model list with its held-out report")
        self.ft_log_button = push_button("Log", box, self._open_finetune_log, "Open the fine-tuning log")
        self.ft_log_button.setEnabled(False)
        row.addWidget(self.finetune_button, 1)
        row.addWidget(self.ft_log_button)
        form.addRow(row)
        self.ft_log: Path | None = None
        self.ft_layer.setLayer(None)
        box.setCollapsed(True)
        box.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        return box

    def models_params(self) -> dict[str, Any]:
        """The list_models request: the zoo, and the user's fine-tuned models."""
        return {"folders": [str(models_dir())]}

    # ---------------------------------------------------------------------------- the request
    def run_finetune(self) -> EngineTask | None:
        """Fine-tune the dock's model on the chosen polygons over the dock's raster."""
        return self._guarded(self._run_finetune)

    def _labels_file(self, layer: QgsVectorLayer) -> tuple[str, str | None]:
        """The labels as a file the engine reads (and its layer name): a file layer's own source, else a
        GeoPackage written from the layer (scratch layers, other providers)."""
        from .dock_requests import UserError

        if layer.providerType() == "ogr":
            parts = layer.source().split("|")
            path = parts[0]
            name = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("layername=")), None)
            if Path(path).is_file():
                return path, name
        from .vector_io import write_polygons

        folder = Path(tempfile.mkdtemp(prefix="geoalign-labels-"))
        path = folder / "labels.gpkg"
        n = write_polygons(path, layer.getFeatures(), layer.fields(), layer.crs(), "labels")
        if n == 0:
            raise UserError(f"{layer.name()} has no polygons")
        self._temp_files = [path]
        return str(path), "labels"

    def _run_finetune(self) -> EngineTask:
        from .dock_requests import UserError

        raster, params = self._prepare()
        labels = self.ft_layer.currentLayer()
        if not isinstance(labels, QgsVectorLayer) or not labels.isValid():
            raise UserError("choose a polygon layer with your labels (Fine-tune on your labels)")
        field = self.ft_field.currentField()
        if not field:
            raise UserError(f"choose the field of {labels.name()} that holds each polygon's class")
        if labels.featureCount() == 0:
            raise UserError(f"{labels.name()} has no polygons")
        name = model_slug(self.ft_name.text() or f"{labels.name()}-finetuned")
        if not name:
            raise UserError("give the new model a name (letters, digits, - and _)")
        out = models_dir() / name
        if out.exists() and any(out.iterdir()):
            raise UserError(f"a model named {name} exists already ({out}): choose another name")
        path, layer_name = self._labels_file(labels)
        self.ft_log = models_dir() / f"{name}.log"
        request = {"rasters": [params["raster"]], "labels": [path], "class_field": field, "out": str(out),
                   "model": params["model"], "name": name, "device": params["device"], "log": str(self.ft_log),
                   "layer": layer_name, "overwrite": True}
        if self.ft_steps.value() > 0:
            request["steps"] = int(self.ft_steps.value())
        bounds = self._bounds(raster)  # "Search in" limits the training area too (the map view, drawn regions)
        if bounds is not None:
            request["bounds"] = bounds
        self.ft_log_button.setEnabled(True)
        return self._start(f"Fine-tuning {name}", "finetune", request,
                           lambda t: self._finetune_done(t, name, raster.name()))

    def _finetune_done(self, task: EngineTask, name: str, raster_name: str) -> None:
        if not self._finish(task, self.raster_layer()):
            if task.was_cancelled:
                self._set_status("Fine-tuning cancelled; nothing was kept")
            return
        result = task.result or {}
        model = result.get("model") or ""
        before, after = result.get("before") or {}, result.get("after") or {}
        held = ""
        if "region_top1" in before and "region_top1" in after:
            held = f"; held-out region top-1 {before['region_top1']:.2f} -> {after['region_top1']:.2f}"
        self._set_status(f"Fine-tuned {name} on {raster_name} in {float(result.get('seconds') or 0):.0f} s"
                         f"{held}; it is now the dock's model (report: hover)")
        self.status.setToolTip(str(result.get("report") or ""))
        push_message(self.iface, "GeoAlign", f"new model {name}: in the Model list, in use now", MSG_SUCCESS, 8)
        self.set_model(model)
        self.runFinished.emit("ok")
        self.load_models()

    def _open_finetune_log(self) -> None:
        if self.ft_log is not None and self.ft_log.is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.ft_log)))

    def _dispose_finetune(self) -> None:
        try:
            self.ft_layer.layerChanged.disconnect(self.ft_field.setLayer)
        except (TypeError, RuntimeError):
            pass


__all__ = ["DockFinetune", "model_slug", "models_dir"]
