#!/usr/bin/env python3
"""Synthetic, georeferenced aerial scenes with ground truth, for GeoAlign.

Renders an aerial-looking RGB scene at 0.3 m/pixel (textured grass and bare soil, roads
with lane markings and zebra crossings, parking lots with parked cars, cars on the roads,
buildings with coloured gabled/hipped/flat roofs and cast shadows, swimming pools
(rectangular, kidney-shaped, freeform), round trees with shadows, a river and/or ponds
with ships, tennis courts with court lines) and one ground-truth polygon per object.

Usage as a script::

    python sample_data/make_sample.py --seed 0 --size 2048 --out sample_data
        -> sample_data/scene.tif + sample_data/labels.gpkg
    python sample_data/make_sample.py --seed 1000 --count 10 --size 1024 --out /tmp/train
        -> scene_1000.tif + scene_1000_labels.gpkg, ..., scene_1009...

Usage as a module (import it by path; it is not part of a package)::

    spec = importlib.util.spec_from_file_location("make_sample", "sample_data/make_sample.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    image, labels = mod.render_scene(seed=1000, size=1024)

Seeds:
    0           the committed sample scene (sample_data/scene.tif, sample_data/labels.gpkg)
    1000-1999   reserved for training scenes (``TRAIN_SEEDS``)
    2000-2099   reserved for held-out evaluation scenes (``EVAL_SEEDS``)

Everything is a pure function of (seed, size, res): one ``numpy.random.Generator`` seeded
with ``seed`` drives the layout and the textures, so the same arguments give byte-identical
pixels and identical labels, and no global random state is touched.

Geometry of the returned labels is in PIXEL coordinates (x = column, y = row, pixel
corners on integer coordinates, origin at the top-left corner, north up). ``write_scene``
converts them to map coordinates of the GeoTIFF's CRS.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon, box
from shapely.ops import unary_union

__all__ = [
    "CLASSES",
    "ORIENTATIONS",
    "SIZES",
    "CAR_COLORS",
    "ROOF_COLORS",
    "TRAIN_SEEDS",
    "EVAL_SEEDS",
    "SAMPLE_SEED",
    "render_scene",
    "write_scene",
    "scene_paths",
    "scene_origin",
    "main",
]

SAMPLE_SEED = 0
TRAIN_SEEDS = range(1000, 2000)
EVAL_SEEDS = range(2000, 2100)

DEFAULT_SIZE = 2048
DEFAULT_RES = 0.3
DEFAULT_EPSG = 32633
LAYER = "labels"

CLASSES = (
    "road",
    "parking lot",
    "building",
    "car",
    "swimming pool",
    "tree",
    "pond",
    "river",
    "tennis court",
    "ship",
)
ORIENTATIONS = ("north-south", "east-west", "diagonal", "none")
SIZES = ("small", "medium", "large")

CAR_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (176, 28, 30),
    "blue": (32, 64, 168),
    "white": (236, 236, 232),
    "black": (26, 27, 30),
    "silver": (168, 171, 176),
    "yellow": (228, 192, 36),
    "green": (36, 118, 58),
}
_CAR_WEIGHTS = {"red": 0.2, "blue": 0.14, "white": 0.2, "black": 0.14, "silver": 0.14, "yellow": 0.07, "green": 0.11}
ROOF_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (168, 66, 48),
    "grey": (122, 122, 126),
    "white": (224, 224, 218),
    "brown": (118, 80, 56),
    "blue": (66, 98, 150),
    "green": (72, 116, 82),
}
_HOUSE_ROOF_WEIGHTS = {"red": 0.34, "grey": 0.22, "white": 0.06, "brown": 0.22, "blue": 0.09, "green": 0.07}
_BIG_ROOF_WEIGHTS = {"red": 0.08, "grey": 0.4, "white": 0.34, "brown": 0.06, "blue": 0.08, "green": 0.04}
_POOL_COLORS = {"blue": (52, 132, 206), "turquoise": (64, 178, 196)}
_TREE_COLORS = {"green": (52, 92, 40), "dark green": (34, 66, 34), "light green": (84, 116, 52)}
_WATER_COLORS = {
    "blue": (42, 78, 112),
    "dark blue": (28, 48, 76),
    "green": (52, 88, 70),
    "dark green": (36, 62, 48),
    "brown": (92, 88, 62),
}
_SHIP_COLORS = {
    "white": (232, 232, 228),
    "grey": (128, 130, 134),
    "red": (168, 38, 34),
    "blue": (36, 62, 138),
    "black": (30, 30, 34),
}
_COURT_COLORS = {  # name: (inner court, outer run-off)
    "green": ((62, 138, 84), (50, 110, 66)),
    "blue": ((46, 88, 156), (58, 118, 82)),
    "red": ((184, 92, 56), (176, 86, 52)),
}

# materials: per-material texture amplitude (grey levels per unit of the fine texture field)
_GRASS, _SOIL, _WATER, _ASPHALT, _PAINT, _COURT, _POOL, _CAR, _ROOF, _FOLIAGE, _SHIP, _CONCRETE = range(12)
_TEXTURE_AMP = np.array([3.0, 4.5, 1.5, 3.5, 1.5, 1.5, 1.5, 1.0, 3.0, 15.0, 1.0, 3.0], dtype=np.float32)

_POSITIONS = (
    ("in the upper left", "at the top", "in the upper right"),
    ("on the left", "in the center", "on the right"),
    ("in the lower left", "at the bottom", "in the lower right"),
)


# --------------------------------------------------------------------------- helpers
def scene_paths(out_dir: str | os.PathLike[str], name: str = "scene") -> tuple[Path, Path]:
    """File names for a scene: "scene" -> scene.tif + labels.gpkg, NAME -> NAME.tif + NAME_labels.gpkg."""
    out = Path(out_dir)
    if name == "scene":
        return out / "scene.tif", out / "labels.gpkg"
    return out / f"{name}.tif", out / f"{name}_labels.gpkg"


def scene_origin(seed: int) -> tuple[float, float]:
    """Map coordinates (x0, y0) of the top-left corner: a plausible UTM zone 33N origin."""
    return 500000.0 + 960.0 * (seed % 97), 5000000.0 + 960.0 * (seed % 89)


def orientation_of(angle_deg: float) -> str:
    """Axis name of a direction in degrees (0 = east, 90 = south in pixel coordinates)."""
    a = angle_deg % 180.0
    if a < 22.5 or a >= 157.5:
        return "east-west"
    if 67.5 <= a < 112.5:
        return "north-south"
    return "diagonal"


def _shape_orientation(poly: Polygon, min_aspect: float = 1.3) -> str:
    rect = poly.minimum_rotated_rectangle
    pts = list(rect.exterior.coords)
    e1 = (pts[1][0] - pts[0][0], pts[1][1] - pts[0][1])
    e2 = (pts[2][0] - pts[1][0], pts[2][1] - pts[1][1])
    l1, l2 = math.hypot(*e1), math.hypot(*e2)
    if min(l1, l2) <= 0 or max(l1, l2) / min(l1, l2) < min_aspect:
        return "none"
    e = e1 if l1 >= l2 else e2
    return orientation_of(math.degrees(math.atan2(e[1], e[0])))


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


class _Frame:
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


def _rect(cx: float, cy: float, length: float, width: float, angle_deg: float) -> Polygon:
    return _Frame(cx, cy, angle_deg).rect(-length / 2, -width / 2, length / 2, width / 2)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, rough: float, n: int = 40) -> Polygon:
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    rr = np.ones_like(t)
    for k in (2, 3, 4, 5):
        rr += rough * rng.uniform(0.2, 1.0) / (k - 1) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rr = np.clip(rr, 0.45, None) * r
    return Polygon(np.column_stack([cx + rr * np.cos(t), cy + rr * np.sin(t)]))


def _largest(g: Any) -> Polygon | None:
    if g is None or g.is_empty:
        return None
    if not g.is_valid:
        g = g.buffer(0)
    if g.geom_type == "Polygon":
        return g
    polys = [p for p in getattr(g, "geoms", []) if p.geom_type == "Polygon"]
    return max(polys, key=lambda p: p.area) if polys else None


class _Occupancy:
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


def _noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise, unit-ish std, feature size ~cell pixels (bicubic-upsampled random grid)."""
    cell = max(1, int(cell))
    gh, gw = h // cell + 4, w // cell + 4
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    if cell == 1:
        return grid[:h, :w]
    up = Image.fromarray(grid, mode="F").resize((gw * cell, gh * cell), Image.BICUBIC)
    arr = np.asarray(up, dtype=np.float32)[cell : cell + h, cell : cell + w]
    return arr / 0.82


