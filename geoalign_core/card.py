"""Model cards: what a model was trained on, how its scores were calibrated, and how well it did.

A card is a JSON file beside the model's weights, ``<weights stem>.card.json`` (the bundled
``geoalign-demo.safetensors`` has ``geoalign-demo.card.json``; ``geoalign finetune`` writes
``model.card.json`` beside ``model.safetensors``). :func:`geoalign_core.load_model` reads it into
``model.card``; a model without one is *uncalibrated* (its results carry raw evidence under another
name, never a 0..1 score) and of unknown domain.

Fields:

* ``domain``: the imagery the model was trained on: ``kind`` ("synthetic" or "real"), ``sensor``,
  ``gsd_m`` (ground sample distance range, metres), ``bands`` (count), ``region``, ``description``;
* ``vocabulary``: the words its text tower saw in training (optional; a phrase with other words
  is one the model "never saw");
* ``calibration``: per task ("find", "tiles"), the fitted logistic map
  (:class:`~geoalign_core.inference.calibration.LogisticMap`) and what it was fitted on;
* ``measured``: per task, precision among results scoring >= 0.5 and the expected calibration
  error on held-out data that the map was not fitted on.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CARD_SUFFIX", "Domain", "ModelCard", "card_line", "card_path", "domain_warnings", "load_card", "model_line",
           "out_of_domain", "raster_is_synthetic", "save_card"]

CARD_SUFFIX = ".card.json"
#: a raster whose pixel size is further than this factor from the model's training range is out of domain
GSD_FACTOR = 3.0
#: GeoTIFF tag the project's synthetic scenes carry (geoalign_core.training.scenes.files)
SYNTHETIC_TAG = "GENERATOR"
_WORD = re.compile(r"[a-z]+")


@dataclass
class Domain:
    """The imagery a model was trained on."""

    kind: str = "unknown"  # "synthetic" | "real" | "unknown"
    sensor: str = ""
    gsd_m: tuple[float, float] | None = None
    bands: int | None = None
    region: str = ""
    description: str = ""

    def line(self) -> str:
        bits = [self.kind if self.kind != "unknown" else "unknown imagery"]
        if self.gsd_m:
            lo, hi = self.gsd_m
            bits.append(f"{lo:g} m" if lo == hi else f"{lo:g}-{hi:g} m")
        if self.bands:
            bits.append({1: "1-band", 3: "RGB"}.get(self.bands, f"{self.bands}-band"))
        if self.sensor:
            bits.append(self.sensor)
        if self.region:
            bits.append(self.region)
        return " ".join(bits)


@dataclass
class ModelCard:
    """See the module docstring."""

    name: str
    domain: Domain = field(default_factory=Domain)
    description: str = ""
    vocabulary: list[str] | None = None
    calibration: dict[str, dict] = field(default_factory=dict)
    measured: dict[str, dict] = field(default_factory=dict)
    #: per class, the typical object [width, height] in metres, measured on the training labels, for the classes
    #: whose sizes vary little (see :meth:`object_size`); empty when unknown
    object_sizes: dict[str, list[float]] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading the card
    @property
    def calibrated(self) -> bool:
        return "find" in self.calibration

    def score_map(self, task: str, out_of_domain: bool = False):
        """The fitted map of ``task`` (a :class:`~geoalign_core.inference.calibration.LogisticMap`) or None.

        ``out_of_domain`` (a synthetic-only model on real imagery): the map fitted for that case on real
        labelled scenes (``"<task>:real"``) when the card has one, else None: uncalibrated there."""
        from .inference.calibration import LogisticMap

        entry = self.calibration.get(f"{task}:real" if out_of_domain else task)
        return LogisticMap.from_dict(entry["map"]) if entry else None

    def phrase_recalibration(self, phrase: str, task: str = "find", out_of_domain: bool = False
                             ) -> tuple[float, float]:
        """``(a, b)``: the card's own recalibration of ``phrase`` (``a * logit + b`` on the map's logit), fitted
        for the phrases it was calibrated on with enough right and wrong results; ``(1, 0)`` otherwise
        (the phrase is matched up to case, an article and a plural)."""
        ab = self._per_phrase("per_phrase", phrase, task, out_of_domain)
        return (1.0, 0.0) if ab is None else (float(ab[0]), float(ab[1]))

    def phrase_step(self, phrase: str, task: str = "find", out_of_domain: bool = False
                    ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(knots, values)``: the card's non-decreasing step for ``phrase`` after its recalibration (fitted with
        :func:`~geoalign_core.evaluation.reliability.fit_isotonic` on the same held-out results), or None."""
        step = self._per_phrase("per_phrase_steps", phrase, task, out_of_domain)
        return None if step is None else (tuple(float(k) for k in step[0]), tuple(float(v) for v in step[1]))

    def _per_phrase(self, table: str, phrase: str, task: str, out_of_domain: bool) -> Any:
        """``phrase``'s entry in the per-phrase ``table`` of the calibration of ``task`` (matched up to case, an
        article and a plural), or None."""
        from .inference.vocabulary import _noun_key

        entry = self.calibration.get(f"{task}:real" if out_of_domain else task) or {}
        key = _noun_key(phrase)
        return next((v for name, v in (entry.get(table) or {}).items() if _noun_key(name) == key), None)

    def object_size(self, phrase: str) -> tuple[float, float] | None:
        """The card's typical size (metres: width, height) of the object ``phrase`` names, or None
        (see :func:`phrase_object_size`)."""
        return phrase_object_size(phrase, self.object_sizes)

    def unknown_words(self, phrase: str) -> list[str]:
        """Words of ``phrase`` (letters only, lower case; a plural counts as its singular) not in the vocabulary."""
        if not self.vocabulary:
            return []
        vocab = set(self.vocabulary)
        out = []
        for w in _WORD.findall(phrase.lower()):
            if w in vocab or w.rstrip("s") in vocab or w + "s" in vocab or (w.endswith("es") and w[:-2] in vocab):
                continue
            out.append(w)
        return list(dict.fromkeys(out))

    def domain_line(self) -> str:
        """One line for people: trained on what, calibrated on what, measured precision."""
        parts = [f"{self.name}: trained on {self.domain.line()}"]
        if self.calibrated:
            cal = self.calibration["find"]
            parts.append(f"scores calibrated on {cal.get('fitted_on', 'held-out labelled data')}")
            m = self.measured.get("find") or {}
            if m.get("precision_at_0.5") is not None:
                parts.append(f"held-out precision {m['precision_at_0.5']:.2f} at score >= 0.5")
            if "find:real" in self.calibration:
                parts.append(f"on real imagery: calibrated on {self.calibration['find:real'].get('fitted_on', '?')}")
        else:
            parts.append("uncalibrated (results show raw evidence, not probabilities)")
        return "; ".join(parts)

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict:
        d = asdict(self)
        if self.domain.gsd_m is not None:
            d["domain"]["gsd_m"] = list(self.domain.gsd_m)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelCard:
        dom = dict(d.get("domain") or {})
        gsd = dom.get("gsd_m")
        if gsd is not None:
            gsd = (float(gsd[0]), float(gsd[-1]))
            if not all(math.isfinite(v) and v > 0 for v in gsd):
                raise ValueError("domain.gsd_m must be positive numbers")
        domain = Domain(kind=str(dom.get("kind", "unknown")), sensor=str(dom.get("sensor", "")), gsd_m=gsd,
                        bands=int(dom["bands"]) if dom.get("bands") is not None else None,
                        region=str(dom.get("region", "")), description=str(dom.get("description", "")))
        card = cls(name=str(d["name"]), domain=domain, description=str(d.get("description", "")),
                   vocabulary=[str(w) for w in d["vocabulary"]] if d.get("vocabulary") else None,
                   calibration={str(k): dict(v) for k, v in (d.get("calibration") or {}).items()},
                   measured={str(k): dict(v) for k, v in (d.get("measured") or {}).items()},
                   object_sizes=_check_sizes(d.get("object_sizes") or {}))
        for task, entry in card.calibration.items():  # a malformed map is refused here, not at the first query
            _check_map(task, entry)
        return card


