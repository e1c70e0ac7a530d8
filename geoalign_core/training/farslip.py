"""FarSLIP's training objective (arXiv 2511.14901), an alternative to GeoAlignCLIP's Eq. 5.

``objective: farslip`` in a stage II config trains with

    w_g x L_global + w_d x L_p2p + w_l x L_rca        (farslip_weights: [w_g, w_d, w_l], default 1, 1, 1)

* ``L_global``: Eq. 1, image vs brief caption (:func:`geoalign_core.losses.global_contrastive`);
* ``L_p2p``, patch-to-patch self-distillation (:func:`geoalign_core.losses.patch_to_patch`): each
  region's RoIAlign-pooled patch features in the full image are pulled toward the mean-pooled
  patch features of the same box, cropped and re-encoded at the full input size by a teacher:
  ``farslip_teacher: ema`` (default; an exponential moving average of the student, momentum
  ``farslip_momentum``, 0.99), ``frozen`` (the starting model) or ``self`` (the student itself,
  without gradient);
* ``L_rca``, region-category alignment (:func:`geoalign_core.losses.multi_positive_contrastive`):
  the crop's [CLS] embedding against its region's text (its class prompt or phrase), regions of
  the same class being positives of each other.

The defaults are those of FarSLIP's released training code (all weights 1, EMA teacher, momentum
0.99). Up to ``vic_regions_per_image`` regions per image are cropped (the crops are what costs).
FarSLIP's localisation-friendly attention in the last block is not reproduced: ``dense_mode``
keeps its own meaning. ``lambdas`` are not used under this objective.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from geoalign_core.losses import global_contrastive, multi_positive_contrastive, patch_to_patch, rank_share
from geoalign_core.model import GeoAlignCLIP

from .distill import frozen_copy

__all__ = ["TEACHERS", "Teacher", "farslip_objective"]

TEACHERS = ("ema", "frozen", "self")


class Teacher:
    """The target of ``L_p2p``: mean-pooled, normalised patch features of crops (already preprocessed,
    at the model's input size). ``update(student)`` after each optimiser step (EMA only)."""

    def __init__(self, model: GeoAlignCLIP, kind: str = "ema", momentum: float = 0.99):
        if kind not in TEACHERS:
            raise ValueError(f"teacher must be one of {TEACHERS}, got {kind!r}")
        self.kind = kind
        self.momentum = float(momentum)
        self.model = model if kind == "self" else frozen_copy(model)  # ema: a copy updated in update()

    @torch.no_grad()
    def targets(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.model.embed_dim))
        _, dense = self.model.forward_visual(crops, dense=True)
        return F.normalize(dense.float().mean(dim=(2, 3)), dim=-1)

    @torch.no_grad()
    def update(self, student: GeoAlignCLIP) -> None:
        if self.kind != "ema":
            return
        m = self.momentum
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.mul_(m).add_(s.detach().to(t.dtype), alpha=1.0 - m)


def farslip_objective(emb: dict[str, torch.Tensor], batch: dict, logit_scale: torch.Tensor,
                      weights: Sequence[float], target: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``w_g L_global + w_d L_p2p + w_l L_rca`` on a micro-batch -> (loss, {term: detached value}).

    ``emb``: the student's :class:`~geoalign_core.training.objective.EmbedStep` outputs in FarSLIP mode
    (``img``, ``reg``, ``text``, ``crop_cls``, ``crop_keep``); ``target``: the teacher's pooled
    crop features of the ``crop_keep`` regions.
    """
    w_g, w_d, w_l = (float(w) for w in weights)
    text = emb["text"].float()
    dev = text.device
    terms: dict[str, torch.Tensor] = {}
    keep = emb["crop_keep"]
    if w_g:
        terms["global"] = global_contrastive(emb["img"].float(), text[batch["brief_idx"].to(dev)], logit_scale)
    if w_d:
        reg = emb["reg"].float()[keep]
        terms["p2p"] = patch_to_patch(reg, target.to(reg.device)) * rank_share(reg.shape[0], dev)
    if w_l:
        phr = text[batch["region_idx"].to(dev)][keep]
        terms["rca"] = multi_positive_contrastive(emb["crop_cls"].float(), phr, batch["region_class"].to(dev)[keep],
                                                  logit_scale.float())
    weight = {"global": w_g, "p2p": w_d, "rca": w_l}
    total = sum(weight[k] * v for k, v in terms.items()) if terms else emb["img"].sum() * 0.0
    return total, {k: v.detach() for k, v in terms.items()}