def _fbm(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for i, c in enumerate(cells):
        wt = 0.55**i
        out += wt * _noise(rng, h, w, c)
        total += wt * wt
    return out / math.sqrt(total)


def _smoothstep(x: np.ndarray, e0: float, e1: float) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _shade(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * f)))) for c in rgb)  # type: ignore[return-value]


# --------------------------------------------------------------------------- scene
class _Scene:
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
        self.occ = _Occupancy()
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
        return _POSITIONS[row][col]

    def shadow_of(self, poly: Polygon, height_m: float) -> Polygon:
        dx, dy = self.shadow_vec
        moved = affinity.translate(poly, dx * height_m, dy * height_m)
        return unary_union([poly, moved]).convex_hull

    # ------------------------------------------------------------------ layout
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
        color = _pick(rng, {"blue": 0.45, "dark blue": 0.2, "green": 0.35})
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
            f = _Frame(cx, cy, ang)
            line = LineString([f.pt(-1.6 * S, 0), f.pt(1.6 * S, 0)])
            self._add_road(line, self.px(rng.uniform(7.0, 9.0)), ang, "diag")

    def _add_road(self, line: LineString, width: float, angle: float, axis: str) -> None:
        poly = line.buffer(width / 2, cap_style="flat")
        rgb = _shade((92, 94, 98), self.rng.uniform(0.9, 1.12))
        self.roads.append({"line": line, "poly": poly, "width": width, "angle": angle, "axis": axis, "rgb": rgb})
        self.occ.add(poly, "road")

    def _layout_ponds(self) -> None:
        rng = self.rng
        n = int(rng.random() < 0.7) if self.a < 0.3 else 1 + int(rng.poisson(0.6 * self.a))
        for _ in range(n):
            r = self.px(rng.uniform(10, 26) * min(1.0, 0.4 + self.S_m / 500))
            for _try in range(80):
                cx, cy = rng.uniform(0, self.size, 2)
                poly = _blob(rng, cx, cy, r, rough=0.35, n=48)
                poly = affinity.scale(poly, rng.uniform(1.0, 1.6), 1.0, origin=(cx, cy))
                poly = affinity.rotate(poly, rng.uniform(0, 180), origin=(cx, cy))
                if not poly.is_valid or not self.inside(poly, 3) or self.occ.hits(poly, self.px(8)):
                    continue
                color = _pick(rng, {"dark green": 0.35, "green": 0.25, "blue": 0.25, "brown": 0.15})
                self.ponds.append({"poly": poly, "color": color})
                self.occ.add(poly.buffer(self.px(2.0)), "water")
                break

    def _layout_lots(self) -> None:
        rng = self.rng
        if not self.roads or self.S_m < 60:
            return
        n = int(round(rng.uniform(2.5, 4.0) * self.a))
        if self.a >= 0.5:
            n = max(n, 2)
        elif n == 0 and rng.random() < 0.7:
            n = 1
        for _ in range(n):
            for _try in range(80):
                if self._try_lot():
                    break

    def _try_lot(self) -> bool:
        rng = self.rng
        road = self.roads[int(rng.integers(len(self.roads)))]
        side = 1.0 if rng.random() < 0.5 else -1.0
        length_m = rng.uniform(24, 70) * min(1.0, 0.35 + self.S_m / 300)
        doubles = 1 if (rng.random() < 0.55 or self.S_m < 200) else 2
        phi = 90.0 if rng.random() < 0.65 else float(rng.choice([45.0, 60.0]))
        car_l, car_w, aisle = 4.7, 2.0, 6.0
        sp = math.sin(math.radians(phi))
        row = car_l * sp + car_w * math.cos(math.radians(phi)) + 0.6
        depth_m = doubles * (2 * row + aisle) + (doubles - 1) * 1.0 + 1.0
        verge = rng.uniform(2.5, 5.0)
        # centre of the lot along the road, in a random place within the image
        line: LineString = road["line"]
        s = rng.uniform(0, line.length)
        p = line.interpolate(s)
        f0 = _Frame(p.x, p.y, road["angle"])
        v0 = side * (road["width"] / 2 + self.px(verge))
        vd = side * self.px(depth_m)
        lot = f0.rect(-self.px(length_m) / 2, v0, self.px(length_m) / 2, v0 + vd)
        if not lot.is_valid or not self.inside(lot, 1.0) or self.occ.hits(lot, self.px(3.0)):
            return False
        ud = rng.uniform(-0.3, 0.3) * self.px(length_m)
        drive = f0.rect(ud - self.px(3.0), side * road["width"] / 2 * 0.9, ud + self.px(3.0), v0)
        if self.occ.hits(drive, self.px(1.0), ignore=("road",)):
            return False
        # stalls: rows parallel to the road, cars at angle phi to the road direction
        cars: list[dict] = []
        stall_lines: list[Polygon] = []
        occ_p = rng.uniform(0.45, 0.95)
        pitch = self.px(2.6 / sp)
        half_l = self.px(length_m) / 2 - self.px(1.0)
        n_st = max(0, int((2 * half_l) // pitch))
        us = -n_st * pitch / 2 + pitch * (np.arange(n_st) + 0.5)
        base = self.px(0.5)
        for d in range(doubles):
            for k in range(2):
                v_start = base + (self.px(row + aisle) if k else 0.0)
                v_mid = v_start + self.px(row) / 2
                tilt = 1.0 if k == 0 else -1.0
                car_ang = road["angle"] + side * tilt * phi
                for i, u in enumerate(us):
                    if d == 0 and k == 0 and abs(u - ud) < self.px(3.0) + pitch / 2:
                        continue
                    # stall separators on both sides of the stall
                    for ub in (u - pitch / 2, u + pitch / 2) if i == 0 else (u + pitch / 2,):
                        sf = _Frame(*f0.pt(ub, v0 + side * v_mid), car_ang)
                        stall_lines.append(
                            sf.rect(-self.px(row) / 2 / sp, -self.px(0.09), self.px(row) / 2 / sp, self.px(0.09))
                        )
                    if rng.random() > occ_p:
                        continue
                    cx, cy = f0.pt(u + self.px(rng.normal(0, 0.12)), v0 + side * (v_mid + self.px(rng.normal(0, 0.1))))
                    cars.append(
                        self._make_car(cx, cy, car_ang + rng.normal(0, 2.5), 1.0 if rng.random() < 0.5 else -1.0, "lot")
                    )
            base += self.px(2 * row + aisle + 1.0)
        self.lots.append(
            {"poly": lot, "drive": drive, "lines": stall_lines, "angle": road["angle"], "n_cars": len(cars)}
        )
        self.occ.add(lot, "lot")
        self.occ.add(drive, "lot")
        for c in cars:
            self.cars.append(c)
        return True

    def _make_car(self, cx: float, cy: float, angle: float, heading: float, ctx: str) -> dict:
        rng = self.rng
        length = rng.choice([rng.uniform(3.7, 4.25), rng.uniform(4.3, 4.85), rng.uniform(4.9, 5.4)], p=[0.3, 0.5, 0.2])
        width = 1.75 + 0.1 * (length - 3.7) + rng.uniform(-0.05, 0.1)
        size = "small" if length < 4.28 else ("medium" if length < 4.88 else "large")
        color = _pick(rng, _CAR_WEIGHTS)
        poly = _rect(cx, cy, self.px(length), self.px(width), angle)
        return {
            "poly": poly,
            "cx": cx,
            "cy": cy,
            "angle": angle,
            "heading": heading,
            "L": self.px(length),
            "W": self.px(width),
            "size": size,
            "color": color,
            "ctx": ctx,
        }

    def _layout_courts(self) -> None:
        rng = self.rng
        target = int(round(rng.uniform(2, 4) * self.a))
        if self.a >= 0.5:
            target = max(target, 2)
        elif self.S_m >= 90 and target == 0 and rng.random() < 0.5:
            target = 1
        placed = 0
        while placed < target:
            n = int(min(target - placed, rng.integers(1, 4)))
            ok = False
            for _try in range(150):
                ang = float(rng.choice([0.0, 90.0])) if rng.random() < 0.8 else rng.uniform(20, 160)
                cx, cy = rng.uniform(0, self.size, 2)
                f = _Frame(cx, cy, ang)
                L, W = self.px(36.6), self.px(18.3)
                group = f.rect(-L / 2 - self.px(1), -n * W / 2 - self.px(1), L / 2 + self.px(1), n * W / 2 + self.px(1))
                if not self.inside(group, 2) or self.occ.hits(group, self.px(4)):
                    continue
                color = _pick(rng, {"green": 0.4, "blue": 0.35, "red": 0.25})
                for j in range(n):
                    v = -n * W / 2 + (j + 0.5) * W
                    c = f.pt(0, v)
                    self.courts.append(
                        {"poly": _rect(c[0], c[1], L, W, ang), "cx": c[0], "cy": c[1], "angle": ang, "color": color}
                    )
                self.occ.add(group, "court")
                placed += n
                ok = True
                break
            if not ok:
                break

    def _building(
        self, f: _Frame, length: float, depth: float, kind: str, color: str, lshape: bool, height_m: float
    ) -> dict:
        """Footprint parts in the frame f; length along u, depth along v, centred on the frame origin."""
        rng = self.rng
        parts = [f.rect(-length / 2, -depth / 2, length / 2, depth / 2)]
        if lshape:
            w2 = depth * rng.uniform(0.6, 0.9)
            l2 = depth * rng.uniform(0.9, 1.6)
            u0 = length / 2 - w2 if rng.random() < 0.5 else -length / 2
            sgn = 1.0 if rng.random() < 0.5 else -1.0
            parts.append(f.rect(u0, sgn * depth / 2 - sgn * 0.01, u0 + w2, sgn * (depth / 2 + l2)))
        poly = unary_union(parts) if len(parts) > 1 else parts[0]
        poly = _largest(poly.buffer(0))
        return {
            "poly": poly,
            "parts": parts,
            "frame": f,
            "length": length,
            "depth": depth,
            "roof": kind,
            "color": color,
            "height": height_m,
            "lshape": lshape,
            "angle": math.degrees(math.atan2(f.uy, f.ux)),
        }

    def _layout_big_buildings(self) -> None:
        rng = self.rng
        n = int(round(rng.uniform(5, 9) * self.a))
        if self.a < 0.25 and rng.random() < 0.5:
            n += 1
        for _ in range(n):
            large = rng.random() < 0.5
            for _try in range(60):
                if large:
                    length, depth = rng.uniform(28, 60), rng.uniform(16, 30)
                else:
                    length, depth = rng.uniform(14, 24), rng.uniform(10, 15)
                scale = min(1.0, 0.3 + self.S_m / 250)
                length, depth = self.px(length * scale), self.px(depth * scale)
                if self.roads and rng.random() < 0.8:
                    road = self.roads[int(rng.integers(len(self.roads)))]
                    side = 1.0 if rng.random() < 0.5 else -1.0
                    p = road["line"].interpolate(rng.uniform(0, road["line"].length))
                    rf = _Frame(p.x, p.y, road["angle"])
                    setback = road["width"] / 2 + self.px(rng.uniform(7, 18))
                    ang = road["angle"] if rng.random() < 0.85 else road["angle"] + rng.uniform(25, 65)
                    c = rf.pt(0, side * (setback + depth / 2))
                else:
                    ang = float(rng.choice([0.0, 90.0])) if rng.random() < 0.6 else rng.uniform(0, 180)
                    c = tuple(rng.uniform(0, self.size, 2))
                f = _Frame(c[0], c[1], ang)
                if large:
                    kind, color = "flat", _pick(rng, _BIG_ROOF_WEIGHTS)
                else:
                    kind = str(rng.choice(["flat", "gabled", "hipped"], p=[0.3, 0.4, 0.3]))
                    color = _pick(rng, _BIG_ROOF_WEIGHTS if kind == "flat" else _HOUSE_ROOF_WEIGHTS)
                b = self._building(
                    f,
                    length,
                    depth,
                    kind,
                    color,
                    (not large) and rng.random() < 0.3,
                    rng.uniform(10, 18) if large else rng.uniform(7, 11),
                )
                if b["poly"] is None or not self.inside(b["poly"], 1) or self.occ.hits(b["poly"], self.px(4)):
                    continue
                self.buildings.append(b)
                self.occ.add(b["poly"], "building")
                if large and rng.random() < 0.35:
                    self._try_pool(b, public=True)
                break

    def _layout_houses(self) -> None:
        rng = self.rng
        for road in self.roads:
            line: LineString = road["line"]
            for side in (-1.0, 1.0):
                s = rng.uniform(0, self.px(20))
                zone_end, p_house = 0.0, 0.0
                while s < line.length:
                    if s >= zone_end:  # residential stretches alternate with open land
                        zone_end = s + self.px(rng.uniform(60, 200))
                        p_house = 0.75 if rng.random() < 0.6 else 0.0
                    frontage = self.px(rng.uniform(17, 28))
                    s += frontage
                    if rng.random() > p_house:
                        continue
                    p = line.interpolate(s)
                    if not self.bbox.contains(p):
                        continue
                    length, dep = self.px(rng.uniform(9.5, 14)), self.px(rng.uniform(7.5, 10))
                    along = rng.random() < 0.6  # long axis along the road, or across it
                    across = dep if along else length
                    setback = road["width"] / 2 + self.px(rng.uniform(5, 10))
                    f0 = _Frame(p.x, p.y, road["angle"])
                    c = f0.pt(0, side * (setback + across / 2))
                    kind = str(rng.choice(["gabled", "hipped", "flat"], p=[0.5, 0.38, 0.12]))
                    color = _pick(rng, _BIG_ROOF_WEIGHTS if kind == "flat" else _HOUSE_ROOF_WEIGHTS)
                    f = _Frame(c[0], c[1], road["angle"] + (0.0 if along else 90.0))
                    b = self._building(f, length, dep, kind, color, rng.random() < 0.15, rng.uniform(5, 8))
                    b["house"] = True
                    b["road_side"] = (f0, side, setback + across)
                    if b["poly"] is None or not self.inside(b["poly"], 1) or self.occ.hits(b["poly"], self.px(3)):
                        continue
                    self.buildings.append(b)
                    self.occ.add(b["poly"], "building")
                    if rng.random() < 0.4:
                        self._try_pool(b, public=False)

    def _try_pool(self, b: dict, public: bool) -> None:
        rng = self.rng
        for _try in range(12):
            if public:
                shape = "rectangular"
                L, W = self.px(rng.uniform(20, 26)), self.px(rng.uniform(9, 13))
            else:
                shape = str(
                    rng.choice(["rectangular", "kidney-shaped", "freeform", "oval"], p=[0.45, 0.25, 0.18, 0.12])
                )
                L, W = self.px(rng.uniform(7, 12)), self.px(rng.uniform(3.5, 5.5))
            ang = (
                b["angle"] + (0 if rng.random() < 0.7 else 90) + (rng.uniform(-40, 40) if shape != "rectangular" else 0)
            )
            if "road_side" in b:  # behind the house, away from the road
                f0, side, dist = b["road_side"]
                gap = self.px(rng.uniform(2.5, 6))
                along = rng.uniform(-0.3, 0.3) * b["length"]
                cx, cy = f0.pt(along, side * (dist + gap + max(L, W) / 2))
            else:
                c = b["poly"].centroid
                d = max(b["length"], b["depth"]) / 2 + max(L, W) / 2 + self.px(rng.uniform(3, 8))
                t = rng.uniform(0, 2 * np.pi)
                cx, cy = c.x + d * math.cos(t), c.y + d * math.sin(t)
            if shape == "rectangular":
                poly = _rect(cx, cy, L, W, ang)
            elif shape == "oval":
                poly = affinity.rotate(
                    affinity.scale(Point(cx, cy).buffer(1.0, quad_segs=10), L / 2, W / 2), ang, origin=(cx, cy)
                )
            elif shape == "kidney-shaped":
                f = _Frame(cx, cy, ang)
                r1, r2 = W * 0.55, W * 0.42
                c1, c2 = f.pt(-L / 2 + r1, 0), f.pt(L / 2 - r2, 0)
                hull = unary_union(
                    [Point(*c1).buffer(r1, quad_segs=10), Point(*c2).buffer(r2, quad_segs=10)]
                ).convex_hull
                bite = Point(*f.pt(0.05 * L, W * 0.62)).buffer(W * 0.36, quad_segs=10)
                poly = _largest(hull.difference(bite))
            else:
                poly = affinity.scale(_blob(rng, cx, cy, W / 2, rough=0.25, n=36), L / W, 1.0, origin=(cx, cy))
                poly = affinity.rotate(poly, ang, origin=(cx, cy))
            if poly is None or not poly.is_valid:
                continue
            if not self.inside(poly, 1) or self.occ.hits(poly, self.px(1.5)):
                continue
            color = "turquoise" if rng.random() < 0.4 else "blue"
            self.pools.append({"poly": poly, "shape": shape, "color": color, "public": public})
            self.occ.add(poly.buffer(self.px(0.7)), "pool")
            return

    def _layout_road_cars(self) -> None:
        rng = self.rng
        for road in self.roads:
            line: LineString = road["line"]
            others = [r["poly"] for r in self.roads if r is not road]
            for lane in (-1.0, 1.0):
                s = rng.uniform(0, self.px(40))
                while s < line.length:
                    s += self.px(5.5 + rng.exponential(48))
                    p = line.interpolate(s)
                    if not self.bbox.contains(p):
                        continue
                    f = _Frame(p.x, p.y, road["angle"])
                    cx, cy = f.pt(0, lane * road["width"] / 4 + self.px(rng.normal(0, 0.15)))
                    car = self._make_car(cx, cy, road["angle"] + rng.normal(0, 1.0), -lane, "road")
                    if not self.inside(car["poly"], 0.5) or self.occ.hits(
                        car["poly"], self.px(1.5), ignore=("road", "water")
                    ):
                        continue
                    if any(o.distance(car["poly"]) < self.px(4) for o in others):
                        continue
                    if any(r["poly"].intersects(car["poly"]) for r in self.rivers):
                        car["ctx"] = "bridge"
                    self.cars.append(car)
                    self.occ.add(car["poly"], "car")

    def _ensure_car_colours(self) -> None:
        """Guarantee enough red cars (a common query) in the larger scenes."""
        want = int(math.ceil(11 * self.a)) if self.a >= 0.2 else 0
        reds = [i for i, c in enumerate(self.cars) if c["color"] == "red"]
        others = [i for i, c in enumerate(self.cars) if c["color"] != "red"]
        need = min(len(others), want - len(reds))
        if need > 0:
            for i in self.rng.choice(others, size=need, replace=False):
                self.cars[int(i)]["color"] = "red"

    def _layout_ships(self) -> None:
        rng = self.rng
        road_polys = [r["poly"] for r in self.roads]
        for river in self.rivers:
            line: LineString = river["line"]
            n = max(1, int(round(rng.uniform(1, 3.5) * math.sqrt(self.a))))
            for _ in range(n):
                for _try in range(60):
                    big = rng.random()
                    if big < 0.35:
                        length, beam, kind = rng.uniform(5, 9), rng.uniform(2.0, 3.0), "boat"
                    elif big < 0.75:
                        length, beam, kind = rng.uniform(12, 22), rng.uniform(4, 6), "ship"
                    else:
                        length, beam, kind = rng.uniform(30, 48), rng.uniform(7, 9.5), "barge"
                    length, beam = self.px(length), self.px(beam)
                    if beam > river["width"] * 0.45:
                        continue
                    s = rng.uniform(0, line.length)
                    p, q = line.interpolate(s), line.interpolate(min(line.length, s + self.px(5)))
                    ang = math.degrees(math.atan2(q.y - p.y, q.x - p.x)) + rng.normal(0, 4)
                    off = rng.uniform(-1, 1) * (river["width"] / 2 - beam - self.px(4))
                    f = _Frame(p.x, p.y, ang)
                    cx, cy = f.pt(0, off)
                    ship = self._make_ship(cx, cy, length, beam, ang, kind, "river")
                    ship["water"] = river["poly"]
                    if not self.inside(ship["poly"], 1):
                        continue
                    if not river["poly"].buffer(-self.px(2)).contains(ship["wake"].union(ship["poly"])):
                        continue
                    if any(rp.distance(ship["poly"]) < self.px(8) for rp in road_polys):
                        continue
                    if self.occ.hits(ship["poly"], self.px(6), ignore=("water", "road")):
                        continue
                    self.ships.append(ship)
                    self.occ.add(ship["poly"], "ship")
                    break
        for pond in self.ponds:
            if rng.random() > 0.6:
                continue
            inner = pond["poly"].buffer(-self.px(3))
            for _try in range(30):
                length, beam = self.px(rng.uniform(4.5, 7.5)), self.px(rng.uniform(1.8, 2.6))
                if inner.is_empty:
                    break
                x0, y0, x1, y1 = inner.bounds
                cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
                ship = self._make_ship(cx, cy, length, beam, rng.uniform(0, 180), "boat", "pond")
                ship["water"] = pond["poly"]
                if inner.contains(ship["poly"]) and not self.occ.hits(ship["poly"], self.px(3), ignore=("water",)):
                    self.ships.append(ship)
                    self.occ.add(ship["poly"], "ship")
                    break

    def _make_ship(self, cx: float, cy: float, length: float, beam: float, ang: float, kind: str, where: str) -> dict:
        rng = self.rng
        if kind == "barge":
            color = _pick(rng, {"black": 0.4, "grey": 0.25, "red": 0.2, "blue": 0.15})
        elif kind == "ship":
            color = _pick(rng, {"white": 0.5, "grey": 0.2, "blue": 0.15, "red": 0.15})
        else:
            color = _pick(rng, {"white": 0.6, "red": 0.15, "blue": 0.15, "grey": 0.1})
        heading = 1.0 if rng.random() < 0.5 else -1.0
        f = _Frame(cx, cy, ang + (0 if heading > 0 else 180))
        poly = f.rect(-length / 2, -beam / 2, length / 2, beam / 2)
        wake = f.poly([(-length / 2, -beam / 2), (-length, -beam), (-length, beam), (-length / 2, beam / 2)])
        size = "small" if length < self.px(10) else ("medium" if length < self.px(25) else "large")
        moving = rng.random() < 0.7
        return {
            "poly": poly,
            "frame": f,
            "L": length,
            "B": beam,
            "kind": kind,
            "color": color,
            "size": size,
            "angle": ang,
            "where": where,
            "wake": wake if moving else Polygon(),
            "moving": moving,
        }

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
            crown = _blob(rng, x, y, r, rough=0.12, n=24)
            if not self.inside(crown, 0.3) or self.occ.hits(crown, self.px(0.6), ignore=("tree",)):
                return False
            color = _pick(rng, {"green": 0.5, "dark green": 0.3, "light green": 0.2})
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
                    f = _Frame(p.x, p.y, road["angle"])
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
    def labels(self) -> list[dict]:
        out: list[dict] = []

        def add(geom: Any, cls: str, color: str, size: str, orient: str, desc: str) -> None:
            g = _largest(geom.intersection(self.bbox)) if not self.inside(geom, 0) else geom
            if g is None or g.area < 1.0:
                return
            if not g.is_valid:
                g = _largest(g.buffer(0))
                if g is None:
                    return
            out.append(
                {"geometry": g, "class": cls, "color": color, "size": size, "orientation": orient, "description": desc}
            )

        def ori(o: str) -> str:
            return f", oriented {o}" if o != "none" else ""

        area_m2 = 1.0 / (self.m * self.m)
        for r in self.rivers:
            w = r["width"] / self.m
            size = "small" if w < 25 else ("medium" if w < 40 else "large")
            o = "east-west" if r["axis"] == "ew" else "north-south"
            g = _largest(r["poly"].intersection(self.bbox))
            if g is None:
                continue
            add(
                g,
                "river",
                r["color"],
                size,
                o,
                f"a {size} river with {r['color']} water flowing {o} across the scene, {self.position(g)}",
            )
        for p in self.ponds:
            a = p["poly"].area * area_m2
            size = "small" if a < 600 else ("medium" if a < 1800 else "large")
            o = _shape_orientation(p["poly"], 1.5)
            add(
                p["poly"],
                "pond",
                p["color"],
                size,
                o,
                f"a {size} pond with {p['color']} water{ori(o)}, {self.position(p['poly'])}",
            )
        for r in self.roads:
            w = r["width"] / self.m
            size = "small" if w < 8 else ("medium" if w < 9.5 else "large")
            o = orientation_of(r["angle"])
            g = _largest(r["poly"].intersection(self.bbox))
            if g is None:
                continue
            bridge = " crossing the river on a bridge" if any(rv["poly"].intersects(g) for rv in self.rivers) else ""
            add(
                g,
                "road",
                "grey",
                size,
                o,
                f"a {size} two-lane asphalt road with white lane markings{bridge}, running {o}, {self.position(g)}",
            )
        for lot in self.lots:
            a = lot["poly"].area * area_m2
            size = "small" if a < 700 else ("medium" if a < 1800 else "large")
            o = _shape_orientation(lot["poly"], 1.2)
            n = lot["n_cars"]
            add(
                lot["poly"],
                "parking lot",
                "grey",
                size,
                o,
                f"a {size} parking lot with {n} parked car{'s' if n != 1 else ''}{ori(o)}, "
                f"{self.position(lot['poly'])}",
            )
        for c in self.courts:
            o = orientation_of(c["angle"])
            surface = "clay " if c["color"] == "red" else ""
            add(
                c["poly"],
                "tennis court",
                c["color"],
                "medium",
                o,
                f"a {c['color']} {surface}tennis court with white court lines{ori(o)}, {self.position(c['poly'])}",
            )
        for b in self.buildings:
            a = b["poly"].area * area_m2
            size = "small" if a < 160 else ("medium" if a < 600 else "large")
            o = orientation_of(b["angle"])
            shape = " L-shaped" if b["lshape"] else ""
            roof = b["roof"]
            kind = "house" if b.get("house") else "building"
            add(
                b["poly"],
                "building",
                b["color"],
                size,
                o,
                f"a {size}{shape} {kind} with a {b['color']} {roof} roof{ori(o)}, {self.position(b['poly'])}",
            )
        for p in self.pools:
            a = p["poly"].area * area_m2
            size = "small" if a < 30 else ("medium" if a < 80 else "large")
            o = _shape_orientation(p["poly"], 1.3)
            where = "next to a large building" if p["public"] else "in the garden behind a house"
            add(
                p["poly"],
                "swimming pool",
                p["color"],
                size,
                o,
                f"a {size} {p['color']} {p['shape']} swimming pool {where}{ori(o)}, {self.position(p['poly'])}",
            )
        for c in self.cars:
            o = orientation_of(c["angle"])
            ctx = {
                "lot": "parked in a parking lot",
                "road": "driving on a road",
                "bridge": "driving on a bridge over the river",
            }[c["ctx"]]
            add(
                c["poly"],
                "car",
                c["color"],
                c["size"],
                o,
                f"a {c['size']} {c['color']} car {ctx}{ori(o)}, {self.position(c['poly'])}",
            )
        for s in self.ships:
            o = orientation_of(s["angle"])
            kind = {"boat": "boat", "ship": "ship", "barge": "cargo barge"}[s["kind"]]
            state = "sailing" if s["moving"] else "anchored"
            add(
                s["poly"],
                "ship",
                s["color"],
                s["size"],
                o,
                f"a {s['size']} {s['color']} {kind} {state} on the {s['where']}{ori(o)}, {self.position(s['poly'])}",
            )
        for t in self.trees:
            r = t["r"] / self.m
            size = "small" if r < 2.5 else ("medium" if r < 4.0 else "large")
            add(
                t["poly"],
                "tree",
                t["color"],
                size,
                "none",
                f"a {size} {t['color']} tree with a round crown and its shadow, {self.position(t['poly'])}",
            )
        return out

    # ------------------------------------------------------------------ rendering
    def render(self) -> np.ndarray:
        H = W = self.size
        rng = self.rng
        ground, soil = self._ground()
        im = Image.fromarray(ground)
        mat = Image.fromarray(np.where(soil, _SOIL, _GRASS).astype(np.uint8))
        d = ImageDraw.Draw(im)
        da = ImageDraw.Draw(im, "RGBA")
        dm = ImageDraw.Draw(mat)

        def fill(g: Any, rgb: tuple[int, ...], material: int | None) -> None:
            for p in getattr(g, "geoms", [g]):
                if p.is_empty or p.geom_type != "Polygon":
                    continue
                pts = [(x - 0.5, y - 0.5) for x, y in p.exterior.coords]
                if len(rgb) == 4:
                    da.polygon(pts, fill=rgb)
                else:
                    d.polygon(pts, fill=rgb)
                if material is not None:
                    dm.polygon(pts, fill=material)

        shadow = Image.new("L", (W, H), 0)
        ds = ImageDraw.Draw(shadow)

        def shade(g: Any, value: int = 255) -> None:
            for p in getattr(g, "geoms", [g]):
                if not p.is_empty and p.geom_type == "Polygon":
                    ds.polygon([(x - 0.5, y - 0.5) for x, y in p.exterior.coords], fill=value)

        # water
        for r in self.rivers:
            fill(r["poly"].buffer(self.px(1.8)), (104, 98, 72), _SOIL)
            fill(r["poly"], _WATER_COLORS[r["color"]], _WATER)
            fill(r["poly"].buffer(-self.px(3)), _shade(_WATER_COLORS[r["color"]], 0.9), _WATER)
        for p in self.ponds:
            fill(p["poly"].buffer(self.px(1.8)), (70, 92, 48), _FOLIAGE)
            fill(p["poly"], _WATER_COLORS[p["color"]], _WATER)
            fill(p["poly"].buffer(-self.px(2.5)), _shade(_WATER_COLORS[p["color"]], 0.88), _WATER)
        # roads, bridges, markings
        for r in self.roads:
            for rv in self.rivers:
                bridge = r["poly"].intersection(rv["poly"].buffer(self.px(3)))
                if not bridge.is_empty:
                    deck = (
                        r["line"]
                        .buffer(r["width"] / 2 + self.px(0.8), cap_style="flat")
                        .intersection(rv["poly"].buffer(self.px(3)))
                    )
                    # the deck's shadow falls on the water only (the road is at grade on the banks)
                    cast = affinity.translate(deck, *(v * 5.0 for v in self.shadow_vec))
                    shade(cast.intersection(rv["poly"]).difference(deck))
                    fill(deck, (168, 166, 160), _CONCRETE)
        for r in self.roads:
            fill(r["poly"], r["rgb"], _ASPHALT)
        for r in self.roads:
            self._draw_markings(r, fill)
        # parking lots
        for lot in self.lots:
            fill(lot["drive"], (100, 101, 104), _ASPHALT)
            fill(lot["poly"], (104, 105, 108), _ASPHALT)
            for ln in lot["lines"]:
                fill(ln, (226, 226, 220), _PAINT)
        # tennis courts
        for c in self.courts:
            self._draw_court(c, fill, shade)
        # pools
        for p in self.pools:
            fill(
                p["poly"].buffer(self.px(0.7), join_style="mitre" if p["shape"] == "rectangular" else "round"),
                (214, 210, 198),
                _CONCRETE,
            )
            base = _POOL_COLORS[p["color"]]
            fill(p["poly"], _shade(base, 0.86), _POOL)
            inner = p["poly"].buffer(-self.px(0.6))
            if not inner.is_empty:
                fill(inner, base, _POOL)
            deep = p["poly"].buffer(-self.px(1.6))
            if not deep.is_empty:
                fill(deep, _shade(base, 0.92), _POOL)
        # ships (with wakes) and cars
        for s in self.ships:
            if s["moving"]:
                self._draw_wake(s, fill)
            self._draw_ship(s, fill)
            sh = affinity.translate(s["poly"], *(v * 1.5 for v in self.shadow_vec)).difference(s["poly"])
            shade(sh)
        for c in self.cars:
            self._draw_car(c, fill)
            sh = affinity.translate(c["poly"], *(v * 1.5 for v in self.shadow_vec)).difference(c["poly"])
            shade(sh)
        # cast shadows of buildings and trees (drawn onto the shadow mask, applied below)
        for b in self.buildings:
            for part in b["parts"]:
                shade(self.shadow_of(part, b["height"] * (1.0 if b["roof"] == "flat" else 0.8)))
        for t in self.trees:
            dx, dy = self.shadow_vec
            hh = t["height"] - t["r"] / self.m
            near = affinity.translate(t["poly"], dx * hh * 0.3, dy * hh * 0.3)
            far = affinity.translate(t["poly"], dx * hh, dy * hh)
            shade(unary_union([near, far]).convex_hull)
            trunk = LineString([(t["cx"], t["cy"]), (t["cx"] + dx * hh, t["cy"] + dy * hh)]).buffer(self.px(0.25))
            shade(trunk)
        sm = np.asarray(shadow.filter(ImageFilter.GaussianBlur(1.1)), dtype=np.float32) / 255.0
        arr = np.asarray(im, dtype=np.float32)
        arr *= 1.0 - sm[..., None] * np.array([0.6, 0.57, 0.5], np.float32)
        im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(im)
        da = ImageDraw.Draw(im, "RGBA")
        # buildings and trees on top of the shadows
        for b in self.buildings:
            self._draw_building(b, fill)
        for t in self.trees:
            self._draw_tree(t, fill)
        # per-material texture, optics blur, a little sensor noise
        arr = np.asarray(im, dtype=np.float32)
        m_id = np.asarray(mat)
        tex = 0.6 * _noise(rng, H, W, 4) + 0.4 * _noise(rng, H, W, 8)
        amp = _TEXTURE_AMP[m_id]
        arr += (amp * tex)[..., None] * np.array([1.0, 1.0, 0.9], np.float32)
        leaf = m_id == _FOLIAGE
        arr[leaf, 1] += 0.25 * amp[leaf] * tex[leaf]
        im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.55))
        arr = np.asarray(im, dtype=np.float32)
        return np.ascontiguousarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))

    def _ground(self) -> tuple[np.ndarray, np.ndarray]:
        H = W = self.size
        rng = self.rng
        big = max(8, int(self.px(60)))
        mix = _fbm(rng, H, W, (big, big // 4))
        soil_n = _fbm(rng, H, W, (max(8, int(self.px(45))), max(4, int(self.px(12))), max(2, int(self.px(3)))))
        clumps = _noise(rng, H, W, max(2, int(self.px(1.5))))
        grass_a = np.array([84, 116, 56], np.float32)
        grass_b = np.array([130, 138, 80], np.float32)
        soil_c = np.array([150, 124, 94], np.float32)
        t = 1.0 / (1.0 + np.exp(-1.6 * mix))
        g = grass_a + t[..., None] * (grass_b - grass_a)
        g *= (1.0 + 0.025 * clumps)[..., None]
        thr = float(rng.uniform(1.0, 1.5))
        sm = _smoothstep(soil_n, thr, thr + 0.25)
        s = soil_c * (1.0 + 0.03 * clumps)[..., None]
        out = g + sm[..., None] * (s - g)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), sm > 0.5

    def _draw_markings(self, r: dict, fill: Any) -> None:
        line: LineString = r["line"]
        w = r["width"]
        others = [o for o in self.roads if o is not r]
        other_union = unary_union([o["poly"] for o in others]) if others else Polygon()
        keep_out = other_union.buffer(self.px(4.5)) if others else Polygon()
        paint = (232, 232, 226)
        # dashed centre line: 3 m dash, 6 m gap
        dash, gap, half = self.px(3.0), self.px(6.0), self.px(0.2)
        s = 0.0
        u = (r["line"].coords[-1][0] - r["line"].coords[0][0], r["line"].coords[-1][1] - r["line"].coords[0][1])
        ang = math.degrees(math.atan2(u[1], u[0]))
        while s < line.length:
            p = line.interpolate(s + dash / 2)
            if -dash < p.x < self.size + dash and -dash < p.y < self.size + dash:
                g = _rect(p.x, p.y, dash, 2 * half, ang)
                if keep_out.is_empty or not keep_out.intersects(g):
                    fill(g, paint, _PAINT)
            s += dash + gap
        # solid edge lines
        for side in (-1.0, 1.0):
            off = line.offset_curve(side * (w / 2 - self.px(0.6)))
            edge = off.buffer(self.px(0.17), cap_style="flat")
            if not other_union.is_empty:
                edge = edge.difference(other_union.buffer(self.px(1.0)))
            fill(edge, paint, _PAINT)
        # zebra crossings before each intersection
        for o in others:
            x = line.intersection(o["line"])
            if x.is_empty or x.geom_type != "Point":
                continue
            th = math.radians(abs(ang - o["angle"]))
            if abs(math.sin(th)) < 0.5:
                continue
            s0 = line.project(x)
            dd = (o["width"] / 2) / abs(math.sin(th)) + (w / 2) / max(0.2, abs(math.tan(th))) + self.px(1.5)
            for sgn in (-1.0, 1.0):
                p = line.interpolate(s0 + sgn * (dd + self.px(1.5)))
                f = _Frame(p.x, p.y, ang)
                n = int((w - self.px(1.5)) // self.px(1.0))
                for k in range(n):
                    v = -n * self.px(1.0) / 2 + (k + 0.5) * self.px(1.0)
                    fill(f.rect(-self.px(1.5), v - self.px(0.25), self.px(1.5), v + self.px(0.25)), paint, _PAINT)

    def _draw_court(self, c: dict, fill: Any, shade: Any) -> None:
        inner_rgb, outer_rgb = _COURT_COLORS[c["color"]]
        f = _Frame(c["cx"], c["cy"], c["angle"])
        fill(c["poly"], outer_rgb, _COURT)
        hl, hw = self.px(23.77 / 2), self.px(10.97 / 2)
        sw, sl = self.px(8.23 / 2), self.px(6.40)
        fill(f.rect(-hl, -hw, hl, hw), inner_rgb, _COURT)
        lw = self.px(0.12)
        white = (238, 238, 234)
        segs = [
            ((-hl, -hw), (-hl, hw)),
            ((hl, -hw), (hl, hw)),  # baselines
            ((-hl, -hw), (hl, -hw)),
            ((-hl, hw), (hl, hw)),  # doubles sidelines
            ((-hl, -sw), (hl, -sw)),
            ((-hl, sw), (hl, sw)),  # singles sidelines
            ((-sl, -sw), (-sl, sw)),
            ((sl, -sw), (sl, sw)),  # service lines
            ((-sl, 0), (sl, 0)),  # centre service line
            ((-hl, 0), (-hl + self.px(0.3), 0)),
            ((hl - self.px(0.3), 0), (hl, 0)),  # centre marks
        ]
        for (u0, v0), (u1, v1) in segs:
            if u0 == u1:
                g = f.rect(u0 - lw, v0 - lw, u0 + lw, v1 + lw)
            else:
                g = f.rect(u0 - lw, v0 - lw, u1 + lw, v0 + lw)
            fill(g, white, _PAINT)
        net = f.rect(-self.px(0.12), -hw - self.px(0.9), self.px(0.12), hw + self.px(0.9))
        fill(net, (40, 40, 40), _PAINT)
        shade(affinity.translate(net, *(v * 1.0 for v in self.shadow_vec)).difference(net), 200)

    def _draw_car(self, c: dict, fill: Any) -> None:
        rgb = CAR_COLORS[c["color"]]
        f = _Frame(c["cx"], c["cy"], c["angle"] + (0 if c["heading"] > 0 else 180))
        L, W = c["L"] / 2, c["W"] / 2
        ch = min(L, W) * 0.35
        body = [
            (-L + ch, -W),
            (L - ch * 1.3, -W),
            (L, -W + ch * 1.3),
            (L, W - ch * 1.3),
            (L - ch * 1.3, W),
            (-L + ch, W),
            (-L, W - ch),
            (-L, -W + ch),
        ]
        fill(f.poly(body), _shade(rgb, 0.92), _CAR)
        fill(
            f.rect(-0.55 * L, -0.72 * W, 0.25 * L, 0.72 * W), _shade(rgb, 1.08) if c["color"] != "white" else rgb, _CAR
        )
        glass = (38, 44, 52) if c["color"] != "black" else (62, 70, 80)
        fill(
            f.poly([(0.25 * L, -0.78 * W), (0.62 * L, -0.86 * W), (0.62 * L, 0.86 * W), (0.25 * L, 0.78 * W)]),
            glass,
            _CAR,
        )
        fill(
            f.poly([(-0.55 * L, -0.74 * W), (-0.78 * L, -0.8 * W), (-0.78 * L, 0.8 * W), (-0.55 * L, 0.74 * W)]),
            glass,
            _CAR,
        )

    def _draw_wake(self, s: dict, fill: Any) -> None:
        """Foam: a faint turbulent streak behind the stern and the two arms of the Kelvin V."""
        f: _Frame = s["frame"]
        L, B = s["L"] / 2, s["B"] / 2
        tail = 3.2 * L
        water = s["water"].buffer(-self.px(1.0))
        bridges = [r["poly"] for r in self.roads if r["poly"].intersects(water)]
        if bridges:  # no foam on the bridge decks
            water = water.difference(unary_union(bridges).buffer(self.px(1.5)))

        def foam(g: Any, rgba: tuple[int, int, int, int]) -> None:
            fill(g.intersection(water), rgba, None)

        foam(f.poly([(-L, -0.8 * B), (-L - tail, -1.3 * B), (-L - tail, 1.3 * B), (-L, 0.8 * B)]), (228, 236, 238, 26))
        foam(
            f.poly([(-L, -0.6 * B), (-L - 0.4 * tail, -0.4 * B), (-L - 0.4 * tail, 0.4 * B), (-L, 0.6 * B)]),
            (236, 242, 242, 60),
        )
        arm = self.px(0.35) + 0.08 * B
        for sgn in (-1.0, 1.0):
            x0, y0 = 0.55 * L, sgn * B
            x1, y1 = -L - tail, sgn * (B + 0.36 * (L + tail))
            foam(
                f.poly([(x0, y0 - arm / 2), (x1, y1 - arm * 2), (x1, y1 + arm * 2), (x0, y0 + arm / 2)]),
                (230, 238, 240, 45),
            )

    def _draw_ship(self, s: dict, fill: Any) -> None:
        f: _Frame = s["frame"]
        L, B = s["L"] / 2, s["B"] / 2
        rgb = _SHIP_COLORS[s["color"]]
        bow = 0.55 * L if s["kind"] != "barge" else 0.85 * L
        hull = [(-L, -B * 0.9), (-L * 0.95, -B), (bow, -B), (L, 0), (bow, B), (-L * 0.95, B), (-L, B * 0.9)]
        fill(f.poly(hull), rgb, _SHIP)
        if s["kind"] == "barge":
            fill(
                f.poly([(-0.6 * L, -0.78 * B), (0.8 * L, -0.78 * B), (0.8 * L, 0.78 * B), (-0.6 * L, 0.78 * B)]),
                (96, 70, 48),
                _SHIP,
            )
            for k in range(4):
                u = -0.55 * L + k * 0.34 * L
                fill(f.rect(u, -0.7 * B, u + 0.3 * L, 0.7 * B), (120, 88, 58), _SHIP)
            fill(f.rect(-0.95 * L, -0.6 * B, -0.72 * L, 0.6 * B), (236, 236, 232), _SHIP)
        else:
            deck = (198, 176, 140) if s["color"] == "white" else (214, 214, 210)
            fill(
                f.poly(
                    [
                        (-0.88 * L, -0.8 * B),
                        (bow * 0.95, -0.8 * B),
                        (0.9 * L, 0),
                        (bow * 0.95, 0.8 * B),
                        (-0.88 * L, 0.8 * B),
                    ]
                ),
                deck,
                _SHIP,
            )
            fill(f.rect(-0.55 * L, -0.55 * B, 0.2 * L, 0.55 * B), (240, 240, 238), _SHIP)
            fill(f.rect(0.05 * L, -0.45 * B, 0.2 * L, 0.45 * B), (50, 60, 72), _SHIP)

    def _draw_building(self, b: dict, fill: Any) -> None:
        base = ROOF_COLORS[b["color"]]
        sx, sy = self.sun
        if b["roof"] == "flat":
            fill(b["poly"], _shade(base, 0.82), _ROOF)
            inner = b["poly"].buffer(-self.px(0.6), join_style="mitre")
            if not inner.is_empty:
                fill(inner, base, _ROOF)
            f: _Frame = b["frame"]
            n_units = int(self.rng.integers(0, 5)) if b["length"] > self.px(12) else 0
            for _ in range(n_units):
                u = self.rng.uniform(-0.35, 0.35) * b["length"]
                v = self.rng.uniform(-0.3, 0.3) * b["depth"]
                a, c = self.px(self.rng.uniform(1.2, 3.0)), self.px(self.rng.uniform(1.0, 2.0))
                unit = f.rect(u - a / 2, v - c / 2, u + a / 2, v + c / 2)
                if not inner.contains(unit):
                    continue
                dx, dy = self.shadow_vec
                fill(affinity.translate(unit, dx * 1.0, dy * 1.0), _shade(base, 0.55), _ROOF)
                fill(unit, (190, 192, 194), _ROOF)
            return
        for part in b["parts"]:
            pts = list(part.exterior.coords)[:4]
            e1 = math.hypot(pts[1][0] - pts[0][0], pts[1][1] - pts[0][1])
            e2 = math.hypot(pts[2][0] - pts[1][0], pts[2][1] - pts[1][1])
            c = part.centroid
            if e1 >= e2:
                ang = math.degrees(math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0]))
                L, D = e1 / 2, e2 / 2
            else:
                ang = math.degrees(math.atan2(pts[2][1] - pts[1][1], pts[2][0] - pts[1][0]))
                L, D = e2 / 2, e1 / 2
            f = _Frame(c.x, c.y, ang)
            rx = L if b["roof"] == "gabled" else max(0.0, L - D)
            facets = [
                ([(-L, -D), (L, -D), (rx, 0), (-rx, 0)], (-f.vx, -f.vy)),
                ([(-L, D), (L, D), (rx, 0), (-rx, 0)], (f.vx, f.vy)),
            ]
            if rx < L:
                facets += [([(-L, -D), (-rx, 0), (-L, D)], (-f.ux, -f.uy)), ([(L, -D), (rx, 0), (L, D)], (f.ux, f.uy))]
            for pts_uv, (nx, ny) in facets:
                k = 1.0 + 0.22 * (nx * sx + ny * sy)
                fill(f.poly(pts_uv), _shade(base, k), _ROOF)
            ridge = f.rect(-rx, -self.px(0.12), rx, self.px(0.12))
            fill(ridge, _shade(base, 1.15), _ROOF)

    def _draw_tree(self, t: dict, fill: Any) -> None:
        rgb = _TREE_COLORS[t["color"]]
        sx, sy = self.sun
        r = t["r"]
        fill(t["poly"], _shade(rgb, 0.72), _FOLIAGE)
        for frac, off, k in ((0.78, 0.14, 1.0), (0.45, 0.36, 1.22)):
            cx, cy = t["cx"] + sx * off * r, t["cy"] + sy * off * r
            fill(Point(cx, cy).buffer(frac * r, quad_segs=6), _shade(rgb, k), _FOLIAGE)


