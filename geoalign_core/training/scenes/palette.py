"""Colours of the synthetic scenes' objects, how often each is drawn, and surface materials.

The ``*_COLORS`` dicts map a label colour name to the RGB drawn; the ``*_WEIGHTS`` dicts give the
relative frequency of each name. ``MAT_*`` are material ids of the per-pixel material map; each
has a texture amplitude in ``TEXTURE_AMP``.
"""

from __future__ import annotations

import numpy as np

#: car colour name: (RGB drawn, relative frequency)
CARS: dict[str, tuple[tuple[int, int, int], float]] = {
    "red": ((176, 28, 30), 0.2),
    "blue": ((32, 64, 168), 0.14),
    "white": ((236, 236, 232), 0.2),
    "black": ((26, 27, 30), 0.14),
    "silver": ((168, 171, 176), 0.14),
    "yellow": ((228, 192, 36), 0.07),
    "green": ((36, 118, 58), 0.11),
}
CAR_COLORS = {name: rgb for name, (rgb, _) in CARS.items()}
CAR_WEIGHTS = {name: weight for name, (_, weight) in CARS.items()}
#: roof colour name: (RGB drawn, relative frequency on houses, on large buildings)
ROOFS: dict[str, tuple[tuple[int, int, int], float, float]] = {
    "red": ((168, 66, 48), 0.34, 0.08),
    "grey": ((122, 122, 126), 0.22, 0.4),
    "white": ((224, 224, 218), 0.06, 0.34),
    "brown": ((118, 80, 56), 0.22, 0.06),
    "blue": ((66, 98, 150), 0.09, 0.08),
    "green": ((72, 116, 82), 0.07, 0.04),
}
ROOF_COLORS = {name: rgb for name, (rgb, _, _) in ROOFS.items()}
HOUSE_ROOF_WEIGHTS = {name: house for name, (_, house, _) in ROOFS.items()}
BIG_ROOF_WEIGHTS = {name: big for name, (_, _, big) in ROOFS.items()}
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
