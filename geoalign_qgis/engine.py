"""The client of the GeoAlign engine process (standard library only: no Qt, no torch).

QGIS's own Python never imports the model stack: :class:`EngineClient` starts
``<engine python> -m geoalign_core.engine`` (see :mod:`geoalign_qgis.environment` for which
Python), keeps it running between requests -- the engine keeps its models loaded -- and
talks to it in JSON lines (``docs/engine_protocol.md``). One engine serves the whole QGIS
session: the dock and the Processing algorithms share it through :func:`shared_client`.

:meth:`EngineClient.request` blocks until the request ends, so it is called from a QgsTask
or a Processing algorithm's thread, never from the GUI thread. It relays progress events,
polls a ``cancelled()`` callback (and then asks the engine to cancel), and raises
:class:`EngineCancelled`, :class:`EngineError` (one line for the user) or
:class:`EngineDied` (the process ended; the next request starts a fresh one).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .protocol import ABSOLUTE_PATHS, PARAMS, PROTOCOL_VERSION, BadRequest, check_params

START_TIMEOUT_S = 120.0  # first start: Python + geoalign_core import (not the model stack)
POLL_S = 0.1
#: variables of QGIS's process that would make another Python or its wheels load QGIS's
#: files (OSGeo4W sets PYTHONHOME / PYTHONPATH; PROJ / GDAL data of another version break
#: the wheels' PROJ and GDAL)
STRIP_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PROJ_LIB", "PROJ_DATA", "GDAL_DATA",
             "GDAL_DRIVER_PATH", "QGIS_PREFIX_PATH")

Progress = Callable[[str, int, int], None]


class EngineError(Exception):
    """A request failed. ``str()`` is one line for the user; ``kind`` is "input" (the user
    can fix it), "model", "internal" (a bug; ``detail`` holds the engine's traceback) or
    "engine" (the engine itself cannot run); ``code`` names known problems (e.g. "no_crs")."""

    def __init__(self, message: str, kind: str = "internal", code: str | None = None, detail: str = "") -> None:
        super().__init__(" ".join(str(message).split()))
        self.kind = kind
        self.code = code
        self.detail = detail


class EngineCancelled(Exception):
    """The request was cancelled; the engine removed what it had started to write."""


class EngineDied(EngineError):
    """The engine process ended while a request was open (crash, kill, out of memory)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, kind="engine", code="engine_died", detail=detail)


class EngineStartError(EngineError):
    """The engine could not be started (wrong Python, GeoAlign not installed there, ...)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message, kind="engine", code="engine_start", detail=detail)




def absolute_paths(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each of :data:`ABSOLUTE_PATHS` made absolute against QGIS's working folder,
    the one QGIS itself reads a relative path against when it loads the result (the engine runs
    elsewhere, and refuses relative paths)."""
    fixed = {k: os.path.abspath(v) for k, v in params.items()
             if k in ABSOLUTE_PATHS and isinstance(v, str) and v and not os.path.isabs(v)}
    return {**params, **fixed} if fixed else params


#: a source checkout whose geoalign_core the engine imports first (development and tests: the engine
#: then runs the checkout's code, not the copy installed in its environment)
DEV_PATH_VAR = "GEOALIGN_ENGINE_PYTHONPATH"


