"""Scene-relative scores for ``find``: how far a box stands out from the scene's ordinary regions.

A raw region-phrase score (:func:`~geoalign_core.inference.scoring.phrase_probabilities`) is a
softmax over the query and background phrases. Its level depends on the model, the phrase and
the imagery: one model gives 0.6 to boxes of plain grass for "building", another 0.05 to real
buildings. A threshold on it means something different for every model and scene.

``find`` therefore reports a **calibrated** score. It samples the scene's ordinary regions
(the multi-scale sliding windows of :func:`~geoalign_core.inference.scoring.window_candidates`
in up to :data:`CAL_TILES` tiles spread evenly over the searched windows) and measures, per
phrase, the distribution of the raw score's log-odds ``z = log(p / (1 - p))`` over them: its
median ``m`` and its lower spread ``s = m - q16`` (the 15.9th percentile, one standard
deviation below the median for a normal distribution; the lower half is used because the
objects sought sit in the upper tail). A box of raw score ``p`` then scores

    d = (z - m) / s                              (spreads above the typical region)
    score = sigmoid(d - OFFSET)                  for d <= 2 OFFSET (OFFSET = 2)
    score = sigmoid(OFFSET + log(1 + d - 2 OFFSET))   beyond (the far tail, compressed)

* a typical region of the scene (``z = m``) scores 0.12;
* a region 2 spreads above the typical one (1 in 44 of a normal background) scores 0.5;
  4 spreads: 0.88; beyond, the scale grows with the logarithm of the distance (10 spreads:
  0.98, 40 spreads: 0.996), so that the objects of a confident model do not all read 1.000
  and their scores still tell them apart;
* the default ``--min-score 0.3`` keeps boxes at least 1.15 spreads above the scene's median
  region (the top 12.5 % of a normal background: the sliding windows of every scale that
  touch an object count as background in this sample, so the bar is set lower than a
  pure-background sample would ask for).

The transform is increasing per phrase, so it changes no ranking within a phrase: ``find``
scans with the raw threshold that corresponds to ``--min-score`` and converts the kept
scores at the end. It makes scores comparable across models and scenes, but it is relative
to the scene: in a scene where half of all regions are the object, the objects score lower
than in one where they are rare, and the best box of a scene without the object still
stands out a little by chance (the top of thousands of regions lies ~3.5 spreads up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from . import scoring
from .encoder import Cancel, Encoder
from .source import EmbeddingSource

__all__ = ["CAL_TILES", "MIN_SPREAD", "OFFSET", "Calibration", "measure", "pick_windows"]

CAL_TILES = 16  #: tiles sampled per scene (evenly spread over the searched windows)
OFFSET = 2.0  #: spreads above the scene's median region that score 0.5
MIN_SPREAD = 0.1  #: floor of the spread, in log-odds (a flat scene does not blow scores up)
_EPS = 1e-12


def _compress(d: torch.Tensor) -> torch.Tensor:
    """``d - OFFSET`` up to ``2 OFFSET`` spreads, then ``OFFSET + log(1 + d - 2 OFFSET)``: continuous,
    with the same slope at the joint, increasing."""
    far = d > 2 * OFFSET
    return torch.where(far, OFFSET + torch.log1p((d - 2 * OFFSET).clamp_min(0.0)), d - OFFSET)


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.double().clamp(_EPS, 1.0 - _EPS)
    return torch.log(p) - torch.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """Per phrase: the median and lower spread of the scene's regions' raw log-odds.

    ``centre`` and ``spread`` are ``[N]`` (one per query phrase); ``n_regions`` the sample size
    (0: no valid region was sampled; scores then stay raw).
    """

    centre: torch.Tensor
    spread: torch.Tensor
    n_regions: int

    @classmethod
    def identity(cls, n_phrases: int) -> Calibration:
        """No sample (an empty or all-nodata search area): raw scores are kept."""
        return cls(torch.zeros(n_phrases, dtype=torch.float64), torch.ones(n_phrases, dtype=torch.float64), 0)

    @classmethod
    def from_logits(cls, z: torch.Tensor) -> Calibration:
        """From ``[K, N]`` raw log-odds of K sampled regions."""
        if z.shape[0] == 0:
            return cls.identity(z.shape[1])
        z = z.double()
        centre = z.median(dim=0).values
        low = torch.quantile(z, 0.15866, dim=0)
        return cls(centre, (centre - low).clamp_min(MIN_SPREAD), int(z.shape[0]))

    @property
    def active(self) -> bool:
        return self.n_regions > 0

    def score(self, raw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Calibrated scores (float64) of raw probabilities ``raw [K]`` of phrases ``labels [K]``."""
        if not self.active:
            return raw.double()
        z = _logit(raw)
        labels = labels.long()
        d = (z - self.centre[labels]) / self.spread[labels]
        return torch.sigmoid(_compress(d))  # float64

    def raw_threshold(self, score: float) -> torch.Tensor:
        """``[N]``: per phrase, the raw probability whose calibrated score is ``score``."""
        n = len(self.centre)
        if not self.active:
            return torch.full((n,), float(score))
        if score <= 0.0:
            return torch.zeros(n)
        if score >= 1.0:
            return torch.full((n,), 1.0 + 1e-6)  # nothing reaches 1
        g = float(np.log(score) - np.log1p(-score))
        d = g + OFFSET if g <= OFFSET else 2 * OFFSET + float(np.expm1(g - OFFSET))  # the inverse of _compress
        z = self.centre + self.spread * d
        return torch.sigmoid(z).float()

    def as_dict(self, phrases: Sequence[str]) -> dict:
        """For run metadata: the formula and each phrase's median / spread (log-odds)."""
        return {
            "formula": f"sigmoid(d - {OFFSET:g}) for d = (logit(p) - median) / spread <= {2 * OFFSET:g}, "
                       f"else sigmoid({OFFSET:g} + log(1 + d - {2 * OFFSET:g}))",
            "n_regions": self.n_regions,
            "phrases": {p: {"median": round(float(c), 4), "spread": round(float(s), 4)}
                        for p, c, s in zip(phrases, self.centre, self.spread)} if self.active else {},
        }


