"""Parallel tile reading with threads, each on its own dataset handle; the reader count policy.

One reader decodes about 700-900 tiles per CPU-second at 224 px; a GPU running ViT-B/16
consumes tens of thousands. The batch reader uses reader *processes*
(:mod:`geoalign_core.geo.tile_workers`): rasterio releases the GIL while GDAL decodes, but most
of a small tile's reading is NumPy work around it that holds the GIL, so threads gained only
1.2-1.4x on two cores. :func:`read_parallel` spreads the reads of a window list over
``workers`` threads: the fallback where processes cannot start.

GDAL dataset handles must not be shared between threads, so each worker opens its own
(:meth:`RasterSource.clone <geoalign_core.geo.RasterSource.clone>`, which shares the scene
statistics), once, on its first read; every handle is closed when the reading ends, also
when the consumer stops early.

Each task reads a run of consecutive windows (neighbours share the raster's blocks, and GDAL
caches a decoded block per handle). Results come back in window order. At most ``ahead`` reads
are in flight or waiting to be consumed, so memory stays bounded whatever the number of windows.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from geoalign_core.defaults import MAX_WORKERS

if TYPE_CHECKING:
    from rasterio.windows import Window

    from geoalign_core.geo.raster import RasterSource

__all__ = ["MAX_WORKERS", "RUN", "check_workers", "default_workers", "read_parallel"]

T = TypeVar("T")

RUN = 4  #: consecutive windows per task (see :func:`read_parallel`)



def check_workers(workers: int | None, what: str = "workers") -> int | None:
    """``workers`` as an int (None stays None: the default policy); refuses < 1 or > :data:`MAX_WORKERS`."""
    from geoalign_core.errors import InputError

    if workers is None:
        return None
    if int(workers) != workers or not 1 <= int(workers) <= MAX_WORKERS:
        raise InputError(f"{what} must be a whole number from 1 to {MAX_WORKERS}; got {workers}", param="workers")
    return int(workers)


def default_workers(gpu: bool, cores: int | None = None) -> int:
    """Tile readers when the user did not say: on a GPU, the cores available (at most 8: the
    decoder rarely needs more to keep one GPU fed at 224 px), leaving one for the main thread
    when there are 3 or more; on a CPU, 1 (the model computes on every core already, and a
    second reader only takes time from it)."""
    if not gpu:
        return 1
    if cores is None:
        from geoalign_core.threads import available_cores

        cores = available_cores()
    return max(1, min(8, cores - 1 if cores >= 3 else cores))


def read_parallel(
    source: RasterSource,
    windows: Sequence[Window],
    read: Callable[[RasterSource, int, Window], T],
    workers: int,
    ahead: int | None = None,
    name: str = "geoalign-tile-reader",
    run: int = RUN,
) -> Iterator[T]:
    """Yield ``read(handle, i, windows[i])`` for every window, in order, read by ``workers`` threads.

    Args:
        source: an open raster; each thread reads from its own ``source.clone()``. Anything the
            clones should share (the scene statistics) must be computed on ``source`` before.
        read: what one worker does for one window (``i``: the window's position); its
            exceptions reach the consumer, at the window where they happened.
        workers: reader threads; 1 still reads in one background thread (``ahead`` ahead).
        ahead: windows in flight or read but not yet consumed (default ``4 * run * workers``).
        name: the threads' name prefix.
        run: consecutive windows one thread reads in a row: neighbouring windows share the
            raster's blocks, and a block decoded by one handle is cached for that handle only.
    """
    workers, run = max(1, int(workers)), max(1, int(run))
    ahead = max(workers * run, int(ahead) if ahead is not None else 4 * run * workers)
    local = threading.local()
    handles: list[RasterSource] = []
    lock = threading.Lock()

    def handle() -> RasterSource:
        own = getattr(local, "handle", None)
        if own is None:
            own = source.clone()
            local.handle = own
            with lock:
                handles.append(own)
        return own

    def task(lo: int, hi: int) -> tuple[list[T], BaseException | None]:
        out: list[T] = []
        try:
            own = handle()
            for i in range(lo, hi):
                out.append(read(own, i, windows[i]))
        except BaseException as exc:  # noqa: BLE001 - raised to the consumer after the windows before it
            return out, exc
        return out, None

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    pending: deque[Future] = deque()
    n = len(windows)
    nxt = 0

    def submit() -> None:
        nonlocal nxt
        hi = min(n, nxt + run)
        pending.append(pool.submit(task, nxt, hi))
        nxt = hi

    try:
        while nxt < n and len(pending) * run < ahead:
            submit()
        while pending:
            results, exc = pending.popleft().result()
            if nxt < n and exc is None:
                submit()
            yield from results
            if exc is not None:
                raise exc
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)
        for own in handles:
            own.close()
