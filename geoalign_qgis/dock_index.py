"""The dock's scene index: "Index this raster", phrases answered as they are typed, and "Find similar".

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock`. Once the raster in the dock has an index
for the model in the dock (:mod:`.indexes` says where; the engine builds it in the background,
with progress, and a cancelled build resumes), Find, Match regions, Heatmap and Find similar
send the engine the index with the raster: only the text model runs, so a new phrase takes
well under a second. With "Answer as I type" ticked, the phrases are searched a moment after
typing stops; that result replaces the previous one (one "as you type" layer), and pressing
Find keeps a result as usual. "Find similar" is a map tool: drag a box around one object and
the others like it are found (from the index when there is one, else from the raster).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qgis.core import QgsCoordinateTransform, QgsProject, QgsRectangle, QgsSettings
from qgis.gui import QgsMapToolExtent
from qgis.PyQt.QtCore import QTimer

from . import indexes, layers
from .tasks import EngineTask, SideRequest, engine_location, profile_dir, remove_outputs
from .widgets import disconnect_all

SETTINGS_INDEX_PLACE = "geoalign/index_place"  #: a key of indexes.PLACES (Settings…)


def index_place() -> str:
    value = str(QgsSettings().value(SETTINGS_INDEX_PLACE, "project") or "project")
    return value if value in indexes.PLACES else "project"


def project_home() -> str | None:
    """The saved project's folder (None while the project is not saved)."""
    project = QgsProject.instance()
    return project.homePath() or None if project.fileName() else None


TYPING_DELAY_MS = 700  #: a phrase is searched this long after typing stops
#: typing never starts a search of more phrases than this (a pasted list): Find asks first
TYPED_MAX_PHRASES = 20