# --------------------------------------------------------------------------- public API
def render_scene(seed: int, size: int = DEFAULT_SIZE, res: float = DEFAULT_RES) -> tuple[np.ndarray, list[dict]]:
    """Render one synthetic aerial scene.

    Returns ``(image, labels)``: ``image`` is a (size, size, 3) uint8 RGB array (row 0 is north);
    ``labels`` is a list of dicts with keys ``geometry`` (shapely Polygon in pixel coordinates),
    ``class``, ``color``, ``size`` ("small"/"medium"/"large"), ``orientation`` (one of
    ``ORIENTATIONS``) and ``description`` (one sentence). Deterministic in (seed, size, res).
    """
    scene = _Scene(seed, size, res)
    scene.layout()
    labels = scene.labels()
    image = scene.render()
    return image, labels


def write_scene(
    out_dir: str | os.PathLike[str],
    seed: int,
    size: int = DEFAULT_SIZE,
    res: float = DEFAULT_RES,
    epsg: int = DEFAULT_EPSG,
    name: str = "scene",
) -> tuple[Path, Path]:
    """Render a scene and write ``<name>.tif`` (GeoTIFF) and its labels GeoPackage into out_dir.

    The GeoTIFF is RGB uint8, tiled 256x256, DEFLATE with horizontal predictor, north up, with
    ``res`` metre pixels and a UTM-like origin from ``scene_origin(seed)``; the GeoPackage
    (GPKG 1.2) has one layer "labels" with the object footprints in the same CRS.
    Files are written atomically (temporary file, then rename). Returns (tif_path, gpkg_path).
    """
    import geopandas as gpd
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    image, labels = render_scene(seed, size, res)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tif_path, gpkg_path = scene_paths(out, name)
    x0, y0 = scene_origin(seed)
    crs = f"EPSG:{int(epsg)}"
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": from_origin(x0, y0, res, res),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 9,
        "photometric": "RGB",
        "interleave": "pixel",
    }
    tmp_tif = tif_path.with_name(f".{tif_path.name}.tmp")
    try:
        with rasterio.open(tmp_tif, "w", **profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            dst.update_tags(
                GENERATOR="GeoAlign sample_data/make_sample.py",
                SEED=str(seed),
                RESOLUTION_M=str(res),
                N_OBJECTS=str(len(labels)),
            )
            dst.update_tags(TIFFTAG_IMAGEDESCRIPTION=f"GeoAlign synthetic aerial scene, seed {seed}")
        os.replace(tmp_tif, tif_path)
    finally:
        if tmp_tif.exists():
            tmp_tif.unlink()

    mat = [res, 0.0, 0.0, -res, x0, y0]
    gdf = gpd.GeoDataFrame(
        {
            "class": [lb["class"] for lb in labels],
            "color": [lb["color"] for lb in labels],
            "size": [lb["size"] for lb in labels],
            "orientation": [lb["orientation"] for lb in labels],
            "description": [lb["description"] for lb in labels],
        },
        geometry=[affinity.affine_transform(lb["geometry"], mat) for lb in labels],
        crs=crs,
    )
    for col in ("class", "color", "size", "orientation", "description"):
        gdf[col] = gdf[col].astype(object)
    tmp_gpkg = gpkg_path.with_name(f".{gpkg_path.stem}.tmp.gpkg")
    try:
        if tmp_gpkg.exists():
            tmp_gpkg.unlink()
        gdf.to_file(
            tmp_gpkg,
            layer=LAYER,
            driver="GPKG",
            engine="pyogrio",
            geometry_type="Polygon",
            dataset_options={"VERSION": "1.2"},
        )
        os.replace(tmp_gpkg, gpkg_path)
    finally:
        for p in (tmp_gpkg, Path(f"{tmp_gpkg}-wal"), Path(f"{tmp_gpkg}-shm")):
            if p.exists():
                p.unlink()
    return tif_path, gpkg_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render synthetic georeferenced aerial scenes with ground truth.")
    ap.add_argument("--seed", type=int, default=SAMPLE_SEED, help="random seed (default 0, the sample scene)")
    ap.add_argument("--size", type=int, default=DEFAULT_SIZE, help="side length in pixels (square)")
    ap.add_argument("--res", type=float, default=DEFAULT_RES, help="pixel size in metres (default 0.3)")
    ap.add_argument("--epsg", type=int, default=DEFAULT_EPSG, help="CRS EPSG code (default 32633)")
    ap.add_argument("--name", default="scene", help='file stem; "scene" -> scene.tif + labels.gpkg')
    ap.add_argument("--count", type=int, default=None, help="write N scenes, seeds seed..seed+N-1, named NAME_SEED")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    args = ap.parse_args(argv)
    if args.size < 16:
        ap.error("--size must be >= 16")
    if args.res <= 0:
        ap.error("--res must be > 0")
    if args.count is not None and args.count < 1:
        ap.error("--count must be >= 1")
    jobs = (
        [(args.seed, args.name)]
        if args.count is None
        else [(s, f"{args.name}_{s}") for s in range(args.seed, args.seed + args.count)]
    )
    for seed, name in jobs:
        t0 = time.perf_counter()
        tif, gpkg = write_scene(args.out, seed, size=args.size, res=args.res, epsg=args.epsg, name=name)
        print(f"seed {seed}: {tif} ({tif.stat().st_size / 1e6:.2f} MB), {gpkg} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
