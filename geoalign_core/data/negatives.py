"""Rule-based hard negatives: controlled perturbations of a region's phrase and description.

Like the paper (attribute replacement, orientation inversion, category substitution), with
fixed rules instead of a language model. Every negative is a text that is FALSE for the region
and never equal to the positive (compared case- and space-insensitively); each carries a type.

Phrase negatives (``hard_negatives`` / ``hard_negative_types``; the positive is the phrase,
e.g. ``"red car"``):

* ``colour``: the colour replaced by another colour -- first colours the same class has in the
  dataset, then a basic palette; never a shade of the same hue ("green" for "dark green") nor
  a synonym ("gray" / "silver" for "grey").
* ``category``: the class replaced by a confusable class, keeping the colour (``"red truck"``):
  first the entries of :data:`CONFUSABLE` (a confusion table for common remote-sensing
  classes) that occur in the dataset, then the dataset's other classes, then the remaining
  table entries; never a synonym or hypernym (:data:`RELATED`: "boat" for "ship", "vehicle"
  for "car", "water" for "pond").
* ``colour+category``: both replaced; used only to fill up to Q when the two lists run out.

Colour and category negatives alternate so that both types are present when both exist.

Description negatives (``description_negatives`` / ``description_negative_types``; the
positive is the description): one of each applicable type, then more colour / category ones:

* ``size``: small <-> large, medium-sized -> small or large;
* ``orientation``: north-south <-> east-west, horizontal <-> vertical;
* ``position``: the position inverted (left <-> right and upper <-> lower / top <-> bottom /
  north <-> south / east <-> west at once: "in the upper left" -> "in the lower right");
* ``colour`` and ``category``: as for phrases, substituted in the text.

All choices are deterministic given the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from geoalign_core.data.captions import region_phrase
from geoalign_core.data.text import article, norm

__all__ = [
    "CONFUSABLE",
    "DESCRIPTION_TYPES",
    "PALETTE",
    "PHRASE_TYPES",
    "RELATED",
    "category_candidates",
    "colour_candidates",
    "description_negatives",
    "invert_orientation",
    "invert_position",
    "phrase_negatives",
    "related",
]

PHRASE_TYPES = ("colour", "category", "colour+category")
DESCRIPTION_TYPES = ("size", "orientation", "position", "colour", "category")

PALETTE = ("red", "blue", "white", "black", "grey", "green", "yellow", "brown", "orange", "purple")

# For each class, classes that look alike from above (most confusable first).
CONFUSABLE: dict[str, tuple[str, ...]] = {
    "car": ("truck", "boat", "van", "bus"),
    "truck": ("car", "bus", "container", "van"),
    "van": ("car", "truck", "bus"),
    "bus": ("truck", "car", "train"),
    "vehicle": ("boat", "container", "building"),
    "ship": ("car", "truck", "airplane", "container"),
    "boat": ("car", "truck", "airplane"),
    "airplane": ("ship", "helicopter", "car"),
    "helicopter": ("airplane", "car"),
    "train": ("bus", "truck", "road"),
    "container": ("truck", "building", "car"),
    "swimming pool": ("pond", "tennis court", "parking lot", "storage tank"),
    "pond": ("swimming pool", "river", "parking lot", "tree"),
    "lake": ("river", "swimming pool", "farmland"),
    "river": ("road", "pond", "railway"),
    "water": ("grass", "road", "parking lot"),
    "road": ("river", "railway", "runway", "parking lot"),
    "railway": ("road", "river"),
    "runway": ("road", "railway", "parking lot"),
    "bridge": ("road", "dam", "ship"),
    "dam": ("bridge", "road"),
    "parking lot": ("tennis court", "road", "building", "bare soil"),
    "tennis court": ("parking lot", "swimming pool", "basketball court", "soccer field"),
    "basketball court": ("tennis court", "parking lot", "swimming pool"),
    "soccer field": ("tennis court", "baseball field", "grass"),
    "baseball field": ("soccer field", "tennis court", "ground track field"),
    "ground track field": ("soccer field", "baseball field", "stadium"),
    "stadium": ("ground track field", "parking lot"),
    "building": ("parking lot", "tennis court", "storage tank", "swimming pool"),
    "house": ("parking lot", "swimming pool", "tennis court"),
    "roof": ("parking lot", "tennis court"),
    "storage tank": ("building", "swimming pool", "roundabout"),
    "roundabout": ("storage tank", "parking lot"),
    "chimney": ("storage tank", "tree"),
    "windmill": ("tree", "chimney"),
    "tree": ("grass", "pond", "building"),
    "forest": ("grass", "farmland", "pond"),
    "grass": ("tree", "bare soil", "farmland"),
    "bare soil": ("grass", "parking lot", "road"),
    "farmland": ("grass", "bare soil", "forest"),
    "harbor": ("parking lot", "bridge"),
}

# Groups of names that are synonyms or hypernyms of each other: never negatives for each other.
RELATED: tuple[frozenset[str], ...] = tuple(
    frozenset(g)
    for g in (
        {"car", "vehicle", "small vehicle", "automobile"},
        {"van", "vehicle", "small vehicle"},
        {"truck", "vehicle", "large vehicle", "lorry"},
        {"bus", "vehicle", "large vehicle"},
        {"ship", "boat", "vessel"},
        {"airplane", "plane", "aircraft", "aeroplane"},
        {"building", "house", "roof"},
        {"tree", "trees"},
        {"swimming pool", "pool", "water"},
        {"pond", "lake", "water"},
        {"river", "water", "stream"},
        {"road", "street", "highway"},
        {"parking lot", "parking"},
        {"soccer field", "football field"},
        {"baseball field", "baseball diamond"},
        {"storage tank", "tank"},
        {"harbor", "harbour", "port"},
        {"bare soil", "bare land", "bare ground", "soil"},
        {"forest", "woodland", "tree", "trees"},
        {"grass", "meadow", "grassland", "lawn"},
    )
)
# colours that are (nearly) the same
_HUES: tuple[frozenset[str], ...] = (
    frozenset({"grey", "gray", "silver"}),
    frozenset({"turquoise", "cyan", "teal"}),
    frozenset({"brown", "tan", "beige"}),
)
_H_SWAP = {"left": "right", "right": "left", "east": "west", "west": "east"}
_V_SWAP = {"upper": "lower", "lower": "upper", "top": "bottom", "bottom": "top", "north": "south", "south": "north"}
_POS_RE = re.compile(
    r"\b(north-south|east-west|south-north|west-east)\b|\b(left|right|upper|lower|top|bottom|north|south|east|west)\b",
    re.IGNORECASE,
)
_ORIENT_SWAP = {
    "north-south": "east-west", "east-west": "north-south", "south-north": "west-east", "west-east": "south-north",
    "horizontal": "vertical", "vertical": "horizontal", "horizontally": "vertically", "vertically": "horizontally",
}
_ORIENT_RE = re.compile(r"\b(north-south|east-west|south-north|west-east|horizontal(?:ly)?|vertical(?:ly)?)\b", re.I)
_SIZE_RE = re.compile(r"\b(small|large|medium-sized|medium|big|tiny|huge)\b", re.IGNORECASE)
_ARTICLE_RE = re.compile(r"\b([Aa]n?) ([A-Za-z0-9][\w-]*)")


def _singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("ches", "shes", "sses", "xes")):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


def _key(name: str) -> str:
    n = norm(name)
    if n in CONFUSABLE:
        return n
    s = _singular(n)
    return s if s in CONFUSABLE else n


def related(a: str, b: str) -> bool:
    """True when two class names are the same, synonyms or hypernyms (never negatives of each other)."""
    a, b = norm(a), norm(b)
    if a == b or _singular(a) == _singular(b):
        return True
    sa, sb = _singular(a), _singular(b)
    return any((a in g or sa in g) and (b in g or sb in g) for g in RELATED)


def _same_hue(a: str, b: str) -> bool:
    a, b = norm(a), norm(b)
    ha, hb = a.split(" ")[-1], b.split(" ")[-1]
    return ha == hb or any(ha in g and hb in g for g in _HUES)


def _shuffled(items: Iterable[str], rng: np.random.Generator) -> list[str]:
    items = list(items)
    return [items[i] for i in rng.permutation(len(items))] if items else []


def _unique(items: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for it in items:
        k = norm(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out


def colour_candidates(
    cls: str, colour: str, class_colours: Mapping[str, Sequence[str]], rng: np.random.Generator
) -> list[str]:
    """Replacement colours for ``colour``: the class's other colours in the dataset (shuffled), then the palette."""
    own = sorted(set(class_colours.get(cls, ())))
    others = sorted({c for cols in class_colours.values() for c in cols} - set(own))
    ordered = _shuffled(own, rng) + _shuffled(others, rng) + _shuffled(PALETTE, rng)
    return _unique(c for c in ordered if not _same_hue(c, colour))


