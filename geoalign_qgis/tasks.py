"""Background work: the session's engine, QgsTasks that run engine requests, the set-up task.

Nothing here imports torch, open_clip, rasterio, geopandas, shapely or pyproj: the model runs
in the engine process (:mod:`geoalign_qgis.engine`), whose Python is found by
:mod:`geoalign_qgis.environment`. A task's ``run()`` (on a QGIS pool thread) only sends a
request and waits for its events, so it never blocks QGIS's GUI thread.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qgis.core import QgsApplication, QgsMessageLog, QgsSettings, QgsTask
from qgis.PyQt.QtCore import QObject, pyqtSignal

from . import environment
from .compat import MSG_CRITICAL, MSG_INFO, MSG_WARNING
from .engine import EngineCancelled, EngineClient, EngineError, shared_client
from .protocol import remove_outputs

LOG_TAG = "GeoAlign"
SETTINGS_ENGINE_PYTHON = "geoalign/engine_python"
QUEUED = "queued behind another GeoAlign task"
_RUNNING: set[Any] = set()  # keeps the Python side of queued/running tasks alive


class EngineUnavailable(EngineError):
    """No engine Python is configured yet (the dock offers the set-up)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="engine", code="no_engine")


# ---------------------------------------------------------------------------- the engine
def profile_dir() -> Path:
    """The active QGIS profile folder (where the private environment and the logs live)."""
    return Path(QgsApplication.qgisSettingsDirPath())


def geoalign_dir() -> Path:
    folder = profile_dir() / "geoalign"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def engine_log_path() -> Path:
    return geoalign_dir() / "engine.log"


def setup_log_path() -> Path:
    return geoalign_dir() / "setup.log"


def configured_python() -> str:
    return str(QgsSettings().value(SETTINGS_ENGINE_PYTHON, "", type=str) or "")


def set_configured_python(path: str) -> None:
    QgsSettings().setValue(SETTINGS_ENGINE_PYTHON, path or "")


def engine_location() -> environment.EngineLocation:
    return environment.locate_engine(configured_python(), profile_dir())


NO_ENGINE = ("GeoAlign runs its model in a separate Python environment, which is not set up yet: "
             "press 'Set up GeoAlign' in the GeoAlign dock, or choose an existing environment in "
             "Plugins > GeoAlign > Settings")


def engine_client() -> EngineClient:
    """The session's engine client (the engine starts on the first request)."""
    loc = engine_location()
    if not loc.found:
        raise EngineUnavailable(loc.problem or NO_ENGINE)
    return shared_client(loc.python, engine_log_path())


def log_error(exc: EngineError, what: str) -> None:
    """Expected input errors are information; engine failures and bugs are critical, with details."""
    if exc.kind in ("input", "model"):
        QgsMessageLog.logMessage(f"{what}: {exc}", LOG_TAG, MSG_INFO)
    else:
        detail = f"\n{exc.detail}" if exc.detail else ""
        QgsMessageLog.logMessage(f"{what}: {exc}{detail}", LOG_TAG, MSG_CRITICAL)


# ---------------------------------------------------------------------------- tasks
class _RequestOutcome:
    """What :class:`EngineTask` and :class:`SideRequest` share: the request and its outcome (``result``,
    ``error``, ``error_kind``, ``error_code``, ``was_cancelled``). A mixin after the Qt base: it has no
    ``__init__``, and ``description()`` is the Qt class's."""

    def _prepare(self, request: str, params: dict[str, Any], on_done: Callable[[Any], None] | None) -> None:
        self.request = request
        self.params = params
        self.on_done = on_done
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.error_code: str | None = None
        self.was_cancelled = False

    def _ask(self, ask: Callable[[], dict[str, Any]]) -> bool:
        """``result = ask()`` (the engine request, on a worker thread); False when it failed (``error``)."""
        try:
            self.result = ask()
        except EngineCancelled:
            self.was_cancelled = True
        except EngineError as exc:
            self.error, self.error_kind, self.error_code = str(exc), exc.kind, exc.code
            log_error(exc, self.description())
            return False
        except Exception as exc:  # a bug on this side: the request fails with a message, QGIS lives on
            self.error, self.error_kind = f"{type(exc).__name__}: {' '.join(str(exc).split())}", "internal"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, MSG_CRITICAL)
            return False
        return True


def _finish(work: Any) -> None:
    """On the main thread, once ``work`` (a task or a side request) has ended: let it go and call its
    ``on_done(work)``."""
    _RUNNING.discard(work)
    if work.on_done is not None:
        try:
            work.on_done(work)
        except Exception:  # never let a callback exception reach QGIS's task manager
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, MSG_CRITICAL)


_T = TypeVar("_T", bound="_Task")


class _Task(QgsTask):
    """A QgsTask kept alive (:data:`_RUNNING`) from :meth:`start` until its ``on_done`` has run."""

    on_done: Callable[[Any], None] | None = None

    def finished(self, result: bool) -> None:  # noqa: ARG002 (QGIS API)
        _finish(self)

    def start(self: _T) -> _T:
        _RUNNING.add(self)
        QgsApplication.taskManager().addTask(self)
        return self


