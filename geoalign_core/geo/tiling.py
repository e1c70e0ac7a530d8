"""Tiling: iterate the normalised tiles of a raster's grid, read ahead in a background thread.

The grid itself is :func:`geoalign_core.geo.grid.tile_windows` (re-exported here with
:func:`~geoalign_core.geo.grid.count_tiles`). :func:`iter_tiles` reads tiles ``prefetch`` ahead
in a background thread (:func:`~geoalign_core.geo.prefetch.read_ahead`) so that disk I/O and
decompression overlap the model's compute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from rasterio.windows import Window

from geoalign_core.geo.grid import MAX_OVERLAP, count_tiles, tile_windows
from geoalign_core.geo.prefetch import read_ahead
from geoalign_core.geo.tile import Tile

if TYPE_CHECKING:
    from geoalign_core.geo.raster import RasterSource

__all__ = ["MAX_OVERLAP", "Tile", "count_tiles", "iter_tiles", "tile_windows"]


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
