"""Colours of the synthetic scenes' objects, how often each is drawn, and surface materials.

The ``*_COLORS`` dicts map a label colour name to the RGB drawn; the ``*_WEIGHTS`` dicts give the
relative frequency of each name. ``MAT_*`` are material ids of the per-pixel material map; each
has a texture amplitude in ``TEXTURE_AMP``.
"""

from __future__ import annotations

import numpy as np

CAR_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (176, 28, 30),
    "blue": (32, 64, 168),
    "white": (236, 236, 232),
    "black": (26, 27, 30),
    "silver": (168, 171, 176),
    "yellow": (228, 192, 36),
    "green": (36, 118, 58),
}
CAR_WEIGHTS = {"red": 0.2, "blue": 0.14, "white": 0.2, "black": 0.14, "silver": 0.14, "yellow": 0.07, "green": 0.11}
ROOF_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (168, 66, 48),
    "grey": (122, 122, 126),
    "white": (224, 224, 218),
    "brown": (118, 80, 56),
    "blue": (66, 98, 150),
    "green": (72, 116, 82),
}
HOUSE_ROOF_WEIGHTS = {"red": 0.34, "grey": 0.22, "white": 0.06, "brown": 0.22, "blue": 0.09, "green": 0.07}
BIG_ROOF_WEIGHTS = {"red": 0.08, "grey": 0.4, "white": 0.34, "brown": 0.06, "blue": 0.08, "green": 0.04}
POOL_COLORS = {"blue": (52, 132, 206), "turquoise": (64, 178, 196)}
TREE_COLORS = {"green": (52, 92, 40), "dark green": (34, 66, 34), "light green": (84, 116, 52)}
WATER_COLORS = {
    "blue": (42, 78, 112),
    "dark blue": (28, 48, 76),
    "green": (52, 88, 70),
    "dark green": (36, 62, 48),
    "brown": (92, 88, 62),
}
SHIP_COLORS = {
    "white": (232, 232, 228),
    "grey": (128, 130, 134),
    "red": (168, 38, 34),
    "blue": (36, 62, 138),
    "black": (30, 30, 34),
}
COURT_COLORS = {  # name: (inner court, outer run-off)
    "green": ((62, 138, 84), (50, 110, 66)),
    "blue": ((46, 88, 156), (58, 118, 82)),
    "red": ((184, 92, 56), (176, 86, 52)),
}

# materials: per-material texture amplitude (grey levels per unit of the fine texture field)
(
    MAT_GRASS,
    MAT_SOIL,
    MAT_WATER,
    MAT_ASPHALT,
    MAT_PAINT,
    MAT_COURT,
    MAT_POOL,
    MAT_CAR,
    MAT_ROOF,
    MAT_FOLIAGE,
    MAT_SHIP,
    MAT_CONCRETE,
) = range(12)
TEXTURE_AMP = np.array([3.0, 4.5, 1.5, 3.5, 1.5, 1.5, 1.5, 1.0, 3.0, 15.0, 1.0, 3.0], dtype=np.float32)
