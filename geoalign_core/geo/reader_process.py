"""What runs in each reader process: ``python -m geoalign_core.geo.reader_process``.

The parent side (which process reads what, the shared memory, the pool of processes) is
:mod:`geoalign_core.geo.tile_workers`. A reader process imports NumPy and rasterio only, never
torch. It answers the parent's requests on stdin/stdout (pickled tuples), in order:

* ``("open", raster path, RasterSource keywords, tile size, windows per block)`` -> ``("ready", error or None)``;
* ``("read", block id, [(block id, file) to map first], first slot, first window index, windows)``
  -> ``("read", records, error or None)``: each window is read (:func:`read_filled`) straight into
  its slot of the block's shared memory; a record is ``(index, window, transform, bounds, has a
  valid pixel)``. A read error ends the piece; it is sent back without its traceback;
* ``("close",)``: the scene's handle and memory maps are closed (no answer).

It exits when its stdin closes (the parent exited).
"""

from __future__ import annotations

import mmap
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rasterio.windows import Window

    from geoalign_core.geo.raster import RasterSource
    from geoalign_core.geo.tile import Tile

__all__ = ["block_arrays", "block_bytes", "fill_invalid", "read_filled", "serve"]


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


def block_arrays(buf: np.ndarray, block: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The images ``[block, 3, size, size]`` and masks ``[block, size, size]`` in a block's memory
    ``buf`` (1-D uint8; images first, then masks). NumPy makes ``buf`` the base of every view of
    them, so its reference count says whether any is alive."""
    n_image = block * 3 * size * size * 4
    images = buf[:n_image].view(np.float32).reshape(block, 3, size, size)
    valid = buf[n_image : n_image + block * size * size].view(np.bool_).reshape(block, size, size)
    return images, valid


def block_bytes(block: int, size: int) -> int:
    return block * size * size * (3 * 4 + 1)


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives pickling, else a RuntimeError carrying its message; without its
    traceback either way (its frames would keep views of a block's memory, which then could not be
    unmapped)."""
    exc = exc.with_traceback(None)
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _read_piece(source: RasterSource, buf: np.ndarray, block: int, size: int, slot: int, lo: int,
                windows: Sequence[Window], records: list[tuple[Any, ...]]) -> None:
    """Read ``windows`` (positions ``lo``...) into slots ``slot``... of a block's memory ``buf``,
    appending each tile's record (and whether it has a valid pixel) to ``records``."""
    images, valid = block_arrays(buf, block, size)
    for k, window in enumerate(windows):
        tile = read_filled(source, lo + k, window, size, out=images[slot + k])  # the image is read in place
        valid[slot + k] = tile.valid
        records.append((tile.index, tile.window, tile.transform, tile.bounds, bool(tile.valid.any())))


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer the parent's requests (the module docstring; the parent: :mod:`geoalign_core.geo.tile_workers`) until
    its pipe closes."""
    from geoalign_core.geo.raster import RasterSource

    source: RasterSource | None = None
    blocks: dict[int, tuple[mmap.mmap, np.ndarray]] = {}  # this worker's blocks of shared memory, by id
    size = block = 0

    def send(msg: object) -> None:
        pickle.dump(msg, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()

    def close() -> None:
        nonlocal source
        if source is not None:
            source.close()
        mms = [mm for mm, _ in blocks.values()]
        source = None
        blocks.clear()  # the arrays over the maps go first
        for mm in mms:
            try:
                mm.close()
            except BufferError:  # an array over it is still alive somewhere: unmapped when it goes
                pass

    while True:
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        kind = msg[0]
        if kind == "open":  # ("open", raster path, RasterSource keywords, tile size, windows per block)
            _, path, kwargs, size, block = msg
            try:
                source = RasterSource(path, **kwargs)
                send(("ready", None))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                send(("ready", _portable(exc)))
        elif kind == "read":  # ("read", block id, [(id, file) to map first], first slot, first index, windows)
            _, block_id, maps, slot, lo, windows = msg
            records: list[tuple[Any, ...]] = []
            error: BaseException | None = None
            try:
                assert source is not None, "read before open"
                for ident, block_path in maps:
                    with open(block_path, "r+b") as fh:
                        mm = mmap.mmap(fh.fileno(), 0)
                    blocks[ident] = (mm, np.frombuffer(mm, np.uint8))
                _read_piece(source, blocks[block_id][1], block, size, slot, lo, windows, records)
            except BaseException as exc:  # noqa: BLE001 - raised by the parent at this block
                error = _portable(exc)
            send(("read", records, error))
        elif kind == "close":
            close()


def _main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the reading
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the pipe
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    _main()
