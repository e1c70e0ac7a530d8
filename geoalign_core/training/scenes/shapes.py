"""Geometry helpers for laying out a scene in pixel coordinates (x = column, y = row, y down)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from shapely.geometry import Polygon


def orientation_of(angle_deg: float) -> str:
    """Axis name of a direction in degrees (0 = east, 90 = south in pixel coordinates)."""
    a = angle_deg % 180.0
    if a < 22.5 or a >= 157.5:
        return "east-west"
    if 67.5 <= a < 112.5:
        return "north-south"
    return "diagonal"


def shape_orientation(poly: Polygon, min_aspect: float = 1.3) -> str:
    rect = poly.minimum_rotated_rectangle
    pts = list(rect.exterior.coords)
    e1 = (pts[1][0] - pts[0][0], pts[1][1] - pts[0][1])
    e2 = (pts[2][0] - pts[1][0], pts[2][1] - pts[1][1])
    l1, l2 = math.hypot(*e1), math.hypot(*e2)
    if min(l1, l2) <= 0 or max(l1, l2) / min(l1, l2) < min_aspect:
        return "none"
    e = e1 if l1 >= l2 else e2
    return orientation_of(math.degrees(math.atan2(e[1], e[0])))


def pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


class Frame:
    """Local (u, v) frame: u along `angle_deg` (pixel coordinates, y down), v 90 degrees clockwise."""

    def __init__(self, ox: float, oy: float, angle_deg: float) -> None:
        a = math.radians(angle_deg)
        self.ox, self.oy = ox, oy
        self.ux, self.uy = math.cos(a), math.sin(a)
        self.vx, self.vy = -self.uy, self.ux

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.ox + u * self.ux + v * self.vx, self.oy + u * self.uy + v * self.vy)

    def poly(self, pts: list[tuple[float, float]]) -> Polygon:
        return Polygon([self.pt(u, v) for u, v in pts])

    def rect(self, u0: float, v0: float, u1: float, v1: float) -> Polygon:
        return self.poly([(u0, v0), (u1, v0), (u1, v1), (u0, v1)])


def rotated_rect(cx: float, cy: float, length: float, width: float, angle_deg: float) -> Polygon:
    return Frame(cx, cy, angle_deg).rect(-length / 2, -width / 2, length / 2, width / 2)


def blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float, n: int = 40) -> Polygon:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    rr = np.ones_like(t)
    for k in (2, 3, 4, 5):
        rr += rough * rng.uniform(0.2, 1.0) / (k - 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rr = np.clip(rr, 0.45, None) * r
    return Polygon(np.column_stack([cx + rr * np.cos(t), cy + rr * np.sin(t)]))


def largest_polygon(g: Any) -> Polygon | None:
    if g is None or g.is_empty:
        return None
    if not g.is_valid:
        g = g.buffer(0)
    if g.geom_type == "Polygon":
        return g
    polys = [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"]
    return max(polys, key=lambda p: p.area) if polys else None


class Occupancy:
    """Placed footprints, with a vectorised bounding-box prefilter for overlap tests."""

    def __init__(self) -> None:
        self.geoms: list[Any] = []
        self.kinds: list[str] = []
        self._b = np.zeros((256, 4))

    def add(self, geom: Any, kind: str) -> None:
        n = len(self.geoms)
        if n == len(self._b):
            self._b = np.concatenate([self._b, np.zeros_like(self._b)])
        self._b[n] = geom.bounds
        self.geoms.append(geom)
        self.kinds.append(kind)

    def hits(self, geom: Any, pad: float = 0.0, ignore: tuple[str, ...] = ()) -> bool:
        x0, y0, x1, y1 = geom.bounds
        b = self._b[: len(self.geoms)]
        idx = np.nonzero((b[:, 0] <= x1 + pad) & (b[:, 2] >= x0 - pad) & (b[:, 1] <= y1 + pad) & (b[:, 3] >= y0 - pad))[
            0
        ]
        for i in idx:
            if self.kinds[i] in ignore:
                continue
            if (self.geoms[i].distance(geom) < pad) if pad > 0 else self.geoms[i].intersects(geom):
                return True
        return False
