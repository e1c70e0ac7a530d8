"""Background regions of a training chip: boxes the user did not label, to teach object vs not-object.

``geoalign prepare --background N`` adds up to N of them per chip, of the median labelled object's
size, each clear of every labelled polygon by :data:`BACKGROUND_MARGIN` of its size and over valid
pixels only; their phrase is "background" and the dataset's classes are their hard negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

from geoalign_core.data.chipping import FeatureIndex

__all__ = ["BACKGROUND_MARGIN", "BACKGROUND_PHRASE", "background_boxes", "background_record", "object_size"]

BACKGROUND_PHRASE = "background"
BACKGROUND_MARGIN = 0.5  #: a background box keeps this share of its size clear of every label


def object_size(features: Sequence, chip: int) -> tuple[float, float]:
    """The median labelled object's width and height in pixels (4 .. chip / 2), the size of the
    background boxes."""
    if not features:
        return (chip / 4.0, chip / 4.0)
    b = np.asarray([f.geom.bounds for f in features], dtype=np.float64)
    w = float(np.median(b[:, 2] - b[:, 0]))
    h = float(np.median(b[:, 3] - b[:, 1]))
    return (min(max(w, 4.0), chip / 2.0), min(max(h, 4.0), chip / 2.0))


def background_boxes(index: FeatureIndex, col: int, row: int, chip: int, valid: np.ndarray,
                     size: tuple[float, float], n: int, rng: np.random.Generator,
                     tries: int = 40) -> list[list[float]]:
    """Up to ``n`` boxes of ``size`` in the chip (pixel ``[x0, y0, x1, y1]`` within it), each with
    :data:`BACKGROUND_MARGIN` of its size clear of every labelled polygon, with valid pixels only,
    and not overlapping each other: regions the user did not label, to teach object vs not-object."""
    w, h = size
    out: list[list[float]] = []
    if n <= 0 or w >= chip or h >= chip:
        return out
    for _ in range(tries):
        if len(out) >= n:
            break
        x0 = float(rng.uniform(0, chip - w))
        y0 = float(rng.uniform(0, chip - h))
        mx, my = BACKGROUND_MARGIN * w, BACKGROUND_MARGIN * h
        clear = shapely.box(col + x0 - mx, row + y0 - my, col + x0 + w + mx, row + y0 + h + my)
        if index.query(clear):
            continue
        r0, r1, c0, c1 = int(y0), int(np.ceil(y0 + h)), int(x0), int(np.ceil(x0 + w))
        if not valid[r0:r1, c0:c1].all():
            continue
        if any(x0 < b[2] and b[0] < x0 + w and y0 < b[3] and b[1] < y0 + h for b in out):
            continue
        out.append([x0, y0, x0 + w, y0 + h])
    return out


def background_record(box: list[float], chip: int, classes: list[str], rng: np.random.Generator, q: int) -> dict:
    """A background region: the phrase "background", the dataset's classes as its hard negatives."""
    chip_negs = list(classes)
    rng.shuffle(chip_negs)
    return {
        "bbox": [round(float(v) / chip, 6) for v in box],
        "phrase": BACKGROUND_PHRASE,
        "description": "an area with no " + ", no ".join(sorted(classes)) if classes else BACKGROUND_PHRASE,
        "hard_negatives": chip_negs[: max(q, 1)],
        "hard_negative_types": ["category"] * min(len(chip_negs), max(q, 1)),
    }
