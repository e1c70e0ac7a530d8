"""Data-quality filter for prepared samples: rank image-caption pairs by a score, keep the best share.

The RS vision-language score model (arXiv 2503.00743) showed that training on the top 30 % of
generated image-text pairs, ranked by a learned quality score, beats training on all of them and
beats ranking by CLIP score. Its released weights cannot be downloaded on an offline machine, so
this module ships the baseline scorer, ``clip-score`` (:class:`ClipScore`: the cosine similarity
of each chip's image and brief caption under a reference model), and a control, ``random``
(:class:`RandomScore`: keeps a random share), behind a small interface that a learned scorer
plugs into:

* a scorer is any object with ``name`` and ``score(samples, root) -> np.ndarray`` (one float per
  sample; higher is better), see :class:`QualityScorer`;
* :func:`register_scorer` makes it available by name to ``geoalign prepare --quality-filter NAME``
  (its factory is called with ``model=`` the ``--quality-model`` value, ``device=`` and
  ``batch_size=``).

:func:`filter_dataset` applies a scorer to a prepared folder: it scores the training samples
(``samples.jsonl``; the held-out ``samples_val.jsonl`` is left alone), keeps the top ``keep``
share (ties: earlier sample first), rewrites ``samples.jsonl`` atomically, writes every score to
``quality.jsonl`` (``image``, ``score``, ``kept``) and records the run in ``dataset.json``
(``quality_filter``). The chips of dropped samples stay on disk (``quality.jsonl`` lists them).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import InputError

__all__ = ["ClipScore", "QualityScorer", "QualitySummary", "RandomScore", "SCORERS", "filter_dataset",
           "make_scorer", "register_scorer"]

QUALITY_FILE = "quality.jsonl"


class QualityScorer(Protocol):
    """What ``--quality-filter`` needs: a name and one score per sample (higher = better pair)."""

    name: str

    def score(self, samples: Sequence[dict], root: Path) -> np.ndarray: ...


SCORERS: dict[str, Callable[..., QualityScorer]] = {}


def register_scorer(name: str) -> Callable[[Callable[..., QualityScorer]], Callable[..., QualityScorer]]:
    """Class decorator: make a scorer factory available to ``--quality-filter NAME``."""

    def deco(factory: Callable[..., QualityScorer]) -> Callable[..., QualityScorer]:
        SCORERS[name] = factory
        return factory

    return deco


def make_scorer(name: str, model: str | None = None, device: str = "auto", batch_size: int = 32) -> QualityScorer:
    if name not in SCORERS:
        raise InputError(f"unknown quality filter {name!r} (known: {', '.join(sorted(SCORERS))})",
                         param="quality_filter")
    return SCORERS[name](model=model, device=device, batch_size=batch_size)


@register_scorer("clip-score")
class ClipScore:
    """Cosine similarity of each chip's image and its brief caption under a reference model
    (default: the default model; ``geoalign finetune`` passes the model it fine-tunes)."""

    name = "clip-score"

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 32):
        from ..defaults import DEFAULT_MODEL
        from ..zoo import load_model

        self.model_name = str(model or DEFAULT_MODEL)
        self.batch_size = int(batch_size)
        self.model = load_model(self.model_name, device=device).eval()  # a bad name fails before any work

    def score(self, samples: Sequence[dict], root: Path) -> np.ndarray:
        import torch

        from ..evaluation.common import encode_image_batches, encode_texts

        with torch.inference_mode():
            img = encode_image_batches(self.model, [root / s["image"] for s in samples], self.batch_size,
                                       progress=False)
            txt = encode_texts(self.model, [s["caption"] for s in samples], self.batch_size)
        return (img * txt.to(img.device)).sum(dim=-1).cpu().numpy().astype(np.float64)


@register_scorer("random")
class RandomScore:
    """A control, not a filter: uniform random scores (seeded by the sample's image path), so that
    ``--keep F`` keeps a random share; what a real scorer must beat at the same data size."""

    name = "random"

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 32):
        self.model_name = None

    def score(self, samples: Sequence[dict], root: Path) -> np.ndarray:
        import zlib

        return np.array([np.random.default_rng(zlib.crc32(s["image"].encode("utf-8"))).random() for s in samples])


@dataclass
class QualitySummary:
    scorer: str
    model: str | None
    keep: float
    n_before: int
    n_after: int
    threshold: float | None  # the lowest kept score

    def line(self) -> str:
        cut = "" if self.threshold is None else f", scores >= {self.threshold:.4f}"
        return (f"quality filter {self.scorer}: kept {self.n_after} of {self.n_before} training samples "
                f"(top {self.keep:g}{cut})")


def filter_dataset(folder: str | os.PathLike, scorer: QualityScorer, keep: float) -> QualitySummary:
    """Keep the top ``keep`` share of ``folder``'s training samples by ``scorer`` (see the module docstring)."""
    folder = Path(folder)
    if not 0.0 < float(keep) <= 1.0:
        raise InputError(f"keep must be in (0, 1]; got {keep}", param="keep")
    path = folder / "samples.jsonl"
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    samples = [json.loads(ln) for ln in lines]
    n = len(samples)
    scores = np.asarray(scorer.score(samples, folder), dtype=np.float64).reshape(-1) if n else np.zeros(0)
    if len(scores) != n or not np.all(np.isfinite(scores)):
        raise InputError(f"quality scorer {scorer.name!r} gave {len(scores)} finite scores for {n} samples")
    n_keep = min(n, max(1, math.ceil(float(keep) * n))) if n else 0
    order = np.argsort(-scores, kind="stable")  # best first, ties in sample order
    kept = np.zeros(n, dtype=bool)
    kept[order[:n_keep]] = True
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(ln + "\n" for ln, k in zip(lines, kept) if k), encoding="utf-8")
    os.replace(tmp, path)
    (folder / QUALITY_FILE).write_text("".join(
        json.dumps({"image": s["image"], "score": round(float(v), 6), "kept": bool(k)}) + "\n"
        for s, v, k in zip(samples, scores, kept)), encoding="utf-8")
    summary = QualitySummary(scorer.name, getattr(scorer, "model_name", None), float(keep), n, n_keep,
                             float(scores[kept].min()) if n_keep else None)
    meta_path = folder / "dataset.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["quality_filter"] = asdict(summary) | {"scores_file": QUALITY_FILE}
        tmp = meta_path.with_name(f".{meta_path.name}.tmp")
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, meta_path)
    return summary
