"""Plugins > GeoAlign > Settings: which Python runs the GeoAlign engine, and a test of it."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from . import environment, layers
from .engine import EngineClient, EngineError
from .tasks import configured_python, engine_location, engine_log_path, profile_dir, set_configured_python
from .widgets import push_button


def breakable(text: str) -> str:
    """``text`` with a zero-width space after each path separator: a long path wraps in a word-wrapped
    label instead of being clipped (the label's tooltip keeps the plain text for copying)."""
    return text.replace("/", "/\u200b").replace("\\", "\\\u200b")


class SettingsDialog(QDialog):
    """Engine Python (empty: ``$GEOALIGN_ENGINE_PYTHON`` or the private environment), with a Test button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("GeoAlign settings")
        self.setMinimumWidth(560)
        lay = QVBoxLayout(self)
        intro = QLabel(
            "GeoAlign runs its model in a separate Python environment (the engine), never inside QGIS. "
            "Leave the path empty to use the environment set up by the dock's 'Set up GeoAlign'; or "
            "choose the python of an environment where GeoAlign is installed (a venv or conda env "
            f"with `pip install geoalign`). {environment.ENV_VAR}, when set, takes precedence.", self)
        intro.setWordWrap(True)
        lay.addWidget(intro)
        form = QFormLayout()
        self.python_edit = QLineEdit(configured_python(), self)
        self.python_edit.setPlaceholderText(str(environment.venv_python(environment.private_env_dir(profile_dir()))))
        form.addRow("Engine Python", self._with_browse(self.python_edit, self._browse))
        self.resolved = QLabel(self)
        self.resolved.setWordWrap(True)
        self.resolved.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.resolved.setMinimumWidth(1)  # a long path wraps at its slashes, never clipped
        form.addRow("In use", self.resolved)
        log_label = QLabel(breakable(str(engine_log_path())), self)
        log_label.setWordWrap(True)
        log_label.setMinimumWidth(1)
        form.addRow("Engine log", log_label)
        self.results_edit = QLineEdit(str(QgsSettings().value(layers.SETTINGS_RESULTS_DIR, "", type=str) or ""), self)
        self.results_edit.setPlaceholderText(str(Path(QgsApplication.qgisSettingsDirPath()) / "geoalign" / "results"))
        self.results_edit.setToolTip("Where results go while the project is not saved (a saved project keeps its "
                                     "results in <project>_geoalign next to it)")
        form.addRow("Results folder", self._with_browse(self.results_edit, self._browse_results))
        from .dock_index import SETTINGS_INDEX_PLACE, index_place
        from .indexes import PLACES

        self.index_place = QComboBox(self)
        for key, text in PLACES.items():
            self.index_place.addItem(text, key)
        self.index_place.setCurrentIndex(max(0, self.index_place.findData(index_place())))
        self.index_place.setToolTip("Where 'Index this raster' writes a raster's index (an existing index is used "
                                    "wherever it is)")
        self._index_key = SETTINGS_INDEX_PLACE
        form.addRow("New indexes", self.index_place)
        lay.addLayout(form)
        self.test_button = push_button("Test the engine", self, self.test)
        self.test_result = QLabel(self)
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.test_button)
        lay.addWidget(self.test_result)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.python_edit.textChanged.connect(self._show_resolved)
        self._show_resolved()

    def _with_browse(self, edit: QLineEdit, on_browse) -> QHBoxLayout:
        """``edit`` with a "…" button beside it that calls ``on_browse``."""
        row = QHBoxLayout()
        button = QToolButton(self)
        button.setText("…")
        button.clicked.connect(on_browse)
        row.addWidget(edit, 1)
        row.addWidget(button)
        return row

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The python of an environment with GeoAlign", "",
                                              "Python (python python3 python.exe python*);;All files (*)")
        if path:
            self.python_edit.setText(path)

    def _browse_results(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Folder for GeoAlign results", self.results_edit.text())
        if path:
            self.results_edit.setText(path)

    def _location(self) -> environment.EngineLocation:
        return environment.locate_engine(self.python_edit.text(), profile_dir())

    def _show_resolved(self) -> None:
        loc = self._location()
        if loc.found:
            text = f"{loc.python} (from the {loc.source})"
            if loc.source == environment.SOURCES[0] and self.python_edit.text().strip():
                text += f"; the path above is not used while {environment.ENV_VAR} is set"
            self.resolved.setText(breakable(text))
            self.resolved.setToolTip(text)
            self.resolved.setStyleSheet("QLabel { color: #b00020; }" if "not used" in text else "")
        else:
            self.resolved.setText(breakable(loc.problem or "none yet: use 'Set up GeoAlign' in the dock"))
            self.resolved.setStyleSheet("QLabel { color: #b00020; }" if loc.problem else "")

    def test(self) -> str:
        """Start the chosen engine and import the model stack in it (blocks for a few seconds)."""
        from qgis.PyQt.QtWidgets import QApplication

        loc = self._location()
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)  # a few seconds: the engine imports torch
        self.test_result.setText(f"Starting {loc.python or 'the engine'}…")
        QApplication.processEvents()
        try:
            return self._test(loc)
        finally:
            QApplication.restoreOverrideCursor()

    def _test(self, loc: environment.EngineLocation) -> str:
        if not loc.found:
            text = loc.problem or "no engine Python yet"
        else:
            client = EngineClient(loc.python, engine_log_path())
            try:
                hello = client.start()
                report = client.check(timeout=300)
                devices = ", ".join(report.get("devices") or []) or "no CUDA GPU (CPU)"
                if report.get("ok"):
                    versions = report.get("versions", {})
                    text = (f"OK: GeoAlign {hello.get('version')} (protocol {hello.get('protocol')}), torch "
                            f"{versions.get('torch', '?')}, GDAL {report.get('gdal', '?')}; {devices}")
                else:
                    text = "Missing: " + "; ".join(f"{m['module']} ({m['error']})" for m in report.get("missing", []))
            except EngineError as exc:
                text = f"Failed: {exc}"
            finally:
                client.stop()
        self.test_result.setText(text)
        return text

    def accept(self) -> None:
        set_configured_python(self.python_edit.text().strip())
        QgsSettings().setValue(layers.SETTINGS_RESULTS_DIR, self.results_edit.text().strip())
        QgsSettings().setValue(self._index_key, self.index_place.currentData())
        super().accept()

    @staticmethod
    def current() -> environment.EngineLocation:
        return engine_location()


__all__ = ["SettingsDialog"]
