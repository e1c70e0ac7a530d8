"""Layout of built-up objects: parking lots (with parked cars), tennis courts, buildings, pools."""

from __future__ import annotations

import math

import numpy as np
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union

from .palette import BIG_ROOF_WEIGHTS, HOUSE_ROOF_WEIGHTS
from .shapes import Frame, blob, largest_polygon, pick, rotated_rect


class BuiltMixin:
    """Places parking lots, tennis courts, buildings and pools; part of ``Scene`` (via ``LayoutMixin``)."""

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
        f0 = Frame(p.x, p.y, road["angle"])
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
                        sf = Frame(*f0.pt(ub, v0 + side * v_mid), car_ang)
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
                f = Frame(cx, cy, ang)
                L, W = self.px(36.6), self.px(18.3)
                group = f.rect(-L / 2 - self.px(1), -n * W / 2 - self.px(1), L / 2 + self.px(1), n * W / 2 + self.px(1))
                if not self.inside(group, 2) or self.occ.hits(group, self.px(4)):
                    continue
                color = pick(rng, {"green": 0.4, "blue": 0.35, "red": 0.25})
                for j in range(n):
                    v = -n * W / 2 + (j + 0.5) * W
                    c = f.pt(0, v)
                    self.courts.append(
                        {
                            "poly": rotated_rect(c[0], c[1], L, W, ang),
                            "cx": c[0],
                            "cy": c[1],
                            "angle": ang,
                            "color": color,
                        }
                    )
                self.occ.add(group, "court")
                placed += n
                ok = True
                break
            if not ok:
                break

    def _building(
        self, f: Frame, length: float, depth: float, kind: str, color: str, lshape: bool, height_m: float
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
        poly = largest_polygon(poly.buffer(0))
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
                    rf = Frame(p.x, p.y, road["angle"])
                    setback = road["width"] / 2 + self.px(rng.uniform(7, 18))
                    ang = road["angle"] if rng.random() < 0.85 else road["angle"] + rng.uniform(25, 65)
                    c = rf.pt(0, side * (setback + depth / 2))
                else:
                    ang = float(rng.choice([0.0, 90.0])) if rng.random() < 0.6 else rng.uniform(0, 180)
                    c = tuple(rng.uniform(0, self.size, 2))
                f = Frame(c[0], c[1], ang)
                if large:
                    kind, color = "flat", pick(rng, BIG_ROOF_WEIGHTS)
                else:
                    kind = str(rng.choice(["flat", "gabled", "hipped"], p=[0.3, 0.4, 0.3]))
                    color = pick(rng, BIG_ROOF_WEIGHTS if kind == "flat" else HOUSE_ROOF_WEIGHTS)
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
                    f0 = Frame(p.x, p.y, road["angle"])
                    c = f0.pt(0, side * (setback + across / 2))
                    kind = str(rng.choice(["gabled", "hipped", "flat"], p=[0.5, 0.38, 0.12]))
                    color = pick(rng, BIG_ROOF_WEIGHTS if kind == "flat" else HOUSE_ROOF_WEIGHTS)
                    f = Frame(c[0], c[1], road["angle"] + (0.0 if along else 90.0))
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
                poly = rotated_rect(cx, cy, L, W, ang)
            elif shape == "oval":
                poly = affinity.rotate(
                    affinity.scale(Point(cx, cy).buffer(1.0, quad_segs=10), L / 2, W / 2), ang, origin=(cx, cy)
                )
            elif shape == "kidney-shaped":
                f = Frame(cx, cy, ang)
                r1, r2 = W * 0.55, W * 0.42
                c1, c2 = f.pt(-L / 2 + r1, 0), f.pt(L / 2 - r2, 0)
                hull = unary_union(
                    [Point(*c1).buffer(r1, quad_segs=10), Point(*c2).buffer(r2, quad_segs=10)]
                ).convex_hull
                bite = Point(*f.pt(0.05 * L, W * 0.62)).buffer(W * 0.36, quad_segs=10)
                poly = largest_polygon(hull.difference(bite))
            else:
                poly = affinity.scale(blob(rng, cx, cy, W / 2, rough=0.25, n=36), L / W, 1.0, origin=(cx, cy))
                poly = affinity.rotate(poly, ang, origin=(cx, cy))
            if poly is None or not poly.is_valid:
                continue
            if not self.inside(poly, 1) or self.occ.hits(poly, self.px(1.5)):
                continue
            color = "turquoise" if rng.random() < 0.4 else "blue"
            self.pools.append({"poly": poly, "shape": shape, "color": color, "public": public})
            self.occ.add(poly.buffer(self.px(0.7)), "pool")
            return
