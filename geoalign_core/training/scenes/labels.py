"""Ground truth of a synthetic scene: one polygon and one sentence per object."""

from __future__ import annotations

from typing import Any

from .shapes import largest_polygon, orientation_of, shape_orientation


def size_word(value: float, medium_from: float, large_from: float) -> str:
    """"small", "medium" or "large": ``value`` (a width, an area, a radius) against the two thresholds."""
    return "small" if value < medium_from else ("medium" if value < large_from else "large")


class LabelsMixin:
    """Describes the laid-out objects as label dicts (geometry, class, colour, size, orientation,
    description); part of ``Scene``."""

    def labels(self) -> list[dict]:
        out: list[dict] = []

        def add(geom: Any, cls: str, color: str, size: str, orient: str, desc: str) -> None:
            """A label for ``geom`` (its part inside the scene); ``desc`` gets the object's position appended."""
            desc = f"{desc}, {self.position(geom)}"
            g = largest_polygon(geom.intersection(self.bbox)) if not self.inside(geom, 0) else geom
            if g is None or g.area < 1.0:
                return
            if not g.is_valid:
                g = largest_polygon(g.buffer(0))
                if g is None:
                    return
            out.append(
                {"geometry": g, "class": cls, "color": color, "size": size, "orientation": orient, "description": desc}
            )

        def ori(o: str) -> str:
            return f", oriented {o}" if o != "none" else ""

        area_m2 = 1.0 / (self.m * self.m)
        for r in self.rivers:
            size = size_word(r["width"] / self.m, 25, 40)
            o = "east-west" if r["axis"] == "ew" else "north-south"
            g = largest_polygon(r["poly"].intersection(self.bbox))
            if g is None:
                continue
            add(g, "river", r["color"], size, o, f"a {size} river with {r['color']} water flowing {o} across the scene")
        for p in self.ponds:
            size = size_word(p["poly"].area * area_m2, 600, 1800)
            o = shape_orientation(p["poly"], 1.5)
            add(p["poly"], "pond", p["color"], size, o, f"a {size} pond with {p['color']} water{ori(o)}")
        for r in self.roads:
            size = size_word(r["width"] / self.m, 8, 9.5)
            o = orientation_of(r["angle"])
            g = largest_polygon(r["poly"].intersection(self.bbox))
            if g is None:
                continue
            bridge = " crossing the river on a bridge" if any(rv["poly"].intersects(g) for rv in self.rivers) else ""
            add(g, "road", "grey", size, o,
                f"a {size} two-lane asphalt road with white lane markings{bridge}, running {o}")
        for lot in self.lots:
            size = size_word(lot["poly"].area * area_m2, 700, 1800)
            o = shape_orientation(lot["poly"], 1.2)
            n = lot["n_cars"]
            add(lot["poly"], "parking lot", "grey", size, o,
                f"a {size} parking lot with {n} parked car{'s' if n != 1 else ''}{ori(o)}")
        for c in self.courts:
            o = orientation_of(c["angle"])
            surface = "clay " if c["color"] == "red" else ""
            add(c["poly"], "tennis court", c["color"], "medium", o,
                f"a {c['color']} {surface}tennis court with white court lines{ori(o)}")
        for b in self.buildings:
            size = size_word(b["poly"].area * area_m2, 160, 600)
            o = orientation_of(b["angle"])
            shape = " L-shaped" if b["lshape"] else ""
            kind = "house" if b.get("house") else "building"
            add(b["poly"], "building", b["color"], size, o,
                f"a {size}{shape} {kind} with a {b['color']} {b['roof']} roof{ori(o)}")
        for p in self.pools:
            size = size_word(p["poly"].area * area_m2, 30, 80)
            o = shape_orientation(p["poly"], 1.3)
            where = "next to a large building" if p["public"] else "in the garden behind a house"
            add(p["poly"], "swimming pool", p["color"], size, o,
                f"a {size} {p['color']} {p['shape']} swimming pool {where}{ori(o)}")
        for c in self.cars:
            o = orientation_of(c["angle"])
            ctx = {
                "lot": "parked in a parking lot",
                "road": "driving on a road",
                "bridge": "driving on a bridge over the river",
            }[c["ctx"]]
            add(c["poly"], "car", c["color"], c["size"], o, f"a {c['size']} {c['color']} car {ctx}{ori(o)}")
        for s in self.ships:
            o = orientation_of(s["angle"])
            kind = {"boat": "boat", "ship": "ship", "barge": "cargo barge"}[s["kind"]]
            state = "sailing" if s["moving"] else "anchored"
            add(s["poly"], "ship", s["color"], s["size"], o,
                f"a {s['size']} {s['color']} {kind} {state} on the {s['where']}{ori(o)}")
        for t in self.trees:
            size = size_word(t["r"] / self.m, 2.5, 4.0)
            add(t["poly"], "tree", t["color"], size, "none",
                f"a {size} {t['color']} tree with a round crown and its shadow")
        return out

    # ------------------------------------------------------------------ rendering
