"""Chips: the chip grid over a raster and the labelled regions visible in one chip.

Grid (:func:`chip_grid`): :func:`geoalign_core.geo.grid.chip_windows`: windows of ``chip_size``
pixels every ``stride`` pixels from the top-left corner; the last row / column is moved back so
that it ends on the raster's edge (no padding) unless the raster is smaller than one chip (then
one boundless chip, padding = nodata).

Regions of a chip (:func:`chip_regions`): every labelled polygon intersecting the chip is
clipped to it. The clipped part's area relative to the chip is its ``cover`` (used by the
paper's rule: a chip where one region covers more than ``max_cover`` = 75 % of its area is
dropped). A clipped part is a *sliver* and is not a region when its bounding box is narrower
or lower than ``min_region_px`` pixels, or when less than ``min_visible`` (30 %) of the object
is inside the chip, unless the visible part covers at least ``LARGE_COVER`` (10 %) of the chip
(long roads and rivers crossing the chip are kept).

Class cover (:func:`class_cover`): per class, the fraction of a window covered by the union of
that class's polygons -- used to label evaluation tiles by their dominant class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import shapely
from shapely.geometry.base import BaseGeometry
from shapely.strtree import STRtree

from geoalign_core.data.labels import LabelFeature, polygonal
from geoalign_core.geo.grid import chip_windows

__all__ = [
    "ChipRegion",
    "FeatureIndex",
    "LARGE_COVER",
    "chip_grid",
    "chip_regions",
    "class_cover",
]

LARGE_COVER = 0.10


@dataclass
class ChipRegion:
    """A labelled region clipped to a chip, in the chip's pixel coordinates (origin top-left).

    Attributes:
        feature: the source label.
        geom: the clipped polygon, chip pixel coordinates.
        bbox_px: ``[x0, y0, x1, y1]`` pixel box of ``geom`` (clipped to the chip).
        bbox: the same box normalised to [0, 1] by the chip size.
        visible: fraction of the object's area inside the chip.
        cover: fraction of the chip's area the clipped object covers.
    """

    feature: LabelFeature
    geom: BaseGeometry
    bbox_px: tuple[float, float, float, float]
    bbox: tuple[float, float, float, float]
    visible: float
    cover: float
    chip_size: int

    @property
    def cls(self) -> str:
        return self.feature.cls

    @property
    def center(self) -> tuple[float, float]:
        """Normalised (x, y) of the clipped polygon's centroid (y down)."""
        c = self.geom.centroid
        return (float(c.x) / self.chip_size, float(c.y) / self.chip_size)


def chip_grid(width: int, height: int, chip_size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Row-major ``(col_off, row_off)`` of the chip windows (:func:`geoalign_core.geo.grid.chip_windows`).

    Raises:
        InputError: chip size < 8 or stride < 1.
    """
    return [(int(w.col_off), int(w.row_off)) for w in chip_windows(width, height, chip_size, stride)]


class FeatureIndex:
    """Spatial index (STRtree) over labelled polygons in raster pixel coordinates."""

    def __init__(self, features: Sequence[LabelFeature]) -> None:
        self.features = list(features)
        self.tree = STRtree([f.geom for f in self.features])

    def query(self, box: BaseGeometry) -> list[LabelFeature]:
        """Features whose geometry intersects ``box``, in input order."""
        idx = self.tree.query(box, predicate="intersects")
        return [self.features[i] for i in sorted(int(i) for i in idx)]


def _window_box(col: float, row: float, size_x: float, size_y: float) -> BaseGeometry:
    return shapely.box(col, row, col + size_x, row + size_y)


def chip_regions(
    index: FeatureIndex,
    col: int,
    row: int,
    chip_size: int,
    *,
    min_region_px: float = 4.0,
    min_visible: float = 0.3,
) -> tuple[list[ChipRegion], int, float]:
    """Regions of the chip at ``(col, row)``.

    Returns ``(regions, n_slivers, max_cover)``: the kept regions (input order), the number
    of clipped parts dropped as slivers, and the largest cover of any clipped part (slivers
    included) for the 75 % rule.
    """
    box = _window_box(col, row, chip_size, chip_size)
    chip_area = float(chip_size * chip_size)
    regions: list[ChipRegion] = []
    slivers = 0
    max_cover = 0.0
    for feat in index.query(box):
        part = polygonal(feat.geom.intersection(box))
        if part is None:
            continue
        area = float(part.area)
        cover = area / chip_area
        visible = min(1.0, area / feat.area) if feat.area > 0 else 0.0
        max_cover = max(max_cover, cover)
        local = shapely.affinity.translate(part, -col, -row)
        x0, y0, x1, y1 = (float(v) for v in local.bounds)
        x0, y0 = max(x0, 0.0), max(y0, 0.0)
        x1, y1 = min(x1, float(chip_size)), min(y1, float(chip_size))
        too_thin = (x1 - x0) < min_region_px or (y1 - y0) < min_region_px
        if too_thin or (visible < min_visible and cover < LARGE_COVER):
            slivers += 1
            continue
        s = float(chip_size)
        regions.append(
            ChipRegion(feat, local, (x0, y0, x1, y1), (x0 / s, y0 / s, x1 / s, y1 / s), visible, cover, chip_size)
        )
    return regions, slivers, max_cover


def class_cover(index: FeatureIndex, col: float, row: float, width: float, height: float) -> dict[str, float]:
    """Fraction of the window covered by each class (union of its polygons), largest first."""
    box = _window_box(col, row, width, height)
    area = float(width * height)
    parts: dict[str, list[BaseGeometry]] = {}
    for feat in index.query(box):
        part = polygonal(feat.geom.intersection(box))
        if part is not None:
            parts.setdefault(feat.cls, []).append(part)
    cover = {}
    for cls, geoms in parts.items():
        g = geoms[0] if len(geoms) == 1 else shapely.union_all(geoms)
        cover[cls] = float(g.area) / area
    return dict(sorted(cover.items(), key=lambda kv: (-kv[1], kv[0])))

