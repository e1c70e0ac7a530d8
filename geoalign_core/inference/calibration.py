"""What a ``find`` / ``match-regions`` score means: the estimated probability that the box shows the phrase.

A box's raw evidence is its log-odds ``z = log(p / (1 - p))``, where ``p`` is the softmax of
``logit_scale * cos`` over the query phrase, the other query phrases and generic background phrases
(the scan score that ranks candidates).

Three features of a box turn ``z`` into a probability (:data:`FEATURES`):

* ``logodds``: ``z`` itself;
* ``standout``: ``(z - m) / s``, how far the box stands out from the scene's ordinary regions
  (``m``: median of ``z`` over the multi-scale sliding windows of up to :data:`CAL_TILES` tiles spread
  over the searched area, ``s``: its lower spread, median minus 15.9th percentile);
* ``above_top``: ``(z - t) / s`` with ``t`` the 99th percentile of that sample: whether the box
  beats the scene's own upper tail (the best of thousands of ordinary regions lies there by chance);
* ``vocabulary``: the box's log-odds against every other text, the built-in scene vocabulary included
  (:func:`~geoalign_core.inference.scoring.vocabulary_logodds`): low when another plausible description
  ("forest", "parking lot", ...) fits the box better than the phrase;
* ``unknown``: 1 when the phrase has a word the model never saw in training (its model card's
  vocabulary), else 0;
* ``zoom``: the box's log-odds against every text, the box pooled from a window of half the tile size
  centred on it (:mod:`.zoom`: twice the zoom), capped at ``logodds``; read only by a card's
  ``find:zoom`` map, which scores ``find`` on a raster; the card's ``find`` map, which does not read it,
  scores the rest: index queries, ``--regions`` and ``match-regions``.

The probability is a logistic map of these features, ``sigmoid(w . x + b)``, **fitted per model on
held-out labelled data** (:mod:`geoalign_core.evaluation.reliability`) and stored in the model's card
(:mod:`geoalign_core.card`). It is increasing in ``z`` for a phrase in a scene, so it changes no ranking
within a phrase, and ``find`` scans with the raw threshold that corresponds to ``--min-score``
(:meth:`Scorer.raw_threshold`). A model without a fitted map is **uncalibrated**: its boxes carry
``standout`` (spreads above the scene's typical region) under that name, never a 0..1 score.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from . import scoring
from .encoder import Cancel, Encoder
from .source import EmbeddingSource

__all__ = ["CAL_TILES", "FEATURES", "MIN_SPREAD", "SCAN_FEATURES", "SIMILAR_FEATURES", "LogisticMap", "SceneStats",
           "Scorer", "SimilarScorer", "features", "isotonic_apply", "isotonic_inverse", "logodds", "measure",
           "measure_similar", "pick_windows"]

CAL_TILES = 16  #: tiles sampled per scene (evenly spread over the searched windows)
MIN_SPREAD = 0.1  #: floor of the spread, in log-odds (a flat scene does not blow standouts up)
TOP_QUANTILE = 0.99  #: the scene's upper tail, for ``above_top``
#: the features known from the scan (the card's ``find`` map reads these) ...
SCAN_FEATURES: tuple[str, ...] = ("logodds", "standout", "above_top", "vocabulary", "unknown")
#: ... and with the zoom view (its ``find:zoom`` map): the columns of :func:`features`
FEATURES: tuple[str, ...] = (*SCAN_FEATURES, "zoom")
_EPS = 1e-12


def logodds(p: torch.Tensor) -> torch.Tensor:
    """``log(p / (1 - p))`` in float64, ``p`` clamped away from 0 and 1."""
    p = p.double().clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


@dataclass(frozen=True)
class SceneStats:
    """Per query phrase: the median, lower spread and 99th percentile of ``z`` over the scene's
    sampled regions (``[N]`` each); ``n_regions`` the sample size (0: nothing valid was sampled)."""

    centre: torch.Tensor
    spread: torch.Tensor
    top: torch.Tensor
    n_regions: int

    @classmethod
    def empty(cls, n_phrases: int) -> SceneStats:
        z = torch.zeros(n_phrases, dtype=torch.float64)
        return cls(z, torch.ones(n_phrases, dtype=torch.float64), z.clone(), 0)

    @classmethod
    def from_logodds(cls, z: torch.Tensor, min_spread: float = MIN_SPREAD) -> SceneStats:
        """From ``[K, N]`` log-odds (or another score) of K sampled regions."""
        if z.shape[0] == 0:
            return cls.empty(z.shape[1])
        z = z.double()
        centre = z.median(dim=0).values
        low = torch.quantile(z, 0.15866, dim=0)
        top = torch.quantile(z, TOP_QUANTILE, dim=0)
        return cls(centre, (centre - low).clamp_min(min_spread), top, int(z.shape[0]))


#: above a phrase's last knot its step keeps rising by this share of what is left to 1 (at p = 1): the boxes
#: there are about as often right as the last step says, but a flat top would give them all one number and
#: hide their order (every "red car" box in view would read 0.779); the cost is at most this share of the gap
TOP_RISE = 0.1


def isotonic_apply(p: torch.Tensor, knots: Sequence[float], values: Sequence[float]) -> torch.Tensor:
    """A phrase's non-decreasing step of calibration (``fit_isotonic``'s knots and values): linear between the
    knots, from 0 to the first value below the first knot, and above the last one rising from the last value
    by :data:`TOP_RISE` of what is left to 1 over what is left of ``p``."""
    k = torch.tensor(list(knots), dtype=torch.float64)
    v = torch.tensor(list(values), dtype=torch.float64)
    p = p.double()
    out = torch.empty_like(p)
    idx = torch.searchsorted(k, p.clamp(float(k[0]), float(k[-1])), right=True).clamp(1, max(1, len(k) - 1))
    if len(k) == 1:
        out[:] = v[0]
    else:
        k0, k1, v0, v1 = k[idx - 1], k[idx], v[idx - 1], v[idx]
        t = ((p.clamp(float(k[0]), float(k[-1])) - k0) / (k1 - k0).clamp_min(1e-12)).clamp(0.0, 1.0)
        out = v0 + t * (v1 - v0)
    low = p < k[0]
    out[low] = p[low] * v[0] / k[0].clamp_min(1e-12)
    high = p > k[-1]
    out[high] = v[-1] + TOP_RISE * (1.0 - v[-1]) * (p[high] - k[-1]) / (1.0 - k[-1]).clamp_min(1e-12)
    return out


def isotonic_inverse(score: float, knots: Sequence[float], values: Sequence[float]) -> float:
    """The smallest probability that :func:`isotonic_apply` maps to ``score`` or more (above 1: none does)."""
    k, v = [float(a) for a in knots], [float(b) for b in values]
    if score <= 0.0:
        return 0.0
    if score <= v[0]:
        return score * k[0] / v[0]
    for j in range(len(k) - 1):
        if v[j] < score <= v[j + 1]:
            return k[j] + (score - v[j]) * (k[j + 1] - k[j]) / (v[j + 1] - v[j])
    rise = TOP_RISE * (1.0 - v[-1])
    if rise > 0.0 and k[-1] < 1.0:
        p = k[-1] + (score - v[-1]) * (1.0 - k[-1]) / rise
        if p <= 1.0:
            return p
    return 1.0 + 1e-6


def features(z: torch.Tensor, labels: torch.Tensor, stats: SceneStats, unknown: torch.Tensor | None = None,
             zv: torch.Tensor | None = None, zoom: torch.Tensor | None = None) -> torch.Tensor:
    """``[K, len(FEATURES)]`` float64 features of boxes with scan log-odds ``z [K]`` for phrases ``labels [K]``
    (``zv [K]``: their log-odds against the vocabulary too, ``zoom [K]``: in the zoom view; each ``z`` when not
    known, which is an upper bound: the zoom feature is capped at ``z``)."""
    labels = labels.long()
    z = z.double()
    s = stats.spread[labels]
    unk = torch.zeros(len(z), dtype=torch.float64) if unknown is None else unknown.double()[labels]
    v = z if zv is None else zv.double()
    zm = z if zoom is None else torch.minimum(zoom.double(), z)
    return torch.stack([z, (z - stats.centre[labels]) / s, (z - stats.top[labels]) / s, v, unk, zm], dim=1)


@dataclass(frozen=True)
class LogisticMap:
    """``P = sigmoid(sum_f weights[f] * x_f + bias)`` over named features (missing weights are 0)."""

    weights: Mapping[str, float]
    bias: float
    names: tuple[str, ...] = FEATURES

    def vector(self, names: Sequence[str] | None = None) -> torch.Tensor:
        """The weights over ``names`` (default: the map's own features), 0 for a feature the map does not read."""
        return torch.tensor([float(self.weights.get(n, 0.0)) for n in (self.names if names is None else names)],
                            dtype=torch.float64)

    def reads(self, name: str) -> bool:
        """Whether the map gives feature ``name`` a weight."""
        return abs(float(self.weights.get(name, 0.0))) > 0.0

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x.double() @ self.vector() + float(self.bias))

    def to_dict(self) -> dict:
        return {"features": list(self.names), "weights": {n: float(self.weights.get(n, 0.0)) for n in self.names},
                "bias": float(self.bias)}

    @classmethod
    def from_dict(cls, d: Mapping) -> LogisticMap:
        names = tuple(d.get("features") or FEATURES)
        w = {str(k): float(v) for k, v in dict(d["weights"]).items()}
        for k, v in w.items():
            if not math.isfinite(v):
                raise ValueError(f"weight {k} is not finite")
        if not math.isfinite(float(d["bias"])):
            raise ValueError("bias is not finite")
        return cls(w, float(d["bias"]), names)


