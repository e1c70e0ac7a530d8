"""Metric code, independent of any model: top-k accuracy, recall@k, hard-negative accuracy.

All functions take similarity scores (higher = better match) as tensors and return floats in
[0, 1]. Ties are broken pessimistically (a wrong candidate with the same score as the right one
counts as ranked above it), so a constant model never looks better than chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "hard_negative_accuracy",
    "per_class_accuracy",
    "rank_of_targets",
    "recall_at_k",
    "topk_accuracy",
]


def rank_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's target column among the row's scores (ties count against it)."""
    scores = scores.float()
    t = scores.gather(1, targets.long().view(-1, 1))
    return ((scores >= t).sum(dim=1) - 1).long()


def topk_accuracy(scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose target is among the ``k`` best scores, for each ``k``.

    ``k`` larger than the number of classes is clipped to it (so top-5 over 3 classes is 1.0).
    """
    if scores.dim() != 2 or scores.shape[0] != targets.shape[0]:
        raise ValueError(f"scores must be [N, C] with one target per row, got {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        return {k: float("nan") for k in ks}
    rank = rank_of_targets(scores, targets)
    return {k: float((rank < min(k, scores.shape[1])).double().mean()) for k in ks}


def per_class_accuracy(
    scores: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str]
) -> dict[str, dict[str, float | int]]:
    """Top-1 accuracy and count per target class: ``{name: {"n": int, "top1": float}}``."""
    rank = rank_of_targets(scores, targets)
    out: dict[str, dict[str, float | int]] = {}
    for c, name in enumerate(class_names):
        sel = targets == c
        n = int(sel.sum())
        if n:
            out[name] = {"n": n, "top1": float((rank[sel] == 0).double().mean())}
    return out


def recall_at_k(
    sim: torch.Tensor, positives: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, dict[int, float]]:
    """Retrieval recall@k in both directions.

    Args:
        sim: ``[N_images, N_texts]`` similarities.
        positives: bool ``[N_images, N_texts]``: which texts are correct for which image.
            Every image and every text must have at least one positive.

    Returns ``{"image_to_text": {k: R@k}, "text_to_image": {k: R@k}}``: the fraction of
    queries with at least one positive among the ``k`` best-scored candidates.
    """
    if sim.shape != positives.shape:
        raise ValueError(f"sim {tuple(sim.shape)} and positives {tuple(positives.shape)} differ")
    pos = positives.bool()
    if not pos.any(dim=1).all() or not pos.any(dim=0).all():
        raise ValueError("every image and every text needs at least one positive")
    sim = sim.float()

    def best_rank(s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        # rank of the best-scored positive; ties with negatives count against it
        best_pos = torch.where(p, s, torch.full_like(s, float("-inf"))).max(dim=1, keepdim=True).values
        return ((s >= best_pos) & ~p).sum(dim=1)

    r_i2t = best_rank(sim, pos)
    r_t2i = best_rank(sim.t(), pos.t())
    return {
        "image_to_text": {k: float((r_i2t < k).double().mean()) for k in ks},
        "text_to_image": {k: float((r_t2i < k).double().mean()) for k in ks},
    }


def hard_negative_accuracy(
    positive: torch.Tensor, negatives: Sequence[torch.Tensor]
) -> float:
    """Fraction of items whose positive score is strictly above ALL of its negatives' scores.

    Args:
        positive: ``[N]`` score of each item's positive text.
        negatives: one 1-D tensor of negative scores per item (items without negatives are skipped).
    """
    wins, n = 0, 0
    for p, negs in zip(positive.tolist(), negatives):
        if negs.numel() == 0:
            continue
        n += 1
        wins += int(p > float(negs.max()))
    return wins / n if n else float("nan")
