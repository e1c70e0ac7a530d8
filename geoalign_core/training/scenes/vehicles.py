"""Layout of vehicles: cars (parked ones come with their lot), cars on roads, boats and ships."""

from __future__ import annotations

import math

from shapely.geometry import LineString, Polygon

from .palette import CAR_WEIGHTS
from .shapes import Frame, pick, rotated_rect


class VehiclesMixin:
    """Places cars and ships; part of ``Scene`` (via ``LayoutMixin``)."""

    def _make_car(self, cx: float, cy: float, angle: float, heading: float, ctx: str) -> dict:
        rng = self.rng
        length = rng.choice([rng.uniform(3.7, 4.25), rng.uniform(4.3, 4.85), rng.uniform(4.9, 5.4)], p=[0.3, 0.5, 0.2])
        width = 1.75 + 0.1 * (length - 3.7) + rng.uniform(-0.05, 0.1)
        size = "small" if length < 4.28 else ("medium" if length < 4.88 else "large")
        color = pick(rng, CAR_WEIGHTS)
        poly = rotated_rect(cx, cy, self.px(length), self.px(width), angle)
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
                    f = Frame(p.x, p.y, road["angle"])
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
                    f = Frame(p.x, p.y, ang)
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
            color = pick(rng, {"black": 0.4, "grey": 0.25, "red": 0.2, "blue": 0.15})
        elif kind == "ship":
            color = pick(rng, {"white": 0.5, "grey": 0.2, "blue": 0.15, "red": 0.15})
        else:
            color = pick(rng, {"white": 0.6, "red": 0.15, "blue": 0.15, "grey": 0.1})
        heading = 1.0 if rng.random() < 0.5 else -1.0
        f = Frame(cx, cy, ang + (0 if heading > 0 else 180))
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