def pick_windows(windows: Sequence[Window], n: int = CAL_TILES) -> list[Window]:
    """Up to ``n`` windows spread evenly over ``windows`` (row-major grid order: over the rows)."""
    if len(windows) <= n:
        return list(windows)
    idx = np.unique(np.linspace(0, len(windows) - 1, n).round().astype(np.int64))
    return [windows[int(i)] for i in idx]


def measure(enc: Encoder, src: EmbeddingSource, windows: Sequence[Window], texts: torch.Tensor, n_phrases: int,
            cancel: Cancel | None = None) -> Calibration:
    """The scene's calibration from the sliding windows of the sample tiles of ``windows``
    (:func:`pick_windows`; ``texts``: query phrases then background phrases)."""
    sample = pick_windows(windows)
    if not sample:
        return Calibration.identity(n_phrases)
    patch, size = enc.model.patch_size, enc.input_size
    grid = scoring.window_candidates(size, size, patch)
    from .find import MIN_VALID_FRACTION

    parts: list[torch.Tensor] = []
    for eb in src.embeddings(sample, dense=True, cancel=cancel):
        per_tile = [grid] * len(eb.tiles)
        valid = scoring.boxes_valid_fraction(eb.valid, per_tile) >= MIN_VALID_FRACTION
        with torch.no_grad():
            reg = F.normalize(enc.model.pool_regions(eb.dense, per_tile).float(), dim=-1)
        logits = float(enc.logit_scale) * reg @ texts.float().T  # [K, N + B]
        z = torch.stack([logits[:, p] - torch.logsumexp(torch.cat([logits[:, :p], logits[:, p + 1:]], dim=1), dim=1)
                         for p in range(n_phrases)], dim=1)
        parts.append(z[valid.to(z.device)].cpu())
    if not parts:
        return Calibration.identity(n_phrases)
    return Calibration.from_logits(torch.cat(parts))
