"""Background work: one shared Predictor per (model, device), GeoAlign's worker thread, and
a QgsTask that runs a job on it.

Threads. QGIS runs tasks and Processing algorithms on QThreadPool threads, which are not
created by Python: each run gets a fresh Python thread state that is deleted afterwards,
while the OS thread is reused. pyproj 3.7 keeps its per-thread PROJ context in OS-thread
storage but frees it with the Python thread state, so the second pyproj call on a reused
pool thread uses a freed context and crashes QGIS (pyproj issues #1509, #1622). Every
geoalign_core call therefore runs on ONE long-lived, Python-created worker thread
(:func:`call_in_worker`); the QGIS thread only waits for it. That also serialises model
use, and keeps torch's per-thread state in one place.

The heavy imports (torch, geoalign_core) happen lazily, on the worker, so the plugin loads
instantly and still loads when they are missing. Results (layers) are added by the
``on_done`` callback, which QGIS calls on the main thread in :meth:`GeoAlignTask.finished`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsMessageLog, QgsTask

from . import deps
from .compat import MSG_CRITICAL

LOG_TAG = "GeoAlign"
MAX_CACHED_MODELS = 2


_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _worker() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="geoalign-worker")
        return _executor


def call_in_worker(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on GeoAlign's worker thread and return its result (or raise its exception)."""
    if threading.current_thread().name.startswith("geoalign-worker"):
        return fn(*args, **kwargs)
    return _worker().submit(fn, *args, **kwargs).result()


class DependencyError(RuntimeError):
    """torch / open_clip / geoalign_core cannot be imported; the message says what to install."""


def import_core() -> Any:
    """Import geoalign_core.inference or raise DependencyError with the pip command."""
    status = deps.check()
    if not status.ok:
        raise DependencyError(status.message())
    try:
        from geoalign_core import inference
    except ImportError as exc:  # installed but broken (ABI mismatch, missing DLL, ...)
        raise DependencyError(
            f"GeoAlign's Python packages are installed but cannot be imported ({exc}). "
            f"Reinstall them with:\n{deps.DepsStatus(['geoalign_core']).pip_command}"
        ) from exc
    return inference


class PredictorCache:
    """Loads each (model, device) once and reuses it; one run at a time per predictor."""

    def __init__(self, size: int = MAX_CACHED_MODELS) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], tuple[Any, threading.Lock]] = OrderedDict()

    def get(self, model: str, device: str = "auto") -> tuple[Any, threading.Lock]:
        """The cached (predictor, run lock) for ``model`` on ``device``, loading it on first use."""
        inference = import_core()
        key = (str(model), str(device))
        with self._lock:  # also serialises loading: two runs never load the same model twice
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            item = (inference.Predictor(model=model, device=device), threading.Lock())
            self._items[key] = item
            while len(self._items) > self._size:
                self._items.popitem(last=False)
            return item

    @contextlib.contextmanager
    def use(self, model: str, device: str = "auto", batch_size: int | None = None) -> Iterator[Any]:
        predictor, lock = self.get(model, device)
        with lock:
            if batch_size:
                predictor.batch_size = int(batch_size)
            yield predictor

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


PREDICTORS = PredictorCache()
_RUNNING: set[GeoAlignTask] = set()  # keeps the Python side of queued/running tasks alive


def user_message(exc: BaseException) -> str:
    """One line for the message bar: GeoAlignError and DependencyError messages as they are."""
    if isinstance(exc, DependencyError):
        return str(exc)
    try:
        from geoalign_core.errors import GeoAlignError
    except ImportError:
        GeoAlignError = ()  # noqa: N806
    if GeoAlignError and isinstance(exc, GeoAlignError):
        return " ".join(str(exc).split())
    return f"{type(exc).__name__}: {' '.join(str(exc).split())} (details in the GeoAlign log)"


def is_cancelled_error(exc: BaseException) -> bool:
    try:
        from geoalign_core.inference import Cancelled
    except ImportError:
        return False
    return isinstance(exc, Cancelled)


def remove_outputs(paths: list[Path]) -> None:
    """Delete a (partial) output and the GDAL side-cars next to it."""
    for path in paths:
        for p in (path, *(Path(str(path) + s) for s in ("-journal", "-wal", "-shm", ".aux.xml", ".ovr"))):
            with contextlib.suppress(OSError):
                p.unlink()


class GeoAlignTask(QgsTask):
    """Runs ``job(task)`` in a worker thread; ``on_done(task)`` runs on the main thread.

    The job reports progress with :meth:`report` and polls :meth:`cancelled`. After the run,
    ``task.result`` holds the job's return value, ``task.error`` a one-line message (or
    None), and ``task.was_cancelled`` tells a cancelled run. A cancelled or failed task
    deletes the files listed in ``outputs`` so that nothing partial is left behind.
    """

    def __init__(
        self,
        description: str,
        job: Callable[[GeoAlignTask], Any],
        on_done: Callable[[GeoAlignTask], None] | None = None,
        outputs: list[Path] | None = None,
    ) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.job = job
        self.on_done = on_done
        self.outputs = list(outputs or [])
        self.result: Any = None
        self.error: str | None = None
        self.was_cancelled = False
        self.stage = ""

    # -- worker thread --------------------------------------------------------------
    def report(self, done: int, total: int) -> None:
        if total > 0:
            self.setProgress(min(100.0, 100.0 * done / total))

    def cancelled(self) -> bool:
        return self.isCanceled()

    def _job_unless_cancelled(self) -> Any:
        if self.isCanceled():  # cancelled while queued behind other GeoAlign work
            return None
        return self.job(self)

    def run(self) -> bool:
        try:
            self.result = call_in_worker(self._job_unless_cancelled)
        except Exception as exc:
            if is_cancelled_error(exc) or self.isCanceled():
                self.was_cancelled = True
            else:
                self.error = user_message(exc)
                QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, MSG_CRITICAL)
            remove_outputs(self.outputs)
            return False
        if self.isCanceled():
            self.was_cancelled = True
            remove_outputs(self.outputs)
            return False
        return True

    # -- main thread ----------------------------------------------------------------
    def finished(self, result: bool) -> None:
        _RUNNING.discard(self)
        if self.isCanceled():
            self.was_cancelled = True
        if not result or self.was_cancelled:
            self.result = None
            remove_outputs(self.outputs)
        if self.on_done is not None:
            try:
                self.on_done(self)
            except Exception:  # never let a callback exception reach QGIS's task manager
                QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, MSG_CRITICAL)

    def start(self) -> GeoAlignTask:
        _RUNNING.add(self)
        QgsApplication.taskManager().addTask(self)
        return self
