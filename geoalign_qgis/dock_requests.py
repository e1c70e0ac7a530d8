"""The dock's requests: what the form says, as engine requests run in QgsTasks.

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock`: the ``run_*`` methods check the form
(:class:`UserError` in the status line), build the parameters of the engine request
(``docs/engine_protocol.md``) and start an :class:`~geoalign_qgis.tasks.EngineTask` whose end
the dock shows (``_vector_done``, ``_heatmap_done``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRasterLayer, QgsRectangle

from . import layers
from .inputs import InputProblem, check_phrase_count, parse_bands, raster_path
from .tasks import EngineTask, engine_location
from .vector_io import write_rectangles

UserError = InputProblem  # something the analyst has to fix in the dock (shown in the status line)


class DockRequests:
    """Engine requests from the dock's form (mixin, see the module docstring)."""

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
        bands = parse_bands(self.bands_edit.text())
        if bands:
            kw["bands"] = bands
        return kw

    def _prepare(self) -> tuple[QgsRasterLayer, dict[str, Any]]:
        """Checks shared by every run; the request parameters common to all of them."""
        self._collection_only_find()
        if self.is_running():
            raise UserError("a GeoAlign task is already running")
        if not engine_location().found:
            self.setup_panel.refresh()
            raise UserError("GeoAlign is not set up yet: press 'Set up GeoAlign' above "
                            "(or choose an existing environment)")
        layer = self.raster_layer()
        path = raster_path(layer)
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
        if self.collection is not None:
            return self._run_collection_find()
        layer, params = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        check_phrase_count(phrases)
        scope = self.scope()
        drawn = 0
        if scope == "regions":  # search inside the drawn rectangles (as Heatmap and Classify tiles do)
            params["within"] = self._regions_file(layer)
            drawn = self.map_tool.count()
        else:
            params["bounds"] = self._bounds(layer)
        out = layers.output_path("matches", layer.name(), ".gpkg")
        params = self.with_index(params)
        params.update(phrases=phrases, out=str(out), min_score=float(self.min_score.value()),
                      max_results=int(self.max_results.value()), refine=bool(self.refine.isChecked()),
                      write_empty=False, metadata={"client": "qgis", "scope": scope, "raster_layer": layer.name()},
                      **self.object_size_param())
        title = f"{', '.join(phrases)[:60]} ({layer.name()})"
        return self._start("Finding objects", "find", params,
                           lambda t: self._vector_done(t, title, "matches", layer, drawn))

    def object_size_param(self) -> dict[str, Any]:
        """``{"object_size": metres}`` when the dock's Object size is set (0: the model's own sizes)."""
        value = float(self.object_size.value())
        return {"object_size": value} if value > 0 else {}

    def run_match_regions(self) -> EngineTask | None:
        """Score each drawn region against the phrases; table + "regions" layer."""
        return self._guarded(self._run_match_regions)

    def _run_match_regions(self) -> EngineTask:
        layer, params = self._prepare()
        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        out = layers.output_path("regions", layer.name(), ".gpkg")
        params = self.with_index(params)
        params.update(regions=self._regions_file(layer), phrases=phrases, out=str(out), write_empty=False,
                      metadata={"client": "qgis", "regions": "drawn on the map", "raster_layer": layer.name()})
        self._match_phrases = phrases
        title = f"regions: {', '.join(phrases)[:50]} ({layer.name()})"
        drawn = self.map_tool.count()
        return self._start("Matching regions", "match_regions", params,
                           lambda t: self._vector_done(t, title, "regions", layer, drawn))

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
        params = self.with_index(params)
        params.update(phrase=phrase, out=str(out), values="score",
                      metadata={"client": "qgis", "scope": self.scope(), "raster_layer": layer.name()})
        return self._start(f"Heatmap of '{phrase}'", "heatmap", params,
                           lambda t: self._heatmap_done(t, phrase, layer.name()))

    def cancel(self) -> None:
        if self.task is not None:
            self._set_status("Cancelling…")
            self.task.cancel()
