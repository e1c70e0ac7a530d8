"""The dock's engine panel: shown while GeoAlign's engine environment is missing or broken.

It says what is missing, offers **Set up GeoAlign** (a private environment, created in the
background with a progress bar, a log and a cancel button, then verified by starting the
engine) and **Use an existing Python…** (an environment the user made: venv, conda). It never
installs anything into QGIS's own Python.
"""

from __future__ import annotations

from typing import Any

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from . import environment
from .tasks import SetupTask, engine_location, profile_dir, set_configured_python, setup_log_path
from .widgets import push_button

MAX_LOG_LINES = 2000


class SetupPanel(QWidget):
    """Engine status and the one-click set-up. Emits ``engineReady`` once an engine Python exists."""

    engineReady = pyqtSignal()  # noqa: N815

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.task: SetupTask | None = None
        self.plan: environment.InstallPlan | None = None
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.message = QLabel(self)
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; padding: 6px; }")
        lay.addWidget(self.message)
        self.plan_label = QLabel(self)
        self.plan_label.setWordWrap(True)
        self.plan_label.setStyleSheet("QLabel { color: #555; }")
        lay.addWidget(self.plan_label)
        row = QHBoxLayout()
        self.setup_button = push_button(
            "Set up GeoAlign", self, self.start_setup,
            "Create a private Python environment with PyTorch and GeoAlign for the engine "
            "(QGIS's own Python is not changed)")
        self.existing_button = push_button(
            "Existing Python…", self, self._choose_python,
            "Choose the python of an environment where GeoAlign is installed "
            "(pip install geoalign, a venv or conda env)")
        self.cancel_button = push_button("Cancel set-up", self, self.cancel)
        for b in (self.setup_button, self.existing_button):
            row.addWidget(b)
        row.addStretch(1)
        lay.addLayout(row)
        # shown after the PyTorch wheel site could not be reached: the same set-up with PyPI's PyTorch
        self.pypi_button = push_button("Set up with PyTorch from PyPI", self, self.start_pypi_setup)
        self.pypi_button.setVisible(False)
        lay.addWidget(self.pypi_button)
        self.step_label = QLabel(self)  # the step in words (wrapped): the bar itself shows only the percentage
        self.step_label.setWordWrap(True)
        self.step_label.setMinimumWidth(1)
        lay.addWidget(self.step_label)
        running = QHBoxLayout()  # progress and cancel share a row: the panel is never wider than the form
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        self.progress.setFormat("%p%")
        running.addWidget(self.progress, 1)
        running.addWidget(self.cancel_button)
        lay.addLayout(running)
        self.log = QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(MAX_LOG_LINES)
        self.log.setMaximumHeight(140)
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.plan_label.setMinimumWidth(1)  # long paths wrap instead of widening the dock
        self.message.setMinimumWidth(1)
        self.log.setPlaceholderText("set-up log")
        lay.addWidget(self.log)
        self._set_running(False)

    # ------------------------------------------------------------------ state
    def refresh(self, problem: str | None = None) -> bool:
        """Show or hide the panel for the current engine location; True when an engine is found."""
        loc = engine_location()
        if loc.found and not problem:
            self.setVisible(self.is_running())
            return True
        self.message.setText(problem or loc.problem or (
            "GeoAlign runs its model (PyTorch) in a separate Python environment, so that QGIS itself never "
            "loads it. Set it up once: GeoAlign creates a private environment in your QGIS profile and "
            "installs what it needs (with PyTorch's CUDA build that is about 6 GB on disk; the CPU build "
            "is much smaller)."))
        try:
            self.plan = environment.default_plan(environment.private_env_dir(profile_dir()))
            self.plan_label.setText(self.plan.describe())
            self.setup_button.setEnabled(not self.is_running())
        except environment.InstallError as exc:
            self.plan = None
            self.plan_label.setText(str(exc))
            self.setup_button.setEnabled(False)
        self.setVisible(True)
        return False

    def is_running(self) -> bool:
        return self.task is not None

    def _set_running(self, running: bool) -> None:
        self.setup_button.setEnabled(not running and self.plan is not None)
        self.existing_button.setEnabled(not running)
        self.cancel_button.setVisible(running)
        self.progress.setVisible(running)
        self.step_label.setVisible(running)
        if running:
            self.pypi_button.setVisible(False)
        self.log.setVisible(running or bool(self.log.toPlainText()))

    # ------------------------------------------------------------------ actions
    def start_setup(self, plan: environment.InstallPlan | None = None) -> SetupTask | None:
        """Start the set-up (``plan``: default, the private environment for this machine)."""
        plan = plan if isinstance(plan, environment.InstallPlan) else self.plan
        if plan is None or self.is_running():
            return None
        self.log.clear()
        self.log.appendPlainText(plan.describe())
        self.progress.setValue(0)
        self.task = SetupTask(plan, self._done)
        self.task.lineReceived.connect(self.log.appendPlainText)
        self.task.stepChanged.connect(self._show_step)
        self.task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self._set_running(True)
        self.message.setText("Setting up GeoAlign in the background; you can keep working.")
        return self.task.start()

    def _show_step(self, step: str) -> None:
        self.step_label.setText(step[:1].upper() + step[1:] + "…")
        self.progress.setFormat("%p%")

    def start_pypi_setup(self) -> SetupTask | None:
        """The set-up again, with PyTorch from PyPI (its own wheel site could not be reached)."""
        if self.plan is None:
            return None
        self.plan = environment.pypi_plan(self.plan)
        self.plan_label.setText(self.plan.describe())
        return self.start_setup(self.plan)

    def cancel(self) -> None:
        if self.task is not None:
            self.message.setText("Cancelling the set-up…")
            self.task.cancel()

    def _done(self, task: SetupTask) -> None:
        self.task = None
        self._set_running(False)
        if task.was_cancelled:
            self.message.setText("Set-up cancelled; nothing was kept.")
            return
        if task.error or task.python is None:
            self.message.setText(f"Set-up failed: {task.error} (full log: {setup_log_path()})")
            self.log.setVisible(True)
            if task.unreachable and self.plan is not None and self.plan.torch_index:
                self.pypi_button.setText(environment.pypi_offer(self.plan))
                self.pypi_button.setVisible(True)
            return
        self.message.setText(f"GeoAlign is set up: {task.python}")
        self.setVisible(False)
        self.engineReady.emit()

    def _choose_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The python of an environment with GeoAlign", "",
                                              "Python (python python3 python.exe python*);;All files (*)")
        if path:
            self.use_python(path)

    def use_python(self, path: str) -> None:
        set_configured_python(path)
        if self.refresh():
            self.engineReady.emit()

    def dispose(self) -> Any:
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None


__all__ = ["SetupPanel"]
