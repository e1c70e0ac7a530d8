"""Rule-based texts: English helpers, positions, relations, captions, hard negatives."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from geoalign_core.data.captions import (
    ACROSS,
    POSITIONS,
    chip_captions,
    describe_regions,
    position_of,
    region_description,
    region_phrase,
)
from geoalign_core.data.chipping import FeatureIndex, chip_grid, chip_regions, class_cover
from geoalign_core.data.labels import LabelFeature
from geoalign_core.data.negatives import (
    DESCRIPTION_TYPES,
    PHRASE_TYPES,
    description_negatives,
    invert_orientation,
    invert_position,
    phrase_negatives,
    related,
)
from geoalign_core.data.text import article, count_phrase, join_words, norm, plural, with_article


def _feat(i, cls, box, color=None, size=None, orientation=None):
    return LabelFeature(i, cls, shapely.box(*box), color=color, size=size, orientation=orientation)


# ------------------------------------------------------------------ english
def test_english_helpers():
    assert plural("car") == "cars" and plural("bus") == "buses" and plural("swimming pool") == "swimming pools"
    assert plural("ferry") == "ferries" and plural("grass") == "grass"
    assert article("airplane") == "an" and article("car") == "a" and article("hour") == "an"
    assert with_article("orange car") == "an orange car" and with_article("bare soil") == "bare soil"
    assert count_phrase(1, "car") == "a car" and count_phrase(3, "tree") == "three trees"
    assert count_phrase(25, "tree") == "25 trees"
    assert join_words(["a", "b", "c"]) == "a, b and c" and join_words(["a"]) == "a"


# ------------------------------------------------------------------ positions
def test_position_grid():
    assert position_of((0.1, 0.1), (0.05, 0.05, 0.15, 0.15)) == "in the upper left"
    assert position_of((0.5, 0.1), (0.45, 0.05, 0.55, 0.15)) == "at the top"
    assert position_of((0.9, 0.9), (0.85, 0.85, 0.95, 0.95)) == "in the lower right"
    assert position_of((0.5, 0.5), (0.4, 0.4, 0.6, 0.6)) == "in the center"
    assert position_of((0.2, 0.5), (0.1, 0.0, 0.3, 1.0)) == "on the left"
    assert position_of((0.5, 0.5), (0.0, 0.0, 1.0, 0.9)) == ACROSS
    assert position_of((1.0, 1.0), (0.9, 0.9, 1.0, 1.0)) == POSITIONS[2][2]  # edge clamps


# ------------------------------------------------------------------ chipping
def test_chip_grid_ends_on_the_edge():
    assert chip_grid(256, 192, 64) == [(c, r) for r in (0, 64, 128) for c in (0, 64, 128, 192)]
    grid = chip_grid(100, 64, 64, 48)
    assert grid == [(0, 0), (36, 0)]  # last column moved back to end at the edge
    assert chip_grid(40, 30, 64) == [(0, 0)]  # smaller than a chip: one boundless chip


def test_chip_regions_clip_and_slivers():
    feats = [
        _feat(0, "building", (40, 10, 100, 30)),  # crosses the chip edge at x = 64
        _feat(1, "car", (62, 40, 72, 48)),  # 2 px inside chip 0: a sliver there
        _feat(2, "river", (0, 0, 64, 60)),  # covers 94 % of chip 0
    ]
    idx = FeatureIndex(feats)
    regions, slivers, max_cover = chip_regions(idx, 0, 0, 64, min_region_px=4, min_visible=0.3)
    assert [r.cls for r in regions] == ["building", "river"] and slivers == 1
    assert max_cover == pytest.approx(60 / 64)
    b = regions[0].bbox
    assert b == pytest.approx((40 / 64, 10 / 64, 1.0, 30 / 64))
    assert regions[0].visible == pytest.approx(24 / 60)
    regions, slivers, _ = chip_regions(idx, 64, 0, 64)
    assert [r.cls for r in regions] == ["building", "car"] and slivers == 0
    assert regions[0].bbox[0] == 0.0 and regions[1].bbox == pytest.approx((0, 40 / 64, 8 / 64, 48 / 64))
    cover = class_cover(idx, 0, 0, 64, 64)
    assert next(iter(cover)) == "river" and cover["river"] == pytest.approx(60 / 64)


# ------------------------------------------------------------------ captions
@pytest.fixture()
def chip():
    feats = [
        _feat(0, "road", (0, 40, 100, 60), "grey", "large", "east-west"),
        _feat(1, "car", (5, 42, 15, 48), "red", "small", "east-west"),
        _feat(2, "car", (20, 42, 30, 48), "red", "small", "east-west"),
        _feat(3, "car", (35, 50, 45, 56), "white", "medium", "east-west"),
        _feat(4, "building", (70, 5, 95, 30), "brown", "large", "north-south"),
        _feat(5, "swimming pool", (5, 75, 20, 95), "blue", None, None),
    ]
    regions, _, _ = chip_regions(FeatureIndex(feats), 0, 0, 100)
    return regions


def test_region_texts(chip):
    texts = describe_regions(chip)
    by_cls = {r.feature.fid: t for r, t in zip(chip, texts)}
    assert by_cls[1].phrase == "red car" and by_cls[5].phrase == "blue swimming pool"
    assert by_cls[1].relation == "on the road"  # fully inside the (larger) road
    assert by_cls[1].description == "a small red car on the road on the left, oriented east-west"
    assert by_cls[0].relation is None  # a road is never "next to a car"
    assert by_cls[0].description.endswith("running east-west")
    assert by_cls[4].position == "in the upper right"
    assert by_cls[4].description.startswith("a large brown building")
    assert by_cls[5].position == "in the lower left"
    assert region_phrase("car") == "car"
    assert region_description("airplane", color="orange") == "an orange airplane"
    assert region_description("tree", size="medium", position="in the center") == "a medium-sized tree in the center"


def test_captions_counts_colours_positions(chip):
    caption, detail = chip_captions(chip, describe_regions(chip))
    assert caption == "An aerial image of a road, a building, a swimming pool and three cars."  # most area first
    assert detail.startswith("An aerial image showing a road, a building, a swimming pool and three cars.")
    assert "Three cars: two red and one white" in detail
    assert "on the road" in detail and "in the upper right" in detail and "oriented north-south" in detail
    assert "A blue swimming pool in the lower left." in detail
    assert chip_captions([], [])[0] == "An aerial image."


# ------------------------------------------------------------------ negatives
CLASS_COLOURS = {"car": ["black", "red", "silver", "white"], "tree": ["dark green", "green", "light green"]}
CLASSES = ["building", "car", "parking lot", "pond", "road", "ship", "swimming pool", "tennis court", "tree"]


@pytest.mark.parametrize(
    "cls,colour",
    [("car", "red"), ("tree", "dark green"), ("ship", None), ("swimming pool", "blue"), ("widget", "grey"),
     ("tennis court", None)],
)
def test_phrase_negatives_never_positive(cls, colour):
    q = 6
    for seed in range(5):
        rng = np.random.default_rng(seed)
        negs = phrase_negatives(cls, colour, q, rng, class_colours=CLASS_COLOURS, dataset_classes=CLASSES)
        pos = norm(region_phrase(cls, colour))
        texts = [norm(t) for t, _ in negs]
        assert 0 < len(negs) <= q and pos not in texts and len(set(texts)) == len(texts)
        kinds = {k for _, k in negs}
        assert kinds <= set(PHRASE_TYPES)
        if colour:
            assert {"colour", "category"} <= kinds  # both kinds alternate
            for t, k in negs:
                if k == "colour":
                    assert t.endswith(cls) and not t.startswith(colour)
                    assert not t.endswith(f"green {cls}") or "green" not in colour
                if k == "category":
                    assert t.startswith(colour) and not t.endswith(cls)
        else:
            assert kinds == {"category"}


def test_category_substitution_uses_confusion_table_and_skips_synonyms():
    rng = np.random.default_rng(0)
    negs = phrase_negatives("swimming pool", "blue", 4, rng, dataset_classes=CLASSES)
    cats = [t for t, k in negs if k == "category"]
    assert cats[0] == "blue pond"  # the most confusable class present in the data comes first
    negs = phrase_negatives("ship", None, 20, rng, dataset_classes=CLASSES + ["boat", "vessel"])
    assert not {"boat", "vessel", "ship"} & {t for t, _ in negs}
    assert negs[0][0] == "car"  # table: ship -> car first
    negs = phrase_negatives("car", None, 20, rng, dataset_classes=["car", "vehicle", "truck"])
    assert "vehicle" not in {t for t, _ in negs} and negs[0][0] == "truck"
    assert related("cars", "car") and related("pond", "lake") and not related("car", "truck")


def test_unknown_classes_use_other_dataset_classes():
    negs = phrase_negatives("solar panel", None, 3, np.random.default_rng(1), dataset_classes=["a", "b", "solar panel"])
    assert sorted(t for t, _ in negs) == ["a", "b"]


def test_negatives_deterministic():
    def run(seed):
        rng = np.random.default_rng(seed)
        return phrase_negatives("car", "red", 6, rng, class_colours=CLASS_COLOURS, dataset_classes=CLASSES)

    assert run(7) == run(7)


def test_description_negatives_types():
    desc = "a small red car on the road in the upper left, oriented east-west"
    rng = np.random.default_rng(0)
    out = description_negatives(desc, "car", "red", 6, rng, class_colours=CLASS_COLOURS, dataset_classes=CLASSES)
    assert len(out) == 6 and desc not in [t for t, _ in out]
    negs = {}
    for t, k in out:
        negs.setdefault(k, t)
    assert set(negs) == set(DESCRIPTION_TYPES)
    assert negs["size"] == desc.replace("small", "large")
    assert negs["orientation"] == desc.replace("east-west", "north-south")
    assert negs["position"] == desc.replace("upper left", "lower right")
    assert "red" not in negs["colour"] and " car " in negs["colour"]
    assert "red" in negs["category"] and " car " not in negs["category"]
    # articles follow the substituted word
    out = description_negatives("a red car at the top", "car", "red", 6, np.random.default_rng(3),
                                class_colours={"car": ["orange"]})
    assert ("an orange car at the top", "colour") in out
    assert ("a red car at the bottom", "position") in out
    for t, _ in out:
        assert norm(t) != "a red car at the top"


def test_inversions():
    assert invert_position("in the upper left") == "in the lower right"
    assert invert_position("At the top, north of the river") == "At the bottom, south of the river"
    assert invert_position("running north-south on the left") == "running north-south on the right"
    assert invert_orientation("oriented east-west, on the left") == "oriented north-south, on the left"
    assert invert_position("in the center") == "in the center"  # nothing to invert: no negative
    out = description_negatives("a tree in the center", "tree", None, 6, np.random.default_rng(0))
    assert "position" not in {k for _, k in out} and "orientation" not in {k for _, k in out}
