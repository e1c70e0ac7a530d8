"""Optimiser and schedule: AdamW parameter groups, linear warm-up then cosine, frozen towers."""

from __future__ import annotations

import math

import torch

from geoalign_core.model import GeoAlignCLIP

__all__ = ["WarmupCosine", "lock_towers", "param_groups"]


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no decay for tensors with < 2 dims, norms, biases and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio``."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0):
        self.warmup, self.total, self.min_ratio = int(warmup), int(total), float(min_ratio)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lock_towers(model: GeoAlignCLIP, lock_image: bool, lock_text: bool) -> None:
    for name, p in model.clip.named_parameters():
        if name == "logit_scale" or name == "logit_bias":
            continue
        is_image = name.startswith("visual.")
        if (is_image and lock_image) or (not is_image and lock_text):
            p.requires_grad_(False)


# ---------------------------------------------------------------------- checkpoints
