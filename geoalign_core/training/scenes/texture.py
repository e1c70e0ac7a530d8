"""Smooth random fields for ground and material textures; all draws come from the caller's generator."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def value_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Smooth value noise, unit-ish std, feature size ~cell pixels (bicubic-upsampled random grid)."""
    cell = max(1, int(cell))
    gh, gw = h // cell + 4, w // cell + 4
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    if cell == 1:
        return grid[:h, :w]
    up = Image.fromarray(grid, mode="F").resize((gw * cell, gh * cell), Image.BICUBIC)
    arr = np.asarray(up, dtype=np.float32)[cell : cell + h, cell : cell + w]
    return arr / 0.82


def fbm(rng: np.random.Generator, h: int, w: int, cells: tuple[int, ...]) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for i, c in enumerate(cells):
        wt = 0.55**i
        out += wt * value_noise(rng, h, w, c)
        total += wt * wt
    return out / math.sqrt(total)


def smoothstep(x: np.ndarray, e0: float, e1: float) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def tint(rgb: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, round(c * f)))) for c in rgb)  # type: ignore[return-value]