def phrase_object_size(phrase: str, table: dict[str, Any]) -> tuple[float, float] | None:
    """The size in ``table`` (class -> [width, height] metres) of the object ``phrase`` names: the class
    that equals the phrase or its last words ("a red car" -> "car", "red cars" -> "car"; "car park" -> not
    "car"), matched up to case, an article and a plural; the longest such ending wins. None when no class matches."""
    from .inference.vocabulary import _noun_key

    if not table:
        return None
    keys = {_noun_key(str(k)): v for k, v in table.items()}
    words = phrase.lower().strip().rstrip(".").split()
    for i in range(len(words)):
        hit = keys.get(_noun_key(" ".join(words[i:])))
        if hit is not None:
            return float(hit[0]), float(hit[-1])
    return None


def _check_sizes(sizes: dict) -> dict[str, list[float]]:
    out = {}
    for k, v in sizes.items():
        vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
        if len(vals) not in (1, 2) or not all(math.isfinite(x) and x > 0 for x in vals):
            raise ValueError(f"object_sizes[{k!r}] must be one or two positive numbers (metres)")
        out[str(k)] = [vals[0], vals[-1]]
    return out


def _check_map(task: str, entry: Any) -> None:
    """A calibration entry must hold a map of finite numbers (checked without importing the model stack)."""
    m = entry.get("map") if isinstance(entry, dict) else None
    if not isinstance(m, dict) or not isinstance(m.get("weights"), dict):
        raise ValueError(f"calibration {task!r} has no map")
    for k, v in [*m["weights"].items(), ("bias", m.get("bias"))]:
        if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"calibration {task!r}: {k} is not a finite number")
    for ab in (entry.get("per_phrase") or {}).values():
        if len(ab) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in ab) or ab[0] <= 0:
            raise ValueError(f"calibration {task!r}: a per-phrase recalibration is not two finite numbers (a > 0)")


