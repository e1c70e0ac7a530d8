"""Batches of model-ready tiles for arbitrary windows, read ahead in a background thread.

:func:`geoalign_core.geo.iter_tiles` walks the full-raster grid at native resolution; the
inference passes also need a grid over a sub-area (``bounds``), ad-hoc windows around vector
regions, and tiles resampled to the model's input size. This helper covers those with the
same read-ahead thread as ``iter_tiles`` (:func:`geoalign_core.geo.prefetch.read_ahead`): its
own dataset handle, ``prefetch`` batches ahead, stopped and joined when the consumer stops.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..geo import RasterSource, Tile
from ..geo.prefetch import read_ahead


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
    """

    tiles: list[Tile]
    images: np.ndarray
    valid: np.ndarray
    done: int


def fill_invalid(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels of ``image [3, H, W]`` with the mean of the valid ones (in place)."""
    if valid.all() or not valid.any():
        return image
    mean = image[:, valid].mean(axis=1)
    image[:, ~valid] = mean[:, None]
    return image


def _read(source: RasterSource, window: Window, index: int, size: int) -> Tile:
    native = int(window.width) == size and int(window.height) == size
    if native:
        return source.read_tile(window, index=index)
    return source.read_tile(window, index=index, out_shape=(size, size), resampling=Resampling.bilinear)


def _batches(
    source: RasterSource, windows: Sequence[Window], size: int, batch_size: int, skip_empty: bool
) -> Iterator[TileBatch]:
    tiles: list[Tile] = []
    for i, window in enumerate(windows):
        tile = _read(source, window, i, size)
        if skip_empty and not tile.valid.any():
            continue
        fill_invalid(tile.image, tile.valid)
        tiles.append(tile)
        if len(tiles) == batch_size:
            yield TileBatch(tiles, np.stack([t.image for t in tiles]), np.stack([t.valid for t in tiles]), i + 1)
            tiles = []
    if tiles:
        yield TileBatch(tiles, np.stack([t.image for t in tiles]), np.stack([t.valid for t in tiles]), len(windows))


def iter_batches(
    source: RasterSource,
    windows: Sequence[Window],
    size: int,
    batch_size: int,
    skip_empty: bool = True,
    prefetch: int = 2,
) -> Iterator[TileBatch]:
    """Yield :class:`TileBatch` es of the ``windows`` read from ``source``, resampled to ``size``.

    Args:
        source: an open raster (its statistics are computed here, once, before reading).
        windows: pixel windows (may extend beyond the raster: boundless, padding invalid).
        size: model input side; windows of another size are resampled (bilinear).
        batch_size: tiles per batch.
        skip_empty: drop tiles without a valid pixel.
        prefetch: batches read ahead in a background thread; 0 reads in the caller's thread.
    """
    windows = list(windows)
    source.stats  # noqa: B018 - computed once, shared with the reader thread's clone
    yield from read_ahead(
        source, lambda src: _batches(src, windows, size, batch_size, skip_empty), prefetch, "geoalign-batch-reader"
    )
