"""Model-ready tiles read by separate reader processes, handed back through shared memory.

Reading a 224 px tile costs about 1 ms of CPU, and most of it is Python and NumPy work around
GDAL (masks, normalisation, the mean fill) that holds the GIL: two reader *threads* gained only
1.2-1.4x on two cores (``benchmarks/bench_readers.py``). Reader processes do not share a GIL.

How the work is split, so that the parent does almost nothing per tile:

* **The workers** are plain ``python -m geoalign_core.geo.reader_process`` processes that import
  NumPy and rasterio, never torch (no fork of a process running torch's threads, and no re-run
  of the user's ``__main__``, which ``multiprocessing``'s spawn would do). Each opens its own
  handle on the raster (:meth:`RasterSource.reopen_args`, the scene statistics included) and
  normalises every tile it reads (:func:`~geoalign_core.geo.reader_process.read_filled`)
  straight into a block of shared memory (a memory-mapped file in ``/dev/shm``, removed as soon
  as every worker has mapped it). Only the tile records (window, transform, bounds) travel
  through the pipe. What a worker runs, and the requests it answers, are in
  :mod:`geoalign_core.geo.reader_process`.
* **Who reads what.** Every row of tiles is split into contiguous parts, one per worker, the
  same way in every row (:func:`_plan`): worker 0 reads the west part of each row, worker 1 the
  next, and so on. Neighbouring rows of tiles overlap and share the raster's compressed blocks;
  split this way, each raster block is decoded by one worker's GDAL cache (dealing whole batches
  out in turn made both workers decode most of them). Rows of a few tiles are joined before they
  are split, so that no worker is left idle on a narrow raster. A batch may hold tiles of two
  workers; the parent waits for both.
* **The parent** sends each worker its pieces in order, a few rows ahead, and hands each block
  on as a batch whose arrays are views of that shared memory: no copy. A block of memory is
  given new windows only once nothing refers to its arrays any more (their reference count), so
  a caller may keep batches as long as it likes.
* **Start-up** (about 0.3 s, the two imports) is paid once per process: idle workers wait for
  the next scene, and exit when the parent exits (their stdin closes). They see the environment
  (``GDAL_*`` settings included) of the moment they started. A forked child of the parent
  starts workers of its own.

Use :func:`read_in_processes`; :func:`processes_available` says whether workers can start here
(the callers fall back to reader threads where they cannot).
"""

from __future__ import annotations

import atexit
import mmap
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoalign_core.geo.reader_process import block_arrays, block_bytes

if TYPE_CHECKING:
    from rasterio.windows import Window

    from geoalign_core.geo.raster import RasterSource

__all__ = ["ReadBatch", "WorkerError", "processes_available", "read_in_processes", "worker_pids"]

DEPTH = 3  #: batches of windows sent to the workers, at least, beyond the one being consumed (every
#: worker reads a part of each: more workers need no more batches in flight, nor more shared memory)
ROW_SEGMENT = 64  #: windows of a row of tiles split among the workers at a time (see :func:`_plan`)
_SHM_DIR = "/dev/shm"


@dataclass
class ReadBatch:
    """The tiles of one block of windows, read by the workers into shared memory.

    Attributes:
        records: ``(index, window, transform, bounds)`` of each tile kept, in window order.
        images: float32 ``[len(records), 3, S, S]``, a view of the block's shared memory.
        valid: bool ``[len(records), S, S]``, likewise.
        done: windows consumed once this block is, skipped empty ones included.
    """

    records: list[tuple[Any, Any, Any, Any]]
    images: np.ndarray
    valid: np.ndarray
    done: int


# --------------------------------------------------------------------------------------------
# the parent side (the reader processes themselves: :mod:`geoalign_core.geo.reader_process`)


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
                [sys.executable, "-m", "geoalign_core.geo.reader_process"],
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
_OWNER = os.getpid()  # the process whose workers these are (a forked child must not share their pipes)
_BROKEN: str | None = None  # why workers cannot start here (then the callers use threads)


