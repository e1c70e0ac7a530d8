"""The engine process: reads requests, runs them, writes events (see :mod:`.protocol`).

Threads:

* the **reader** (the caller of :meth:`Engine.serve`) reads request lines and answers the
  control requests (hello, cancel, shutdown) at once, so a cancel never waits;
* the **job thread** runs the model requests (find, heatmap, match_regions, tile_classify)
  one at a time, in arrival order, with the loaded models kept between them;
* a **side thread** answers list_models, check and index_info beside a running job.

End of input (the client closed the pipe or died) cancels every job and ends the process:
an engine never outlives the QGIS session that started it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .. import __version__
from ..errors import Cancelled, GeoAlignError, ModelError
from . import jobs
from .protocol import CONTROL_TYPES, JOB_TYPES, PROTOCOL_VERSION, BadRequest, encode, parse_request, remove_outputs

log = logging.getLogger("geoalign.engine")

PROGRESS_INTERVAL_S = 0.1  # progress events of one stage are sent at most this often
SHUTDOWN_WAIT_S = 30.0  # how long a shutdown waits for running requests to see their cancel flag


@dataclass
class Job:
    """One request being run: its id, type, params and cancel flag."""

    id: str | int
    type: str
    params: dict
    cancel: threading.Event = field(default_factory=threading.Event)
    ended: bool = False  # its terminal event (result, error, cancelled) was sent: never a second one


class Context:
    """What a running request sees: progress/stage reporting, its cancel flag and the engine."""

    def __init__(self, engine: Engine, job: Job) -> None:
        self.engine = engine
        self.job = job
        self.stage_name = ""
        self._last = 0.0
        self.outputs: list[str] = []  # files to delete when the request ends cancelled

    def cancelled(self) -> bool:
        return self.job.cancel.is_set()

    def stage(self, name: str) -> None:
        self.stage_name = name
        self._last = time.monotonic()
        self.engine.send({"id": self.job.id, "event": "progress", "stage": name, "done": 0, "total": 0})

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < PROGRESS_INTERVAL_S:
            return
        self._last = now
        self.engine.send({"id": self.job.id, "event": "progress", "stage": self.stage_name,
                          "done": int(done), "total": int(total)})


class Engine:
    """Serves requests from a text stream; events go to ``out`` (one JSON object per line)."""

    def __init__(self, out: TextIO, max_models: int = 2) -> None:
        self._out = out
        self._out_lock = threading.Lock()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._active: dict[str | int, Job] = {}
        self._active_lock = threading.Lock()
        self._side = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="geoalign-engine-side")
        self._worker = threading.Thread(target=self._run_jobs, name="geoalign-engine-jobs", daemon=True)
        self.predictors = jobs.PredictorCache(max_models)
        self.indexes = jobs.IndexCache()
        self.stopping = False

    # ------------------------------------------------------------------ output
    def send(self, message: dict) -> None:
        line = encode(message)
        with self._out_lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):  # the client is gone
                self.stopping = True

    def terminal(self, job: Job, message: dict) -> bool:
        """Send ``job``'s terminal event unless one was sent already (exactly one per request)."""
        with self._active_lock:
            if job.ended:
                return False
            job.ended = True
        self.send(message)
        return True

    def hello(self) -> dict:
        return {"protocol": PROTOCOL_VERSION, "version": __version__, "pid": os.getpid(),
                "python": sys.executable, "platform": sys.platform}

    # ------------------------------------------------------------------ input
    def serve(self, stream: TextIO) -> int:
        """Read requests until end of input or shutdown; returns the exit status."""
        self._worker.start()
        self.send({"event": "hello", **self.hello()})
        try:
            while not self.stopping:
                line = stream.readline()
                if not line:  # the client closed the pipe
                    log.info("end of input: stopping")
                    break
                if line.strip():
                    self.handle_line(line)
        finally:
            self.close()
        return 0

    def handle_line(self, line: str) -> None:
        try:
            rid, rtype, params = parse_request(line)
        except BadRequest as exc:
            self.send({"id": getattr(exc, "request_id", None), "event": "error", "message": str(exc),
                       "kind": "input", "code": "bad_request"})
            return
        if rtype in CONTROL_TYPES:
            self._control(rid, rtype, params)
            return
        with self._active_lock:
            if rid in self._active:
                self.send({"id": rid, "event": "error", "message": f"bad request: id {rid!r} is already in use",
                           "kind": "input", "code": "bad_request"})
                return
            job = Job(rid, rtype, params)
            self._active[rid] = job
        if rtype in JOB_TYPES:
            self._jobs.put(job)
        else:
            self._side.submit(self._run, job)

    def _control(self, rid: str | int, rtype: str, params: dict) -> None:
        if rtype == "hello":
            self.send({"id": rid, "event": "result", "result": self.hello()})
        elif rtype == "cancel":
            target = params["target"]
            with self._active_lock:
                job = self._active.get(target)
            if job is not None:
                job.cancel.set()
            self.send({"id": rid, "event": "result", "result": {"target": target, "found": job is not None}})
        elif rtype == "shutdown":
            self.send({"id": rid, "event": "result", "result": {}})
            self.stopping = True

    # ------------------------------------------------------------------ running
    def _run_jobs(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: Job) -> None:
        ctx = Context(self, job)
        try:
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            result = jobs.HANDLERS[job.type](ctx, job.params)
            if job.cancel.is_set():  # finished, but the client no longer wants it
                raise Cancelled("cancelled")
            self.terminal(job, {"id": job.id, "event": "result", "result": result})
        except Exception as exc:  # every request ends with exactly one terminal event
            self._fail(job, ctx, exc)
        finally:
            with self._active_lock:
                self._active.pop(job.id, None)

    def _fail(self, job: Job, ctx: Context, exc: BaseException) -> None:
        if isinstance(exc, Cancelled) or job.cancel.is_set():
            remove_outputs(ctx.outputs)
            self.terminal(job, {"id": job.id, "event": "cancelled"})
            return
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, GeoAlignError):
            kind = "model" if isinstance(exc, ModelError) else "input"
            log.info("%s %s: %s", job.type, job.id, message)
            self.terminal(job, {"id": job.id, "event": "error", "message": message, "kind": kind,
                                "code": getattr(exc, "code", None)})
            return
        detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("%s %s failed:\n%s", job.type, job.id, detail)
        self.terminal(job, {"id": job.id, "event": "error", "message": f"{type(exc).__name__}: {message}",
                            "kind": "internal", "code": None, "detail": detail})

    def close(self, wait: float = SHUTDOWN_WAIT_S) -> None:
        """Cancel every request, let the running ones end (up to ``wait`` seconds), stop the threads.

        Every request still without its terminal event then gets ``cancelled``: queued ones, side
        requests that never started, and one that did not stop in time (its late answer is dropped).
        """
        self.stopping = True
        with self._active_lock:
            for job in self._active.values():
                job.cancel.set()
        self._jobs.put(None)
        self._side.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + wait
        if self._worker.is_alive():
            self._worker.join(timeout=max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:  # a side request that was running (answers in milliseconds)
            with self._active_lock:
                running = [j for j in self._active.values() if not j.ended]
            if not running or not self._side_busy():
                break
            time.sleep(0.02)
        with self._active_lock:
            left = list(self._active.values())
        for job in left:
            if self.terminal(job, {"id": job.id, "event": "cancelled"}):
                log.info("%s %s cancelled by shutdown", job.type, job.id)

    def _side_busy(self) -> bool:
        return any(t.is_alive() for t in getattr(self._side, "_threads", ()))


def _protocol_stream() -> TextIO:
    """The protocol's output: the process's real stdout, which nothing else may write to.

    File descriptor 1 is pointed at stderr (the log), so a stray ``print`` or a C library
    writing to stdout cannot corrupt the protocol.
    """
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1, newline="\n")
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return out


def main(serve_stdin: Callable[[], TextIO] | None = None) -> int:
    """Serve the protocol on stdin / stdout (``python -m geoalign_core.engine``)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s geoalign-engine[%(process)d] %(levelname)s: %(message)s")
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    out = _protocol_stream()
    stdin = serve_stdin() if serve_stdin is not None else open(sys.stdin.fileno(), encoding="utf-8",  # noqa: SIM115
                                                               errors="replace", closefd=False)
    log.info("engine %s (protocol %d) started, python %s", __version__, PROTOCOL_VERSION, sys.executable)
    code = Engine(out).serve(stdin)
    # Every request has had its terminal event. Leave now, without the interpreter's teardown: a
    # thread still inside native code (a model load, a GDAL read that has not seen its cancel flag)
    # would otherwise abort the process at exit ("terminate called without an active exception").
    log.info("engine stopped")
    for stream in (out, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


__all__ = ["Context", "Engine", "Job", "main"]
