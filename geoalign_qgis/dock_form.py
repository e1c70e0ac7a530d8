"""The dock's form: its widgets, their values and settings, and the raster combo.

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock` (the dock builds, reads and remembers its
fields here; :mod:`.dock_requests` turns them into engine requests; the dock itself shows the
results).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
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
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import layers
from .compat import raster_layer_filter
from .inputs import DEFAULT_MODEL, split_texts
from .protocol import DEFAULT_BATCH_SIZE, DEFAULT_MIN_SCORE
from .results import ResultsTable
from .setup_panel import SetupPanel
from .widgets import ElideLabel, WrapLabel, push_button

SCOPES = (("view", "Current map view"), ("layer", "Whole layer"), ("regions", "Regions drawn on the map"))
DEFAULT_MAX_RESULTS = 100
DEFAULT_OVERLAP = 0.25
SETTINGS = "geoalign/dock"


class DockForm:
    """The fields of the dock (mixin: the dock provides ``iface``, ``canvas``, ``map_tool``, ``task``)."""

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
        self.model_state = WrapLabel("", body)
        self.model_state.setStyleSheet("QLabel { color: #666; }")
        self.model_state.setWordWrap(True)
        self.model_state.setMinimumWidth(1)
        form.addRow("", self.model_state)
        self.index_state = ElideLabel("", body)  # one line beside the button, cut with "…" (all of it: hover)
        self.index_state.setStyleSheet("QLabel { color: #666; }")
        index_row = QHBoxLayout()
        index_row.addWidget(self.index_state, 1)
        index_row.addWidget(self._build_collection_button(body), 0, Qt.AlignmentFlag.AlignVCenter)
        form.addRow("Index", index_row)

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
        self.min_score.setToolTip("Keep objects whose score is at least this. A score is the estimated probability "
                                  "that the object is right (calibrated on held-out labelled data, see the model's "
                                  "line above): 0.5 = probably right")
        form.addRow("Min score", self.min_score)

        self.max_results = QSpinBox(body)
        self.max_results.setRange(1, 100000)
        self.max_results.setValue(DEFAULT_MAX_RESULTS)
        self.max_results.setToolTip("Best results kept per phrase")
        form.addRow("Max results", self.max_results)

        self.object_size = QDoubleSpinBox(body)
        self.object_size.setRange(0.0, 10000.0)
        self.object_size.setDecimals(1)
        self.object_size.setSingleStep(1.0)
        self.object_size.setSuffix(" m")
        self.object_size.setSpecialValueText("model's sizes")
        self.object_size.setToolTip("The objects' typical side in metres (e.g. 5 for cars, 15 for houses): boxes of "
                                    "about that size are searched and kept. 0: the sizes a fine-tuned model learnt "
                                    "for its classes, else any size (the CLI's --object-size)")
        form.addRow("Object size", self.object_size)

        self.refine = QCheckBox("Refine boxes at 2x zoom", body)
        self.refine.setChecked(True)
        self.refine.setToolTip("Each found box is looked at again at twice the zoom and moved to a better placed "
                               "box when that scores at least as high (tighter boxes on small objects; the CLI's "
                               "default, --no-refine there)")
        form.addRow(self.refine)  # spans both columns: the dock stays narrow
        self.as_you_type = QCheckBox("Answer as I type (from the index)", body)
        self.as_you_type.setChecked(True)
        self.as_you_type.setToolTip("With an index of the raster, the phrases are searched a moment after typing "
                                    "stops; each answer replaces the last ('as you type' layer)")
        form.addRow(self.as_you_type)
        self.similar_with_text = QCheckBox("Find similar: steer with the first phrase", body)
        self.similar_with_text.setToolTip("e.g. a box around a blue car and the phrase 'red car': cars like it, "
                                          "but red")
        form.addRow(self.similar_with_text)
        outer.addLayout(form)

        regions = QHBoxLayout()
        self.draw_button = push_button(
            "Draw regions", body, self._toggle_tool,
            "Drag rectangles on the map (numbered as the rows of Match regions); "
            "right click removes the last one", toggle=True)
        self.clear_button = push_button("Clear", body, self.map_tool.clear)
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
        self.batch_size.setValue(DEFAULT_BATCH_SIZE)
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
        self.label_boxes = QCheckBox("Label the boxes (beside them)", advanced)
        self.label_boxes.setChecked(layers.labels_wanted())
        self.label_boxes.setToolTip("Result boxes get their phrase as a label, placed beside the box so that it "
                                    "never hides a small object (shown when zoomed in)")
        self.label_boxes.toggled.connect(lambda on: QgsSettings().setValue(layers.SETTINGS_LABELS, bool(on)))
        adv.addRow(self.label_boxes)
        advanced.setCollapsed(True)
        advanced.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        outer.addWidget(advanced)
        outer.addWidget(self._build_finetune(body))

        buttons = QGridLayout()
        self.find_button = push_button("Find", body, self.run_find, "Find objects matching the phrases")
        self.match_button = push_button(
            "Match regions", body, self.run_match_regions,
            "Score each drawn region against the phrases")
        self.heatmap_button = push_button(
            "Show heatmap", body, lambda: self.run_heatmap(),
            "Score map of the first typed phrase (0..1, as the boxes' scores)")
        self.classify_button = push_button(
            "Classify tiles", body, self.run_tile_classify,
            "Label every tile (side by side, no overlap) with the most probable of the "
            "typed phrases (none typed: a built-in remote-sensing vocabulary)")
        self.similar_button = push_button(
            "Find similar", body, self._toggle_similar,
            "Drag a box around one object on the map: the others like it are found "
            "(from the index when the raster has one)", toggle=True)
        self.index_button = push_button(
            "Index this raster", body, self.run_index,
            "Embed the raster once (in the background): afterwards phrases, heatmaps and "
            "Find similar are answered from the index in under a second. A cancelled "
            "indexing continues where it stopped.")
        self.cancel_button = push_button("Cancel", body, self.cancel)
        buttons.addWidget(self.find_button, 0, 0)
        buttons.addWidget(self.match_button, 0, 1)
        buttons.addWidget(self.heatmap_button, 1, 0)
        buttons.addWidget(self.classify_button, 1, 1)
        buttons.addWidget(self.similar_button, 2, 0)
        buttons.addWidget(self.index_button, 2, 1)
        self.help_button = push_button("Help", body, self._open_help, "Open the GeoAlign user guide")
        buttons.addWidget(self.cancel_button, 3, 0)
        buttons.addWidget(self.help_button, 3, 1)
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

    def _show_model_state(self, *_: Any) -> None:
        name = self.model_name()
        entry = next((m for m in self.models if (m.get("source") or m["name"]) == name), None)
        if entry is not None:
            domain = entry.get("domain") or ""
            # the card's first clause ("trained on ...") and whether its scores are calibrated; the whole
            # line (calibrated on what, measured precision) is the tooltip
            short = domain.split(";")[0].split(": ", 1)[-1] if domain else ""
            if short:
                short += "; scores calibrated" if entry.get("calibrated") else "; uncalibrated scores"
            self.model_state.setText(f"{entry['state']}; {short}" if short else entry["state"])
            self.model_state.setToolTip(domain)
        elif name and Path(name).suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt"):
            self.model_state.setText("checkpoint file" + ("" if Path(name).is_file() else " (not found)"))
        elif self.models:
            self.model_state.setText("not in the zoo: an open_clip architecture or hf-hub:org/repo")

    # ---------------------------------------------------------------------------- settings
    def _restore_settings(self) -> None:
        st = QgsSettings()
        self.set_model(st.value(f"{SETTINGS}/model", "", type=str) or DEFAULT_MODEL)
        device = st.value(f"{SETTINGS}/device", "", type=str)
        if device in ("auto", "cpu", "cuda"):
            self.device_combo.setCurrentText(device)
        for key, box, cast in (("min_score", self.min_score, float), ("max_results", self.max_results, int),
                               ("object_size", self.object_size, float)):
            value = st.value(f"{SETTINGS}/{key}", None)
            if value not in (None, ""):
                try:
                    box.setValue(cast(value))
                except (TypeError, ValueError):
                    pass
        for key, box in (("refine", self.refine), ("allow_no_crs", self.allow_no_crs),
                         ("as_you_type", self.as_you_type)):
            value = st.value(f"{SETTINGS}/{key}", None)
            if value not in (None, ""):
                box.setChecked(str(value).lower() in ("true", "1"))

    def _save_settings(self) -> None:
        st = QgsSettings()
        st.setValue(f"{SETTINGS}/model", self.model_name())
        st.setValue(f"{SETTINGS}/device", self.device_combo.currentText())
        st.setValue(f"{SETTINGS}/min_score", float(self.min_score.value()))
        st.setValue(f"{SETTINGS}/max_results", int(self.max_results.value()))
        st.setValue(f"{SETTINGS}/object_size", float(self.object_size.value()))
        st.setValue(f"{SETTINGS}/refine", bool(self.refine.isChecked()))
        st.setValue(f"{SETTINGS}/allow_no_crs", bool(self.allow_no_crs.isChecked()))
        st.setValue(f"{SETTINGS}/as_you_type", bool(self.as_you_type.isChecked()))
        layer = self.raster_layer()
        if layer is not None:
            st.setValue(f"{SETTINGS}/raster_source", layer.source())

    # ---------------------------------------------------------------------------- the raster combo
    def _connect_project(self) -> None:
        project = QgsProject.instance()
        project.layersAdded.connect(self._layers_changed)
        project.layersAdded.connect(self._layers_added)
        project.readProject.connect(self._layers_changed)
        project.projectSaved.connect(self._project_saved)
        with contextlib.suppress(AttributeError, TypeError):  # a test iface may lack the signal
            self.iface.currentLayerChanged.connect(self._active_layer_changed)
        project.layersWillBeRemoved.connect(self._layers_removed)
        project.cleared.connect(self._project_cleared)
        self._layers_changed()

    def _project_saved(self) -> None:
        """Results made before the first save are offered a move next to the project (then saved again)."""
        from .project_files import move_results, results_outside

        if getattr(self, "_moving_results", False):
            return
        outside = results_outside()
        if not outside or not self.ask_move_results(len(outside), layers.output_dir()):
            return
        self._moving_results = True
        try:
            n = move_results(outside)
            QgsProject.instance().write()
        finally:
            self._moving_results = False
        self._set_status(f"Moved {n} GeoAlign result file{'s' if n != 1 else ''} to {layers.output_dir()}")

    def ask_move_results(self, n: int, folder: Path) -> bool:
        """Ask whether to move ``n`` results into ``folder`` (a test replaces this)."""
        from qgis.PyQt.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self, "GeoAlign results",
            f"{n} GeoAlign result layer{'s' if n != 1 else ''} of this project read files from the QGIS profile "
            f"(made before the project was saved). Move them into {folder}, next to the project?")
        return answer == QMessageBox.StandardButton.Yes

    def _layers_added(self, added: list[Any]) -> None:
        """The dock follows the user: a raster just added becomes the dock's raster."""
        rasters = [lyr for lyr in added if isinstance(lyr, QgsRasterLayer) and not layers.is_output(lyr)]
        if rasters:
            self.layer_combo.setLayer(rasters[-1])

    def _active_layer_changed(self, layer: Any) -> None:
        """... and so does selecting a raster in the Layers panel (GeoAlign's own outputs excepted)."""
        if (isinstance(layer, QgsRasterLayer) and not layers.is_output(layer)
                and QgsProject.instance().mapLayer(layer.id()) is not None):
            self.layer_combo.setLayer(layer)

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
    def _open_help(self) -> None:
        from .help import open_help

        open_help()

    def _browse_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Model checkpoint", "", "Checkpoints (*.safetensors *.pt *.pth *.bin *.ckpt);;All files (*)"
        )
        if path:
            self.set_model(path)

    def _toggle_tool(self, on: bool) -> None:
        self._use_map_tool(self.map_tool, self.draw_button, on)
        if on:
            self.scope_combo.setCurrentIndex(self.scope_combo.findData("regions"))

    def _use_map_tool(self, tool: Any, button: Any, on: bool) -> None:
        """``button`` (one of the map-drawing buttons) checked: ``tool`` becomes the map tool (the other
        buttons are unchecked, the map tool in use is remembered); unchecked: the remembered tool is back."""
        if on:
            for other in (self.draw_button, self.similar_button, self.ft_boxes_button):
                if other is not button:
                    other.setChecked(False)
            self._previous_tool = self.canvas.mapTool()
            self.canvas.setMapTool(tool)
        elif self.canvas.mapTool() is tool:
            if self._previous_tool is not None and self._previous_tool is not tool:
                self.canvas.setMapTool(self._previous_tool)
            else:
                self.canvas.unsetMapTool(tool)

    def _release_map_tool(self, tool: Any) -> None:
        """The dock closes: ``tool`` is no longer the canvas's map tool."""
        if self.canvas.mapTool() is tool:
            self.canvas.unsetMapTool(tool)

    def _regions_changed(self, n: int) -> None:
        self.regions_label.setText(f"{n} region{'s' if n != 1 else ''}")
        self._update_buttons()

    def _update_buttons(self) -> None:
        running = self.is_running()
        for b in (self.find_button, self.heatmap_button, self.classify_button, self.index_button,
                  self.finetune_button):
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
        return split_texts(self.phrase_edit.toPlainText())

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
