"""Ground truth of a synthetic scene: one polygon and one sentence per object."""

from __future__ import annotations

from typing import Any

from .shapes import largest_polygon, orientation_of, shape_orientation


class LabelsMixin:
    """Describes the laid-out objects as label dicts (geometry, class, colour, size, orientation,
    description); part of ``Scene``."""

    def labels(self) -> list[dict]:
        out: list[dict] = []

        def add(geom: Any, cls: str, color: str, size: str, orient: str, desc: str) -> None:
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
            w = r["width"] / self.m
            size = "small" if w < 25 else ("medium" if w < 40 else "large")
            o = "east-west" if r["axis"] == "ew" else "north-south"
            g = largest_polygon(r["poly"].intersection(self.bbox))
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
            o = shape_orientation(p["poly"], 1.5)
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
            g = largest_polygon(r["poly"].intersection(self.bbox))
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
            o = shape_orientation(lot["poly"], 1.2)
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
            o = shape_orientation(p["poly"], 1.3)
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
