"""Batches of model-ready tiles for arbitrary windows, read ahead in a background thread.

:func:`geoalign_core.geo.iter_tiles` walks the full-raster grid at native resolution; the
inference passes also need a grid over a sub-area (``bounds``), ad-hoc windows around vector
regions, and tiles resampled to the model's input size. This helper covers those with the
same read-ahead thread as ``iter_tiles`` (:func:`geoalign_core.geo.prefetch.read_ahead`): its
own dataset handle, ``prefetch`` batches ahead, stopped and joined when the consumer stops.
With ``workers > 1`` the tiles themselves are read by that many threads
(:func:`geoalign_core.geo.readers.read_parallel`), and the read-ahead thread assembles the
batches; with ``pin`` each batch is stacked straight into page-locked memory, ready for a
non-blocking copy to the GPU.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..geo import RasterSource, Tile
from ..geo.prefetch import read_ahead
from ..geo.readers import read_parallel


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


def fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels of ``image [3, H, W]`` with the mean of the valid ones (in place)."""
    if valid.all() or not valid.any():
        return image
    mean = image[:, valid].mean(axis=1)
    np.copyto(image, mean[:, None, None], where=~valid)
    return image


def _read(source: RasterSource, window: Window, index: int, size: int) -> Tile:
    native = int(window.width) == size and int(window.height) == size
    if native:
        return source.read_tile(window, index=index)
    return source.read_tile(window, index=index, out_shape=(size, size), resampling=Resampling.bilinear)


def _read_filled(source: RasterSource, index: int, window: Window, size: int) -> Tile:
    tile = _read(source, window, index, size)
    if tile.valid.any():
        fill_invalid(tile.image, tile.valid)
    return tile


def _batches(
    source: RasterSource, windows: Sequence[Window], size: int, batch_size: int, skip_empty: bool,
    workers: int = 1, pin: bool = False, ahead: int | None = None,
) -> Generator[TileBatch, None, None]:
    tiles: list[Tile] = []
    if workers > 1:
        read = read_parallel(source, windows, lambda src, i, w: _read_filled(src, i, w, size), workers, ahead)
    else:
        read = (_read_filled(source, i, w, size) for i, w in enumerate(windows))
    try:
        for i, tile in enumerate(read):
            if skip_empty and not tile.valid.any():
                continue
            tiles.append(tile)
            if len(tiles) == batch_size:
                yield _batch(tiles, i + 1, pin)
                tiles = []
        if tiles:
            yield _batch(tiles, len(windows), pin)
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
