"""The "Find objects by text" dock: raster, model, phrases, scope, threshold -> result layers.

Everything slow runs in a :class:`~geoalign_qgis.tasks.GeoAlignTask`; the worker thread
receives plain Python values only (paths, numbers, a GeoDataFrame), never a Qt object.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import deps, layers
from .compat import MSG_CRITICAL, MSG_INFO, MSG_SUCCESS, MSG_WARNING, push_message, raster_layer_filter
from .convert import Records, gdf_from_records, records_from_geometries
from .map_tool import RegionsMapTool
from .tasks import PREDICTORS, GeoAlignTask, remove_outputs

DEFAULT_MODEL = "geoalign-demo"
SCOPES = (("view", "Current map view"), ("layer", "Whole layer"), ("regions", "Regions drawn on the map"))
DEFAULT_MIN_SCORE = 0.3  # geoalign_core.inference.DEFAULT_MIN_SCORE (read when importable)
DEFAULT_MAX_RESULTS = 100
DEFAULT_OVERLAP = 0.25
ROLE = Qt.ItemDataRole.UserRole
SETTINGS = "geoalign/dock"


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


def raster_file(layer: QgsRasterLayer) -> str:
    """The file behind a raster layer, or UserError (GeoAlign reads files with rasterio)."""
    if layer is None or not layer.isValid():
        raise UserError("choose a raster layer")
    if layer.providerType() != "gdal":
        raise UserError(f"{layer.name()}: GeoAlign reads raster files; this layer comes from '{layer.providerType()}'")
    path = layer.source().split("|")[0]
    if not Path(path).is_file():
        raise UserError(f"{layer.name()}: the source is not a local file ({path})")
    return path


def model_choices() -> list[tuple[str, str, str]]:
    """``(name, label, tooltip)`` for the zoo; label says whether it works offline."""
    from geoalign_core import zoo

    out = []
    for name, entry in zoo.ZOO.items():
        if zoo.is_available(name):
            state = "available offline"
        elif entry.repo is None:
            state = "weights missing"
        else:
            state = "downloads on first use"
        out.append((name, f"{name}  ({state})", f"{entry.description}\n{state}: {zoo.weights_path(entry)}"))
    return out


class GeoAlignDock(QgsDockWidget):
    """Find objects by text, match drawn regions, show heatmaps."""

    runFinished = pyqtSignal(str)  # noqa: N815  "ok" | "cancelled" | "error"

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__("GeoAlign: find objects by text", parent)
        self.setObjectName("GeoAlignDock")
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.task: GeoAlignTask | None = None
        self.last_task: GeoAlignTask | None = None
        self.last_layer: QgsMapLayer | None = None
        self.last_output: Path | None = None
        self.map_tool = RegionsMapTool(self.canvas)
        self.map_tool.regionsChanged.connect(self._regions_changed)
        self._previous_tool = None
        self.deps_status = deps.check()
        self._build()
        self._populate_models()
        self._restore_settings()
        self._update_buttons()

    # ---------------------------------------------------------------------------- UI
    def _build(self) -> None:
        body = QWidget(self)
        outer = QVBoxLayout(body)

        self.deps_label = QLabel(self.deps_status.message())
        self.deps_label.setWordWrap(True)
        self.deps_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.deps_label.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; padding: 4px; }")
        self.deps_label.setVisible(not self.deps_status.ok)
        outer.addWidget(self.deps_label)

        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(raster_layer_filter())
        self.layer_combo.setAllowEmptyLayer(False)
        form.addRow("Raster", self.layer_combo)

        self.model_combo = QComboBox(body)
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_combo.setToolTip(
            "A model of the zoo, an open_clip architecture, hf-hub:org/repo, or a checkpoint file"
        )
        browse = QToolButton(body)
        browse.setText("…")
        browse.setToolTip("Choose a checkpoint file (.safetensors, .pt)")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(browse)
        form.addRow("Model", row)

        self.phrase_edit = QPlainTextEdit(body)
        self.phrase_edit.setPlaceholderText("one phrase per line, e.g.\nred car\nswimming pool")
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
        form.addRow("Max results", self.max_results)

        self.refine = QCheckBox("Refine boxes (look again at 2x zoom)", body)
        self.refine.setChecked(True)
        self.refine.setToolTip("Each found box is looked at again at twice the zoom and moved to a better placed "
                               "box when that scores at least as high (tighter boxes on small objects; the CLI's "
                               "default, --no-refine there)")
        form.addRow("", self.refine)
        outer.addLayout(form)

        regions = QHBoxLayout()
        self.draw_button = QPushButton("Draw regions", body)
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip("Drag rectangles on the map; right click removes the last one")
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
        advanced.setCollapsed(True)
        advanced.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        outer.addWidget(advanced)

        buttons = QHBoxLayout()
        self.find_button = QPushButton("Find", body)
        self.find_button.setToolTip("Find objects matching the phrases")
        self.find_button.clicked.connect(self.run_find)
        self.match_button = QPushButton("Match regions", body)
        self.match_button.setToolTip("Score each drawn region against the phrases")
        self.match_button.clicked.connect(self.run_match_regions)
        self.heatmap_button = QPushButton("Show heatmap", body)
        self.heatmap_button.setToolTip("Similarity map of the selected result's phrase (else the first phrase)")
        self.heatmap_button.clicked.connect(lambda: self.run_heatmap())
        self.cancel_button = QPushButton("Cancel", body)
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.find_button, self.match_button, self.heatmap_button, self.cancel_button):
            buttons.addWidget(b)
        outer.addLayout(buttons)

        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        outer.addWidget(self.progress)
        self.status = QLabel("Ready", body)
        self.status.setWordWrap(True)
        outer.addWidget(self.status)

        self.table = QTableWidget(0, 3, body)
        self.table.setHorizontalHeaderLabels(["Phrase", "Score", "Rank"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setToolTip("Double-click a row to zoom to it")
        self.table.cellDoubleClicked.connect(lambda row, _col: self.zoom_to_row(row))
        self.table.itemSelectionChanged.connect(self._select_rows)
        outer.addWidget(self.table, 1)
        self.setWidget(body)

    def _populate_models(self) -> None:
        self.model_combo.clear()
        if self.deps_status.ok:
            try:
                for name, label, tip in model_choices():
                    self.model_combo.addItem(label, name)
                    self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
            except Exception as exc:  # broken install: the dock still opens
                self.deps_label.setText(f"GeoAlign cannot list its models: {exc}")
                self.deps_label.setVisible(True)
        self.set_model(DEFAULT_MODEL)
        if self.deps_status.ok:
            try:
                from geoalign_core import inference

                self.min_score.setValue(float(inference.DEFAULT_MIN_SCORE))
                self.max_results.setValue(int(inference.DEFAULT_MAX_RESULTS))
            except Exception:  # the dock keeps its own defaults
                pass

    def _restore_settings(self) -> None:
        st = QgsSettings()
        model = st.value(f"{SETTINGS}/model", "", type=str)
        if model:
            self.set_model(model)
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
        refine = st.value(f"{SETTINGS}/refine", None)
        if refine not in (None, ""):
            self.refine.setChecked(str(refine).lower() in ("true", "1"))

    def _save_settings(self) -> None:
        st = QgsSettings()
        st.setValue(f"{SETTINGS}/model", self.model_name())
        st.setValue(f"{SETTINGS}/device", self.device_combo.currentText())
        st.setValue(f"{SETTINGS}/min_score", float(self.min_score.value()))
        st.setValue(f"{SETTINGS}/max_results", int(self.max_results.value()))
        st.setValue(f"{SETTINGS}/refine", bool(self.refine.isChecked()))

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
        for b in (self.find_button, self.match_button, self.heatmap_button):
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

    def _common(self, layer: QgsRasterLayer) -> dict[str, Any]:
        """Keyword arguments every Predictor run method takes, from the dock (main thread)."""
        kw = self._common_no_scope()
        scope = self.scope()
        if scope == "view":
            kw["bounds"] = self._view_bounds(layer)
        elif scope == "regions":
            boxes = self.map_tool.region_boxes(layer.crs())
            if not boxes:
                raise UserError("draw one or more regions on the map first (Draw regions)")
            union = QgsRectangle(boxes[0])
            for b in boxes[1:]:
                union.combineExtentWith(b)
            kw["bounds"] = self._clip_to_layer(union, layer, "the drawn regions")
        return kw

    def _view_bounds(self, layer: QgsRasterLayer) -> tuple[float, float, float, float]:
        settings = self.canvas.mapSettings()
        extent = settings.visibleExtent()
        src = settings.destinationCrs()
        if src.isValid() and layer.crs().isValid() and src != layer.crs():
            extent = QgsCoordinateTransform(src, layer.crs(), QgsProject.instance()).transformBoundingBox(extent)
        return self._clip_to_layer(extent, layer, "the map view")

    @staticmethod
    def _clip_to_layer(rect: QgsRectangle, layer: QgsRasterLayer, what: str) -> tuple[float, float, float, float]:
        inter = rect.intersect(layer.extent())
        if inter.isEmpty() or inter.width() <= 0 or inter.height() <= 0:
            raise UserError(f"{what} does not overlap {layer.name()}")
        return (inter.xMinimum(), inter.yMinimum(), inter.xMaximum(), inter.yMaximum())

    def _regions(self, layer: QgsRasterLayer) -> Records:
        """The drawn regions in the raster's CRS, as plain records (the worker makes the GeoDataFrame)."""
        geoms = self.map_tool.regions(layer.crs())
        if not geoms:
            raise UserError("draw one or more regions on the map first (Draw regions)")
        return records_from_geometries(geoms, layer.crs())

    # ---------------------------------------------------------------------------- runs
    def _prepare(self) -> tuple[QgsRasterLayer, str, dict[str, Any]]:
        if self.is_running():
            raise UserError("a GeoAlign task is already running")
        if not self.deps_status.ok:
            raise UserError(self.deps_status.message())
        layer = self.raster_layer()
        path = raster_file(layer)
        model = self.model_name()
        if not model:
            raise UserError("choose a model")
        self._save_settings()
        return layer, path, {"model": model, "device": self.device_combo.currentText(),
                             "batch_size": int(self.batch_size.value())}

    def _start(self, description: str, job: Any, on_done: Any, outputs: list[Path]) -> GeoAlignTask:
        self.task = GeoAlignTask(description, job, on_done, outputs)
        self.last_task = self.task
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self.progress.setValue(0)
        self._t0 = time.monotonic()
        self._set_status(f"{description}…")
        self._update_buttons()
        return self.task.start()

    def _guarded(self, fn: Any, *args: Any) -> GeoAlignTask | None:
        try:
            return fn(*args)
        except UserError as exc:
            self._set_status(str(exc), error=True)
            return None

    def run_find(self) -> GeoAlignTask | None:
        """Find objects matching the phrases; the result becomes a "matches" layer."""
        return self._guarded(self._run_find)

    def _run_find(self) -> GeoAlignTask:
        layer, raster, load = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        common = self._common(layer)
        regions = None
        if self.scope() == "regions":
            regions = self._regions(layer)
            common.pop("bounds", None)
        min_score, max_results = float(self.min_score.value()), int(self.max_results.value())
        refine = bool(self.refine.isChecked())
        scope = self.scope()
        out = layers.output_path("matches", layer.name(), ".gpkg")

        def job(task: GeoAlignTask) -> Path:
            from geoalign_core.geo import write_geopackage

            if regions is not None:
                common["regions"] = gdf_from_records(regions)
            with PREDICTORS.use(**load) as predictor:
                gdf = predictor.find(raster, phrases, min_score=min_score, max_results=max_results, refine=refine,
                                     progress=task.report, cancel=task.cancelled, **common)
                meta = dict(gdf.attrs.get("geoalign") or predictor.run_metadata("find", phrases=phrases))
            if task.cancelled():
                return out
            meta.update(raster=raster, scope=scope, client="qgis")
            write_geopackage(gdf, out, "matches", metadata=meta)
            task.count = len(gdf)
            return out

        title = f"{', '.join(phrases)[:60]} ({layer.name()})"
        return self._start("Finding objects", job, lambda t: self._find_done(t, title, "matches", "phrase"), [out])

    def run_match_regions(self) -> GeoAlignTask | None:
        """Score each drawn region against the phrases; table + "regions" layer."""
        return self._guarded(self._run_match_regions)

    def _run_match_regions(self) -> GeoAlignTask:
        layer, raster, load = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        regions = self._regions(layer)
        common = self._common_no_scope()
        out = layers.output_path("regions", layer.name(), ".gpkg")

        def job(task: GeoAlignTask) -> Path:
            from geoalign_core.geo import write_geopackage

            with PREDICTORS.use(**load) as predictor:
                gdf = predictor.match_regions(raster, gdf_from_records(regions), phrases, progress=task.report,
                                              cancel=task.cancelled, **common)
                meta = dict(gdf.attrs.get("geoalign") or predictor.run_metadata("match-regions", phrases=phrases))
            if task.cancelled():
                return out
            meta.update(raster=raster, regions="drawn on the map", client="qgis")
            write_geopackage(gdf, out, "regions", metadata=meta)
            task.count = len(gdf)
            return out

        title = f"regions: {', '.join(phrases)[:50]} ({layer.name()})"
        self._match_phrases = phrases
        return self._start("Matching regions", job, lambda t: self._find_done(t, title, "regions", "best_phrase"),
                           [out])

    def _common_no_scope(self) -> dict[str, Any]:
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

    def run_heatmap(self, phrase: str | None = None) -> GeoAlignTask | None:
        """Similarity heatmap of one phrase (the selected result's, else the first)."""
        return self._guarded(self._run_heatmap, phrase)

    def _run_heatmap(self, phrase: str | None) -> GeoAlignTask:
        layer, raster, load = self._prepare()
        phrase = phrase or self._selected_phrase() or next(iter(self.phrases()), None)
        if not phrase:
            raise UserError("type a phrase")
        common = self._common(layer)
        out = layers.output_path(f"heatmap_{layers.slug(phrase, 20)}", layer.name(), ".tif")

        def job(task: GeoAlignTask) -> Path:
            with PREDICTORS.use(**load) as predictor:
                return Path(predictor.heatmap(raster, phrase, out, overwrite=False, progress=task.report,
                                              cancel=task.cancelled, **common))

        return self._start(f"Heatmap of '{phrase}'", job, lambda t: self._heatmap_done(t, phrase, layer.name()),
                           [out])

    def cancel(self) -> None:
        if self.task is not None:
            self._set_status("Cancelling…")
            self.task.cancel()

    # ---------------------------------------------------------------------------- results
    def _finish(self, task: GeoAlignTask) -> bool:
        """Common end of a task; True when there is a result to show."""
        if task is self.task:
            self.task = None
        self._update_buttons()
        if task.was_cancelled:
            self.progress.setValue(0)
            self._set_status("Cancelled; nothing was written")
            self.runFinished.emit("cancelled")
            return False
        if task.error or task.result is None:
            self._set_status(task.error or "failed (see the GeoAlign log)", error=True, level=MSG_CRITICAL)
            self.runFinished.emit("error")
            return False
        self.progress.setValue(100)
        return True

    def _find_done(self, task: GeoAlignTask, title: str, layer_name: str, label_field: str) -> None:
        if not self._finish(task):
            return
        path = Path(task.result)
        if getattr(task, "count", None) == 0:  # no empty layers in the project
            remove_outputs([path])
            self.last_layer, self.last_output = None, None
            self.table.setRowCount(0)
            hint = " (lower Min score, or search a larger area)" if layer_name == "matches" else ""
            self._set_status(f"No {'objects' if layer_name == 'matches' else 'regions'} found{hint}")
            self.runFinished.emit("ok")
            return
        try:
            layer = layers.load_vector(path, layer_name, title, label_field=label_field)
        except RuntimeError as exc:
            self._set_status(str(exc), error=True)
            self.runFinished.emit("error")
            return
        self.last_layer, self.last_output = layer, path
        n = layer.featureCount()
        if layer_name == "regions":
            self._fill_regions_table(layer, self._match_phrases)
        else:
            self._fill_matches_table(layer)
        secs = time.monotonic() - self._t0
        what = "objects" if layer_name == "matches" else "regions"
        self._set_status(f"{n} {what} in {secs:.1f} s: {path.name}")
        self.status.setToolTip(str(path))
        push_message(self.iface, "GeoAlign", f"{n} {what}: {title}", MSG_SUCCESS if n else MSG_INFO, 5)
        self.runFinished.emit("ok")

    def _heatmap_done(self, task: GeoAlignTask, phrase: str, raster_name: str) -> None:
        if not self._finish(task):
            return
        path = Path(task.result)
        try:
            layer = layers.load_heatmap(path, f"heatmap: {phrase} ({raster_name})")
        except RuntimeError as exc:
            self._set_status(str(exc), error=True)
            self.runFinished.emit("error")
            return
        self.last_layer, self.last_output = layer, path
        self._set_status(f"Heatmap of '{phrase}' in {time.monotonic() - self._t0:.1f} s: {path.name}")
        self.status.setToolTip(str(path))
        self.runFinished.emit("ok")

    def _fill_matches_table(self, layer: QgsVectorLayer) -> None:
        feats = sorted(layer.getFeatures(), key=lambda f: -float(f["score"] or 0))
        self.table.clear()
        self.table.setColumnCount(3)
        self.table.setHorizontalHeaderLabels(["Phrase", "Score", "Rank"])
        self.table.setRowCount(len(feats))
        for row, f in enumerate(feats):
            cells = [str(f["phrase"]), f"{float(f['score']):.3f}", str(f["rank"])]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(ROLE, (layer.id(), f.id()))
                self.table.setItem(row, col, item)

    def _fill_regions_table(self, layer: QgsVectorLayer, phrases: list[str]) -> None:
        names = [f.name() for f in layer.fields()]
        extra = [n for n in names if n not in ("fid", "region", "best_phrase", "score")]
        per_phrase = [n for n in extra if n in phrases] or extra
        headers = ["Region", "Best phrase", "Score", *per_phrase]
        self.table.clear()
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        feats = list(layer.getFeatures(QgsFeatureRequest()))
        self.table.setRowCount(len(feats))
        for row, f in enumerate(feats):
            region = f["region"] if "region" in names else f.id()
            cells = [str(region), str(f["best_phrase"]), _fmt(f["score"])] + [_fmt(f[n]) for n in per_phrase]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(ROLE, (layer.id(), f.id()))
                self.table.setItem(row, col, item)

    def _selected_phrase(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows or self.table.columnCount() < 2:
            return None
        col = 0 if self.table.horizontalHeaderItem(0).text() == "Phrase" else 1
        item = self.table.item(rows[0].row(), col)
        return item.text() if item else None

    def _select_rows(self) -> None:
        """Selecting result rows selects their features on the map."""
        picked: dict[str, list[int]] = {}
        for index in self.table.selectionModel().selectedRows():
            item = self.table.item(index.row(), 0)
            if item is not None and item.data(ROLE):
                layer_id, fid = item.data(ROLE)
                picked.setdefault(layer_id, []).append(fid)
        for layer_id, fids in picked.items():
            layer = QgsProject.instance().mapLayer(layer_id)
            if isinstance(layer, QgsVectorLayer):
                layer.selectByIds(fids)

    def zoom_to_row(self, row: int) -> QgsRectangle | None:
        """Zoom the canvas to the feature of a result row; returns the new extent."""
        item = self.table.item(row, 0)
        if item is None:
            return None
        layer_id, fid = item.data(ROLE)
        layer = QgsProject.instance().mapLayer(layer_id)
        if layer is None:
            return None
        feat = layer.getFeature(fid)
        geom = QgsGeometry(feat.geometry())
        dst = self.canvas.mapSettings().destinationCrs()
        if dst.isValid() and layer.crs().isValid() and dst != layer.crs():
            geom.transform(QgsCoordinateTransform(layer.crs(), dst, QgsProject.instance()))
        box = geom.boundingBox()
        box.scale(3.0)
        self.canvas.setExtent(box)
        self.canvas.refresh()
        try:
            self.canvas.flashGeometries([feat.geometry()], layer.crs())
        except (AttributeError, TypeError):
            pass
        return box

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
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        if self.canvas.mapTool() is self.map_tool:
            self.canvas.unsetMapTool(self.map_tool)
        self.map_tool.dispose()


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.3f}"
    except (TypeError, ValueError):
        return "" if v is None else str(v)


__all__ = ["GeoAlignDock", "UserError", "model_choices", "raster_file", "split_phrases"]