def category_candidates(cls: str, dataset_classes: Sequence[str], rng: np.random.Generator) -> list[str]:
    """Substitute classes for ``cls`` in the order of the module docstring (synonyms excluded)."""
    table = CONFUSABLE.get(_key(cls), ())
    present = sorted(set(dataset_classes))
    # table entries as the dataset spells them ("ship" in the data matches "boat" in the table)
    first = [d for t in table for d in present if related(d, t)]
    second = _shuffled([c for c in present if c not in first], rng)
    third = [t for t in table if not any(related(d, t) for d in present)]
    return _unique(c for c in first + second + third if not related(c, cls))


class _Negatives:
    """Up to ``q`` ``(text, type)`` pairs, none equal to the positive or to each other (compared as
    :func:`~geoalign_core.data.text.norm` compares); ``tidy`` is applied to a text before it is compared."""

    def __init__(self, positive: str, q: int, tidy: Callable[[str], str] | None = None) -> None:
        self.q = q
        self.tidy = tidy
        self.out: list[tuple[str, str]] = []
        self.seen = {positive}

    @property
    def full(self) -> bool:
        return len(self.out) >= self.q

    def add(self, text: str, kind: str) -> None:
        if self.tidy is not None:
            text = self.tidy(text)
        k = norm(text)
        if k not in self.seen and not self.full:
            self.seen.add(k)
            self.out.append((text, kind))

    def alternate(self, colours: Sequence[str], categories: Sequence[str]) -> None:
        """Colour and category negatives in turn (both types present when both exist), until full."""
        for i in range(max(len(colours), len(categories))):
            if self.full:
                return
            if i < len(colours):
                self.add(colours[i], "colour")
            if i < len(categories):
                self.add(categories[i], "category")


