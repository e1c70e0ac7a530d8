"""The "Find objects by text" dock: raster, model, phrases, scope -> result layers.

Every run is a request to the GeoAlign engine process (:class:`~geoalign_qgis.tasks.EngineTask`):
the dock sends paths and numbers, the engine writes a GeoPackage or a GeoTIFF, the dock loads
it. QGIS's process never imports the model stack. While no engine environment exists the
:class:`~geoalign_qgis.setup_panel.SetupPanel` at the top offers the one-click set-up.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import layers
from .compat import MSG_CRITICAL, MSG_INFO, MSG_SUCCESS, MSG_WARNING, push_message, raster_layer_filter
from .map_tool import RegionsMapTool
from .results import ResultsTable
from .setup_panel import SetupPanel
from .tasks import EngineTask, engine_location, remove_outputs
from .vector_io import write_rectangles

DEFAULT_MODEL = "geoalign-demo"  # until the engine says otherwise (list_models "default")
SCOPES = (("view", "Current map view"), ("layer", "Whole layer"), ("regions", "Regions drawn on the map"))
DEFAULT_MIN_SCORE = 0.3
DEFAULT_MAX_RESULTS = 100
DEFAULT_OVERLAP = 0.25
SETTINGS = "geoalign/dock"
NO_CRS_HINT = ("{name} has no coordinate reference system (CRS). Tick 'Allow rasters without a CRS' under "
               "Advanced to work in pixel coordinates, or set the layer's CRS (Layer Properties > Source).")


class UserError(Exception):
    """Something the analyst has to fix in the dock (shown in the status line)."""


def split_phrases(text: str) -> list[str]:
    """One phrase per line (``;`` also separates); blanks and duplicates dropped, order kept."""
    seen: dict[str, None] = {}
    for part in re.split(r"[\n;]+", text):
        p = " ".join(part.split())
        if p and p not in seen:
            seen[p] = None
    return list(seen)


def raster_file(layer: QgsRasterLayer | None) -> str:
    """The file behind a raster layer, or UserError (the engine reads files)."""
    if layer is None or not layer.isValid():
        raise UserError("choose a raster layer")
    if layer.providerType() != "gdal":
        raise UserError(f"{layer.name()}: GeoAlign reads raster files; this layer comes from '{layer.providerType()}'")
    path = layer.source().split("|")[0]
    if not Path(path).is_file():
        raise UserError(f"{layer.name()}: the source is not a local file ({path})")
    return path


class GeoAlignDock(QgsDockWidget):
    """Find objects by text, match drawn regions, classify tiles, show heatmaps."""

    runFinished = pyqtSignal(str)  # noqa: N815  "ok" | "cancelled" | "error"
    modelsLoaded = pyqtSignal()  # noqa: N815

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("GeoAlign: find objects by text", parent)
        self.setObjectName("GeoAlignDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.task: EngineTask | None = None
        self.last_task: EngineTask | None = None
        self.models_task: EngineTask | None = None
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
        self._restore_settings()
        self._connect_project()
        self._update_buttons()
        if self.setup_panel.refresh():
            self.load_models()

    # ---------------------------------------------------------------------------- UI
    def _build(self) -> None:
        body = QWidget(self)
        outer = QVBoxLayout(body)

        self.setup_panel = SetupPanel(body)
        self.setup_panel.engineReady.connect(self._engine_ready)
        outer.addWidget(self.setup_panel)

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(raster_layer_filter())
        self.layer_combo.setAllowEmptyLayer(False)
        self.layer_combo.setMinimumContentsLength(12)
        form.addRow("Raster", self.layer_combo)

        self.model_combo = QComboBox(body)
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.view().setTextElideMode(Qt.TextElideMode.ElideRight)
        self.model_combo.setToolTip(
            "A model of the zoo, an open_clip architecture, hf-hub:org/repo, or a checkpoint file")
        self.model_combo.currentIndexChanged.connect(self._show_model_state)
        self.model_combo.editTextChanged.connect(self._show_model_state)
        browse = QToolButton(body)
        browse.setText("…")
        browse.setToolTip("Choose a checkpoint file (.safetensors, .pt)")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(browse)
        form.addRow("Model", row)
        self.model_state = QLabel("", body)
        self.model_state.setStyleSheet("QLabel { color: #666; }")
        self.model_state.setWordWrap(True)
        self.model_state.setMinimumWidth(1)
        form.addRow("", self.model_state)

        self.phrase_edit = QPlainTextEdit(body)
        self.phrase_edit.setPlaceholderText("one phrase per line (or separated by ;), e.g.\nred car\nswimming pool")
        self.phrase_edit.setMinimumHeight(60)
        self.phrase_edit.setMaximumHeight(90)
        self.phrase_edit.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.phrase_edit.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form.addRow("Phrases", self.phrase_edit)

        self.scope_combo = QComboBox(body)
        for key, label in SCOPES:
            self.scope_combo.addItem(label, key)
        form.addRow("Search in", self.scope_combo)

        self.min_score = QDoubleSpinBox(body)
        self.min_score.setRange(0.0, 1.0)
        self.min_score.setDecimals(3)
        self.min_score.setSingleStep(0.05)
        self.min_score.setValue(DEFAULT_MIN_SCORE)
        self.min_score.setToolTip("Keep objects whose score (probability of the phrase) is at least this")
        form.addRow("Min score", self.min_score)

        self.max_results = QSpinBox(body)
        self.max_results.setRange(1, 100000)
        self.max_results.setValue(DEFAULT_MAX_RESULTS)
        self.max_results.setToolTip("Best results kept per phrase")
        form.addRow("Max results", self.max_results)

        self.refine = QCheckBox("Refine boxes at 2x zoom", body)
        self.refine.setChecked(True)
        self.refine.setToolTip("Each found box is looked at again at twice the zoom and moved to a better placed "
                               "box when that scores at least as high (tighter boxes on small objects; the CLI's "
                               "default, --no-refine there)")
        form.addRow(self.refine)  # spans both columns: the dock stays narrow
        outer.addLayout(form)

        regions = QHBoxLayout()
        self.draw_button = QPushButton("Draw regions", body)
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip("Drag rectangles on the map (numbered as the rows of Match regions); "
                                    "right click removes the last one")
        self.draw_button.toggled.connect(self._toggle_tool)
        self.clear_button = QPushButton("Clear", body)
        self.clear_button.clicked.connect(self.map_tool.clear)
        self.regions_label = QLabel("0 regions", body)
        regions.addWidget(self.draw_button)
        regions.addWidget(self.clear_button)
        regions.addWidget(self.regions_label, 1)
        outer.addLayout(regions)

        advanced = QgsCollapsibleGroupBox("Advanced", body)
        adv = QFormLayout(advanced)
        self.device_combo = QComboBox(advanced)
        self.device_combo.addItems(["auto", "cpu", "cuda"])
        adv.addRow("Device", self.device_combo)
        self.batch_size = QSpinBox(advanced)
        self.batch_size.setRange(1, 1024)
        self.batch_size.setValue(16)
        adv.addRow("Batch size", self.batch_size)
        self.tile_size = QSpinBox(advanced)
        self.tile_size.setRange(0, 4096)
        self.tile_size.setSpecialValueText("model's input size")
        adv.addRow("Tile size (px)", self.tile_size)
        self.overlap = QDoubleSpinBox(advanced)
        self.overlap.setRange(0.0, 0.89)
        self.overlap.setSingleStep(0.05)
        self.overlap.setValue(DEFAULT_OVERLAP)
        adv.addRow("Tile overlap", self.overlap)
        self.bands_edit = QLineEdit(advanced)
        self.bands_edit.setPlaceholderText("RGB from the colour interpretation")
        self.bands_edit.setToolTip("1-based bands to use as red, green, blue, e.g. 3,2,1 or 4,3,2")
        adv.addRow("Bands", self.bands_edit)
        self.allow_no_crs = QCheckBox("Allow rasters without a CRS", advanced)
        self.allow_no_crs.setToolTip("A raster with no coordinate reference system is refused unless this is ticked; "
                                     "its results are then in pixel coordinates (not placed on the map)")
        adv.addRow(self.allow_no_crs)
        advanced.setCollapsed(True)
        advanced.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        outer.addWidget(advanced)

        buttons = QGridLayout()
        self.find_button = QPushButton("Find", body)
        self.find_button.setToolTip("Find objects matching the phrases")
        self.find_button.clicked.connect(self.run_find)
        self.match_button = QPushButton("Match regions", body)
        self.match_button.setToolTip("Score each drawn region against the phrases")
        self.match_button.clicked.connect(self.run_match_regions)
        self.heatmap_button = QPushButton("Show heatmap", body)
        self.heatmap_button.setToolTip("Score map of the first typed phrase (0..1, as the boxes' scores)")
        self.heatmap_button.clicked.connect(lambda: self.run_heatmap())
        self.classify_button = QPushButton("Classify tiles", body)
        self.classify_button.setToolTip("Label every tile (side by side, no overlap) with the most probable of the "
                                        "typed phrases (none typed: a built-in remote-sensing vocabulary)")
        self.classify_button.clicked.connect(self.run_tile_classify)
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.find_button, 0, 0)
        buttons.addWidget(self.match_button, 0, 1)
        buttons.addWidget(self.heatmap_button, 1, 0)
        buttons.addWidget(self.classify_button, 1, 1)
        buttons.addWidget(self.cancel_button, 2, 0, 1, 2)
        outer.addLayout(buttons)

        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(True)
        outer.addWidget(self.progress)
        self.status = QLabel("Ready", body)
        self.status.setWordWrap(True)
        self.status.setMinimumWidth(1)  # a long unbroken word (a path in an error) never widens the dock
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        outer.addWidget(self.status)

        self.table = ResultsTable(self.canvas, body)
        self.table.setMinimumHeight(200)  # six rows or more, also on a small screen (the dock scrolls)
        outer.addWidget(self.table, 1)

        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setWidget(body)
        # never narrower than the form: the dock scrolls up and down, never sideways
        scroll.setMinimumWidth(body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 4)
        self.scroll_area = scroll
        self.setWidget(scroll)

    # ---------------------------------------------------------------------------- models
    def load_models(self) -> EngineTask | None:
        """Ask the engine for its models (in the background; the engine starts if needed)."""
        if self.models_task is not None:
            return self.models_task
        self.model_state.setText("starting the GeoAlign engine…")
        self.models_task = EngineTask("Listing GeoAlign models", "list_models", {}, self._models_done)
        return self.models_task.start()

    def _models_done(self, task: EngineTask) -> None:
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
            self.model_combo.addItem(m["name"], m["name"])
            tip = f"{m['name']}: {m.get('description', '')}\n{m['state']}: {m.get('path', '')}"
            self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.model_combo.blockSignals(False)
        self.set_model(current or result.get("default") or DEFAULT_MODEL)
        view = self.model_combo.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 24)
        self._show_model_state()
        self.modelsLoaded.emit()

    def _show_model_state(self, *_: Any) -> None:
        name = self.model_name()
        entry = next((m for m in self.models if m["name"] == name), None)
        if entry is not None:
            self.model_state.setText(entry["state"])
        elif name and Path(name).suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
            self.model_state.setText("checkpoint file" + ("" if Path(name).is_file() else " (not found)"))
        elif self.models:
            self.model_state.setText("not in the zoo: an open_clip architecture or hf-hub:org/repo")

    def _engine_ready(self) -> None:
        self._set_status("GeoAlign is ready")
        self.load_models()

    # ---------------------------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        st = QgsSettings()
        self.set_model(st.value(f"{SETTINGS}/model", "", type=str) or DEFAULT_MODEL)
        device = st.value(f"{SETTINGS}/device", "", type=str)
        if device in ("auto", "cpu", "cuda"):
            self.device_combo.setCurrentText(device)
        for key, box, cast in (("min_score", self.min_score, float), ("max_results", self.max_results, int)):
            value = st.value(f"{SETTINGS}/{key}", None)
            if value not in (None, ""):
                try:
                    box.setValue(cast(value))
                except (TypeError, ValueError):
                    pass
        for key, box in (("refine", self.refine), ("allow_no_crs", self.allow_no_crs)):
            value = st.value(f"{SETTINGS}/{key}", None)
            if value not in (None, ""):
                box.setChecked(str(value).lower() in ("true", "1"))

    def _save_settings(self) -> None:
        st = QgsSettings()
        st.setValue(f"{SETTINGS}/model", self.model_name())
        st.setValue(f"{SETTINGS}/device", self.device_combo.currentText())
        st.setValue(f"{SETTINGS}/min_score", float(self.min_score.value()))
        st.setValue(f"{SETTINGS}/max_results", int(self.max_results.value()))
        st.setValue(f"{SETTINGS}/refine", bool(self.refine.isChecked()))
        st.setValue(f"{SETTINGS}/allow_no_crs", bool(self.allow_no_crs.isChecked()))
        layer = self.raster_layer()
        if layer is not None:
            st.setValue(f"{SETTINGS}/raster_source", layer.source())

    # ---------------------------------------------------------------------------- the raster combo
    def _connect_project(self) -> None:
        project = QgsProject.instance()
        project.layersAdded.connect(self._layers_changed)
        project.readProject.connect(self._layers_changed)
        project.layersWillBeRemoved.connect(self._layers_removed)
        project.cleared.connect(self._project_cleared)
        self._layers_changed()

    def _layers_removed(self, ids: list[str]) -> None:
        """The table never lists features of a removed layer."""
        if self.table.layer_id() in set(ids):
            self.table.clear_results()
        if self.last_layer is not None and self.last_layer.id() in set(ids):
            self.last_layer = None

    def _project_cleared(self) -> None:
        """A new or another project: no rows, no drawn regions from the old one."""
        self.table.clear_results()
        self.map_tool.clear()
        self.last_layer, self.last_output = None, None

    def _layers_changed(self, *_: Any) -> None:
        """Keep GeoAlign's own outputs out of the raster combo; prefer the raster used last."""
        project = QgsProject.instance()
        outputs = [lyr for lyr in project.mapLayers().values() if layers.is_output(lyr)]
        current = self.layer_combo.currentLayer()
        self.layer_combo.setExceptedLayerList(outputs)
        if current is not None and not layers.is_output(current) and current.id() in project.mapLayers():
            self.layer_combo.setLayer(current)
            return
        wanted = QgsSettings().value(f"{SETTINGS}/raster_source", "", type=str)
        rasters = [lyr for lyr in project.mapLayers().values()
                   if isinstance(lyr, QgsRasterLayer) and not layers.is_output(lyr)]
        pick = next((r for r in rasters if wanted and r.source() == wanted), rasters[0] if rasters else None)
        if pick is not None:
            self.layer_combo.setLayer(pick)

    # ---------------------------------------------------------------------------- small handlers
    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", "", "Checkpoints (*.safetensors *.pt *.pth *.bin *.ckpt);;All files (*)"
        )
        if path:
            self.set_model(path)

    def _toggle_tool(self, on: bool) -> None:
        if on:
            self._previous_tool = self.canvas.mapTool()
            self.canvas.setMapTool(self.map_tool)
            self.scope_combo.setCurrentIndex(self.scope_combo.findData("regions"))
        elif self.canvas.mapTool() is self.map_tool:
            if self._previous_tool is not None:
                self.canvas.setMapTool(self._previous_tool)
            else:
                self.canvas.unsetMapTool(self.map_tool)

    def _regions_changed(self, n: int) -> None:
        self.regions_label.setText(f"{n} region{'s' if n != 1 else ''}")
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.is_running()
        for b in (self.find_button, self.heatmap_button, self.classify_button):
            b.setEnabled(not running)
        self.match_button.setEnabled(not running and self.map_tool.count() > 0)
        self.cancel_button.setEnabled(running)

    # ---------------------------------------------------------------------------- values
    def set_raster_layer(self, layer: QgsRasterLayer) -> None:
        self.layer_combo.setLayer(layer)

    def raster_layer(self) -> QgsRasterLayer | None:
        layer = self.layer_combo.currentLayer()
        return layer if isinstance(layer, QgsRasterLayer) else None

    def set_model(self, text: str) -> None:
        idx = self.model_combo.findData(text)
        if idx >= 0:
            self.model_combo.setCurrentIndex(idx)
        else:
            self.model_combo.setEditText(text)

    def model_name(self) -> str:
        text = self.model_combo.currentText().strip()
        idx = self.model_combo.findText(text)
        if idx >= 0 and self.model_combo.itemData(idx):
            return str(self.model_combo.itemData(idx))
        return text

    def set_phrases(self, phrases: list[str] | str) -> None:
        self.phrase_edit.setPlainText(phrases if isinstance(phrases, str) else "\n".join(phrases))

    def phrases(self) -> list[str]:
        return split_phrases(self.phrase_edit.toPlainText())

    def set_scope(self, key: str) -> None:
        idx = self.scope_combo.findData(key)
        if idx < 0:
            raise ValueError(f"unknown scope {key!r}; one of {[k for k, _ in SCOPES]}")
        self.scope_combo.setCurrentIndex(idx)

    def scope(self) -> str:
        return str(self.scope_combo.currentData())

    def is_running(self) -> bool:
        return self.task is not None

    def zoom_to_row(self, row: int) -> QgsRectangle | None:
        return self.table.zoom_to_row(row)

    # ---------------------------------------------------------------------------- request parameters
    def _bounds(self, layer: QgsRasterLayer) -> list[float] | None:
        scope = self.scope()
        if scope == "view":
            settings = self.canvas.mapSettings()
            extent = settings.visibleExtent()
            src = settings.destinationCrs()
            if src.isValid() and layer.crs().isValid() and src != layer.crs():
                extent = QgsCoordinateTransform(src, layer.crs(), QgsProject.instance()).transformBoundingBox(extent)
            return self._clip_to_layer(extent, layer, "the map view")
        if scope == "regions":
            boxes = self.map_tool.region_boxes(layer.crs())
            if not boxes:
                raise UserError("draw one or more regions on the map first (Draw regions)")
            union = QgsRectangle(boxes[0])
            for b in boxes[1:]:
                union.combineExtentWith(b)
            return self._clip_to_layer(union, layer, "the drawn regions")
        return None

    @staticmethod
    def _clip_to_layer(rect: QgsRectangle, layer: QgsRasterLayer, what: str) -> list[float]:
        inter = rect.intersect(layer.extent())
        if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
            raise UserError(f"{what} does not overlap {layer.name()}")
        return [inter.xMinimum(), inter.yMinimum(), inter.xMaximum(), inter.yMaximum()]

    def _tiling(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"overlap": float(self.overlap.value())}
        if self.tile_size.value() > 0:
            kw["tile_size"] = int(self.tile_size.value())
        bands = self.bands_edit.text().replace(" ", "")
        if bands:
            try:
                kw["bands"] = [int(b) for b in bands.split(",") if b]
            except ValueError:
                raise UserError(f"bands must be 1-based band numbers like 3,2,1, not {bands!r}") from None
        return kw

    def _prepare(self) -> tuple[QgsRasterLayer, dict[str, Any]]:
        """Checks shared by every run; the request parameters common to all of them."""
        if self.is_running():
            raise UserError("a GeoAlign task is already running")
        if not engine_location().found:
            self.setup_panel.refresh()
            raise UserError("GeoAlign is not set up yet: press 'Set up GeoAlign' above "
                            "(or choose an existing environment)")
        layer = self.raster_layer()
        path = raster_file(layer)
        model = self.model_name()
        if not model:
            raise UserError("choose a model")
        self._save_settings()
        params = {"raster": path, "model": model, "device": self.device_combo.currentText(),
                  "batch_size": int(self.batch_size.value()), "allow_no_crs": bool(self.allow_no_crs.isChecked()),
                  **self._tiling()}
        return layer, params

    def _regions_file(self, layer: QgsRasterLayer) -> str:
        """The drawn rectangles, in the raster's CRS, as a temporary GeoPackage for the engine."""
        geoms = self.map_tool.regions(layer.crs())
        if not geoms:
            raise UserError("draw one or more regions on the map first (Draw regions)")
        folder = Path(tempfile.mkdtemp(prefix="geoalign-regions-"))
        path = folder / "regions.gpkg"
        write_rectangles(path, geoms, layer.crs())
        self._temp_files = [path]
        return str(path)

    def _start(self, description: str, request: str, params: dict[str, Any], on_done: Any) -> EngineTask:
        self.task = EngineTask(description, request, params, on_done)
        self.last_task = self.task
        self.task.progressChanged.connect(self._task_progress)
        self.task.stageChanged.connect(self._task_stage)
        self.progress.setRange(0, 0)  # busy until the first figures arrive
        self.progress.setFormat("%p%")
        self._t0 = time.monotonic()
        self._description = description
        self._set_status(f"{description}…")
        self._update_buttons()
        return self.task.start()

    def _task_stage(self, stage: str) -> None:
        if self.task is None:
            return
        self.progress.setRange(0, 0)
        self.progress.setFormat(f"{stage} %p%")
        self.status.setText(f"{self._description}: {stage}…")

    def _task_progress(self, value: float) -> None:
        if self.task is None:
            return
        if value > 0:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(value))

    def _guarded(self, fn: Any, *args: Any) -> EngineTask | None:
        try:
            return fn(*args)
        except UserError as exc:
            self._set_status(str(exc), error=True)
            return None

    # ---------------------------------------------------------------------------- runs
    def run_find(self) -> EngineTask | None:
        """Find objects matching the phrases; the result becomes a "matches" layer."""
        return self._guarded(self._run_find)

    def _run_find(self) -> EngineTask:
        layer, params = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        scope = self.scope()
        if scope == "regions":  # search inside the drawn rectangles (as Heatmap and Classify tiles do)
            params["within"] = self._regions_file(layer)
        else:
            params["bounds"] = self._bounds(layer)
        out = layers.output_path("matches", layer.name(), ".gpkg")
        params.update(phrases=phrases, out=str(out), min_score=float(self.min_score.value()),
                      max_results=int(self.max_results.value()), refine=bool(self.refine.isChecked()),
                      write_empty=False, metadata={"client": "qgis", "scope": scope, "raster_layer": layer.name()})
        title = f"{', '.join(phrases)[:60]} ({layer.name()})"
        return self._start("Finding objects", "find", params, lambda t: self._vector_done(t, title, "matches", layer))

    def run_match_regions(self) -> EngineTask | None:
        """Score each drawn region against the phrases; table + "regions" layer."""
        return self._guarded(self._run_match_regions)

    def _run_match_regions(self) -> EngineTask:
        layer, params = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        out = layers.output_path("regions", layer.name(), ".gpkg")
        params.update(regions=self._regions_file(layer), phrases=phrases, out=str(out), write_empty=False,
                      metadata={"client": "qgis", "regions": "drawn on the map", "raster_layer": layer.name()})
        self._match_phrases = phrases
        title = f"regions: {', '.join(phrases)[:50]} ({layer.name()})"
        return self._start("Matching regions", "match_regions", params,
                           lambda t: self._vector_done(t, title, "regions", layer))

    def run_tile_classify(self) -> EngineTask | None:
        """Label every tile with the most probable phrase (none typed: the built-in vocabulary)."""
        return self._guarded(self._run_tile_classify)

    def _run_tile_classify(self) -> EngineTask:
        layer, params = self._prepare()
        classes = self.phrases() or None
        params["bounds"] = self._bounds(layer)
        params["overlap"] = 0.0  # tiles side by side: a partition of the raster (the CLI's default)
        out = layers.output_path("tiles", layer.name(), ".gpkg")
        params.update(classes=classes, out=str(out), metadata={"client": "qgis", "scope": self.scope(),
                                                              "raster_layer": layer.name()})
        what = ", ".join(classes)[:50] if classes else "built-in classes"
        title = f"{layer.name()} tiles: {what}"
        return self._start("Classifying tiles", "tile_classify", params,
                           lambda t: self._vector_done(t, title, "tiles", layer))

    def run_heatmap(self, phrase: str | None = None) -> EngineTask | None:
        """Score heatmap of ``phrase`` (default: the first typed phrase)."""
        return self._guarded(self._run_heatmap, phrase)

    def _run_heatmap(self, phrase: str | None) -> EngineTask:
        layer, params = self._prepare()
        phrase = phrase or next(iter(self.phrases()), None)
        if not phrase:
            raise UserError("type a phrase")
        params["bounds"] = self._bounds(layer)
        out = layers.output_path(f"heatmap_{layers.slug(phrase, 20)}", layer.name(), ".tif")
        params.update(phrase=phrase, out=str(out), values="score",
                      metadata={"client": "qgis", "scope": self.scope(), "raster_layer": layer.name()})
        return self._start(f"Heatmap of '{phrase}'", "heatmap", params,
                           lambda t: self._heatmap_done(t, phrase, layer.name()))

    def cancel(self) -> None:
        if self.task is not None:
            self._set_status("Cancelling…")
            self.task.cancel()

    # ---------------------------------------------------------------------------- results
    def _finish(self, task: EngineTask, layer: QgsRasterLayer | None = None) -> bool:
        """Common end of a task; True when there is a result to show."""
        if task is self.task:
            self.task = None
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

    def _vector_done(self, task: EngineTask, title: str, kind: str, raster: QgsRasterLayer) -> None:
        if not self._finish(task, raster):
            return
        result = task.result or {}
        if not result.get("path"):  # nothing found: no empty layer in the project
            self.last_layer, self.last_output = None, None
            self.table.clear_results()
            hint = " (lower Min score, or search a larger area)" if kind == "matches" else ""
            self._set_status(f"No {'objects' if kind == 'matches' else 'regions'} found{hint}")
            self.runFinished.emit("ok")
            return
        path = Path(result["path"])
        try:
            layer = layers.load_vector(path, kind, title)
        except RuntimeError as exc:
            self._set_status(str(exc), error=True)
            self.runFinished.emit("error")
            return
        self.last_layer, self.last_output = layer, path
        n = layer.featureCount()
        if kind == "regions":
            meta = result.get("metadata") or {}
            self.table.show_regions(layer, meta.get("phrases") or self._match_phrases, meta.get("phrase_columns"))
        elif kind == "tiles":
            self.table.show_tiles(layer)
        else:
            self.table.show_matches(layer)
        secs = time.monotonic() - self._t0
        what = {"matches": "objects", "regions": "regions", "tiles": "tiles"}[kind]
        self._set_status(f"{n} {what} in {secs:.1f} s (saved in {path.parent.name}/; hover for the file)")
        self.status.setToolTip(str(path))
        push_message(self.iface, "GeoAlign", f"{n} {what}: {title.split(': ', 1)[-1] if kind != 'matches' else title}",
                     MSG_SUCCESS if n else MSG_INFO, 5)
        self.runFinished.emit("ok")

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
        for task in (self.task, self.models_task):
            if task is not None:
                task.on_done = None
                task.cancel()
        self.task = self.models_task = None
        self.setup_panel.dispose()
        project = QgsProject.instance()
        for signal, slot in ((project.layersAdded, self._layers_changed), (project.readProject, self._layers_changed),
                             (project.layersWillBeRemoved, self._layers_removed),
                             (project.cleared, self._project_cleared)):
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        if self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)
        self.map_tool.dispose()
        self.table.dispose()


__all__ = ["GeoAlignDock", "UserError", "raster_file", "split_phrases"]
