"""Scene normalisation: map raw pixel values to float32 [0, 1] the same way for every tile.

Statistics are computed ONCE per scene, from a decimated sample of its valid pixels (see
:meth:`geoalign_core.geo.raster.RasterSource.stats`), so that neighbouring tiles get the
same mapping and no tile-wise contrast jumps appear in mosaics or heatmaps.

The rule (:func:`compute_scene_stats`):

* per band, the 2nd and 98th percentiles ``lo``, ``hi`` of the valid sampled pixels;
* ``uint8`` data whose percentiles span at least half of 0..255 (``max(hi) - min(lo) >= 128``)
  is simply divided by 255 (``lo = 0``, ``hi = 255`` for every band): ordinary photographs
  keep their look;
* everything else (dark uint8 scenes, uint16 / 11-bit sensors, int16, floats) gets a
  per-band percentile stretch ``(x - lo) / (hi - lo)``, clipped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SceneStats", "compute_scene_stats"]

LOW_PERCENTILE = 2.0
HIGH_PERCENTILE = 98.0


@dataclass(frozen=True)
class SceneStats:
    """Per-channel linear stretch ``(x - lo) / (hi - lo)`` clipped to [0, 1].

    Attributes:
        lo: value mapped to 0, one per output channel.
        hi: value mapped to 1, one per output channel (always > lo).
        method: ``"scale255"`` (plain /255) or ``"percentile"`` (2-98 % stretch).
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    method: str = "percentile"

    def normalize(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map raw values ``[C, H, W]`` (C = len(lo)) to float32 in [0, 1]; NaN becomes 0.

        ``out``: a float32 array of the same shape to write into (else a new one).
        """
        lo = np.asarray(self.lo, dtype=np.float32).reshape(-1, 1, 1)
        hi = np.asarray(self.hi, dtype=np.float32).reshape(-1, 1, 1)
        if out is None:
            out = np.empty(data.shape, dtype=np.float32)
        if np.issubdtype(data.dtype, np.integer) and data.dtype.itemsize <= 2:
            np.subtract(data, lo, out=out)  # exact in float32, without a converted copy first
        else:
            out[...] = data
            out -= lo
        out /= hi - lo
        np.clip(out, 0.0, 1.0, out=out)
        if not np.issubdtype(data.dtype, np.integer):  # integers have no NaN (and the check costs 5x the rest)
            np.nan_to_num(out, copy=False, nan=0.0)
        return out

    def to_dict(self) -> dict:
        """JSON-friendly form (for output metadata and image-side indexes)."""
        return {"lo": list(self.lo), "hi": list(self.hi), "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> SceneStats:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(float(v) for v in d["lo"]), tuple(float(v) for v in d["hi"]), d.get("method", "percentile"))


def compute_scene_stats(samples: Sequence[np.ndarray], dtype: str) -> SceneStats:
    """Compute the stretch from the valid sampled values of each output channel.

    Args:
        samples: one 1-D array of valid raw values per channel (may be empty).
        dtype: the raster's data type name, e.g. ``"uint8"``.
    """
    lo: list[float] = []
    hi: list[float] = []
    for values in samples:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            lo.append(0.0)
            hi.append(255.0 if dtype == "uint8" else 1.0)
            continue
        p_lo, p_hi = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
        lo.append(float(p_lo))
        hi.append(float(p_hi))
    if dtype == "uint8" and max(hi) - min(lo) >= 128:
        n = len(lo)
        return SceneStats((0.0,) * n, (255.0,) * n, "scale255")
    # guard flat bands: keep the mapping defined (a constant band maps to 0)
    hi = [h if h > v else v + 1.0 for v, h in zip(lo, hi)]
    return SceneStats(tuple(lo), tuple(hi), "percentile")
