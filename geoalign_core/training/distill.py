"""Feature distillation toward the frozen starting model: a forgetting control for fine-tuning.

``distill: w`` in a training config adds ``w x mean(1 - cos(student, teacher))`` over the step's
global image embeddings, RoI-region embeddings and text embeddings, the teacher being a frozen
copy of the model as training starts (the weights ``model:`` names). It keeps the towers near
what they computed before, where plain fine-tuning on a few hundred chips of one kind of
imagery drifts away (docs/finetune.md measures it against weight interpolation, WiSE-FT).
The term is part of the logged total ``loss``; it has no column of its own.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from geoalign_core.model import GeoAlignCLIP

from .objective import EmbedStep

__all__ = ["Distiller", "frozen_copy"]

KEYS = ("img", "reg", "text")  #: the embeddings pulled toward the teacher's


def frozen_copy(model: GeoAlignCLIP) -> GeoAlignCLIP:
    """A copy of ``model`` in eval mode without gradients: a teacher that stays the start."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class Distiller(nn.Module):
    """``Distiller(model, weight)(emb, batch)`` -> the distillation term of one micro-batch."""

    def __init__(self, model: GeoAlignCLIP, weight: float, need_regions: bool):
        super().__init__()
        teacher = frozen_copy(model)
        # the same forward as the student's, without the crop view
        self.step = EmbedStep(teacher, (1.0, 1.0 if need_regions else 0.0, 0.0, 0.0, 0.0))
        self.weight = float(weight)

    def train(self, mode: bool = True) -> Distiller:  # the teacher stays in eval mode
        return self

    def forward(self, emb: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        with torch.no_grad():
            target = self.step(batch)
        terms = [(1.0 - (emb[k].float() * target[k].float()).sum(dim=-1)).mean()
                 for k in KEYS if k in emb and k in target and emb[k].shape[0] > 0]
        if not terms:
            return emb["img"].new_zeros(())
        return self.weight * torch.stack(terms).sum()
