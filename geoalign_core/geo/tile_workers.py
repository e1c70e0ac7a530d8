"""Model-ready tiles read by separate reader processes, handed back through shared memory.

Reading a 224 px tile costs about 1 ms of CPU, and most of it is Python and NumPy work around
GDAL (masks, normalisation, the mean fill) that holds the GIL: two reader *threads* gained only
1.2-1.4x on two cores (``benchmarks/bench_readers.py``). Reader processes do not share a GIL.

How the work is split, so that the parent does almost nothing per tile:

* **The workers** are plain ``python -m geoalign_core.geo.tile_workers`` processes that import
  NumPy and rasterio, never torch (no fork of a process running torch's threads, and no re-run
  of the user's ``__main__``, which ``multiprocessing``'s spawn would do). Each opens its own
  handle on the raster (:meth:`RasterSource.reopen_args`, the scene statistics included), reads
  and normalises runs of consecutive windows (:func:`read_filled`), and writes each tile's image
  and mask straight into a slot of a memory-mapped file in ``/dev/shm``; only the tile records
  (window, transform, bounds, whether any pixel is valid) travel through the pipe.
* **The parent** hands runs of windows to the workers in turn, so the replies come back in
  window order, and copies each tile once from its slot into the batch it is filling. A slot is
  given a new run only after the parent copied the old one out.
* **Start-up** (about 0.3 s, the two imports) is paid once per process: idle workers wait for
  the next scene, and exit when the parent exits (their stdin closes).

Use :func:`read_in_processes`; :func:`processes_available` says whether workers can start here
(the callers fall back to reader threads where they cannot).
"""

from __future__ import annotations

import atexit
import mmap
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rasterio.windows import Window

    from geoalign_core.geo.raster import RasterSource
    from geoalign_core.geo.tile import Tile

__all__ = ["ReadTile", "WorkerError", "fill_invalid", "processes_available", "read_filled", "read_in_processes",
           "worker_pids"]

RUN = 8  #: consecutive windows per request: a round trip to a process costs more than a thread's
DEPTH = 3  #: runs in flight per worker (each has its own slot)
_SHM_DIR = "/dev/shm"


def fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels of ``image [3, H, W]`` with the mean of the valid ones (in place)."""
    if valid.all() or not valid.any():
        return image
    mean = image[:, valid].mean(axis=1)
    np.copyto(image, mean[:, None, None], where=~valid)
    return image


def read_filled(source: RasterSource, index: int, window: Window, size: int, out: np.ndarray | None = None) -> Tile:
    """One window as a model-ready :class:`~geoalign_core.geo.tile.Tile`: resampled (bilinear) to
    ``size`` px when it is another size, invalid pixels filled with the tile's mean colour
    (``out``: a float32 ``[3, size, size]`` array to hold the image)."""
    from rasterio.enums import Resampling

    if int(window.width) == size and int(window.height) == size:
        tile = source.read_tile(window, index=index, out=out)
    else:
        tile = source.read_tile(window, index=index, out_shape=(size, size), resampling=Resampling.bilinear, out=out)
    if tile.valid.any():
        fill_invalid(tile.image, tile.valid)
    return tile


@dataclass
class ReadTile:
    """A tile read by a worker: its record, and its image and mask as views of a shared slot
    (valid until the parent hands the slot a new run; copy them out before)."""

    index: int
    window: Window
    transform: Any
    bounds: Any
    any_valid: bool
    image: np.ndarray
    valid: np.ndarray


# --------------------------------------------------------------------------------------------
# the worker process


def _slot_arrays(buf: Any, slot: int, k: int, size: int, run: int) -> tuple[np.ndarray, np.ndarray]:
    """Tile ``k`` of slot ``slot``: its float32 ``[3, size, size]`` image and bool mask."""
    image_bytes, valid_bytes = 3 * size * size * 4, size * size
    offset = (slot * run + k) * (image_bytes + valid_bytes)
    image = np.ndarray((3, size, size), np.float32, buf, offset)
    valid = np.ndarray((size, size), np.bool_, buf, offset + image_bytes)
    return image, valid


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError carrying its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer the parent's requests (see :class:`_Worker`) until its pipe closes."""
    from geoalign_core.geo.raster import RasterSource

    source: RasterSource | None = None
    mm: mmap.mmap | None = None
    size = run = 0

    def send(msg: object) -> None:
        pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        kind = msg[0]
        if kind == "open":  # ("open", shm path, path, kwargs, size, run)
            _, shm_path, path, kwargs, size, run = msg
            try:
                with open(shm_path, "r+b") as fh:
                    mm = mmap.mmap(fh.fileno(), 0)
                source = RasterSource(path, **kwargs)
                send(("ready", None))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                send(("ready", _portable(exc)))
        elif kind == "read":  # ("read", slot, first index, windows)
            _, slot, lo, windows = msg
            records: list[tuple[int, Any, Any, Any, bool]] = []
            error: BaseException | None = None
            try:
                assert source is not None and mm is not None, "read before open"
                for k, window in enumerate(windows):
                    image, valid = _slot_arrays(mm, slot, k, size, run)
                    tile = read_filled(source, lo + k, window, size, out=image)  # the image is read in place
                    valid[...] = tile.valid
                    records.append((tile.index, tile.window, tile.transform, tile.bounds, bool(tile.valid.any())))
            except BaseException as exc:  # noqa: BLE001 - raised by the parent at this window
                error = _portable(exc)
            send(("read", records, error))
        elif kind == "close":
            if source is not None:
                source.close()
            if mm is not None:
                mm.close()
            source = mm = None


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the reading
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the pipe
    _serve(sys.stdin.buffer, out)


# --------------------------------------------------------------------------------------------
# the parent side


