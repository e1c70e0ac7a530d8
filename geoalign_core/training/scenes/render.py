"""Pixels of a synthetic scene: ground, roads, water, buildings, cars, ships, trees, shadows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import unary_union

from .palette import (
    CAR_COLORS,
    COURT_COLORS,
    MAT_ASPHALT,
    MAT_CAR,
    MAT_CONCRETE,
    MAT_COURT,
    MAT_FOLIAGE,
    MAT_GRASS,
    MAT_PAINT,
    MAT_POOL,
    MAT_ROOF,
    MAT_SHIP,
    MAT_SOIL,
    MAT_WATER,
    POOL_COLORS,
    ROOF_COLORS,
    SHIP_COLORS,
    TEXTURE_AMP,
    TREE_COLORS,
    WATER_COLORS,
)
from .shapes import Frame, rotated_rect
from .texture import fbm, smoothstep, tint, value_noise


class RenderMixin:
    """Draws the laid-out objects into an RGB image with textures and shadows; part of ``Scene``."""

    def render(self) -> np.ndarray:
        H = W = self.size
        rng = self.rng
        ground, soil = self._ground()
        im = Image.fromarray(ground)
        mat = Image.fromarray(np.where(soil, MAT_SOIL, MAT_GRASS).astype(np.uint8))
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
            fill(r["poly"].buffer(self.px(1.8)), (104, 98, 72), MAT_SOIL)
            fill(r["poly"], WATER_COLORS[r["color"]], MAT_WATER)
            fill(r["poly"].buffer(-self.px(3)), tint(WATER_COLORS[r["color"]], 0.9), MAT_WATER)
        for p in self.ponds:
            fill(p["poly"].buffer(self.px(1.8)), (70, 92, 48), MAT_FOLIAGE)
            fill(p["poly"], WATER_COLORS[p["color"]], MAT_WATER)
            fill(p["poly"].buffer(-self.px(2.5)), tint(WATER_COLORS[p["color"]], 0.88), MAT_WATER)
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
                    fill(deck, (168, 166, 160), MAT_CONCRETE)
        for r in self.roads:
            fill(r["poly"], r["rgb"], MAT_ASPHALT)
        for r in self.roads:
            self._draw_markings(r, fill)
        # parking lots
        for lot in self.lots:
            fill(lot["drive"], (100, 101, 104), MAT_ASPHALT)
            fill(lot["poly"], (104, 105, 108), MAT_ASPHALT)
            for ln in lot["lines"]:
                fill(ln, (226, 226, 220), MAT_PAINT)
        # tennis courts
        for c in self.courts:
            self._draw_court(c, fill, shade)
        # pools
        for p in self.pools:
            fill(
                p["poly"].buffer(self.px(0.7), join_style="mitre" if p["shape"] == "rectangular" else "round"),
                (214, 210, 198),
                MAT_CONCRETE,
            )
            base = POOL_COLORS[p["color"]]
            fill(p["poly"], tint(base, 0.86), MAT_POOL)
            inner = p["poly"].buffer(-self.px(0.6))
            if not inner.is_empty:
                fill(inner, base, MAT_POOL)
            deep = p["poly"].buffer(-self.px(1.6))
            if not deep.is_empty:
                fill(deep, tint(base, 0.92), MAT_POOL)
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
        tex = 0.6 * value_noise(rng, H, W, 4) + 0.4 * value_noise(rng, H, W, 8)
        amp = TEXTURE_AMP[m_id]
        arr += (amp * tex)[..., None] * np.array([1.0, 1.0, 0.9], np.float32)
        leaf = m_id == MAT_FOLIAGE
        arr[leaf, 1] += 0.25 * amp[leaf] * tex[leaf]
        im = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.55))
        arr = np.asarray(im, dtype=np.float32)
        return np.ascontiguousarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))

    def _ground(self) -> tuple[np.ndarray, np.ndarray]:
        H = W = self.size
        rng = self.rng
        big = max(8, int(self.px(60)))
        mix = fbm(rng, H, W, (big, big // 4))
        soil_n = fbm(rng, H, W, (max(8, int(self.px(45))), max(4, int(self.px(12))), max(2, int(self.px(3)))))
        clumps = value_noise(rng, H, W, max(2, int(self.px(1.5))))
        grass_a = np.array([84, 116, 56], np.float32)
        grass_b = np.array([130, 138, 80], np.float32)
        soil_c = np.array([150, 124, 94], np.float32)
        t = 1.0 / (1.0 + np.exp(-1.6 * mix))
        g = grass_a + t[..., None] * (grass_b - grass_a)
        g *= (1.0 + 0.025 * clumps)[..., None]
        thr = float(rng.uniform(1.0, 1.5))
        sm = smoothstep(soil_n, thr, thr + 0.25)
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
                g = rotated_rect(p.x, p.y, dash, 2 * half, ang)
                if keep_out.is_empty or not keep_out.intersects(g):
                    fill(g, paint, MAT_PAINT)
            s += dash + gap
        # solid edge lines
        for side in (-1.0, 1.0):
            off = line.offset_curve(side * (w / 2 - self.px(0.6)))
            edge = off.buffer(self.px(0.17), cap_style="flat")
            if not other_union.is_empty:
                edge = edge.difference(other_union.buffer(self.px(1.0)))
            fill(edge, paint, MAT_PAINT)
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
                f = Frame(p.x, p.y, ang)
                n = int((w - self.px(1.5)) // self.px(1.0))
                for k in range(n):
                    v = -n * self.px(1.0) / 2 + (k + 0.5) * self.px(1.0)
                    fill(f.rect(-self.px(1.5), v - self.px(0.25), self.px(1.5), v + self.px(0.25)), paint, MAT_PAINT)

    def _draw_court(self, c: dict, fill: Any, shade: Any) -> None:
        inner_rgb, outer_rgb = COURT_COLORS[c["color"]]
        f = Frame(c["cx"], c["cy"], c["angle"])
        fill(c["poly"], outer_rgb, MAT_COURT)
        hl, hw = self.px(23.77 / 2), self.px(10.97 / 2)
        sw, sl = self.px(8.23 / 2), self.px(6.40)
        fill(f.rect(-hl, -hw, hl, hw), inner_rgb, MAT_COURT)
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
            fill(g, white, MAT_PAINT)
        net = f.rect(-self.px(0.12), -hw - self.px(0.9), self.px(0.12), hw + self.px(0.9))
        fill(net, (40, 40, 40), MAT_PAINT)
        shade(affinity.translate(net, *(v * 1.0 for v in self.shadow_vec)).difference(net), 200)

    def _draw_car(self, c: dict, fill: Any) -> None:
        rgb = CAR_COLORS[c["color"]]
        f = Frame(c["cx"], c["cy"], c["angle"] + (0 if c["heading"] > 0 else 180))
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
        fill(f.poly(body), tint(rgb, 0.92), MAT_CAR)
        fill(
            f.rect(-0.55 * L, -0.72 * W, 0.25 * L, 0.72 * W), tint(rgb, 1.08) if c["color"] != "white" else rgb, MAT_CAR
        )
        glass = (38, 44, 52) if c["color"] != "black" else (62, 70, 80)
        fill(
            f.poly([(0.25 * L, -0.78 * W), (0.62 * L, -0.86 * W), (0.62 * L, 0.86 * W), (0.25 * L, 0.78 * W)]),
            glass,
            MAT_CAR,
        )
        fill(
            f.poly([(-0.55 * L, -0.74 * W), (-0.78 * L, -0.8 * W), (-0.78 * L, 0.8 * W), (-0.55 * L, 0.74 * W)]),
            glass,
            MAT_CAR,
        )

    def _draw_wake(self, s: dict, fill: Any) -> None:
        """Foam: a faint turbulent streak behind the stern and the two arms of the Kelvin V."""
        f: Frame = s["frame"]
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
        f: Frame = s["frame"]
        L, B = s["L"] / 2, s["B"] / 2
        rgb = SHIP_COLORS[s["color"]]
        bow = 0.55 * L if s["kind"] != "barge" else 0.85 * L
        hull = [(-L, -B * 0.9), (-L * 0.95, -B), (bow, -B), (L, 0), (bow, B), (-L * 0.95, B), (-L, B * 0.9)]
        fill(f.poly(hull), rgb, MAT_SHIP)
        if s["kind"] == "barge":
            fill(
                f.poly([(-0.6 * L, -0.78 * B), (0.8 * L, -0.78 * B), (0.8 * L, 0.78 * B), (-0.6 * L, 0.78 * B)]),
                (96, 70, 48),
                MAT_SHIP,
            )
            for k in range(4):
                u = -0.55 * L + k * 0.34 * L
                fill(f.rect(u, -0.7 * B, u + 0.3 * L, 0.7 * B), (120, 88, 58), MAT_SHIP)
            fill(f.rect(-0.95 * L, -0.6 * B, -0.72 * L, 0.6 * B), (236, 236, 232), MAT_SHIP)
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
                MAT_SHIP,
            )
            fill(f.rect(-0.55 * L, -0.55 * B, 0.2 * L, 0.55 * B), (240, 240, 238), MAT_SHIP)
            fill(f.rect(0.05 * L, -0.45 * B, 0.2 * L, 0.45 * B), (50, 60, 72), MAT_SHIP)

    def _draw_building(self, b: dict, fill: Any) -> None:
        base = ROOF_COLORS[b["color"]]
        sx, sy = self.sun
        if b["roof"] == "flat":
            fill(b["poly"], tint(base, 0.82), MAT_ROOF)
            inner = b["poly"].buffer(-self.px(0.6), join_style="mitre")
            if not inner.is_empty:
                fill(inner, base, MAT_ROOF)
            f: Frame = b["frame"]
            n_units = int(self.rng.integers(0, 5)) if b["length"] > self.px(12) else 0
            for _ in range(n_units):
                u = self.rng.uniform(-0.35, 0.35) * b["length"]
                v = self.rng.uniform(-0.3, 0.3) * b["depth"]
                a, c = self.px(self.rng.uniform(1.2, 3.0)), self.px(self.rng.uniform(1.0, 2.0))
                unit = f.rect(u - a / 2, v - c / 2, u + a / 2, v + c / 2)
                if not inner.contains(unit):
                    continue
                dx, dy = self.shadow_vec
                fill(affinity.translate(unit, dx * 1.0, dy * 1.0), tint(base, 0.55), MAT_ROOF)
                fill(unit, (190, 192, 194), MAT_ROOF)
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
            f = Frame(c.x, c.y, ang)
            rx = L if b["roof"] == "gabled" else max(0.0, L - D)
            facets = [
                ([(-L, -D), (L, -D), (rx, 0), (-rx, 0)], (-f.vx, -f.vy)),
                ([(-L, D), (L, D), (rx, 0), (-rx, 0)], (f.vx, f.vy)),
            ]
            if rx < L:
                facets += [([(-L, -D), (-rx, 0), (-L, D)], (-f.ux, -f.uy)), ([(L, -D), (rx, 0), (L, D)], (f.ux, f.uy))]
            for pts_uv, (nx, ny) in facets:
                k = 1.0 + 0.22 * (nx * sx + ny * sy)
                fill(f.poly(pts_uv), tint(base, k), MAT_ROOF)
            ridge = f.rect(-rx, -self.px(0.12), rx, self.px(0.12))
            fill(ridge, tint(base, 1.15), MAT_ROOF)

    def _draw_tree(self, t: dict, fill: Any) -> None:
        rgb = TREE_COLORS[t["color"]]
        sx, sy = self.sun
        r = t["r"]
        fill(t["poly"], tint(rgb, 0.72), MAT_FOLIAGE)
        for frac, off, k in ((0.78, 0.14, 1.0), (0.45, 0.36, 1.22)):
            cx, cy = t["cx"] + sx * off * r, t["cy"] + sy * off * r
            fill(Point(cx, cy).buffer(frac * r, quad_segs=6), tint(rgb, k), MAT_FOLIAGE)
