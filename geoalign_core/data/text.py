"""Small English helpers for generated captions: articles, plurals, numbers, lists.

Rule-based on purpose (no LLM, no dictionary download): good enough for class names such as
"car", "swimming pool", "bus", "ferry", "grass" and the sizes / colours of the labels.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "MASS_NOUNS",
    "article",
    "capitalise",
    "clean_class",
    "count_phrase",
    "fill_template",
    "is_blank",
    "is_mass_noun",
    "join_words",
    "norm",
    "number_word",
    "plural",
    "with_article",
]

# nouns that are not counted ("two grasses" -> "grass"); compared on the whole class name
MASS_NOUNS = frozenset(
    {
        "grass", "water", "bare soil", "soil", "sand", "vegetation", "farmland", "cropland",
        "snow", "ice", "sea ice", "bare land", "bare ground", "pavement", "asphalt", "concrete",
        "gravel", "scrub", "shrubland", "grassland", "wetland", "meadow", "background",
        "chaparral", "desert", "forest", "woodland", "cloud", "shadow",
    }
)
_NUMBERS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)
_IRREGULAR = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "foot": "feet",
    "sheep": "sheep", "deer": "deer", "fish": "fish", "aircraft": "aircraft", "series": "series",
    "leaf": "leaves", "roof": "roofs", "chief": "chiefs", "cliff": "cliffs",
}
_VOWEL_SOUND_EXCEPTIONS = ("one", "uni", "use", "eu", "ewe", "uk", "us ")  # "a one-way road", "a unit"
_SILENT_H = ("hour", "honest", "honou", "heir")


def norm(text: str) -> str:
    """Lower case, single spaces: the form texts are compared in."""
    return " ".join(str(text).lower().split())


def is_blank(value: object) -> bool:
    """No value: None, NaN, an empty or all-space text, or the texts "nan", "none" and "null" (as tables write them)."""
    if value is None or (isinstance(value, float) and value != value):
        return True
    return not str(value).strip() or str(value).strip().lower() in ("nan", "none", "null")


def clean_class(value: object) -> str:
    """A class value as text: lower case, ``_`` and repeated spaces collapsed ("Swimming_Pool" -> "swimming pool")."""
    return " ".join(str(value).replace("_", " ").lower().split())


def is_mass_noun(phrase: str) -> bool:
    """True for uncounted nouns ("grass", "dark green grass", "bare soil")."""
    n = norm(phrase)
    return n in MASS_NOUNS or any(n.endswith(" " + m) for m in MASS_NOUNS)


def article(phrase: str) -> str:
    """``"a"`` or ``"an"`` for ``phrase`` (by its first word's sound, approximately)."""
    w = phrase.strip().lower()
    if not w:
        return "a"
    if w.startswith(_SILENT_H):
        return "an"
    if w.startswith(_VOWEL_SOUND_EXCEPTIONS):
        return "a"
    if re.match(r"^[aeiou]", w):
        return "an"
    if re.match(r"^(8|11|18)\b", w):
        return "an"
    return "a"


def with_article(phrase: str) -> str:
    """``"a car"``, ``"an airplane"``, ``"grass"`` (mass nouns take no article)."""
    if is_mass_noun(phrase):
        return phrase
    return f"{article(phrase)} {phrase}"


def _plural_word(word: str) -> str:
    low = word.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if re.search(r"(s|x|z|ch|sh)$", low):
        return word + "es"
    if re.search(r"[^aeiou]y$", low):
        return word[:-1] + "ies"
    return word + "s"


def plural(noun: str) -> str:
    """Plural of a (possibly multi-word) noun: the last word is inflected ("swimming pools")."""
    if is_mass_noun(noun):
        return noun
    words = noun.split(" ")
    words[-1] = _plural_word(words[-1])
    return " ".join(words)


def clean_texts(texts: Sequence[str] | str | None, what: str = "phrase") -> list[str]:
    """The one rule for user phrases and class names: single spaces, no empty ones, duplicates
    dropped ignoring case (the first spelling kept, order kept).

    Raises:
        InputError: no text, an empty one, or something that is not text.
    """
    from geoalign_core.errors import InputError

    if texts is None:
        raise InputError(f"no {what}s given")
    if isinstance(texts, str):
        texts = [texts]
    out: list[str] = []
    seen: set[str] = set()
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"{what}s must be text, got {type(t).__name__}")
        s = " ".join(t.split())
        if not s:
            raise InputError(f"empty {what}: give some text, e.g. \"red car\"")
        if s.lower() not in seen:
            seen.add(s.lower())
            out.append(s)
    if not out:
        raise InputError(f"no {what}s given")
    return out


def fill_template(template: str, name: str) -> str:
    """A prompt template filled with a class name: ``{}`` the name, ``{a}`` the name with its
    article, ``{p}`` its plural (``"an aerial image of {a}."`` -> ``"an aerial image of a car."``)."""
    return template.format(name, a=with_article(name), p=plural(name))


def number_word(n: int) -> str:
    """0..20 as words, larger numbers as digits."""
    return _NUMBERS[n] if 0 <= n < len(_NUMBERS) else str(n)


def count_phrase(n: int, noun: str) -> str:
    """``"a car"``, ``"three cars"``, ``"grass"`` for ``n`` of ``noun``."""
    if is_mass_noun(noun):
        return noun
    if n == 1:
        return with_article(noun)
    return f"{number_word(n)} {plural(noun)}"


def join_words(items: Sequence[str], conj: str = "and") -> str:
    """``"a, b and c"``."""
    items = [i for i in items if i]
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {conj} {items[-1]}"


def capitalise(text: str) -> str:
    """First letter upper case, the rest untouched."""
    return text[:1].upper() + text[1:] if text else text