def _take(n: int) -> list[_Worker]:
    global _OWNER
    with _LOCK:
        if os.getpid() != _OWNER:  # a fork of the process that started them: its own workers
            _IDLE.clear()
            _BUSY.clear()
            _OWNER = os.getpid()
        taken: list[_Worker] = []
        dead: list[_Worker] = []
        while _IDLE and len(taken) < n:
            w = _IDLE.pop()
            (taken if w.alive() else dead).append(w)
    for w in dead:
        w.stop()  # closes its pipes
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
    if os.getpid() != _OWNER:
        return  # a fork's copy of the list: the workers are its parent's
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
    """A new file of ``nbytes`` mapped in memory: in ``/dev/shm`` when it has room, else in the
    temporary folder."""
    folder = None
    if os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK):
        st = os.statvfs(_SHM_DIR)
        if st.f_bavail * st.f_frsize > 4 * nbytes:
            folder = _SHM_DIR
    fd, path = tempfile.mkstemp(prefix="geoalign-tiles-", dir=folder)
    try:
        os.ftruncate(fd, nbytes)
        return path, mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)


class _Block:
    """Shared memory for one block of tiles, filled by the workers, handed to the caller as views.

    Free again when no array refers to it: every view of :attr:`memory` holds a reference to it.
    Its file is sent to each worker once (with that worker's next request) and removed as soon as
    every worker has mapped it.
    """

    def __init__(self, ident: int, nbytes: int, workers: int) -> None:
        self.ident = ident
        self.path: str | None
        self.path, mm = _shared_file(nbytes)
        self.memory = np.frombuffer(mm, np.uint8)
        self.reading = False
        self.unmapped = set(range(workers))  # the workers its file was not sent to yet
        self.confirmed = 0  # the workers that answered the request that mapped it

    def free(self) -> bool:
        # referred to by this object and by getrefcount's argument only: no array uses it
        return not self.reading and sys.getrefcount(self.memory) <= 2

    def unlink(self) -> None:
        """Remove the file (the memory lives on in the mappings)."""
        if self.path is not None:
            os.unlink(self.path)
            self.path = None


@dataclass(frozen=True)
class _Piece:
    """Windows ``lo:hi`` (all in batch ``batch``), read by worker ``worker``."""

    worker: int
    batch: int
    lo: int
    hi: int


