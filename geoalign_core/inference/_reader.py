"""Batches of model-ready tiles for arbitrary windows, read ahead in a background thread.

:func:`geoalign_core.geo.iter_tiles` walks the full-raster grid at native resolution; the
inference passes also need a grid over a sub-area (``bounds``), ad-hoc windows around vector
regions, and tiles resampled to the model's input size. This helper covers those with the
same read-ahead thread as ``iter_tiles`` (:func:`geoalign_core.geo.prefetch.read_ahead`): its
own dataset handle, ``prefetch`` batches ahead, stopped and joined when the consumer stops.
With ``workers > 1`` the tiles are read by that many reader processes, each batch straight into
shared memory (:func:`geoalign_core.geo.tile_workers.read_in_processes`), or by that many
threads where processes cannot start (:func:`geoalign_core.geo.readers.read_parallel`); with
``pin`` each batch is held in page-locked memory, ready for a non-blocking copy to the GPU.

A batch holds the tiles of ``batch_size`` consecutive windows, whatever the number of readers;
with ``skip_empty`` the tiles without a valid pixel are left out of it.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.windows import Window

from ..geo import RasterSource, Tile
from ..geo.prefetch import read_ahead
from ..geo.reader_process import read_filled
from ..geo.readers import read_parallel
from ..geo.tile_workers import WorkerError, processes_available, read_in_processes

logger = logging.getLogger(__name__)


@dataclass
class TileBatch:
    """Tiles ready for the model.

    Attributes:
        tiles: the :class:`~geoalign_core.geo.Tile` records (``Tile.index``: position in the
            window list; ``Tile.image``/``Tile.valid`` at the model's input size).
        images: float32 ``[B, 3, S, S]`` in [0, 1]; invalid pixels are filled with the mean
            colour of the tile's valid pixels, so padding and nodata do not read as black.
        valid: bool ``[B, S, S]``.
        done: windows consumed so far, skipped empty ones included (for progress).
        pinned: with ``pin``, ``images`` as a tensor in page-locked memory (``images`` is a
            view of it), else None.
    """

    tiles: list[Tile]
    images: np.ndarray
    valid: np.ndarray
    done: int
    pinned: torch.Tensor | None = None


def _batch(tiles: list[Tile], done: int, pin: bool) -> TileBatch:
    valid = np.stack([t.valid for t in tiles])
    if not pin:
        return TileBatch(tiles, np.stack([t.image for t in tiles]), valid, done)
    buf = torch.empty((len(tiles), *tiles[0].image.shape), dtype=torch.float32).pin_memory()
    images = buf.numpy()
    np.stack([t.image for t in tiles], out=images)
    return TileBatch(tiles, images, valid, done, buf)


def _batches_from_processes(
    source: RasterSource, windows: Sequence[Window], size: int, batch_size: int, skip_empty: bool, workers: int,
    pin: bool,
) -> Generator[TileBatch, None, None]:
    """:func:`_batches` with the tiles read by reader processes: each batch is a view of the shared
    memory they were read into (no copy), or with ``pin`` one copy into page-locked memory."""
    for got in read_in_processes(source, windows, size, batch_size, skip_empty, workers):
        images, valid, pinned = got.images, got.valid, None
        if pin:
            pinned = torch.empty(images.shape, dtype=torch.float32).pin_memory()
            pinned.numpy()[...] = images
            images, valid = pinned.numpy(), valid.copy()  # the shared block is free again
        tiles = [Tile(images[k], valid[k], window, transform, bounds, index)
                 for k, (index, window, transform, bounds) in enumerate(got.records)]
        yield TileBatch(tiles, images, valid, got.done, pinned)


def _batches(
    source: RasterSource, windows: Sequence[Window], size: int, batch_size: int, skip_empty: bool,
    workers: int = 1, pin: bool = False, ahead: int | None = None,
) -> Generator[TileBatch, None, None]:
    """Batches of the tiles of every ``batch_size`` consecutive windows (without the empty ones with
    ``skip_empty``: a batch may then hold fewer tiles, and a block of empty tiles none)."""
    if workers > 1 and processes_available():
        yielded = False
        try:
            for batch in _batches_from_processes(source, windows, size, batch_size, skip_empty, workers, pin):
                yielded = True
                yield batch
            return
        except WorkerError as exc:  # no reader process here: reader threads instead
            if yielded:
                raise
            logger.warning("reader processes unavailable (%s); reading with %d threads", exc, workers)
    n = len(windows)
    if workers > 1:
        read = read_parallel(source, windows, lambda src, i, w: read_filled(src, i, w, size), workers, ahead)
    else:
        read = (read_filled(source, i, w, size) for i, w in enumerate(windows))
    tiles: list[Tile] = []
    try:
        for i, tile in enumerate(read):
            if not (skip_empty and not tile.valid.any()):
                tiles.append(tile)
            if (i + 1) % batch_size == 0 or i + 1 == n:
                if tiles:
                    yield _batch(tiles, i + 1, pin)
                tiles = []
    finally:
        close = getattr(read, "close", None)
        if close is not None:
            close()  # stops and joins the reader threads when the consumer stopped early


def iter_batches(
    source: RasterSource,
    windows: Sequence[Window],
    size: int,
    batch_size: int,
    skip_empty: bool = True,
    prefetch: int = 2,
    workers: int = 1,
    pin: bool = False,
) -> Generator[TileBatch, None, None]:
    """Yield :class:`TileBatch` es of the ``windows`` read from ``source``, resampled to ``size``.

    Args:
        source: an open raster (its statistics are computed here, once, before reading).
        windows: pixel windows (may extend beyond the raster: boundless, padding invalid).
        size: model input side; windows of another size are resampled (bilinear).
        batch_size: tiles per batch.
        skip_empty: drop tiles without a valid pixel.
        prefetch: batches read ahead in a background thread; 0 reads in the caller's thread
            (with ``workers > 1``: at least 1, the batches are assembled in that thread).
        workers: threads reading tiles, each on its own dataset handle (1: the batch thread
            reads them itself).
        pin: stack each batch into page-locked memory (:attr:`TileBatch.pinned`; for a GPU).
    """
    windows = list(windows)
    workers = max(1, int(workers))
    source.stats  # noqa: B018 - computed once, shared with the reader threads' clones
    if workers > 1:
        prefetch = max(1, prefetch)
    ahead = max(2 * workers, (prefetch + 1) * batch_size)  # tiles in flight: keeps every worker busy
    yield from read_ahead(
        source, lambda src: _batches(src, windows, size, batch_size, skip_empty, workers, pin, ahead), prefetch,
        "geoalign-batch-reader",
    )