class DockIndex:
    """Index state, the index build, typed queries and Find similar (mixin, see the module docstring)."""

    def _init_index(self) -> None:
        self.index_file: Path | None = None  # an index usable for the dock's raster and model
        self.index_info: dict | None = None
        self.index_info_task: SideRequest | None = None
        self._index_key: tuple[str, str] | None = None  # (raster, model) of index_file
        self.typed_task: EngineTask | None = None
        self._typed_again = False  # typed text changed while its query ran: ask again when it ends
        self._typed_after_run = False  # typing stopped while a dock task ran: answer when the task ends
        self.typed_layer_id: str | None = None
        self.typed_file: Path | None = None
        self._typing_timer = QTimer(self)
        self._typing_timer.setSingleShot(True)
        self._typing_timer.setInterval(TYPING_DELAY_MS)
        self._typing_timer.timeout.connect(self._typed_query)
        self.phrase_edit.textChanged.connect(self._phrases_edited)
        self.layer_combo.layerChanged.connect(self._index_inputs_changed)
        self.model_combo.currentTextChanged.connect(self._index_inputs_changed)
        self.similar_tool = QgsMapToolExtent(self.canvas)
        self.similar_tool.extentChanged.connect(self._similar_drawn)

    def _index_inputs_changed(self, *_: Any) -> None:
        layer, model = self.raster_layer(), self.model_name()
        key = (layer.source() if layer is not None else "", model)
        if key == self._index_key and self.index_file is not None:
            return  # the combo re-announced the same raster (a result layer was added): nothing changed
        self.refresh_index()

    # ---------------------------------------------------------------------------- state
    def refresh_index(self) -> SideRequest | None:
        """Look for the index of the dock's raster and model, and ask the engine what it holds.

        While the engine checks it, the index found last for the same raster and model stays in use
        (typed phrases are answered meanwhile)."""
        if self.collection is not None:  # the Index line names the collection; Find searches it
            return None
        layer, model = self.raster_layer(), self.model_name()
        key = (layer.source() if layer is not None else "", model)
        if key != self._index_key:
            self.index_file, self.index_info, self._index_key = None, None, None
            self.index_state.setToolTip("")  # the path of the index of another raster or model
        if layer is None or not model:
            self.index_state.setText("no raster")
            return None
        try:
            raster = self._raster_file(layer)
        except Exception:  # noqa: BLE001 - not a file-based raster: nothing to index
            self.index_state.setText("this raster cannot be indexed (not a file)")
            return None
        path = indexes.existing_index(raster, model, profile_dir())
        if path is None:
            self.index_file, self.index_info, self._index_key = None, None, None
            self.index_state.setText("not indexed: 'Index this raster' answers phrases in under a second")
            return None
        if not engine_location().found:
            self.index_state.setText(f"{path.name} (set GeoAlign up to use it)")
            return None
        if self.index_file is None:
            self.index_state.setText("checking the index…")
        if self.index_info_task is not None:
            self.index_info_task.on_done = None
            self.index_info_task.cancel()
        self.index_info_task = SideRequest("Checking the GeoAlign index", "index_info", {"index": str(path)},
                                           lambda t: self._index_checked(t, path, key))
        return self.index_info_task.start()

    def _index_checked(self, task: SideRequest, path: Path, key: tuple[str, str]) -> None:
        self.index_info_task = None
        layer = self.raster_layer()
        if layer is None or (layer.source(), self.model_name()) != key or task.was_cancelled:
            return  # the dock moved on meanwhile
        if task.error or task.result is None:
            self.index_file, self.index_info, self._index_key = None, None, None
            self.index_state.setText(f"the index cannot be read: {task.error or 'no answer'}")
            return
        info = task.result
        if info.get("raster_state") == "changed":
            self.index_file, self.index_info, self._index_key = None, None, None
            self.index_state.setText("the raster changed since it was indexed: index it again")
            return
        had = self.index_file is not None
        self.index_file, self.index_info, self._index_key = path, info, key
        if not had:  # phrases typed while the index was being checked are answered now
            self._phrases_edited()
        self.index_state.setText(f"indexed: {info['tiles']} tiles of {info['tile_size']} px, "
                                 f"{info['bytes'] / 1e6:.0f} MB ({path.name}); phrases are answered from it")
        self.index_state.setToolTip(str(path))

    def _raster_file(self, layer: Any) -> str:
        from .inputs import raster_path

        return raster_path(layer)

    def with_index(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` answered from the index when one is ready (the engine then skips the image
        pass; the tiling is the index's own)."""
        if self.index_file is not None and self.index_file.is_file():
            params = dict(params, index=str(self.index_file))
            for key in ("tile_size", "overlap"):
                params.pop(key, None)
        return params

    # ---------------------------------------------------------------------------- building
    def run_index(self) -> EngineTask | None:
        """Index the dock's raster for the dock's model, in the background (resumes a cancelled build)."""
        return self._guarded(self._run_index)

    def _run_index(self) -> EngineTask:
        layer, params = self._prepare()
        out = indexes.index_path(params["raster"], params["model"], profile_dir(), index_place(),
                                 project_home())
        params.update(out=str(out), overwrite=True)
        return self._start(f"Indexing {layer.name()}", "index", params, self._index_done)

    def _index_done(self, task: EngineTask) -> None:
        if not self._finish(task, self.raster_layer()):
            if task.was_cancelled:
                self._set_status("Cancelled; 'Index this raster' again continues where it stopped")
            return
        result = task.result or {}
        details = result.get("details") or {}
        self._set_status(f"Indexed {result.get('count', 0)} tiles in {details.get('seconds', 0):.1f} s; "
                         "phrases are now answered from the index")
        self.runFinished.emit("ok")
        self.refresh_index()

    # ---------------------------------------------------------------------------- typed phrases
    def _phrases_edited(self) -> None:
        if not (self.as_you_type.isChecked() and (self.index_file is not None or self.collection is not None)):
            return
        n = len(self.phrases())
        if n > TYPED_MAX_PHRASES:  # a pasted list: never searched by itself
            self._typing_timer.stop()
            self.status.setText(f"{n} phrases: too many to answer as you type (at most {TYPED_MAX_PHRASES}); "
                                "press Find to search them")
            return
        self._typing_timer.start(TYPING_DELAY_MS)  # (the interval, again: an immediate retry sets 0)

    def _typed_query(self) -> EngineTask | None:
        """Search the typed phrases in the index; the result replaces the previous typed one.

        Typing that stops while a Find (or any dock task) runs is answered when that task ends
        (:meth:`_typed_resume`), not dropped: the phrase typed last always gets its answer."""
        if not self.as_you_type.isChecked() or (self.index_file is None and self.collection is None):
            return None
        if not self.phrases() or len(self.phrases()) > TYPED_MAX_PHRASES:
            return None
        if self.is_running():
            self._typed_after_run = True
            return None
        if self.typed_task is not None:  # a query for older text: drop it, ask again when it has ended
            self._typed_again = True
            self.typed_task.cancel()
            return None
        if self.collection is not None:
            return self._typed_collection_query()
        try:
            layer, params = self._prepare()
            phrases = self.phrases()
            drawn = 0
            if self.scope() == "regions":  # inside the drawn regions, as Find
                params["within"] = self._regions_file(layer)
                drawn = self.map_tool.count()
            else:
                params["bounds"] = self._bounds(layer)
        except Exception as exc:  # noqa: BLE001 - a UserError: say it quietly, typing goes on
            self.status.setText(str(exc))
            return None
        typed_temp, self._temp_files = list(self._temp_files), []
        out = layers.output_path("typed", layer.name(), ".gpkg")
        params = self.with_index(params)
        params.update(phrases=phrases, out=str(out), min_score=float(self.min_score.value()),
                      max_results=int(self.max_results.value()), refine=False, write_empty=False,
                      metadata={"client": "qgis", "scope": self.scope(), "as_you_type": True,
                                "raster_layer": layer.name()}, **self.object_size_param())
        t0 = time.monotonic()
        self.typed_task = EngineTask("GeoAlign: answering typed phrases", "find", params,
                                     lambda t: self._typed_done(t, phrases, layer, t0, typed_temp, drawn))
        return self.typed_task.start()

    def _typed_collection_query(self) -> EngineTask | None:
        assert self.collection is not None
        phrases = self.phrases()
        try:
            params = self._collection_find_params(phrases, layers.output_path("typed", self.collection.name, ".gpkg"),
                                                  typed=True)
        except Exception as exc:  # noqa: BLE001 - a UserError: say it quietly, typing goes on
            self.status.setText(str(exc))
            return None
        t0 = time.monotonic()
        where = f"collection {self.collection.name}"
        self.typed_task = EngineTask("GeoAlign: answering typed phrases", "find", params,
                                     lambda t: self._typed_done(t, phrases, where, t0))
        return self.typed_task.start()

    def _typed_resume(self, task: Any = None) -> None:
        """A dock task ended: the phrases typed meanwhile are answered now (unless it was a Find of them, or
        it was cancelled)."""
        if self._typed_after_run:
            self._typed_after_run = False
            if task is not None and getattr(task, "was_cancelled", False):
                return  # cancelled (by the user, or by QGIS quitting): start nothing new behind it
            if task is not None and task.request == "find" and (task.params or {}).get("phrases") == self.phrases():
                return  # Find answered these very phrases (typing stopped, then Find was pressed)
            self._typing_timer.start(0)

    def _typed_done(self, task: EngineTask, phrases: list[str], raster: Any, t0: float,
                    temp: list[Path] | None = None, drawn: int = 0) -> None:
        self.typed_task = None
        remove_outputs(temp or [])
        if not task.error and not task.was_cancelled and drawn:
            self._say_skipped_regions((task.result or {}).get("metadata") or {}, drawn, raster)
        if self._typed_again:
            self._typed_again = False
            self._typing_timer.start(0)
        if task.was_cancelled:
            return
        if task.error:
            self.status.setText(task.error)
            return
        result = task.result or {}
        self._drop_typed_layer()
        if not result.get("path"):
            self.status.setText(f"as you type: nothing for {', '.join(phrases)[:60]}")
            self.table.clear_results()
            return
        path = Path(result["path"])
        from .dock import no_crs

        where = raster if isinstance(raster, str) else raster.name()  # a collection: its name
        layer = layers.load_vector(path, "matches", f"as you type: {', '.join(phrases)[:50]} ({where})",
                                   pixel_coordinates=not isinstance(raster, str) and no_crs(raster))
        self.typed_layer_id, self.typed_file = layer.id(), path
        self.last_layer, self.last_output = layer, path
        self.table.show_matches(layer)
        self.status.setText(f"as you type: {layer.featureCount()} objects in {time.monotonic() - t0:.2f} s "
                            "(from the index; Find keeps a result)")

    def _drop_typed_layer(self) -> None:
        if self.typed_layer_id is not None:
            project = QgsProject.instance()
            if project.mapLayer(self.typed_layer_id) is not None:
                project.removeMapLayer(self.typed_layer_id)
            if self.typed_file is not None:
                remove_outputs([self.typed_file])
        self.typed_layer_id, self.typed_file = None, None

    # ---------------------------------------------------------------------------- find similar
    def _toggle_similar(self, on: bool) -> None:
        self._use_map_tool(self.similar_tool, self.similar_button, on)

    def _similar_drawn(self, rect: QgsRectangle) -> None:
        self.run_similar(rect, self.canvas.mapSettings().destinationCrs())
        self.similar_button.setChecked(False)  # one box, one run: the map's own tool comes back

    def run_similar(self, rect: QgsRectangle, crs: Any) -> EngineTask | None:
        """More objects like the one in ``rect`` (in ``crs``); the result becomes a "similar" layer."""
        return self._guarded(self._run_similar, rect, crs)

    def _run_similar(self, rect: QgsRectangle, crs: Any) -> EngineTask:
        from .dock_requests import UserError

        if rect.isEmpty() or rect.width() <= 0 or rect.height() <= 0:
            raise UserError("drag a box around one object")
        layer, params = self._prepare()
        box = QgsRectangle(rect)
        if crs.isValid() and layer.crs().isValid() and crs != layer.crs():
            box = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance()).transformBoundingBox(box)
        if not box.intersects(layer.extent()):
            raise UserError(f"the box is not on {layer.name()}")
        params = self.with_index(params)
        if self.scope() == "view":
            params["bounds"] = self._bounds(layer)
        phrase = next(iter(self.phrases()), None) if self.similar_with_text.isChecked() else None
        out = layers.output_path("similar", layer.name(), ".gpkg")
        params.update(examples=[[box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]], out=str(out),
                      max_results=int(self.max_results.value()), write_empty=False, phrase=phrase,
                      metadata={"client": "qgis", "raster_layer": layer.name()})
        title = f"like the drawn box{f' + {phrase!r}' if phrase else ''} ({layer.name()})"
        return self._start("Finding similar objects", "similar", params,
                           lambda t: self._vector_done(t, title, "similar", layer))

    def _dispose_index(self) -> None:
        self._typing_timer.stop()
        disconnect_all(((self.layer_combo.layerChanged, self._index_inputs_changed),
                        (self.model_combo.currentTextChanged, self._index_inputs_changed),
                        (self.phrase_edit.textChanged, self._phrases_edited),
                        (self.similar_tool.extentChanged, self._similar_drawn)))
        for task in (self.index_info_task, self.typed_task):
            if task is not None:
                task.on_done = None
                task.cancel()
        self._release_map_tool(self.similar_tool)