@dataclass(frozen=True)
class Scorer:
    """A scene's statistics with the model's map: raw softmax probabilities -> reported values.

    ``model`` None: uncalibrated, the reported value is ``standout`` (spreads above the scene's
    typical region; ``min_score`` then still selects by ``sigmoid(standout - 2)``, documented)."""

    stats: SceneStats
    model: LogisticMap | None = None
    unknown: torch.Tensor | None = field(default=None)
    #: per query phrase ``(a, b)``: the phrase's own recalibration of the map's logit, ``a * logit + b``
    #: (fitted for the phrases a card was calibrated on; ``(1, 0)`` for any other phrase)
    recal: torch.Tensor | None = field(default=None)
    #: the card's entry the map comes from: "find" (the scan's features) or "find:zoom" (with the zoom view)
    task: str = "find"
    #: per query phrase, its non-decreasing step after the recalibration (``(knots, values)``, see
    #: :func:`isotonic_apply`), or None
    steps: tuple[tuple[tuple[float, ...], tuple[float, ...]] | None, ...] | None = None

    @property
    def calibrated(self) -> bool:
        return self.model is not None

    @property
    def active(self) -> bool:
        return self.stats.n_regions > 0

    @property
    def column(self) -> str:
        """The output column: ``score`` (a probability) or ``standout`` (uncalibrated)."""
        return "score" if self.calibrated else "standout"

    def with_unknown(self, flags: Sequence[bool]) -> Scorer:
        return Scorer(self.stats, self.model, torch.tensor([float(f) for f in flags], dtype=torch.float64),
                      self.recal, self.task, self.steps)

    def with_task(self, enc: Encoder, task: str, out_of_domain: bool = False) -> Scorer | None:
        """This scene's statistics with the card's map of ``task`` (e.g. ``"find:zoom"``), or None when the
        card has none; call :meth:`for_phrases` on it next."""
        model_map = enc.score_map(task, out_of_domain)
        return None if model_map is None else Scorer(self.stats, model_map, self.unknown, None, task)

    @property
    def zoom_view(self) -> bool:
        """Whether the map reads the zoom view (``find`` must then compute it)."""
        return self.model is not None and self.model.reads("zoom")

    def for_phrases(self, enc: Encoder, phrases: Sequence[str], out_of_domain: bool = False) -> Scorer:
        """This scorer for the query ``phrases``: their unknown-word flags and the card's per-phrase
        recalibration (``recal``), if any."""
        unknown = torch.tensor([float(bool(enc.unknown_words(p))) for p in phrases], dtype=torch.float64)
        card = enc.card
        recal, steps = None, None
        if card is not None and self.model is not None:
            recal = torch.tensor([card.phrase_recalibration(p, self.task, out_of_domain) for p in phrases],
                                 dtype=torch.float64).view(-1, 2)
            steps = tuple(card.phrase_step(p, self.task, out_of_domain) for p in phrases)
        return Scorer(self.stats, self.model, unknown, recal, self.task, steps)

    def features(self, raw: torch.Tensor, labels: torch.Tensor, zv: torch.Tensor | None = None,
                 zoom: torch.Tensor | None = None) -> torch.Tensor:
        return features(logodds(raw), labels, self.stats, self.unknown, zv, zoom)

    def score(self, raw: torch.Tensor, labels: torch.Tensor, zv: torch.Tensor | None = None,
              zoom: torch.Tensor | None = None) -> torch.Tensor:
        """Reported values (float64) of raw probabilities ``raw [K]`` of phrases ``labels [K]`` (``zv``: their
        log-odds against the vocabulary, ``zoom``: in the zoom view; without them, the upper bound of the
        score)."""
        x = self.features(raw, labels, zv, zoom)
        if self.model is None:
            return x[:, 1] if self.active else logodds(raw)
        logit = x @ self.model.vector(FEATURES) + float(self.model.bias)
        if self.recal is not None:
            r = self.recal[labels.long()]
            logit = r[:, 0] * logit + r[:, 1]
        p = torch.sigmoid(logit)
        if self.steps is not None:
            for i, step in enumerate(self.steps):
                sel = labels.long() == i
                if step is not None and bool(sel.any()):
                    p[sel] = isotonic_apply(p[sel], *step)
        return p

    def _coefficients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per phrase, ``(A, B)`` with ``logit(score) <= A z + B`` (``score`` = the calibrated probability, or
        sigmoid(standout - 2) when uncalibrated): exact when the vocabulary and zoom log-odds equal ``z``, an
        upper bound otherwise (they are never above ``z``; the map's weights on them are not negative)."""
        st = self.stats
        n = len(st.centre)
        unk = torch.zeros(n, dtype=torch.float64) if self.unknown is None else self.unknown
        if self.model is None:
            return 1.0 / st.spread, -st.centre / st.spread - 2.0
        w = dict(zip(self.model.names, (float(v) for v in self.model.vector())))
        wz, ws, wt = w.get("logodds", 0.0), w.get("standout", 0.0), w.get("above_top", 0.0)
        wv, wu = max(0.0, w.get("vocabulary", 0.0)), w.get("unknown", 0.0)
        a = wz + wv + max(0.0, w.get("zoom", 0.0)) + (ws + wt) / st.spread
        b = -ws * st.centre / st.spread - wt * st.top / st.spread + wu * unk + float(self.model.bias)
        if self.recal is not None:
            a, b = self.recal[:, 0] * a, self.recal[:, 0] * b + self.recal[:, 1]
        return a, b

    def raw_threshold(self, score: float) -> torch.Tensor:
        """``[N]``: per phrase, the raw probability whose score is ``score`` (``find`` scans with it)."""
        n = len(self.stats.centre)
        if score <= 0.0:
            return torch.zeros(n)
        if score >= 1.0:
            return torch.full((n,), 1.0 + 1e-6)  # nothing reaches 1
        a, b = self._coefficients()
        out = torch.empty(n, dtype=torch.float64)
        for i in range(n):
            step = self.steps[i] if self.steps is not None else None
            s = isotonic_inverse(score, *step) if step is not None else score  # before the phrase's step
            if s >= 1.0:
                out[i] = 1.0 + 1e-6
                continue
            if s <= 0.0:
                out[i] = 0.0
                continue
            g = math.log(s) - math.log1p(-s)
            if float(a[i]) > 1e-9:
                out[i] = torch.sigmoid((g - b[i]) / a[i])
            else:  # the score does not grow with z: all or nothing
                out[i] = 0.0 if float(b[i]) >= g else 1.0 + 1e-6
        return out.float()

    def as_dict(self, phrases: Sequence[str]) -> dict:
        """For run metadata: what the value is, the map, and each phrase's scene statistics."""
        st = self.stats
        return {
            "value": "probability that the box shows the phrase (model card calibration)" if self.calibrated
            else "uncalibrated: standout = (logodds - scene median) / scene lower spread",
            "map": self.model.to_dict() if self.model is not None else None,
            "n_regions": st.n_regions,
            "phrases": {p: {"median": round(float(c), 4), "spread": round(float(s), 4), "top": round(float(t), 4)}
                        for p, c, s, t in zip(phrases, st.centre, st.spread, st.top)} if self.active else {},
        }


def pick_windows(windows: Sequence[Window], n: int = CAL_TILES) -> list[Window]:
    """Up to ``n`` windows spread evenly over ``windows`` (row-major grid order: over the rows)."""
    if len(windows) <= n:
        return list(windows)
    idx = np.unique(np.linspace(0, len(windows) - 1, n).round().astype(np.int64))
    return [windows[int(i)] for i in idx]


#: the features of ``similar``'s map: the box's cosine similarity with the query, and how far it stands out
#: from the scene's typical region in spreads of the same sample (as ``standout`` for phrases)
SIMILAR_FEATURES: tuple[str, ...] = ("cosine", "standout")


@dataclass(frozen=True)
class SimilarScorer:
    """``similar``'s scene statistics (of the cosine similarity with the query) with the model's map."""

    stats: SceneStats
    model: LogisticMap | None = None

    @property
    def column(self) -> str:
        return "score" if self.model is not None else "similarity"

    def features(self, cos: torch.Tensor) -> torch.Tensor:
        c = cos.double()
        return torch.stack([c, (c - self.stats.centre[0]) / self.stats.spread[0]], dim=1)

    def score(self, cos: torch.Tensor) -> torch.Tensor:
        """The calibrated probability that a box is the same kind of thing as the examples (the cosine when
        uncalibrated)."""
        return self.model.probability(self.features(cos)) if self.model is not None else cos.double()

    def cosine_threshold(self, min_score: float) -> float:
        """The cosine similarity whose score is ``min_score`` (``similar`` scans with it)."""
        if self.model is None:
            return float(min_score)
        if min_score <= 0.0:
            return -1.0
        if min_score >= 1.0:
            return 1.0 + 1e-6
        g = math.log(min_score) - math.log1p(-min_score)
        w = self.model.vector()
        a = float(w[0]) + float(w[1]) / float(self.stats.spread[0])
        b = -float(w[1]) * float(self.stats.centre[0]) / float(self.stats.spread[0]) + float(self.model.bias)
        if a <= 1e-9:
            return -1.0 if b >= g else 1.0 + 1e-6
        return (g - b) / a


def sampled_regions(enc: Encoder, src: EmbeddingSource, windows: Sequence[Window], cancel: Cancel | None = None
                    ) -> Iterator[torch.Tensor]:
    """The normalised embeddings ``[K, D]`` of the valid multi-scale sliding windows of the sample tiles of
    ``windows`` (:func:`pick_windows`), one batch of tiles at a time: a scene's ordinary regions."""
    sample = pick_windows(windows)
    if not sample:
        return
    patch, size = enc.model.patch_size, enc.input_size
    grid = scoring.window_candidates(size, size, patch)
    for eb in src.embeddings(sample, dense=True, cancel=cancel):
        per_tile = [grid] * len(eb.tiles)
        valid = scoring.boxes_valid_fraction(eb.valid, per_tile) >= scoring.MIN_VALID_FRACTION
        assert eb.dense is not None  # the pass above asked for dense embeddings
        with torch.no_grad():
            reg = F.normalize(enc.model.pool_regions(eb.dense, per_tile).float(), dim=-1)
        yield reg[valid.to(reg.device)]


def measure_similar(enc: Encoder, src: EmbeddingSource, windows: Sequence[Window], query: torch.Tensor,
                    cancel: Cancel | None = None) -> SimilarScorer:
    """``similar``'s :class:`SimilarScorer`: the cosine of the scene's sampled sliding windows with ``query [D]``."""
    model_map = enc.score_map("similar", getattr(src, "out_of_domain", False))
    parts = [(reg @ query.float().to(reg.device)).double().cpu()[:, None]
             for reg in sampled_regions(enc, src, windows, cancel)]
    if not parts:
        return SimilarScorer(SceneStats.empty(1), model_map)
    return SimilarScorer(SceneStats.from_logodds(torch.cat(parts), min_spread=1e-3), model_map)


def measure(enc: Encoder, src: EmbeddingSource, windows: Sequence[Window], texts: torch.Tensor, n_phrases: int,
            cancel: Cancel | None = None) -> Scorer:
    """The scene's :class:`Scorer` (its statistics from the sliding windows of the sample tiles of
    ``windows``, :func:`pick_windows`; ``texts``: query phrases then competitors) with the model's map."""
    model_map = enc.score_map("find", getattr(src, "out_of_domain", False))
    parts = [logodds(scoring.phrase_probabilities(reg, texts, n_phrases, enc.logit_scale)).cpu()
             for reg in sampled_regions(enc, src, windows, cancel)]
    if not parts:
        return Scorer(SceneStats.empty(n_phrases), model_map)
    return Scorer(SceneStats.from_logodds(torch.cat(parts)), model_map)