def phrase_negatives(
    cls: str,
    colour: str | None,
    q: int,
    rng: np.random.Generator,
    *,
    class_colours: Mapping[str, Sequence[str]] | None = None,
    dataset_classes: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Up to ``q`` ``(negative phrase, type)`` pairs for the region phrase ``region_phrase(cls, colour)``."""
    if q <= 0:
        return []
    colours = colour_candidates(cls, colour, class_colours or {}, rng) if colour else []
    cats = category_candidates(cls, dataset_classes, rng)
    negs = _Negatives(norm(region_phrase(cls, colour)), q)
    negs.alternate([region_phrase(cls, c) for c in colours], [region_phrase(k, colour) for k in cats])
    if colour:
        for c in colours[:3]:
            for k in cats[:3]:
                negs.add(region_phrase(k, c), "colour+category")
    return negs.out


def _keep_case(src: str, word: str) -> str:
    return word[:1].upper() + word[1:] if src[:1].isupper() else word


def invert_position(text: str) -> str:
    """Left <-> right and up <-> down words swapped at once (orientation words such as
    "north-south" are left alone)."""

    def sub(m: re.Match) -> str:
        if m.group(1):
            return m.group(0)
        w = m.group(2)
        low = w.lower()
        return _keep_case(w, _H_SWAP.get(low) or _V_SWAP[low])

    return _POS_RE.sub(sub, text)


def invert_orientation(text: str) -> str:
    """north-south <-> east-west, horizontal <-> vertical."""
    return _ORIENT_RE.sub(lambda m: _keep_case(m.group(0), _ORIENT_SWAP[m.group(0).lower()]), text)


def _swap_size(text: str, rng: np.random.Generator) -> str:
    m = _SIZE_RE.search(text)
    if not m:
        return text
    w = m.group(0).lower()
    if w in ("small", "tiny"):
        new = "large"
    elif w in ("large", "big", "huge"):
        new = "small"
    else:
        new = ("small", "large")[int(rng.integers(2))]
    return text[: m.start()] + _keep_case(m.group(0), new) + text[m.end() :]


def _replace_first(text: str, old: str, new: str) -> str:
    m = re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text, re.IGNORECASE)
    if not m:
        return text
    return text[: m.start()] + _keep_case(m.group(0), new) + text[m.end() :]


def _fix_articles(text: str) -> str:
    def sub(m: re.Match) -> str:
        a = article(m.group(2))
        return f"{_keep_case(m.group(1), a)} {m.group(2)}"

    return _ARTICLE_RE.sub(sub, text)


def description_negatives(
    description: str,
    cls: str,
    colour: str | None,
    q: int,
    rng: np.random.Generator,
    *,
    class_colours: Mapping[str, Sequence[str]] | None = None,
    dataset_classes: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Up to ``q`` ``(negative description, type)`` pairs (see the module docstring)."""
    if q <= 0:
        return []
    negs = _Negatives(norm(description), q, tidy=_fix_articles)
    colour_word = colour or ""  # "": no colour, so no colour negatives
    has_colour = bool(colour_word) and re.search(rf"(?<![\w-]){re.escape(colour_word)}(?![\w-])", description, re.I)
    colours = colour_candidates(cls, colour_word, class_colours or {}, rng) if has_colour else []
    has_cls = re.search(rf"(?<![\w-]){re.escape(cls)}(?![\w-])", description, re.I)
    cats = category_candidates(cls, dataset_classes, rng) if has_cls else []
    negs.add(_swap_size(description, rng), "size")
    negs.add(invert_orientation(description), "orientation")
    negs.add(invert_position(description), "position")
    negs.alternate([_replace_first(description, colour_word, c) for c in colours],
                   [_replace_first(description, cls, k) for k in cats])
    return negs.out
