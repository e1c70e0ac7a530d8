"""Many scenes in the dock: a collection index opened, Find across its scenes into one layer.

A mixin of :class:`~geoalign_qgis.dock.GeoAlignDock`. A collection index is the folder that
``geoalign index A.tif B.tif ... --out FOLDER`` writes (a ``manifest.json`` and one part per
scene). **Collection…** opens one: the Index line then names it and its scenes, and **Find**
(and a phrase typed with "Answer as I type") searches every scene from the index; the result is
one layer, in the scenes' common CRS (else EPSG:4326), with a ``scene`` field naming each box's
scene. **Close collection** goes back to the Raster field. Heatmap, Match regions, Classify tiles
and Find similar take one raster: they say so while a collection is open.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.PyQt.QtWidgets import QFileDialog, QToolButton, QWidget

from . import layers
from .inputs import check_phrase_count
from .tasks import EngineTask, engine_location

MANIFEST = "manifest.json"  # geoalign_core.index.scenes.MANIFEST


def read_collection(folder: str | Path) -> dict:
    """The collection's manifest (its scenes), or :class:`~geoalign_qgis.inputs.InputProblem`."""
    from .inputs import InputProblem

    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputProblem(f"{folder} is not a collection index (no {MANIFEST}): make one with "
                           "geoalign index A.tif B.tif --out FOLDER")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputProblem(f"cannot read {path}: {exc}") from None
    return doc


class DockCollection:
    """The collection button, its state, and Find across the scenes (mixin, see the module docstring)."""

    def _build_collection_button(self, parent: QWidget) -> QToolButton:
        self.collection: Path | None = None
        self.collection_scenes: list[str] = []
        self.collection_button = QToolButton(parent)
        self.collection_button.setText("Collection…")
        self.collection_button.setToolTip("Open a collection index (a folder made by geoalign index A.tif B.tif "
                                          "--out FOLDER): Find then searches all its scenes into one layer")
        self.collection_button.clicked.connect(self._collection_clicked)
        return self.collection_button

    def _collection_clicked(self) -> None:
        if self.collection is not None:
            self.close_collection()
            return
        folder = QFileDialog.getExistingDirectory(self, "A collection index (geoalign index … --out FOLDER)")
        if folder:
            self.open_collection(folder)

    def open_collection(self, folder: str | Path) -> bool:
        """Search ``folder`` (a collection index) instead of the Raster field; False (status line) if it is not one."""
        from .dock_requests import UserError

        try:
            doc = read_collection(folder)
        except UserError as exc:
            self._set_status(str(exc), error=True)
            return False
        self.collection = Path(folder)
        self.collection_scenes = [str(s.get("name")) for s in doc.get("scenes", [])]
        model = (doc.get("settings") or {}).get("model")
        if model:
            self.set_model(str(model))  # a collection answers with the model it was built with
        n = len(self.collection_scenes)
        shown = ", ".join(self.collection_scenes[:4]) + (" …" if n > 4 else "")
        self.index_state.setText(f"collection {self.collection.name}: {n} scene{'s' if n != 1 else ''} ({shown}); "
                                 "Find searches them all")
        self.index_state.setToolTip(str(self.collection))
        self.collection_button.setText("Close collection")
        self.layer_combo.setEnabled(False)
        return True

    def close_collection(self) -> None:
        self.collection, self.collection_scenes = None, []
        self.collection_button.setText("Collection…")
        self.index_state.setToolTip("")
        self.layer_combo.setEnabled(True)
        self.refresh_index()

    def _collection_params(self) -> dict[str, Any]:
        """What every collection request takes (no raster: the collection answers for its scenes)."""
        from .dock_requests import UserError

        if self.is_running():
            raise UserError("a GeoAlign task is already running")
        if not engine_location().found:
            self.setup_panel.refresh()
            raise UserError("GeoAlign is not set up yet: press 'Set up GeoAlign' above")
        self._save_settings()
        return {"index": str(self.collection), "model": self.model_name(), "device": self.device_combo.currentText(),
                "batch_size": int(self.batch_size.value())}

    def _collection_find_params(self, phrases: list[str], out: Path, typed: bool = False) -> dict[str, Any]:
        params = self._collection_params() if not typed else dict(self._collection_params(), batch_size=1)
        params.update(phrases=phrases, out=str(out), min_score=float(self.min_score.value()),
                      max_results=int(self.max_results.value()), refine=False, write_empty=False,
                      metadata={"client": "qgis", "collection": str(self.collection), "as_you_type": typed},
                      **self.object_size_param())
        return params

    def _run_collection_find(self) -> EngineTask:
        from .dock_requests import UserError

        phrases = self.phrases()
        if not phrases:
            raise UserError("type one or more phrases")
        check_phrase_count(phrases)
        assert self.collection is not None
        out = layers.output_path("matches", self.collection.name, ".gpkg")
        params = self._collection_find_params(phrases, out)
        title = f"{', '.join(phrases)[:60]} (collection {self.collection.name})"
        return self._start("Finding objects in the collection", "find", params,
                           lambda t: self._vector_done(t, title, "matches", None))

    def _collection_only_find(self) -> None:
        from .dock_requests import UserError

        if self.collection is not None:
            raise UserError("with a collection open, Find searches its scenes; for this, close the collection "
                            "and choose one raster")


__all__ = ["DockCollection", "read_collection"]
