"""What a synthetic scene is made of: seeds, default size and pixel, classes, label values."""

from __future__ import annotations

SAMPLE_SEED = 0
TRAIN_SEEDS = range(1000, 2000)
EVAL_SEEDS = range(2000, 2100)

DEFAULT_SIZE = 2048
DEFAULT_RES = 0.3
DEFAULT_EPSG = 32633
LAYER = "labels"

CLASSES = (
    "road",
    "parking lot",
    "building",
    "car",
    "swimming pool",
    "tree",
    "pond",
    "river",
    "tennis court",
    "ship",
)
ORIENTATIONS = ("north-south", "east-west", "diagonal", "none")
SIZES = ("small", "medium", "large")


POSITIONS = (
    ("in the upper left", "at the top", "in the upper right"),
    ("on the left", "in the center", "on the right"),
    ("in the lower left", "at the bottom", "in the lower right"),
)