class WorkerError(RuntimeError):
    """A reader process could not start or stopped answering."""


class _Worker:
    """One reader process and its two pipes."""

    def __init__(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "geoalign_core.geo.tile_workers"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True,
            )
        except OSError as exc:
            raise WorkerError(f"tile reader process could not start ({exc})") from None

    def send(self, msg: object) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"tile reader process {self.proc.pid} stopped ({exc})") from None

    def recv(self) -> Any:
        assert self.proc.stdout is not None
        try:
            return pickle.load(self.proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            code = self.proc.poll()
            raise WorkerError(f"tile reader process {self.proc.pid} stopped (exit code {code}; {exc!r})") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_IDLE: list[_Worker] = []
_BUSY: list[_Worker] = []  # reading for a caller now
_LOCK = threading.Lock()
_BROKEN: str | None = None  # why workers cannot start here (then the callers use threads)


def _take(n: int) -> list[_Worker]:
    with _LOCK:
        taken = []
        while _IDLE and len(taken) < n:
            w = _IDLE.pop()
            if w.alive():
                taken.append(w)
    try:
        while len(taken) < n:
            taken.append(_Worker())
    except WorkerError:
        _give_back([], taken)
        raise
    with _LOCK:
        _BUSY.extend(taken)
    return taken


def _give_back(workers: Sequence[_Worker], healthy: Sequence[_Worker]) -> None:
    with _LOCK:
        _BUSY[:] = [w for w in _BUSY if all(w is not x for x in workers)]
        _IDLE.extend(w for w in healthy if w.alive())


def _pool_in_use() -> list[_Worker]:
    with _LOCK:
        return list(_BUSY)


def worker_pids() -> list[int]:
    """Process ids of the reader processes alive now, idle or reading (to measure their CPU time)."""
    with _LOCK:
        return [w.proc.pid for w in _IDLE + _BUSY if w.alive()]


@atexit.register
def _stop_idle() -> None:
    with _LOCK:
        idle, _IDLE[:] = list(_IDLE), []
    for w in idle:
        w.stop()


def processes_available() -> bool:
    """Whether reader processes can be used here: a real Python interpreter to start them with,
    and no earlier failure to start one in this process."""
    if _BROKEN is not None:
        return False
    exe = Path(sys.executable or "")
    return exe.is_file() and exe.name.lower().startswith("python")


def _shared_file(nbytes: int) -> tuple[str, mmap.mmap]:
    folder = _SHM_DIR if os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK) else None
    fd, path = tempfile.mkstemp(prefix="geoalign-tiles-", dir=folder)
    try:
        os.ftruncate(fd, nbytes)
        return path, mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


def read_in_processes(source: RasterSource, windows: Sequence[Window], size: int, workers: int) -> Iterator[ReadTile]:
    """Yield a :class:`ReadTile` for every window, in order, read by ``workers`` reader processes.

    A tile's arrays are views of shared memory: valid until the next tile of the following run
    is yielded, so copy them before asking for more (the batch reader copies each into its batch).
    Errors of a read reach the caller at the window where they happened. Raises
    :class:`WorkerError` (before yielding anything) when the processes cannot start.
    """
    global _BROKEN
    windows = list(windows)
    runs = [(lo, windows[lo : lo + RUN]) for lo in range(0, len(windows), RUN)]
    path, kwargs = source.reopen_args()
    nslots = max(1, min(len(runs), workers * DEPTH))
    shm_path, mm = _shared_file(nslots * RUN * (3 * size * size * 4 + size * size))
    pool: list[_Worker] = []
    inflight: deque[int] = deque()  # run numbers sent and not yet answered, in order
    receiving = False  # interrupted inside a read from a pipe: that worker's stream is unusable
    try:
        try:
            pool = _take(max(1, min(workers, len(runs))))
            for w in pool:
                w.send(("open", shm_path, path, kwargs, size, RUN))
            errors = [w.recv()[1] for w in pool]  # every answer read, so none is left in a pipe
            if any(errors):
                raise next(e for e in errors if e is not None)
        except WorkerError as exc:
            _BROKEN = str(exc)
            raise
        finally:
            os.unlink(shm_path)  # every worker has it mapped (or failed): nothing is left behind

        def send(j: int) -> None:
            lo, run = runs[j]
            pool[j % len(pool)].send(("read", j % nslots, lo, run))
            inflight.append(j)

        for j in range(min(nslots, len(runs))):
            send(j)
        for j in range(len(runs)):
            receiving = True
            _, records, error = pool[j % len(pool)].recv()
            receiving = False
            inflight.popleft()
            for k, (index, window, transform, bounds, any_valid) in enumerate(records):
                image, valid = _slot_arrays(mm, j % nslots, k, size, RUN)
                yield ReadTile(index, window, transform, bounds, any_valid, image, valid)
            if error is not None:
                raise error
            if j + nslots < len(runs):
                send(j + nslots)
    finally:
        _finish(pool, inflight, receiving)
        mm.close()


def _finish(pool: list[_Worker], inflight: deque[int], interrupted: bool) -> None:
    """Collect the answers still owed (the caller stopped early), close the workers' scene and
    return them to the idle pool; a worker that does not answer, or whose answer was being read
    when the reading was interrupted, is stopped."""
    if interrupted:
        for w in pool:
            w.stop()
        _give_back(pool, [])
        return
    healthy = []
    owed = {id(w): 0 for w in pool}
    for j in inflight:
        owed[id(pool[j % len(pool)])] += 1
    for w in pool:
        try:
            for _ in range(owed[id(w)]):
                w.recv()
            w.send(("close",))
            healthy.append(w)
        except WorkerError:
            w.stop()
    _give_back(pool, healthy)


if __name__ == "__main__":
    _main()
