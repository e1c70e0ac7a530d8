"""Rule-based texts for a chip, from its labels alone (no language model).

Per region (:func:`describe_regions`):

* **phrase** = class, preceded by the colour attribute when the labels give one: ``"red car"``,
  ``"swimming pool"``.
* **position** in the chip, from the centroid of the visible part on a 3 x 3 grid: ``"in the
  upper left"``, ``"at the top"``, ``"in the center"``, ...; ``"across the image"`` when the
  visible part's box spans at least 75 % of the chip both ways.
* **relation** to another labelled region of a different class in the same chip, computed
  geometrically: ``"on the road"`` / ``"in the parking lot"`` when at least half of the region
  lies inside a region at least twice its size; otherwise ``"next to the building"`` for the
  nearest region closer than 8 % of the chip size and at least half as large as the region
  (``"a building"`` when the chip holds several; a road is never "next to a car").
* **description** = article + size + colour + class + relation + position + orientation:
  ``"a small red car on the road in the upper left, oriented east-west"``;
  ``"a large road on the left, running north-south"``. Replaced by the user's text when a
  ``--description-field`` is given and filled for that feature.

Per chip (:func:`chip_captions`):

* **caption** (brief): the classes with their counts, most area first, at most five:
  ``"An aerial image of a road, three cars and two buildings."``
* **caption_detail**: all classes with counts, then one sentence per class: the region's
  description when there is one instance; for several, their count with the colour breakdown,
  where they are (``"mostly in the lower left"``, ``"spread across the image"``) and their
  most common relation: ``"Three cars: two red and one white, mostly at the bottom, on the
  road."``
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoalign_core.data.chipping import ChipRegion
from geoalign_core.data.text import (
    capitalise,
    count_phrase,
    is_mass_noun,
    join_words,
    number_word,
    plural,
    with_article,
)

__all__ = [
    "ACROSS",
    "LINEAR_CLASSES",
    "POSITIONS",
    "RegionText",
    "chip_captions",
    "describe_regions",
    "position_of",
    "region_description",
    "region_phrase",
    "relations",
]

POSITIONS = (
    ("in the upper left", "at the top", "in the upper right"),
    ("on the left", "in the center", "on the right"),
    ("in the lower left", "at the bottom", "in the lower right"),
)
ACROSS = "across the image"
SPREAD = "spread across the image"
ACROSS_SPAN = 0.75
NEAR_FRACTION = 0.08
CONTAIN_FRACTION = 0.5
NEAR_MIN_AREA_RATIO = 0.5
MAX_BRIEF_CLASSES = 5
SIZE_TEXT = {"small": "small", "medium": "medium-sized", "large": "large"}
LINEAR_CLASSES = frozenset(
    {
        "road", "street", "highway", "freeway", "motorway", "river", "stream", "canal", "railway",
        "railroad", "runway", "taxiway", "bridge", "viaduct", "overpass", "path", "track", "dam",
        "pipeline", "power line", "fence", "wall", "ditch",
    }
)
# classes other objects are "in" rather than "on"
IN_CLASSES = frozenset(
    {
        "parking lot", "field", "farmland", "park", "garden", "forest", "harbor", "harbour", "port",
        "residential area", "industrial area", "commercial area", "stadium", "playground", "square",
        "meadow", "grassland", "yard", "courtyard", "pond", "lake", "swimming pool", "woodland",
    }
)


@dataclass
class RegionText:
    """The texts of one chip region."""

    phrase: str
    description: str
    position: str
    relation: str | None


def region_phrase(cls: str, color: str | None = None) -> str:
    """``"red car"`` (class + colour attribute) or ``"car"``."""
    return f"{color} {cls}" if color else cls


def position_of(center: tuple[float, float], bbox: Sequence[float]) -> str:
    """Position words for a region with normalised centroid ``center`` and box ``bbox`` (xyxy)."""
    x0, y0, x1, y1 = bbox
    if x1 - x0 >= ACROSS_SPAN and y1 - y0 >= ACROSS_SPAN:
        return ACROSS
    cx = min(max(center[0], 0.0), 0.999999)
    cy = min(max(center[1], 0.0), 0.999999)
    return POSITIONS[int(cy * 3)][int(cx * 3)]


def _determiner(cls: str, counts: Counter) -> str:
    if is_mass_noun(cls) or counts[cls] <= 1:
        return f"the {cls}"
    return with_article(cls)


def relations(regions: Sequence[ChipRegion]) -> list[str | None]:
    """One relation phrase (or None) per region; see the module docstring for the rules."""
    n = len(regions)
    out: list[str | None] = [None] * n
    if n < 2:
        return out
    counts = Counter(r.cls for r in regions)
    chip = regions[0].chip_size
    near = max(3.0, NEAR_FRACTION * chip)
    boxes = np.array([r.bbox_px for r in regions], dtype=np.float64)
    areas = np.array([r.geom.area for r in regions], dtype=np.float64)
    for i, r in enumerate(regions):
        # box gap to every other region: a cheap lower bound of the true distance
        dx = np.maximum(0.0, np.maximum(boxes[:, 0] - boxes[i, 2], boxes[i, 0] - boxes[:, 2]))
        dy = np.maximum(0.0, np.maximum(boxes[:, 1] - boxes[i, 3], boxes[i, 1] - boxes[:, 3]))
        gap = np.hypot(dx, dy)
        best_in: tuple[float, int] | None = None
        best_near: tuple[float, float, int] | None = None
        for j in np.flatnonzero(gap <= near):
            j = int(j)
            s = regions[j]
            if j == i or s.cls == r.cls:
                continue
            if areas[j] >= 2 * areas[i] and gap[j] == 0:
                inside = r.geom.intersection(s.geom).area / max(areas[i], 1e-9)
                if inside >= CONTAIN_FRACTION and (best_in is None or inside > best_in[0]):
                    best_in = (inside, j)
                    continue
            if areas[j] < NEAR_MIN_AREA_RATIO * areas[i]:
                continue  # a road is not "next to a car": relate objects to larger landmarks
            d = r.geom.distance(s.geom)
            if d <= near:
                key = (d, -areas[j], j)
                if best_near is None or key < best_near:
                    best_near = key
        if best_in is not None:
            s = regions[best_in[1]]
            prep = "in" if s.cls in IN_CLASSES else "on"
            out[i] = f"{prep} {_determiner(s.cls, counts)}"
        elif best_near is not None:
            out[i] = f"next to {_determiner(regions[best_near[2]].cls, counts)}"
    return out


def _orientation_text(cls: str, orientation: str | None) -> str | None:
    if not orientation:
        return None
    verb = "running" if cls in LINEAR_CLASSES or cls.split(" ")[-1] in LINEAR_CLASSES else "oriented"
    return f"{verb} diagonally" if orientation == "diagonal" else f"{verb} {orientation}"


def region_description(
    cls: str,
    *,
    color: str | None = None,
    size: str | None = None,
    orientation: str | None = None,
    position: str | None = None,
    relation: str | None = None,
) -> str:
    """``"a small red car on the road in the upper left, oriented east-west"``."""
    noun = " ".join(w for w in (SIZE_TEXT.get(size or "", None), color, cls) if w)
    text = with_article(noun)
    if relation:
        text += f" {relation}"
    if position:
        text += f" {position}"
    orient = _orientation_text(cls, orientation)
    if orient:
        text += f", {orient}"
    return text


def describe_regions(regions: Sequence[ChipRegion]) -> list[RegionText]:
    """Phrase, description, position and relation of every region of a chip."""
    rels = relations(regions)
    out = []
    for r, rel in zip(regions, rels):
        f = r.feature
        pos = position_of(r.center, r.bbox)
        desc = f.description or region_description(
            f.cls, color=f.color, size=f.size, orientation=f.orientation, position=pos, relation=rel
        )
        out.append(RegionText(region_phrase(f.cls, f.color), desc, pos, rel))
    return out


def _class_order(regions: Sequence[ChipRegion]) -> list[str]:
    cover: dict[str, float] = {}
    for r in regions:
        cover[r.cls] = cover.get(r.cls, 0.0) + r.cover
    return sorted(cover, key=lambda c: (-cover[c], c))


def _group_sentence(cls: str, members: list[tuple[ChipRegion, RegionText]]) -> str:
    n = len(members)
    if n == 1:
        return capitalise(members[0][1].description) + "."
    feats = [r.feature for r, _ in members]
    sizes = {f.size for f in feats}
    size = SIZE_TEXT.get(next(iter(sizes)) or "", None) if len(sizes) == 1 else None
    colours = Counter(f.color for f in feats if f.color)
    uniform = len(colours) == 1 and sum(colours.values()) == n
    head_words = [w for w in (size, next(iter(colours)) if uniform else None, plural(cls)) if w]
    head = " ".join(head_words) if is_mass_noun(cls) else f"{number_word(n)} {' '.join(head_words)}"
    text = capitalise(head)
    if colours and not uniform:
        text += ": " + join_words([f"{number_word(c)} {col}" for col, c in colours.most_common()])
    cells = Counter(t.position for _, t in members)
    cell, k = cells.most_common(1)[0]
    if k == n:
        text += f", {cell}"
    elif k >= 0.6 * n:
        text += f", mostly {cell}"
    else:
        text += f", {SPREAD}"
    rels = Counter(t.relation for _, t in members if t.relation)
    if rels:
        rel, k = rels.most_common(1)[0]
        if k == n:
            text += f", {rel}"
        elif k >= 0.5 * n:
            text += f", mostly {rel}"
    return text + "."


def chip_captions(regions: Sequence[ChipRegion], texts: Sequence[RegionText]) -> tuple[str, str]:
    """``(caption, caption_detail)`` of a chip (see the module docstring)."""
    if not regions:
        return "An aerial image.", "An aerial image with no labelled objects."
    order = _class_order(regions)
    counts = Counter(r.cls for r in regions)
    listed = [count_phrase(counts[c], c) for c in order]
    brief = listed[:MAX_BRIEF_CLASSES]
    if len(listed) > MAX_BRIEF_CLASSES:
        brief.append("other objects")
    caption = f"An aerial image of {join_words(brief)}."
    sentences = [f"An aerial image showing {join_words(listed)}."]
    for c in order:
        members = [(r, t) for r, t in zip(regions, texts) if r.cls == c]
        sentences.append(_group_sentence(c, members))
    return caption, " ".join(sentences)