def _segments(windows: Sequence[Window]) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` runs of windows to split among the workers: each row of tiles (a run of windows with
    the same ``row_off``), a long row cut into equal segments of at most :data:`ROW_SEGMENT`, and short
    rows (narrow rasters, windows left out) joined until they hold ``ROW_SEGMENT // 2``."""
    start, total, joined = 0, len(windows), None
    while start < total:
        row_off, end = windows[start].row_off, start + 1
        while end < total and windows[end].row_off == row_off:
            end += 1
        if joined is not None and end - joined > ROW_SEGMENT:  # the row does not fit beside the rows joined
            yield joined, start
            joined = None
        lo = start if joined is None else joined
        if end - lo >= ROW_SEGMENT // 2:
            cuts = -(-(end - lo) // ROW_SEGMENT)
            for c in range(cuts):
                yield lo + (end - lo) * c // cuts, lo + (end - lo) * (c + 1) // cuts
            joined = None
        else:
            joined = lo
        start = end
    if joined is not None:
        yield joined, total


def _plan(windows: Sequence[Window], block: int, n: int) -> list[_Piece]:
    """The pieces of work, in window order: every segment (:func:`_segments`: a row of tiles, mostly)
    split into ``n`` contiguous parts, worker ``k`` reading part ``k``, so that each worker reads the
    same columns of the raster in every row; a part is cut again where a batch ends."""
    pieces: list[_Piece] = []
    for lo, hi in _segments(windows):
        for k in range(n):
            a, b = lo + (hi - lo) * k // n, lo + (hi - lo) * (k + 1) // n
            while a < b:
                j = a // block
                end = min(b, (j + 1) * block)
                pieces.append(_Piece(k, j, a, end))
                a = end
    return pieces


def read_in_processes(source: RasterSource, windows: Sequence[Window], size: int, block: int, skip_empty: bool,
                      workers: int) -> Iterator[ReadBatch]:
    """Yield the tiles of every ``block`` consecutive windows as one :class:`ReadBatch`, in order,
    read by ``workers`` reader processes (each row of tiles is split between them, see :func:`_plan`).

    The arrays are views of shared memory that no one else writes while any view of them is alive
    (a block's memory is given a new block only when the caller dropped every array of the old one),
    so they can be kept; a batch from which ``skip_empty`` dropped tiles without a valid pixel is a
    copy (a block of empty tiles yields nothing). A read error reaches the caller at its block, after
    the blocks before it. Raises :class:`WorkerError` (before yielding anything) when the processes
    cannot start.
    """
    global _BROKEN
    windows = list(windows)
    n_batches = -(-len(windows) // block)
    path, kwargs = source.reopen_args()
    nbytes = block_bytes(block, size)
    pool: list[_Worker] = []
    memory: list[_Block] = []  # every block of shared memory, mapped by every worker
    queues: list[deque[tuple[int, list[_Block]]]] = []  # per worker: (piece, blocks its message mapped), unanswered
    receiving = False  # interrupted inside a read from a pipe: that worker's stream is unusable
    try:
        try:
            pool = _take(max(1, min(workers, len(windows))))
            for w in pool:
                w.send(("open", path, kwargs, size, block))
            errors = [w.recv()[1] for w in pool]  # every answer read, so none is left in a pipe
        except WorkerError as exc:
            _BROKEN = str(exc)
            raise
        if any(errors):
            raise next(e for e in errors if e is not None)
        queues = [deque() for _ in pool]
        pieces = _plan(windows, block, len(pool))
        ahead = max(2 * ROW_SEGMENT, (DEPTH + 1) * block)  # windows sent from the start of the batch consumed
        filling: dict[int, tuple[_Block, list[Any]]] = {}  # batch -> its memory and its records by slot
        failed: dict[int, tuple[int, BaseException]] = {}  # batch -> (first window of the piece, its error)
        sent = 0

        def send_before(limit: int) -> None:
            nonlocal sent
            while sent < len(pieces) and pieces[sent].lo < limit:
                p = pieces[sent]
                if p.batch not in filling:
                    mem = next((b for b in memory if b.free()), None)
                    if mem is None:
                        mem = _Block(len(memory), nbytes, len(pool))
                        memory.append(mem)
                    mem.reading = True
                    filling[p.batch] = mem, [None] * (min(len(windows), (p.batch + 1) * block) - p.batch * block)
                mem = filling[p.batch][0]
                maps = [b for b in memory if b.path is not None and p.worker in b.unmapped]
                for b in maps:
                    b.unmapped.discard(p.worker)
                pool[p.worker].send(("read", mem.ident, [(b.ident, b.path) for b in maps], p.lo - p.batch * block,
                                     p.lo, windows[p.lo : p.hi]))
                queues[p.worker].append((sent, maps))
                sent += 1

        def receive(k: int) -> None:
            nonlocal receiving
            receiving = True
            _, got, error = pool[k].recv()
            receiving = False
            at, maps = queues[k].popleft()
            for b in maps:
                b.confirmed += 1
                if b.confirmed == len(pool):
                    b.unlink()  # every worker has mapped it
            p = pieces[at]
            slot = p.lo - p.batch * block
            filling[p.batch][1][slot : slot + len(got)] = got
            if error is not None and (p.batch not in failed or failed[p.batch][0] > p.lo):
                failed[p.batch] = (p.lo, error)

        for j in range(n_batches):
            send_before(j * block + ahead)
            for k, queue in enumerate(queues):  # this batch's pieces are the first unanswered ones
                while queue and pieces[queue[0][0]].batch == j:
                    receive(k)
            mem, got = filling.pop(j)
            mem.reading = False
            if j in failed:
                raise failed[j][1]
            images, valid = block_arrays(mem.memory, block, size)
            keep = [k for k, r in enumerate(got) if not skip_empty or r[4]]
            if len(keep) == len(got):
                images, valid = images[: len(got)], valid[: len(got)]
            elif keep:  # tiles dropped from the middle: a copy of the others
                images, valid = images[keep], valid[keep]
            if keep:
                yield ReadBatch([got[k][:4] for k in keep], images, valid, min(len(windows), (j + 1) * block))
            del images, valid
    finally:
        _finish(pool, [k for k, queue in enumerate(queues) for _ in queue], receiving)
        for mem in memory:
            mem.unlink()


def _finish(pool: list[_Worker], owed_by: list[int], interrupted: bool) -> None:
    """Collect the answers still owed (the caller stopped early), close the workers' scene and
    return them to the idle pool; a worker that does not answer, or whose answer was being read
    when the reading was interrupted, is stopped."""
    if interrupted:
        for w in pool:
            w.stop()
        _give_back(pool, [])
        return
    healthy = []
    owed = [0] * len(pool)
    for k in owed_by:  # the worker of each answer not read yet
        owed[k] += 1
    for k, w in enumerate(pool):
        try:
            for _ in range(owed[k]):
                w.recv()
            w.send(("close",))
            healthy.append(w)
        except WorkerError:
            w.stop()
    _give_back(pool, healthy)
