"""Window grids: the one place where tiles, chips and search windows are laid out on a raster.

All windows are in raster pixels (``Window(col_off, row_off, width, height)``), row-major.

* :func:`tile_windows`: the inference grid (tile-classify, find, heatmap, the index, ``geoalign
  eval tiles``): ``stride = round(size * (1 - overlap))`` from the area's top-left corner until
  the last row and column reach its edge; the last windows may extend beyond it (they are read
  boundless, the padding invalid), so every pixel is in a window and all windows have one size.
* :func:`chip_windows`: the training-chip grid of ``geoalign prepare``: the same, except that
  the last row and column are moved back to end on the raster's edge (no padding) unless the
  raster is smaller than one chip.
* :func:`area_window`: the integer window of map ``bounds`` within a raster.
* :func:`assign_to_windows`: boxes -> the grid window that holds each whole (or its own window).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import rasterio.windows
from affine import Affine
from rasterio.windows import Window

from geoalign_core.errors import InputError

__all__ = [
    "MAX_OVERLAP",
    "MAX_TILE_OVERSIZE",
    "area_window",
    "assign_to_windows",
    "check_tile_fits",
    "chip_windows",
    "clip_window",
    "count_tiles",
    "grid_offsets",
    "stride_of",
    "tile_windows",
]

MAX_OVERLAP = 0.9
#: a tile may be at most this many times larger than both its area and the model's input
MAX_TILE_OVERSIZE = 4


def stride_of(size: int, overlap: float) -> int:
    """The step between neighbouring windows of ``size`` pixels overlapping by ``overlap``.

    Raises:
        InputError: ``size`` not a positive whole number, ``overlap`` outside [0, 0.9).
    """
    if int(size) != size or size < 1:
        raise InputError(f"tile size must be a positive number of pixels; got {size}", param="tile_size")
    if not 0.0 <= overlap < MAX_OVERLAP:
        raise InputError(f"overlap must be in [0, {MAX_OVERLAP}); got {overlap}", param="overlap")
    return max(1, round(size * (1.0 - overlap)))


def check_tile_fits(tile_size: int, area: Window, input_size: int) -> None:
    """Refuse a tile more than :data:`MAX_TILE_OVERSIZE` times larger than both the area it covers
    and the model's input: the area would be a small corner of one tile of padding, resampled
    down to a few pixels of the model's input, or to none (a 1e9 px tile of a 200 px raster gave
    0 results, and nothing said why).

    Raises:
        InputError: ``tile_size`` > MAX_TILE_OVERSIZE x max(area width, area height, ``input_size``).
    """
    w, h = int(area.width), int(area.height)
    limit = MAX_TILE_OVERSIZE * max(w, h, int(input_size))
    if tile_size > limit:
        raise InputError(f"tile size {tile_size} px is far larger than the raster area ({w} x {h} px) and the "
                         f"model's input ({input_size} px): the area would be a corner of one tile of padding, "
                         f"a few pixels or none once resampled; use at most {limit} px (the model's input size, "
                         "the default, suits most rasters)", param="tile_size")


def grid_offsets(length: int, size: int, stride: int, fit: bool = False) -> list[int]:
    """Offsets of windows of ``size`` every ``stride`` along ``length`` pixels.

    ``fit=False``: until a window reaches the end (the last may extend beyond it).
    ``fit=True``: the last window is moved back to end on the edge (none extends beyond it,
    unless ``length < size``: then one window at 0).
    """
    if fit:
        if length <= size:
            return [0]
        offs = list(range(0, length - size + 1, stride))
        if offs[-1] + size < length:
            offs.append(length - size)
        return offs
    offs = [0]
    while offs[-1] + size < length:
        offs.append(offs[-1] + stride)
    return offs


def tile_windows(width: int, height: int, tile_size: int, overlap: float = 0.0,
                 area: Window | None = None) -> list[Window]:
    """Row-major ``tile_size`` windows over a ``width`` x ``height`` raster, or over ``area`` of it.

    A raster (area) smaller than one tile gives a single window at its corner.

    Raises:
        InputError: ``tile_size`` < 1 or ``overlap`` outside [0, 0.9).
    """
    stride = stride_of(tile_size, overlap)
    c0, r0, w, h = (0, 0, width, height) if area is None else (
        int(area.col_off), int(area.row_off), int(area.width), int(area.height))
    rows = grid_offsets(h, tile_size, stride)
    cols = grid_offsets(w, tile_size, stride)
    return [Window(c + c0, r + r0, tile_size, tile_size) for r in rows for c in cols]


def count_tiles(width: int, height: int, tile_size: int, overlap: float = 0.0) -> int:
    """Number of windows :func:`tile_windows` returns (an upper bound on tiles yielded)."""
    stride = stride_of(tile_size, overlap)
    return len(grid_offsets(height, tile_size, stride)) * len(grid_offsets(width, tile_size, stride))


def chip_windows(width: int, height: int, chip_size: int, stride: int | None = None) -> list[Window]:
    """Row-major training chips: ``chip_size`` windows every ``stride`` (default: no overlap),
    the last row and column ending on the raster's edge.

    Raises:
        InputError: chip size < 8 or stride < 1.
    """
    stride = chip_size if stride is None else stride
    if int(chip_size) != chip_size or chip_size < 8:
        raise InputError(f"chip size must be a whole number of pixels >= 8; got {chip_size}", param="chip_size")
    if int(stride) != stride or stride < 1:
        raise InputError(f"stride must be a positive whole number of pixels; got {stride}", param="stride")
    rows = grid_offsets(height, chip_size, stride, fit=True)
    cols = grid_offsets(width, chip_size, stride, fit=True)
    return [Window(c, r, chip_size, chip_size) for r in rows for c in cols]


def area_window(transform: Affine, width: int, height: int, bounds: Sequence[float] | None,
                name: object = "the raster") -> Window:
    """The integer pixel window of ``bounds`` (map coordinates) within a raster; the whole raster for None.

    Raises:
        InputError: bounds that are not four numbers with min < max, or that miss the raster.
    """
    full = Window(0, 0, width, height)
    if bounds is None:
        return full
    try:
        left, bottom, right, top = (float(v) for v in bounds)
    except (TypeError, ValueError):
        raise InputError(f"bounds must be four numbers (minx, miny, maxx, maxy); got {bounds!r}") from None
    if not (left < right and bottom < top):
        raise InputError(f"bounds must have minx < maxx and miny < maxy; got {tuple(bounds)}")
    win = rasterio.windows.from_bounds(left, bottom, right, top, transform)
    c0, c1 = sorted((win.col_off, win.col_off + win.width))
    r0, r1 = sorted((win.row_off, win.row_off + win.height))
    c0, r0 = max(0, math.floor(c0 + 1e-9)), max(0, math.floor(r0 + 1e-9))
    c1, r1 = min(width, math.ceil(c1 - 1e-9)), min(height, math.ceil(r1 - 1e-9))
    if c1 <= c0 or r1 <= r0:
        raise InputError(f"bounds {tuple(bounds)} do not overlap {name}")
    return Window(c0, r0, c1 - c0, r1 - r0)


def clip_window(window: Window, area: Window) -> list[float]:
    """``[x0, y0, x1, y1]`` of ``window`` clipped to ``area`` (raster pixels)."""
    x0 = max(float(window.col_off), float(area.col_off))
    y0 = max(float(window.row_off), float(area.row_off))
    x1 = min(float(window.col_off + window.width), float(area.col_off + area.width))
    y1 = min(float(window.row_off + window.height), float(area.row_off + area.height))
    return [x0, y0, x1, y1]


def assign_to_windows(boxes: np.ndarray, area: Window, tile_size: int,
                      overlap: float) -> tuple[list[Window], list[np.ndarray]]:
    """Give each box ``[K, 4]`` (raster pixels) the window it is seen in: the most centred tile of
    the :func:`tile_windows` grid over ``area`` that holds it whole, or -- for a box crossing tile
    borders or larger than a tile -- its own square window around it (1.1 x its longer side).

    Returns ``(windows, members)``: distinct windows, and for each the indexes of its boxes.
    """
    stride = stride_of(tile_size, overlap)
    c0, r0 = int(area.col_off), int(area.row_off)
    cols = np.asarray(grid_offsets(int(area.width), tile_size, stride)) + c0
    rows = np.asarray(grid_offsets(int(area.height), tile_size, stride)) + r0
    groups: dict[tuple[int, int, int], list[int]] = {}

    def pick(offs: np.ndarray, lo: float, hi: float) -> int | None:
        a = int(np.searchsorted(offs, hi - tile_size - 1e-6, "left"))
        b = int(np.searchsorted(offs, lo + 1e-6, "right"))
        if a >= b:
            return None
        centre = (lo + hi) / 2 - tile_size / 2
        return int(offs[a:b][np.argmin(np.abs(offs[a:b] - centre))])

    for k, (x0, y0, x1, y1) in enumerate(boxes):
        cx, cy = pick(cols, x0, x1), pick(rows, y0, y1)
        if cx is not None and cy is not None:
            key = (cy, cx, tile_size)
        else:
            side = max(tile_size, math.ceil(1.1 * max(x1 - x0, y1 - y0)))
            key = (math.floor((y0 + y1) / 2 - side / 2), math.floor((x0 + x1) / 2 - side / 2), side)
        groups.setdefault(key, []).append(k)
    keys = sorted(groups)
    return [Window(c, r, s, s) for r, c, s in keys], [np.asarray(groups[k]) for k in keys]


def pixel_size_m(crs, transform: Affine, width: int, height: int) -> tuple[float, float]:
    """A raster's pixel width and height in metres: projected CRSs through their linear unit,
    geographic ones at the raster's centre latitude; without a CRS, the map units as they are."""
    a, e = abs(float(transform.a)), abs(float(transform.e))
    if crs is None:
        return a, e
    if crs.is_geographic:
        lat = float((transform * (width / 2.0, height / 2.0))[1])
        return a * 111_320.0 * max(math.cos(math.radians(lat)), 1e-6), e * 110_540.0
    try:
        factor = float(crs.linear_units_factor[1])
    except Exception:  # noqa: BLE001 - an unknown unit: take the map units as metres
        factor = 1.0
    return a * factor, e * factor
