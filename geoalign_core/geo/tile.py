"""The :class:`Tile` record: one normalised image window of a raster and its place on the map."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.windows import Window

__all__ = ["Tile"]


@dataclass
class Tile:
    """One normalised image tile.

    Attributes:
        image: float32 ``[3, H, W]`` in [0, 1]; padding and invalid pixels are 0.
        valid: bool ``[H, W]``; False for padding beyond the raster and for nodata pixels.
        window: the tile's window in raster pixel coordinates (may extend beyond the raster).
        transform: affine transform of the tile's pixel grid (pixel -> map coordinates).
        bounds: the tile's extent in map coordinates (left, bottom, right, top).
        index: position of the tile in its window list (-1 for a lone window).
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
