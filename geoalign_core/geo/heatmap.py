"""Stitching per-tile score maps into one raster without holding a full-resolution stack.

:class:`HeatmapAccumulator` keeps two float32 arrays (weighted sum and weight) on the output
grid, which is the raster's grid or a coarser one (``scale``: one output cell per
``scale`` x ``scale`` raster pixels, transform ``raster_transform * Affine.scale(scale)``).
Each :meth:`~HeatmapAccumulator.add` resamples a tile's values (at any resolution, e.g. a
14 x 14 patch grid for a 224 px tile) onto the output cells whose centres fall in the tile's
window; overlapping tiles are averaged (weighted). NaN values and ``valid == False`` pixels
contribute nothing; cells no tile covered are nodata in the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from affine import Affine
from rasterio.windows import Window

__all__ = ["HeatmapAccumulator"]


def _axis(start: float, length: float, n_src: int, n_out: int, scale: float):
    """Output cell indices whose centre falls in [start, start+length) and their source coordinates."""
    first = max(0, math.ceil(start / scale - 0.5))
    stop = min(n_out, math.ceil((start + length) / scale - 0.5))
    cells = np.arange(first, max(first, stop))
    pos = ((cells + 0.5) * scale - start) / length * n_src  # continuous source coordinate
    return cells, pos


def _linear(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.clip(pos - 0.5, 0, n - 1)
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (c - i0).astype(np.float32)


def _nearest(pos: np.ndarray, n: int) -> np.ndarray:
    return np.clip(np.floor(pos).astype(np.intp), 0, n - 1)


def _sample(a: np.ndarray, rpos: np.ndarray, cpos: np.ndarray, bilinear: bool) -> np.ndarray:
    h, w = a.shape
    if not bilinear:
        return a[np.ix_(_nearest(rpos, h), _nearest(cpos, w))]
    r0, r1, fr = _linear(rpos, h)
    c0, c1, fc = _linear(cpos, w)
    top = a[np.ix_(r0, c0)] * (1 - fc) + a[np.ix_(r0, c1)] * fc
    bot = a[np.ix_(r1, c0)] * (1 - fc) + a[np.ix_(r1, c1)] * fc
    return top * (1 - fr)[:, None] + bot * fr[:, None]


class HeatmapAccumulator:
    """Weighted average of overlapping tile values on the raster's (possibly coarser) grid.

    Args:
        height, width: raster size in pixels.
        transform: the raster's pixel -> map transform.
        crs: the raster's CRS (None for pixel coordinates).
        scale: raster pixels per output cell along each axis (>= 1); the output grid is
            ``ceil(height / scale) x ceil(width / scale)`` with transform
            ``transform * Affine.scale(scale)``.
    """

    def __init__(self, height: int, width: int, transform: Affine, crs: object | None, scale: float = 1) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.height, self.width, self.scale = int(height), int(width), float(scale)
        self.transform = transform
        self.crs = crs
        self.out_height = math.ceil(self.height / self.scale)
        self.out_width = math.ceil(self.width / self.scale)
        self.out_transform = transform * Affine.scale(self.scale)
        self.sum = np.zeros((self.out_height, self.out_width), dtype=np.float32)
        self.weight = np.zeros((self.out_height, self.out_width), dtype=np.float32)

    def add(
        self,
        window_or_offsets: Window | Sequence[int],
        values: np.ndarray,
        weight: float | np.ndarray = 1.0,
        valid: np.ndarray | None = None,
        resampling: str = "bilinear",
    ) -> None:
        """Add one tile's values.

        Args:
            window_or_offsets: the tile's window in raster pixels, or ``(row_off, col_off)`` when
                ``values`` is at raster resolution.
            values: float ``[h, w]`` over the window (any resolution); NaN = no value.
            weight: scalar, or ``[h, w]`` per-value weights (e.g. a taper against seams).
            valid: bool mask over the window at any resolution (e.g. ``Tile.valid``);
                False pixels contribute nothing.
            resampling: ``"bilinear"`` or ``"nearest"`` (used when values and output cells differ).
        """
        values = np.asarray(values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"values must be [h, w], got shape {values.shape}")
        h, w = values.shape
        if isinstance(window_or_offsets, Window):
            win = window_or_offsets
        else:
            row_off, col_off = window_or_offsets
            win = Window(col_off, row_off, w, h)
        rows, rpos = _axis(float(win.row_off), float(win.height), h, self.out_height, self.scale)
        cols, cpos = _axis(float(win.col_off), float(win.width), w, self.out_width, self.scale)
        if rows.size == 0 or cols.size == 0:
            return
        m = np.isfinite(values).astype(np.float32)
        if np.ndim(weight):
            m *= np.asarray(weight, dtype=np.float32)
        v = np.where(m > 0, values, 0.0).astype(np.float32) * m
        bilinear = resampling == "bilinear"
        s = _sample(v, rpos, cpos, bilinear)
        c = _sample(m, rpos, cpos, bilinear)
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            vpos_r = rpos / h * valid.shape[0]
            vpos_c = cpos / w * valid.shape[1]
            keep = _sample(valid, vpos_r, vpos_c, bilinear=False)
            s = s * keep
            c = c * keep
        if not np.ndim(weight):
            s = s * float(weight)
            c = c * float(weight)
        block = np.ix_(rows, cols)
        self.sum[block] += s
        self.weight[block] += c

    @property
    def covered(self) -> np.ndarray:
        """Bool ``[out_height, out_width]``: cells that received any weight."""
        return self.weight > 0

    def mean(self) -> np.ndarray:
        """The weighted average, float32, NaN where nothing was added."""
        out = np.full(self.sum.shape, np.nan, dtype=np.float32)
        np.divide(self.sum, self.weight, out=out, where=self.weight > 0)
        return out

    def _output_mask(self, valid_mask: np.ndarray) -> np.ndarray:
        valid_mask = np.asarray(valid_mask, dtype=bool)
        if valid_mask.shape == (self.out_height, self.out_width):
            return valid_mask
        if valid_mask.shape != (self.height, self.width):
            raise ValueError(
                f"valid_mask must be {self.out_height}x{self.out_width} (output grid) or "
                f"{self.height}x{self.width} (raster grid), got {valid_mask.shape}"
            )
        s = int(self.scale)
        if s == self.scale:  # a cell is valid when any of its raster pixels is
            ph, pw = self.out_height * s - self.height, self.out_width * s - self.width
            padded = np.pad(valid_mask, ((0, ph), (0, pw)))
            return padded.reshape(self.out_height, s, self.out_width, s).any(axis=(1, 3))
        rows = np.minimum(((np.arange(self.out_height) + 0.5) * self.scale).astype(np.intp), self.height - 1)
        cols = np.minimum(((np.arange(self.out_width) + 0.5) * self.scale).astype(np.intp), self.width - 1)
        return valid_mask[np.ix_(rows, cols)]

    def result(self, valid_mask: np.ndarray | None = None) -> np.ndarray:
        """:meth:`mean` with cells outside ``valid_mask`` (output or raster grid) set to NaN."""
        out = self.mean()
        if valid_mask is not None:
            out[~self._output_mask(valid_mask)] = np.nan
        return out
