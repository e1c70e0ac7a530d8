"""Built-in text data for inference: the scene vocabulary, prompt templates, background phrases.

``DEFAULT_VOCABULARY`` is what ``geoalign tile-classify`` uses when no ``--classes`` are given.
It is the union (lower-cased, singular/plural and spelling variants merged, natural-language
names such as "parking lot" instead of "parking") of the scene classes of three public
remote-sensing scene-classification benchmarks, plus the classes drawn in the project's
synthetic sample scene:

* UC Merced Land Use (Yang & Newsam, 2010): 21 classes, 0.3 m aerial imagery (USGS);
* AID (Xia et al., 2017, "AID: A Benchmark Data Set for Performance Evaluation of Aerial
  Scene Classification"): 30 classes, Google Earth imagery;
* NWPU-RESISC45 (Cheng et al., 2017, "Remote Sensing Image Scene Classification: Benchmark
  and State of the Art"): 45 classes, Google Earth imagery;
* the synthetic sample scene (``geoalign_core.training.scenes.CLASSES``): road, parking lot,
  building, car, swimming pool, tree, pond, river, tennis court, ship (most already in the
  lists above; "cars" and "swimming pool" are added).

Only the class NAMES come from these data sets (no images are shipped).

``PROMPT_TEMPLATES`` are the remote-sensing prompt templates used for zero-shot tile
classification and by the evaluations (in the spirit of CLIP's prompt ensembling and
RemoteCLIP's "a satellite photo of {}."): each class is encoded with every template, the
embeddings are averaged and re-normalised.

``BACKGROUND_PHRASES`` are generic land-cover phrases that compete with the user's phrases
in ``find`` and ``match-regions`` scores (see :mod:`geoalign_core.inference.scoring`).
"""

from __future__ import annotations

from collections.abc import Sequence

VOCABULARY_SOURCES = (
    "UC Merced Land Use (21 classes), AID (30 classes), NWPU-RESISC45 (45 classes), "
    "GeoAlign synthetic sample scene classes; names merged and de-duplicated"
)

DEFAULT_VOCABULARY: tuple[str, ...] = (
    # -- transport
    "airport",
    "airplane",
    "runway",
    "bridge",
    "viaduct",
    "overpass",
    "freeway",
    "road",
    "intersection",
    "roundabout",
    "railway",
    "railway station",
    "parking lot",
    "harbor",
    "port",
    "ship",
    # -- built-up
    "dense residential area",
    "medium residential area",
    "sparse residential area",
    "mobile home park",
    "buildings",
    "commercial area",
    "industrial area",
    "church",
    "palace",
    "school",
    "center",
    "square",
    "resort",
    "storage tanks",
    "thermal power station",
    # -- sport and leisure
    "baseball field",
    "basketball court",
    "tennis court",
    "ground track field",
    "golf course",
    "stadium",
    "playground",
    "park",
    # -- agriculture and vegetation
    "farmland",
    "circular farmland",
    "rectangular farmland",
    "terrace",
    "meadow",
    "grass",
    "forest",
    "trees",
    "chaparral",
    "wetland",
    # -- water, terrain and weather
    "river",
    "lake",
    "pond",
    "beach",
    "island",
    "sea ice",
    "snowberg",
    "mountain",
    "desert",
    "bare land",
    "cloud",
    # -- synthetic sample scene objects not named above
    "cars",
    "swimming pool",
)

# The one template set: tile classification and every evaluation (``geoalign eval``) use it.
# "{}" is the bare class name, "{a}" the name with its indefinite article ("a car", "an airplane")
# (:func:`geoalign_core.data.text.fill_template`).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "an aerial image of {a}.",
    "a satellite image of {a}.",
    "a remote sensing image of {a}.",
    "a top-down view of {a}.",
    "{a}.",
)

BACKGROUND_PHRASES: tuple[str, ...] = (
    "background",
    "bare ground",
    "grass",
    "trees",
    "road",
    "pavement",
    "water",
    "buildings",
    "roof",
    "shadow",
)


def _noun_key(text: str) -> str:
    """A phrase in lower case without a leading article and with a plural last word made singular
    (naively: "buildings" -> "building", "benches" -> "bench", "grass" stays)."""
    words = text.lower().strip().rstrip(".").split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    if not words:
        return ""
    w = words[-1]
    if w.endswith(("ches", "shes", "sses", "xes")):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    return " ".join([*words[:-1], w])


#: The label of a tile or region that no class or phrase describes well enough.
NONE_LABEL = "none of these"
#: A label needs at least this calibrated probability of being right; below it: :data:`NONE_LABEL`.
NONE_BELOW = 0.5

#: Everything a query phrase competes with in ``find`` and ``match-regions`` scores: the background
#: phrases and the whole scene vocabulary (a box of forest must prefer "airplane" over "forest",
#: "trees", "meadow", ... before it scores high for "airplane").
COMPETITORS: tuple[str, ...] = tuple(dict.fromkeys((*BACKGROUND_PHRASES, *DEFAULT_VOCABULARY)))


def head_noun(text: str) -> str:
    """The last word of a phrase's :func:`_noun_key` ("red cars" -> "car")."""
    key = _noun_key(text)
    return key.split()[-1] if key else ""


#: colour words: a phrase starting with one ("red car") also competes with the same thing in other colours
COLOURS: tuple[str, ...] = ("red", "blue", "white", "black", "grey", "green", "yellow", "brown", "orange",
                            "purple", "silver")
_SAME_HUE = ({"grey", "gray", "silver"},)


#: roofs seen from above: a coloured small object ("red car") also competes with a roof of its colour
ROOF_NOUNS: tuple[str, ...] = ("roof", "building")


def colour_rivals(phrase: str) -> list[str]:
    """``phrase`` in the other :data:`COLOURS` when it starts with a colour ("red car" -> "blue car",
    "white car", ...), and a roof or building of the same colour ("red roof", "red building") unless the
    phrase names one: the box of a blue car must prefer "red car" to "blue car", and a red roof must
    prefer "red roof", before it counts as a red car. Else nothing."""
    words = phrase.lower().split()
    if len(words) < 2 or words[0] not in COLOURS:
        return []
    rest = " ".join(words[1:])
    same = next((g for g in _SAME_HUE if words[0] in g), {words[0]})
    out = [f"{c} {rest}" for c in COLOURS if c not in same]
    head = head_noun(phrase)
    if head not in ROOF_NOUNS and head not in ("house", "roof top", "rooftop"):
        out += [f"{words[0]} {n}" for n in ROOF_NOUNS]
    return out


def competitors_for(phrases: Sequence[str], pool: Sequence[str] = COMPETITORS) -> list[str]:
    """The phrases of ``pool`` that compete with ``phrases``: all but those naming the same thing as one
    of them up to case, an article and a plural, or naming a query's head noun alone ("cars" does not
    compete with "red car": a red car is a car); then each phrase's :func:`colour_rivals`."""
    keys = {_noun_key(p) for p in phrases} | {head_noun(p) for p in phrases}
    own = {p.lower() for p in phrases}
    rivals = [r for p in phrases for r in colour_rivals(p) if r not in own]
    return list(dict.fromkeys([b for b in pool if _noun_key(b) not in keys] + rivals))


def background_for(phrases: Sequence[str], background: Sequence[str] = BACKGROUND_PHRASES) -> list[str]:
    """The background phrases that compete with ``phrases``: all but those naming the same thing as
    one of them up to case, an article and a plural ("trees" does not compete with "tree")."""
    keys = {_noun_key(p) for p in phrases}
    return [b for b in background if _noun_key(b) not in keys]