def engine_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the engine: this process's, without QGIS's Python and data paths."""
    env = dict(os.environ if base is None else base)
    for key in STRIP_ENV:
        env.pop(key, None)
    if env.get(DEV_PATH_VAR):
        env["PYTHONPATH"] = env[DEV_PATH_VAR]
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file ("" when there is none)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _last_error_line(text: str) -> str:
    """The most telling line of a Python start-up failure (the exception line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln.split(":")[0] or ln.startswith(("error:", "Error")):
            return ln
    return lines[-1] if lines else ""


#: requests the engine answers beside its jobs (never queued behind one)
SIDE_REQUESTS = ("hello", "cancel", "shutdown", "list_models", "check", "index_info")
#: a return code of the engine that means the kernel's out-of-memory killer (or a user) ended it
KILLED = -9


class _Pending:
    def __init__(self, rid: str, rtype: str = "") -> None:
        self.id = rid
        self.type = rtype
        self.events: queue.Queue[dict] = queue.Queue()


def died_message(rc: int | None, log_path: Path | None) -> str:
    """One line on an engine that ended without answering: signal 9 is said as memory, the usual cause."""
    where = f"; its log: {log_path}" if log_path is not None else ""
    if rc == KILLED:
        return ("the GeoAlign engine was killed (signal 9): most likely the computer ran out of memory. "
                f"Use fewer phrases, a smaller area or a smaller batch size{where}. "
                "The next request starts a new engine.")
    how = f"exit code {rc}" if rc is not None and rc >= 0 else f"signal {-rc}" if rc else "no exit code"
    return f"the GeoAlign engine stopped unexpectedly ({how}){where}. The next request starts a new engine."


class EngineClient:
    """One engine process, started on first use and restarted after it died.

    Args:
        python: the engine's Python interpreter (its environment has geoalign installed).
        log_path: the engine's stderr goes here (appended); None: discarded.
        env: the engine's environment (default: :func:`engine_env`).
        start_timeout: seconds to wait for the engine's hello.
    """

    def __init__(self, python: str | os.PathLike, log_path: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, start_timeout: float = START_TIMEOUT_S) -> None:
        self.python = str(python)
        self.log_path = Path(log_path) if log_path is not None else None
        self.env = env
        self.start_timeout = start_timeout
        self.hello: dict[str, Any] | None = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._hello_event = threading.Event()
        self.starts = 0  # engines started by this client (a restart after a crash adds one)

    # ------------------------------------------------------------------ process
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self.hello is not None

    def start(self) -> dict[str, Any]:
        """Start the engine unless it runs; returns its hello (protocol, version, pid, python)."""
        with self._lock:
            if self.is_running():
                return dict(self.hello or {})
            self._discard()
            if not Path(self.python).is_file():
                raise EngineStartError(f"the GeoAlign engine Python does not exist: {self.python}")
            log = open(self.log_path, "ab") if self.log_path is not None else subprocess.DEVNULL  # noqa: SIM115
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.python}\n".encode())
                log.flush()
            kwargs: dict[str, Any] = {}
            if os.name == "nt":
                kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
            else:
                kwargs["start_new_session"] = True  # Ctrl-C in QGIS's terminal is not the engine's
            try:
                self._proc = subprocess.Popen(
                    [self.python, "-u", "-m", "geoalign_core.engine"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                    env=self.env if self.env is not None else engine_env(), cwd=str(Path.home()), **kwargs,
                )
            except OSError as exc:
                raise EngineStartError(f"cannot start the GeoAlign engine {self.python}: {exc}") from None
            finally:
                if log is not subprocess.DEVNULL:
                    log.close()
            self.starts += 1
            self.hello = None
            self._hello_event.clear()
            self._reader = threading.Thread(target=self._read, args=(self._proc,), name="geoalign-engine-reader",
                                            daemon=True)
            self._reader.start()
            t0 = time.monotonic()
            while not self._hello_event.wait(POLL_S):
                if self._proc.poll() is not None or time.monotonic() - t0 > self.start_timeout:
                    break
            if self.hello is None:
                rc = self._proc.poll()
                text = tail(self.log_path)
                self._discard()
                why = _last_error_line(text) or (f"exit code {rc}" if rc is not None else "no answer")
                if "No module named" in why and "geoalign_core" in why:
                    why = "GeoAlign is not installed in that environment"
                raise EngineStartError(f"the GeoAlign engine did not start ({self.python}): {why}", detail=text)
            if self.hello.get("protocol") != PROTOCOL_VERSION:
                version = self.hello.get("protocol")
                self._discard()
                raise EngineStartError(
                    f"the GeoAlign engine in {self.python} speaks protocol {version}, this plugin {PROTOCOL_VERSION}: "
                    "update GeoAlign in that environment (or set it up again)")
            return dict(self.hello)

    def _read(self, proc: subprocess.Popen) -> None:
        """Reader thread: route each event line to its request; on EOF fail what is open."""
        assert proc.stdout is not None
        with contextlib.suppress(OSError, ValueError):  # the pipe was closed under us: same as its end
            for raw in proc.stdout:
                try:
                    msg = json.loads(raw.decode("utf-8", "replace"))
                except ValueError:
                    continue
                if not isinstance(msg, dict):
                    continue
                if msg.get("event") == "hello" and msg.get("id") is None:
                    self.hello = msg
                    self._hello_event.set()
                    continue
                with self._lock:
                    pending = self._pending.get(str(msg.get("id")))
                if pending is not None:
                    pending.events.put(msg)
        rc = proc.wait()
        with self._lock:
            if proc is self._proc:
                self.hello = None
            waiting = list(self._pending.values())
        for pending in waiting:
            pending.events.put({"event": "died", "returncode": rc})
        self._hello_event.set()

    def _discard(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._close_pipes(proc, self._reader)
        self.hello = None

    @staticmethod
    def _close_pipes(proc: subprocess.Popen | None, reader: threading.Thread | None) -> None:
        """Close our ends of an ended engine's pipes (after its reader saw the end)."""
        if proc is None:
            return
        if reader is not None and reader is not threading.current_thread():
            reader.join(2)
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                if pipe is not None:
                    pipe.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the engine to shut down (cancelling what runs); kill it if it does not."""
        with self._lock:
            proc, self._proc = self._proc, None
            reader = self._reader
            self.hello = None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                data = (json.dumps({"id": f"s{next(self._ids)}", "type": "shutdown"}) + "\n").encode()
                with self._write_lock:
                    proc.stdin.write(data)
                    proc.stdin.flush()
                proc.stdin.close()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self._close_pipes(proc, reader)

    # ------------------------------------------------------------------ requests
    def _send(self, message: dict) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise BrokenPipeError("no engine")
        data = (json.dumps(message) + "\n").encode("utf-8")
        with self._write_lock:
            proc.stdin.write(data)
            proc.stdin.flush()

    def request(self, rtype: str, params: dict[str, Any] | None = None, *, on_progress: Progress | None = None,
                cancelled: Callable[[], bool] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Send one request and wait for its end; returns its result.

        Args:
            rtype: "find", "heatmap", "match_regions", "tile_classify", "list_models", "check", "hello".
            params: the request's parameters (``docs/engine_protocol.md``).
            on_progress: called with ``(stage, done, total)`` for each progress event.
            cancelled: polled every 0.1 s; once true, the engine is asked to cancel.
            timeout: seconds before the request is cancelled and TimeoutError raised.
        """
        params = absolute_paths(params or {})
        if rtype in PARAMS:  # the plugin sends only what the engine takes: the task's parameter set
            try:
                check_params(rtype, params)
            except BadRequest as exc:
                raise EngineError(str(exc), kind="input", code="bad_request") from None
        self.start()
        rid = f"r{next(self._ids)}"
        pending = _Pending(rid, rtype)
        with self._lock:
            self._pending[rid] = pending
        try:
            try:
                self._send({"id": rid, "type": rtype, "params": params})
            except (BrokenPipeError, OSError, ValueError):
                pending.events.put({"event": "died", "returncode": self._proc.poll() if self._proc else None})
            return self._wait(pending, on_progress, cancelled, timeout)
        finally:
            with self._lock:
                self._pending.pop(rid, None)

    def _wait(self, pending: _Pending, on_progress: Progress | None, cancelled: Callable[[], bool] | None,
              timeout: float | None) -> dict[str, Any]:
        t0 = time.monotonic()
        asked_cancel = timed_out = False
        while True:
            try:
                msg = pending.events.get(timeout=POLL_S)
            except queue.Empty:
                msg = None
            if msg is None:
                late = timeout is not None and time.monotonic() - t0 > timeout
                if not asked_cancel and ((cancelled is not None and cancelled()) or late):
                    asked_cancel, timed_out = True, late
                    with contextlib.suppress(BrokenPipeError, OSError, ValueError):
                        self._send({"id": f"c{next(self._ids)}", "type": "cancel", "params": {"target": pending.id}})
                continue
            event = msg.get("event")
            if event == "progress":
                if on_progress is not None:
                    on_progress(str(msg.get("stage") or ""), int(msg.get("done") or 0), int(msg.get("total") or 0))
            elif event == "result":
                return dict(msg.get("result") or {})
            elif event == "cancelled":
                if timed_out:
                    raise TimeoutError(f"the GeoAlign engine did not finish within {timeout:g} s")
                raise EngineCancelled("cancelled")
            elif event == "error":
                raise EngineError(msg.get("message") or "the engine reported an error", msg.get("kind") or "internal",
                                  msg.get("code"), msg.get("detail") or "")
            elif event == "died":
                raise EngineDied(died_message(msg.get("returncode"), self.log_path), detail=tail(self.log_path))

    def jobs_ahead(self, rtype: str) -> int:
        """How many model jobs a new ``rtype`` request would wait behind (the engine runs one at a time)."""
        if rtype in SIDE_REQUESTS:
            return 0
        with self._lock:
            return sum(1 for p in self._pending.values() if p.type and p.type not in SIDE_REQUESTS)

    def check(self, modules: list[str] | None = None, timeout: float | None = 300) -> dict[str, Any]:
        """Import the model stack in the engine; its versions, CUDA devices and what is missing."""
        return self.request("check", {"modules": modules} if modules else {}, timeout=timeout)

    def list_models(self, timeout: float | None = 300) -> dict[str, Any]:
        return self.request("list_models", timeout=timeout)


# ---------------------------------------------------------------------------- shared client
_shared: EngineClient | None = None
_shared_lock = threading.Lock()


def shared_client(python: str | os.PathLike, log_path: str | os.PathLike | None = None) -> EngineClient:
    """The session's client for ``python`` (a different Python stops the previous engine)."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.python != str(python):
            _shared.stop()
            _shared = None
        if _shared is None:
            _shared = EngineClient(python, log_path)
        return _shared


def stop_shared() -> None:
    """Stop the session's engine (plugin unload, QGIS exit)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


__all__ = [
    "EngineCancelled",
    "EngineClient",
    "EngineDied",
    "EngineError",
    "EngineStartError",
    "PROTOCOL_VERSION",
    "engine_env",
    "shared_client",
    "stop_shared",
    "tail",
]

if __name__ == "__main__":  # pragma: no cover - manual check: python engine.py /path/to/python
    client = EngineClient(sys.argv[1] if len(sys.argv) > 1 else sys.executable)
    print(client.start())
    print(json.dumps(client.check(), indent=2))
    client.stop()