class EngineTask(_Task, _RequestOutcome):
    """Runs one engine request; ``on_done(task)`` runs on the main thread afterwards.

    After the run: ``result`` (the request's result dict, or None), ``error`` (one line, or
    None), ``error_kind`` / ``error_code`` (see :class:`~geoalign_qgis.engine.EngineError`),
    ``was_cancelled``. ``stageChanged(text)`` tells what the engine is doing ("loading model",
    "scanning tiles", "refining boxes", ...); progress is per stage.
    """

    stageChanged = pyqtSignal(str)  # noqa: N815 (Qt naming)

    def __init__(self, description: str, request: str, params: dict[str, Any],
                 on_done: Callable[[EngineTask], None] | None = None) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self._prepare(request, params, on_done)
        self.stage = ""

    # -- pool thread ----------------------------------------------------------------
    def _progress(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.stageChanged.emit(stage)
        self.setProgress(100.0 * done / total if total > 0 else 0.0)

    def run(self) -> bool:
        def ask() -> dict[str, Any]:
            client = engine_client()
            ahead = client.jobs_ahead(self.request)
            self.stage = (QUEUED if ahead else "starting the engine" if not client.is_running()
                          else "waiting for the engine")
            self.stageChanged.emit(self.stage)
            return client.request(self.request, self.params, on_progress=self._progress, cancelled=self.isCanceled)

        if not self._ask(ask):
            return False
        if self.was_cancelled or self.isCanceled():
            # a cancel is not a failure: QGIS would announce a False run as "Task failed"
            self.was_cancelled = True
            self.result = None
            self.setDescription(f"{self.description()} (cancelled)")
        return True


class SideRequest(QObject, _RequestOutcome):
    """A quick engine request (the model list, an index check) on a Python thread, not a QgsTask.

    What the dock asks by itself, without the user pressing anything, never shows in QGIS's task
    list: quitting QGIS then never asks "cancel the running tasks?" about work the user did not
    start, and these requests never wait for a thread of QGIS's (small) task pool. Same attributes
    as :class:`EngineTask` (``result``, ``error``, ``error_kind``, ``error_code``, ``was_cancelled``);
    ``on_done(request)`` runs on the main thread.
    """

    _ended = pyqtSignal()

    def __init__(self, description: str, request: str, params: dict[str, Any],
                 on_done: Callable[[SideRequest], None] | None = None) -> None:
        super().__init__()
        self._description = description
        self._prepare(request, params, on_done)
        self._cancel = threading.Event()
        self._ended.connect(self._finished)  # emitted on the worker thread: queued to the main thread

    def description(self) -> str:
        return self._description

    def cancel(self) -> None:
        self._cancel.set()

    def isCanceled(self) -> bool:  # noqa: N802 (as QgsTask)
        return self._cancel.is_set()

    def start(self) -> SideRequest:
        _RUNNING.add(self)
        threading.Thread(target=self._run, name="geoalign-side-request", daemon=True).start()
        return self

    def _run(self) -> None:
        self._ask(lambda: engine_client().request(self.request, self.params, cancelled=self._cancel.is_set))
        if self._cancel.is_set():
            self.was_cancelled, self.result = True, None
        with contextlib.suppress(RuntimeError):  # the object is gone (QGIS quit meanwhile)
            self._ended.emit()

    def _finished(self) -> None:
        _finish(self)


def run_request(request: str, params: dict[str, Any], feedback: Any = None, timeout: float | None = None) -> dict:
    """Blocking request for Processing algorithms (their own thread): progress and stages go to
    ``feedback``; its cancel button cancels the engine's work."""
    last = {"stage": None}

    def progress(stage: str, done: int, total: int) -> None:
        if feedback is None:
            return
        if stage != last["stage"]:
            last["stage"] = stage
            feedback.setProgressText(stage)
        if total > 0:
            feedback.setProgress(100.0 * done / total)

    return engine_client().request(request, params, on_progress=progress,
                                   cancelled=feedback.isCanceled if feedback is not None else None, timeout=timeout)


class SetupTask(_Task):
    """Runs the one-click set-up (:class:`~geoalign_qgis.environment.Installer`) in the background.

    ``lineReceived(text)`` carries each line of the installers' output (for the log view),
    ``stepChanged(text)`` the step; ``python`` holds the new engine Python afterwards.
    """

    lineReceived = pyqtSignal(str)  # noqa: N815
    stepChanged = pyqtSignal(str)  # noqa: N815

    def __init__(self, plan: environment.InstallPlan, on_done: Callable[[SetupTask], None] | None = None) -> None:
        super().__init__("Setting up GeoAlign", QgsTask.Flag.CanCancel)
        self.plan = plan
        self.on_done = on_done
        self.python: Path | None = None
        self.error: str | None = None
        self.unreachable: str | None = None  # the PyTorch wheel site that could not be reached
        self.was_cancelled = False

    def _step(self, title: str, fraction: float) -> None:
        self.stepChanged.emit(title)
        self.setProgress(100.0 * fraction)

    def run(self) -> bool:
        installer = environment.Installer(self.plan, setup_log_path(), on_line=self.lineReceived.emit,
                                          on_progress=self._step, cancelled=self.isCanceled)
        try:
            self.python = installer.run()
        except environment.InstallCancelled:
            self.was_cancelled = True
            self.setDescription("Setting up GeoAlign (cancelled)")
            return True
        except environment.InstallError as exc:
            self.error = str(exc)
            self.unreachable = exc.unreachable
            QgsMessageLog.logMessage(f"set-up failed: {exc} (log: {setup_log_path()})", LOG_TAG, MSG_WARNING)
            return False
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, MSG_CRITICAL)
            return False
        return True


__all__ = [
    "EngineTask",
    "EngineUnavailable",
    "SetupTask",
    "SideRequest",
    "engine_client",
    "engine_location",
    "engine_log_path",
    "log_error",
    "remove_outputs",
    "run_request",
    "set_configured_python",
    "setup_log_path",
]
