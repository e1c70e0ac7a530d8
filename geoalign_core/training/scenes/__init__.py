"""Synthetic, georeferenced aerial scenes with ground truth, for GeoAlign's demo, tests and training.

A scene is an aerial-looking RGB image at 0.3 m/pixel (textured grass and bare soil, roads with
lane markings and zebra crossings, parking lots with parked cars, cars on the roads, buildings
with coloured gabled/hipped/flat roofs and cast shadows, swimming pools, round trees with
shadows, a river and/or ponds with ships, tennis courts with court lines) and one ground-truth
polygon with a sentence per object.

    from geoalign_core.training.scenes import render_scene, write_scene
    image, labels = render_scene(seed=1000, size=1024)    # (H, W, 3) uint8, list of dicts
    tif, gpkg = write_scene("out/", seed=1000, size=1024)  # out/scene.tif + out/labels.gpkg

From the shell: ``python -m geoalign_core.training.scenes --seed 0 --out sample_data`` (the same as
``sample_data/make_sample.py``).

Modules, in the order a scene is made: ``spec`` (seeds, classes, label values), ``palette``
(colours and materials), ``shapes`` and ``texture`` (helpers), ``layout`` (where objects go),
``labels`` (their ground truth), ``render`` (their pixels), ``scene`` (the three together:
``render_scene``), ``files`` (``write_scene``), ``cli``.

Seeds: 0 is the committed sample scene, 1000-1999 are reserved for training scenes
(``TRAIN_SEEDS``), 2000-2099 for held-out evaluation scenes (``EVAL_SEEDS``).

Everything is a pure function of (seed, size, res): one ``numpy.random.Generator`` seeded
with ``seed`` drives the layout and the textures, so the same arguments give byte-identical
pixels and identical labels, and no global random state is touched.

Label geometry from ``render_scene`` is in PIXEL coordinates (x = column, y = row, pixel
corners on integer coordinates, origin at the top-left corner, north up); ``write_scene``
converts it to map coordinates of the GeoTIFF's CRS.
"""

from __future__ import annotations

from .cli import main
from .files import scene_origin, scene_paths, write_scene
from .palette import CAR_COLORS, ROOF_COLORS
from .scene import render_scene
from .shapes import orientation_of
from .spec import (
    CLASSES,
    DEFAULT_EPSG,
    DEFAULT_RES,
    DEFAULT_SIZE,
    EVAL_SEEDS,
    LAYER,
    ORIENTATIONS,
    SAMPLE_SEED,
    SIZES,
    TRAIN_SEEDS,
)

__all__ = [
    "CAR_COLORS",
    "CLASSES",
    "DEFAULT_EPSG",
    "DEFAULT_RES",
    "DEFAULT_SIZE",
    "EVAL_SEEDS",
    "LAYER",
    "ORIENTATIONS",
    "ROOF_COLORS",
    "SAMPLE_SEED",
    "SIZES",
    "TRAIN_SEEDS",
    "main",
    "orientation_of",
    "render_scene",
    "scene_origin",
    "scene_paths",
    "write_scene",
]