def card_path(weights: str | os.PathLike) -> Path:
    """Where the card of a weights file lives: ``<dir>/<stem>.card.json``."""
    p = Path(weights)
    return p.with_name(p.stem + CARD_SUFFIX)


def load_card(weights: str | os.PathLike) -> ModelCard | None:
    """The card beside ``weights``, None when there is none. A card that cannot be read is reported
    (one warning line) and ignored: the model is then uncalibrated."""
    import warnings

    path = card_path(weights)
    if not path.is_file():
        return None
    try:
        return ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warnings.warn(f"ignoring the model card {path}: {exc}; the model's scores are uncalibrated", stacklevel=2)
        return None


def save_card(card: ModelCard, path: str | os.PathLike) -> Path:
    """Write ``card`` as JSON (atomically: a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(card.to_dict(), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def domain_warnings(card: ModelCard | None, *, bands: int, gsd_m: float | None, synthetic: bool | None,
                    phrases: Sequence[str] = ()) -> list[str]:
    """One line per way in which a raster (``bands`` read, pixel size ``gsd_m`` in metres or None,
    ``synthetic``: made by this project's scene generator, None when unknown) or the ``phrases`` lie
    outside what the model ``card`` was trained on."""
    if card is None:
        return []
    out: list[str] = []
    d = card.domain
    fix = ("get a zoo model for real imagery (geoalign models list; offline: place its weights in the cache "
           "folder that geoalign models list names) or fine-tune this one on your labels (geoalign finetune)")
    if d.kind == "synthetic" and synthetic is False:
        how = ("its scores there are calibrated on real labelled scenes and stay low: it rarely finds anything"
               if "find:real" in card.calibration else "its results there are uncalibrated")
        out.append(f"{card.name} was trained on synthetic scenes only and this raster is real imagery ({how}); "
                   f"{fix}")
    if d.bands and bands != d.bands:
        out.append(f"{card.name} was trained on {d.bands}-band imagery and this raster gives {bands} band(s) "
                   f"(repeated or dropped to fit); {fix}")
    if d.gsd_m and gsd_m:
        lo, hi = d.gsd_m
        if gsd_m < lo / GSD_FACTOR or gsd_m > hi * GSD_FACTOR:
            trained = f"{lo:g} m" if lo == hi else f"{lo:g}-{hi:g} m"
            out.append(f"{card.name} was trained on {trained} pixels and this raster has {gsd_m:.3g} m pixels: "
                       f"objects look {'larger' if gsd_m < lo else 'smaller'} than it knows; resample the raster "
                       f"or fine-tune (geoalign finetune)")
    for p in phrases:
        unknown = card.unknown_words(p)
        if unknown:
            out.append(f"{card.name} never saw the word(s) {', '.join(repr(w) for w in unknown)} in training: "
                       f"it cannot recognise {p!r} (its scores stay near 0); {fix}")
    return out


def model_line(model: Any) -> str:
    """The line every model command prints first (:func:`card_line` of the model's card)."""
    name = getattr(model, "name", None) or getattr(getattr(model, "spec", None), "name", None) or "model"
    return card_line(getattr(model, "card", None), name)


def card_line(card: ModelCard | None, name: str) -> str:
    """The card's :meth:`ModelCard.domain_line`, or that there is none."""
    if card is not None:
        return card.domain_line()
    return (f"{name}: no model card: unknown training domain; uncalibrated (results show raw evidence, "
            "not probabilities)")


def out_of_domain(card: ModelCard | None, synthetic: bool | None) -> bool:
    """Whether a raster (``synthetic``: made by this project's generator; None: unknown) is outside a
    synthetic-only model's domain: real imagery for a model that only saw generated scenes."""
    return card is not None and card.domain.kind == "synthetic" and synthetic is False


def raster_is_synthetic(tags: dict[str, Any]) -> bool:
    """Whether a raster's GeoTIFF tags say this project's scene generator made it."""
    return "GeoAlign" in str(tags.get(SYNTHETIC_TAG, ""))
