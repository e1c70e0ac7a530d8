"""Pixel validity helpers: NaN handling and the black-border ("collar") detector.

Validity semantics used by :class:`geoalign_core.geo.raster.RasterSource`: a pixel is
INVALID when

* all selected bands are masked (per-band nodata value, or GDAL's per-dataset mask), or
* the alpha band is 0, or
* any selected band is NaN or infinite (floating point data), or
* black is treated as nodata and every selected band is exactly 0.

Black-border auto-detection (:func:`detect_black_border`): many orthomosaics (drone scenes
from OpenAerialMap, for instance) have no nodata value and no alpha band, and fill the area
outside the scene with pure black. For a uint8 RGB raster with no nodata, no alpha and no
mask, black (0, 0, 0) is treated as nodata when the pure-black pixels connected to the
image border make up more than 1 % of the decimated sample. Isolated dark pixels inside
the scene (shadows) never trigger it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLACK_BORDER_MIN_FRACTION", "border_connected", "detect_black_border", "finite_mask"]

BLACK_BORDER_MIN_FRACTION = 0.01
_DETECT_MAX_SIDE = 256


def finite_mask(data: np.ndarray) -> np.ndarray:
    """True where all channels of ``data [C, H, W]`` are finite (always true for integers)."""
    if not np.issubdtype(data.dtype, np.floating):
        return np.ones(data.shape[1:], dtype=bool)
    return np.isfinite(data).all(axis=0)


def border_connected(mask: np.ndarray) -> np.ndarray:
    """Pixels of the boolean ``mask`` (4-)connected to the array border through the mask."""
    reached = np.zeros_like(mask)
    reached[0, :] = mask[0, :]
    reached[-1, :] = mask[-1, :]
    reached[:, 0] |= mask[:, 0]
    reached[:, -1] |= mask[:, -1]
    while True:  # iterative geodesic dilation; converges in at most (path length) steps
        grown = reached.copy()
        grown[1:, :] |= reached[:-1, :]
        grown[:-1, :] |= reached[1:, :]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def detect_black_border(sample: np.ndarray, valid: np.ndarray) -> bool:
    """Whether pure black looks like the outside of the scene in a decimated sample.

    Args:
        sample: raw sample ``[C, H, W]`` of the selected bands.
        valid: validity of the sample pixels before black is considered.

    Returns True when the pure-black (all channels 0) valid pixels connected to the border
    exceed :data:`BLACK_BORDER_MIN_FRACTION` of the sampled pixels.
    """
    black = (sample == 0).all(axis=0) & valid
    total = black.size
    if total == 0 or black.sum() <= BLACK_BORDER_MIN_FRACTION * total:
        return False
    step = max(1, int(np.ceil(max(black.shape) / _DETECT_MAX_SIDE)))
    small = black[::step, ::step]
    connected = border_connected(small)
    return connected.sum() > BLACK_BORDER_MIN_FRACTION * small.size
