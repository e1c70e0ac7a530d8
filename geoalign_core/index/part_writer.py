"""Writing a build's chunks in the background: the next chunk's image pass overlaps the write.

:class:`PartWriter` runs each save in one writer thread, one at a time. A new save waits for the
one before it (at most one chunk is being written while the next is being made, so memory stays
at two chunks), and an error of a save (a full disk) is raised in the building thread, at the
next :meth:`PartWriter.submit` or at :meth:`PartWriter.flush`. Leaving the ``with`` on an error
(Ctrl-C, a cancel) still waits for the save under way, so a finished chunk is kept whole for a
resume.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

__all__ = ["PartWriter"]


class PartWriter:
    """Saves in a background thread, one at a time (see the module docstring)::

        with PartWriter() as writer:
            for part, path in chunks:
                writer.submit(part.save, path)
            writer.flush()          # every save done, or its error raised
    """

    def __init__(self, name: str = "geoalign-part-writer") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: Future | None = None
        self.written = 0  #: saves finished

    def submit(self, save: Callable[..., object], *args: object) -> None:
        """Start ``save(*args)`` once the previous save has finished (its error, if any, is raised here)."""
        self._wait()
        self._pending = self._pool.submit(save, *args)

    def _wait(self) -> None:
        if self._pending is not None:
            fut, self._pending = self._pending, None
            fut.result()
            self.written += 1

    def flush(self) -> None:
        """Wait for the save under way; raise its error."""
        self._wait()

    def close(self) -> None:
        """Wait for the save under way (its error is not raised: see :meth:`flush`) and stop the thread."""
        if self._pending is not None:
            self._pending.exception()  # waits; a failed save leaves no file (IndexPart.save is atomic)
            self._pending = None
        self._pool.shutdown(wait=True)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.flush()
        self.close()
