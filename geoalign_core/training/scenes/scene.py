"""A synthetic scene: its state (sun, object lists, occupancy) and ``render_scene``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from .labels import LabelsMixin
from .layout import LayoutMixin
from .render import RenderMixin
from .shapes import Occupancy
from .spec import DEFAULT_RES, DEFAULT_SIZE, POSITIONS


class Scene(LayoutMixin, LabelsMixin, RenderMixin):
    """One scene being made: ``layout()`` places objects, ``labels()`` describes them, ``render()`` draws.

    All randomness comes from ``self.rng`` (seeded with ``seed``), drawn in a fixed order, so
    the same (seed, size, res) gives the same scene.
    """

    def __init__(self, seed: int, size: int, res: float) -> None:
        if size < 16:
            raise ValueError(f"size must be >= 16 pixels, got {size}")
        if res <= 0:
            raise ValueError(f"res must be > 0, got {res}")
        self.seed, self.size, self.res = int(seed), int(size), float(res)
        self.rng = np.random.default_rng(int(seed))
        self.m = 1.0 / self.res  # pixels per metre
        self.S_m = self.size * self.res  # scene side in metres
        self.a = (self.S_m / 614.4) ** 2  # object-count factor (1.0 for the 2048 px, 0.3 m scene)
        self.bbox = box(0, 0, self.size, self.size)
        self.occ = Occupancy()
        # sun: azimuth from the south-ish (northern hemisphere), shadows fall away from the sun
        az = math.radians(self.rng.uniform(125, 235))
        elev = math.radians(self.rng.uniform(44, 60))
        self.sun = (math.sin(az), -math.cos(az))  # unit vector towards the sun, pixel coords
        k = 1.0 / math.tan(elev)
        self.shadow_vec = (-self.sun[0] * k * self.m, -self.sun[1] * k * self.m)  # pixels per metre height
        self.rivers: list[dict] = []
        self.ponds: list[dict] = []
        self.roads: list[dict] = []
        self.lots: list[dict] = []
        self.courts: list[dict] = []
        self.buildings: list[dict] = []
        self.pools: list[dict] = []
        self.cars: list[dict] = []
        self.ships: list[dict] = []
        self.trees: list[dict] = []

    # ------------------------------------------------------------------ utilities
    def px(self, metres: float) -> float:
        return metres * self.m

    def inside(self, g: Any, margin_m: float = 0.5) -> bool:
        mg = self.px(margin_m)
        x0, y0, x1, y1 = g.bounds
        return x0 >= mg and y0 >= mg and x1 <= self.size - mg and y1 <= self.size - mg

    def position(self, g: Any) -> str:
        c = g.centroid
        col = min(2, max(0, int(3 * c.x / self.size)))
        row = min(2, max(0, int(3 * c.y / self.size)))
        return POSITIONS[row][col]

    def shadow_of(self, poly: Polygon, height_m: float) -> Polygon:
        dx, dy = self.shadow_vec
        moved = affinity.translate(poly, dx * height_m, dy * height_m)
        return unary_union([poly, moved]).convex_hull

    # ------------------------------------------------------------------ layout


def render_scene(seed: int, size: int = DEFAULT_SIZE, res: float = DEFAULT_RES) -> tuple[np.ndarray, list[dict]]:
    """Render one synthetic aerial scene.

    Returns ``(image, labels)``: ``image`` is a (size, size, 3) uint8 RGB array (row 0 is north);
    ``labels`` is a list of dicts with keys ``geometry`` (shapely Polygon in pixel coordinates),
    ``class``, ``color``, ``size`` ("small"/"medium"/"large"), ``orientation`` (one of
    ``ORIENTATIONS``) and ``description`` (one sentence). Deterministic in (seed, size, res).
    """
    scene = Scene(seed, size, res)
    scene.layout()
    labels = scene.labels()
    image = scene.render()
    return image, labels
