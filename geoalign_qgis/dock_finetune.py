"""Fine-tuning from the map: the dock's "Fine-tune on your labels" group.

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock`. The analyst picks a polygon layer with a
class field over the dock's raster (a layer from a file, or a scratch layer drawn and labelled on
the map: it is written to a GeoPackage first), a name and a step count, and presses
**Fine-tune**. Or draws the labels right there: **Draw boxes** is a map tool; each rectangle
dragged around an object gets the class typed beside the button (asked for when none is typed)
and goes into the memory layer "GeoAlign training boxes" (a ``class`` field, the raster's CRS,
outlines only and labelled with the class, so the image under a box stays visible), which
becomes the Labels layer. A scratch layer of the analyst's chosen as Labels while still in QGIS's
default opaque fill gets the same outline style.

**Fine-tune**: the engine runs ``geoalign finetune`` in the background (the ``finetune`` request):
the status line shows the stage, the step and the loss, Cancel stops it, and its log is one click
away. The new model (weights, report and model card with its calibration) goes to the plugin's
model folder, appears in the Model list at once and becomes the dock's model.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsProject, QgsVectorLayer
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from . import layers
from .compat import FIELD_TYPES, MSG_SUCCESS, polygon_layer_filter, push_message
from .map_tool import BoxesMapTool, transform_rect_geometry
from .tasks import EngineTask, geoalign_dir
from .widgets import disconnect_all, push_button

MODELS = "models"  #: the plugin's folder of fine-tuned models (in the QGIS profile's geoalign folder)
TRAINING_LAYER = "GeoAlign training boxes"  #: the memory layer that "Draw boxes" fills
CLASS_FIELD = "class"


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
        boxes = QHBoxLayout()
        self.ft_boxes_button = push_button(
            "Draw boxes", box, self._toggle_boxes,
            f"Drag a rectangle around each object on the map; it gets the class typed beside this button (asked "
            f"for when none is typed) and goes into the layer '{TRAINING_LAYER}', which becomes the Labels layer. "
            "Right click or Backspace removes the last box", toggle=True)
        self.ft_class = QComboBox(box)
        self.ft_class.setEditable(True)
        self.ft_class.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.ft_class.setMinimumContentsLength(8)
        self.ft_class.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.ft_class.lineEdit().setPlaceholderText("class, e.g. car")
        self.ft_class.setToolTip("The class of the boxes you draw next (the classes drawn so far are in the list)")
        boxes.addWidget(self.ft_boxes_button)
        boxes.addWidget(self.ft_class, 1)
        form.addRow("Draw", boxes)
        self.box_tool = BoxesMapTool(self.canvas)
        self.box_tool.boxDrawn.connect(self._box_drawn)
        self.box_tool.undoRequested.connect(self.remove_last_training_box)
        self.box_tool.deactivated.connect(lambda: self.ft_boxes_button.setChecked(False))
        self.training_layer_id: str | None = None
        self._training_ids: list[int] = []  # the boxes drawn, in order (right click removes the last)
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
        self.ft_layer.layerChanged.connect(self._labels_layer_changed)  # (after setLayer: its field is set)
        self.ft_field.fieldChanged.connect(self._style_labels_layer)
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

    # ---------------------------------------------------------------------------- training boxes
    def _toggle_boxes(self, on: bool) -> None:
        self._use_map_tool(self.box_tool, self.ft_boxes_button, on)

    def _box_drawn(self, rect: Any, crs: Any) -> None:
        self._guarded(self.add_training_box, rect, crs)

    def ask_class(self) -> str:
        """The class of a box drawn while none is typed (a test replaces this)."""
        text, ok = QInputDialog.getText(self, "GeoAlign training box", "Class of this box (e.g. car):")
        return text.strip() if ok else ""

    def training_layer(self, create: bool = True) -> QgsVectorLayer | None:
        """The "GeoAlign training boxes" layer of the dock's raster (made, in the raster's CRS, when there is
        none in the project, or when the raster's CRS differs from it)."""
        project = QgsProject.instance()
        layer = project.mapLayer(self.training_layer_id) if self.training_layer_id else None
        raster = self.raster_layer()
        if isinstance(layer, QgsVectorLayer) and (raster is None or layer.crs() == raster.crs()):
            return layer
        if not create or raster is None:
            return None
        layer = QgsVectorLayer("Polygon", TRAINING_LAYER, "memory")
        layer.setCrs(raster.crs())
        layer.dataProvider().addAttributes([QgsField(CLASS_FIELD, FIELD_TYPES["str"])])
        layer.updateFields()
        layers.style_training_boxes(layer, CLASS_FIELD)
        project.addMapLayer(layer, False)
        project.layerTreeRoot().insertLayer(0, layer)  # on top: its outlines over the image and the results
        self.training_layer_id, self._training_ids = layer.id(), []
        return layer

    def add_training_box(self, rect: Any, crs: Any, label: str | None = None) -> QgsFeature | None:
        """Add the rectangle ``rect`` (in ``crs``) with class ``label`` (default: the class typed beside Draw
        boxes, else asked for) to the training layer, which becomes the Labels layer; None when no class."""
        from .dock_requests import UserError

        raster = self.raster_layer()
        if raster is None:
            raise UserError("choose the raster (Raster, above) before drawing training boxes")
        label = (label if label is not None else self.ft_class.currentText()).strip() or self.ask_class()
        if not label:
            self._set_status("No class given: the box was not kept")
            return None
        layer = self.training_layer()
        assert layer is not None
        box = transform_rect_geometry(rect, crs, layer.crs()).boundingBox()  # the box as the raster sees it
        if not box.intersects(raster.extent()):
            raise UserError(f"the box is not on {raster.name()}")
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(box))
        feature.setAttribute(CLASS_FIELD, label)
        ok, added = layer.dataProvider().addFeatures([feature])
        if not ok or not added:
            raise UserError(f"cannot add the box to {layer.name()}")
        self._training_ids.append(added[0].id())
        layer.updateExtents()
        layer.triggerRepaint()
        if self.ft_class.findText(label) < 0:
            self.ft_class.addItem(label)
        self.ft_class.setCurrentText(label)
        self._use_training_layer(layer)
        return added[0]

    def remove_last_training_box(self) -> None:
        layer = self.training_layer(create=False)
        if layer is None or not self._training_ids:
            return
        layer.dataProvider().deleteFeatures([self._training_ids.pop()])
        layer.updateExtents()
        layer.triggerRepaint()
        self._use_training_layer(layer)

    def _labels_layer_changed(self, *_: Any) -> None:
        self._style_labels_layer(self.ft_field.currentField())  # QGIS 3.22: no fieldChanged when setLayer picks one

    def _style_labels_layer(self, field: str) -> None:
        """A scratch (memory) layer chosen as Labels, still in a plain filled style (QGIS's default for a new
        layer: an opaque fill that hides the objects under the polygons), is drawn as the training boxes are:
        outlines, with the class beside each polygon. Layers from files keep their own style."""
        layer = self.ft_layer.currentLayer()
        if not field or not isinstance(layer, QgsVectorLayer) or layer.providerType() != "memory":
            return
        renderer = layer.renderer()
        symbol = renderer.symbol() if renderer is not None and renderer.type() == "singleSymbol" else None
        fill = symbol.symbolLayer(0) if symbol is not None and symbol.symbolLayerCount() == 1 else None
        if (fill is not None and fill.layerType() == "SimpleFill" and fill.brushStyle() != Qt.BrushStyle.NoBrush
                and fill.fillColor().alpha() > 0):
            layers.style_training_boxes(layer, field)

    def _use_training_layer(self, layer: QgsVectorLayer) -> None:
        """The training layer becomes the Labels layer (its class field too); the status line counts it."""
        if self.ft_layer.currentLayer() is not layer:
            self.ft_layer.setLayer(layer)
        self.ft_field.setLayer(layer)
        self.ft_field.setField(CLASS_FIELD)
        classes = {str(f[CLASS_FIELD]) for f in layer.getFeatures()}
        n = layer.featureCount()
        self._set_status(f"{n} training box{'es' if n != 1 else ''} of {len(classes)} "
                         f"class{'es' if len(classes) != 1 else ''} in '{layer.name()}' (Fine-tune uses them)")

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
        disconnect_all(((self.ft_layer.layerChanged, self.ft_field.setLayer),
                        (self.ft_layer.layerChanged, self._labels_layer_changed),
                        (self.ft_field.fieldChanged, self._style_labels_layer),
                        (self.box_tool.boxDrawn, self._box_drawn),
                        (self.box_tool.undoRequested, self.remove_last_training_box)))
        self._release_map_tool(self.box_tool)
        self.box_tool.dispose()


__all__ = ["DockFinetune", "model_slug", "models_dir"]
