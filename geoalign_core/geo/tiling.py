"""Tiling: the tile grid over a raster, the :class:`Tile` record, and a prefetching iterator.

The grid (:func:`tile_windows`) starts at the top-left pixel and steps by
``stride = round(tile_size * (1 - overlap))`` until the last row and column are covered; the
last tiles may extend beyond the raster. They are read boundless and their padding is
marked invalid (``Tile.valid``), so every pixel of the raster is in at least one tile and
every tile has the same shape.

:func:`iter_tiles` reads tiles ``prefetch`` ahead in a background thread
(:func:`~geoalign_core.geo.prefetch.read_ahead`) so that disk I/O and decompression overlap
the model's compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.windows import Window

from geoalign_core.errors import InputError
from geoalign_core.geo.prefetch import read_ahead

if TYPE_CHECKING:
    from geoalign_core.geo.raster import RasterSource

__all__ = ["Tile", "count_tiles", "iter_tiles", "tile_windows"]

MAX_OVERLAP = 0.9


@dataclass
class Tile:
    """One normalised image tile.

    Attributes:
        image: float32 ``[3, H, W]`` in [0, 1]; padding and invalid pixels are 0.
        valid: bool ``[H, W]``; False for padding beyond the raster and for nodata pixels.
        window: the tile's window in raster pixel coordinates (may extend beyond the raster).
        transform: affine transform of the tile's pixel grid (pixel -> map coordinates).
        bounds: the tile's extent in map coordinates (left, bottom, right, top).
        index: position of the tile in the row-major grid of :func:`tile_windows`
            (-1 for regions read with ``read_region``).
    """

    image: np.ndarray
    valid: np.ndarray
    window: Window
    transform: Affine
    bounds: BoundingBox
    index: int = -1

    @property
    def valid_fraction(self) -> float:
        """Fraction of the tile's pixels that are valid."""
        return float(self.valid.mean()) if self.valid.size else 0.0


def _check_grid_args(tile_size: int, overlap: float) -> int:
    if int(tile_size) != tile_size or tile_size < 1:
        raise InputError(f"--tile-size must be a positive number of pixels; got {tile_size}")
    if not 0.0 <= overlap < MAX_OVERLAP:
        raise InputError(f"--overlap must be in [0, {MAX_OVERLAP}); got {overlap}")
    return max(1, round(tile_size * (1.0 - overlap)))


def _offsets(length: int, tile_size: int, stride: int) -> list[int]:
    offsets = [0]
    while offsets[-1] + tile_size < length:
        offsets.append(offsets[-1] + stride)
    return offsets


def tile_windows(width: int, height: int, tile_size: int, overlap: float = 0.0) -> list[Window]:
    """Row-major grid of ``tile_size`` x ``tile_size`` windows covering a ``width`` x ``height`` raster.

    ``stride = round(tile_size * (1 - overlap))``; the last row/column of windows is the first
    that reaches the raster's edge, so windows may extend beyond it (read them boundless).
    A raster smaller than one tile gives a single window at (0, 0).

    Raises:
        InputError: ``tile_size`` < 1 or ``overlap`` outside [0, 0.9).
    """
    stride = _check_grid_args(tile_size, overlap)
    rows = _offsets(height, tile_size, stride)
    cols = _offsets(width, tile_size, stride)
    return [Window(c, r, tile_size, tile_size) for r in rows for c in cols]


def count_tiles(width: int, height: int, tile_size: int, overlap: float = 0.0) -> int:
    """Number of windows :func:`tile_windows` returns (an upper bound on tiles yielded)."""
    stride = _check_grid_args(tile_size, overlap)
    return len(_offsets(height, tile_size, stride)) * len(_offsets(width, tile_size, stride))


def _read_all(source: RasterSource, windows: list[Window], skip_empty: bool) -> Iterator[Tile]:
    for i, window in enumerate(windows):
        tile = source.read_tile(window, index=i)
        if skip_empty and not tile.valid.any():
            continue
        yield tile


def iter_tiles(
    source: RasterSource,
    tile_size: int,
    overlap: float = 0.0,
    skip_empty: bool = True,
    prefetch: int = 2,
) -> Iterator[Tile]:
    """Yield the normalised tiles of ``source`` in row-major order.

    Args:
        source: an open raster.
        tile_size: tile side in pixels.
        overlap: fraction of overlap between neighbouring tiles, in [0, 0.9).
        skip_empty: do not yield tiles without a single valid pixel.
        prefetch: tiles read ahead in a background thread; 0 reads in the caller's thread.

    ``Tile.index`` is the tile's position among all :func:`tile_windows` (including skipped
    ones), so a progress bar over :func:`count_tiles` can advance to ``tile.index + 1``.
    Scene statistics are computed (once) before the first tile is read.
    """
    windows = tile_windows(source.width, source.height, tile_size, overlap)
    source.stats  # noqa: B018 - computed once here, shared with the reader thread
    yield from read_ahead(source, lambda src: _read_all(src, windows, skip_empty), prefetch, "geoalign-tile-reader")
