"""Object layout of a synthetic scene, in the order objects are placed; the land (river, roads, ponds,
trees) is here, built-up objects in ``built`` and vehicles in ``vehicles``."""

from __future__ import annotations

import math

import numpy as np
from shapely import affinity
from shapely.geometry import LineString

from .built import BuiltMixin
from .shapes import Frame, blob, pick
from .texture import tint
from .vehicles import VehiclesMixin


class LayoutMixin(BuiltMixin, VehiclesMixin):
    """Places the scene's objects without overlaps, all draws from ``self.rng``; part of ``Scene``."""

    def layout(self) -> None:
        self._layout_river()
        self._layout_roads()
        self._layout_ponds()
        self._layout_lots()
        self._layout_courts()
        self._layout_big_buildings()
        self._layout_houses()
        self._layout_road_cars()
        self._ensure_car_colours()
        self._layout_ships()
        self._layout_trees()

    def _layout_river(self) -> None:
        rng = self.rng
        if self.S_m < 120 or rng.random() > 0.75:
            return
        axis = "ew" if rng.random() < 0.5 else "ns"
        width = self.px(rng.uniform(34, 52) if self.S_m > 300 else rng.uniform(20, 30))
        amp = self.px(rng.uniform(6, 16) * min(1.0, self.S_m / 400))
        edge = rng.random() < 0.5
        c = self.size * (rng.uniform(0.17, 0.27) if edge else rng.uniform(0.73, 0.83))
        t = np.linspace(-0.05 * self.size, 1.05 * self.size, 120)
        lam1, lam2 = self.size * rng.uniform(0.6, 1.2), self.size * rng.uniform(0.25, 0.45)
        off = amp * np.sin(2 * np.pi * t / lam1 + rng.uniform(0, 6.3)) + 0.35 * amp * np.sin(
            2 * np.pi * t / lam2 + rng.uniform(0, 6.3)
        )
        pts = np.column_stack([t, c + off]) if axis == "ew" else np.column_stack([c + off, t])
        line = LineString(pts)
        poly = line.buffer(width / 2, cap_style="flat", quad_segs=4)
        color = pick(rng, {"blue": 0.45, "dark blue": 0.2, "green": 0.35})
        self.rivers.append({"line": line, "poly": poly, "width": width, "axis": axis, "color": color})
        self.occ.add(poly, "water")

    def _layout_roads(self) -> None:
        rng, S = self.rng, self.size
        if self.S_m < 120:
            axes = [("ns" if rng.random() < 0.5 else "ew")] if rng.random() < 0.85 else []
        else:
            kmax = max(1, int(round(self.S_m / 260)))
            axes = ["ns"] * int(rng.integers(1, kmax + 1)) + ["ew"] * int(rng.integers(1, kmax + 1))
        min_gap = self.px(max(40.0, min(110.0, 0.3 * self.S_m)))
        placed: dict[str, list[float]] = {"ns": [], "ew": []}
        for axis in axes:
            width = self.px(rng.uniform(7.0, 10.5))
            for _ in range(60):
                c = rng.uniform(0.1, 0.9) * S
                if any(abs(c - o) < min_gap for o in placed[axis]):
                    continue
                if axis == "ns":
                    line = LineString([(c, -0.1 * S), (c, 1.1 * S)])
                else:
                    line = LineString([(-0.1 * S, c), (1.1 * S, c)])
                poly = line.buffer(width / 2, cap_style="flat")
                if any(r["axis"] == axis and r["poly"].distance(poly) < self.px(12) for r in self.rivers):
                    continue
                placed[axis].append(c)
                self._add_road(line, width, 90.0 if axis == "ns" else 0.0, axis)
                break
        if self.S_m >= 300 and rng.random() < 0.4:
            ang = rng.uniform(28, 62) if rng.random() < 0.5 else rng.uniform(118, 152)
            cx, cy = rng.uniform(0.3, 0.7) * S, rng.uniform(0.3, 0.7) * S
            f = Frame(cx, cy, ang)
            line = LineString([f.pt(-1.6 * S, 0), f.pt(1.6 * S, 0)])
            self._add_road(line, self.px(rng.uniform(7.0, 9.0)), ang, "diag")

    def _add_road(self, line: LineString, width: float, angle: float, axis: str) -> None:
        poly = line.buffer(width / 2, cap_style="flat")
        rgb = tint((92, 94, 98), self.rng.uniform(0.9, 1.12))
        self.roads.append({"line": line, "poly": poly, "width": width, "angle": angle, "axis": axis, "rgb": rgb})
        self.occ.add(poly, "road")

    def _layout_ponds(self) -> None:
        rng = self.rng
        n = int(rng.random() < 0.7) if self.a < 0.3 else 1 + int(rng.poisson(0.6 * self.a))
        for _ in range(n):
            r = self.px(rng.uniform(10, 26) * min(1.0, 0.4 + self.S_m / 500))
            for _try in range(80):
                cx, cy = rng.uniform(0, self.size, 2)
                poly = blob(rng, cx, cy, r, rough=0.35, n=48)
                poly = affinity.scale(poly, rng.uniform(1.0, 1.6), 1.0, origin=(cx, cy))
                poly = affinity.rotate(poly, rng.uniform(0, 180), origin=(cx, cy))
                if not poly.is_valid or not self.inside(poly, 3) or self.occ.hits(poly, self.px(8)):
                    continue
                color = pick(rng, {"dark green": 0.35, "green": 0.25, "blue": 0.25, "brown": 0.15})
                self.ponds.append({"poly": poly, "color": color})
                self.occ.add(poly.buffer(self.px(2.0)), "water")
                break

    def _layout_trees(self) -> None:
        rng = self.rng
        cx_list: list[float] = []
        cy_list: list[float] = []
        r_list: list[float] = []

        def try_tree(x: float, y: float, r: float) -> bool:
            if cx_list:
                d = np.hypot(np.asarray(cx_list) - x, np.asarray(cy_list) - y)
                if np.any(d < 0.8 * (np.asarray(r_list) + r)):
                    return False
            crown = blob(rng, x, y, r, rough=0.12, n=24)
            if not self.inside(crown, 0.3) or self.occ.hits(crown, self.px(0.6), ignore=("tree",)):
                return False
            color = pick(rng, {"green": 0.5, "dark green": 0.3, "light green": 0.2})
            self.trees.append(
                {
                    "poly": crown,
                    "cx": x,
                    "cy": y,
                    "r": r,
                    "color": color,
                    "height": 1.7 * r / self.m + rng.uniform(1.0, 2.5),
                }
            )
            cx_list.append(x)
            cy_list.append(y)
            r_list.append(r)
            return True

        def radius() -> float:
            return self.px(float(np.clip(rng.lognormal(math.log(3.0), 0.35), 1.4, 6.5)))

        # small woods / park clusters
        n_clusters = int(round(rng.uniform(3, 6) * self.a)) + int(rng.random() < 0.6)
        for _ in range(n_clusters):
            ccx, ccy = rng.uniform(0, self.size, 2)
            sigma = self.px(rng.uniform(8, 22))
            for _k in range(int(rng.integers(6, 26))):
                try_tree(ccx + rng.normal(0, sigma), ccy + rng.normal(0, sigma), radius())
        # street trees along some road sides
        for road in self.roads:
            for side in (-1.0, 1.0):
                if rng.random() > 0.35:
                    continue
                line: LineString = road["line"]
                s = rng.uniform(0, self.px(10))
                step = self.px(rng.uniform(9, 14))
                while s < line.length:
                    p = line.interpolate(s)
                    r = self.px(rng.uniform(2.0, 3.2))
                    f = Frame(p.x, p.y, road["angle"])
                    x, y = f.pt(0, side * (road["width"] / 2 + r + self.px(1.2)))
                    if 0 < x < self.size and 0 < y < self.size:
                        try_tree(x, y, r)
                    s += step
        # garden trees next to houses
        for b in self.buildings:
            if b.get("house") and rng.random() < 0.6:
                c = b["poly"].centroid
                for _k in range(int(rng.integers(1, 3))):
                    t = rng.uniform(0, 2 * np.pi)
                    r = radius()
                    d = max(b["length"], b["depth"]) / 2 + r + self.px(rng.uniform(2, 7))
                    try_tree(c.x + d * math.cos(t), c.y + d * math.sin(t), r)
        # scattered trees
        for _ in range(int(round(rng.uniform(30, 50) * self.a)) + 2):
            try_tree(rng.uniform(0, self.size), rng.uniform(0, self.size), radius())

    # ------------------------------------------------------------------ labels
