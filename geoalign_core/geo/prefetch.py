"""Read ahead in a background thread: raster I/O overlapping the model's compute.

:func:`read_ahead` runs a producer (a generator over a raster) in a thread on its OWN dataset
handle (``RasterSource.clone()``: GDAL handles are not thread-safe), keeps at most
``prefetch`` items ahead in a queue, hands the producer's exceptions to the consumer, and
stops and joins the thread when the consumer stops early (``break``, ``close()``, an
exception or KeyboardInterrupt). :func:`~geoalign_core.geo.tiling.iter_tiles` (full-raster
grid) and the inference batch reader (ad-hoc windows resampled to the model's input) both
use it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from geoalign_core.geo.raster import RasterSource

T = TypeVar("T")

_DONE = object()


class _Failure:
    """Carries an exception from the reader thread to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(
    source: RasterSource,
    produce: Callable[[RasterSource], Iterator[T]],
    prefetch: int = 2,
    name: str = "geoalign-reader",
) -> Iterator[T]:
    """Yield ``produce(handle)``'s items, produced ``prefetch`` ahead in a background thread.

    Args:
        source: an open raster; the thread works on ``source.clone()``. Anything the clone
            should share (the scene statistics) must be computed on ``source`` before.
        produce: a generator function over a raster handle.
        prefetch: items read ahead; 0 runs ``produce(source)`` in the caller's thread.
        name: the thread's name.
    """
    if prefetch <= 0:
        yield from produce(source)
        return
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            with source.clone() as own:
                for item in produce(own):
                    if not put(item):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=worker, name=name, daemon=True)
    thread.start()
    try:
        while True:
            try:  # a timeout keeps the wait interruptible and notices a dead reader
                item = q.get(timeout=0.1)
            except queue.Empty:
                if not thread.is_alive() and q.empty():
                    raise RuntimeError(f"the reader thread {name} stopped unexpectedly") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:  # unblock a worker waiting on a full queue
                q.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
