"""Training objectives, by name (``objective:`` in a training config): what a training step optimises.

As open_clip's ``create_loss`` builds the loss its arguments name, :func:`create_objective` builds the
objective a config names from :data:`OBJECTIVES`. The training loop (:mod:`.engine`) does not know
which one it runs; it uses an objective's four parts:

* :attr:`Objective.batch_needs`: the texts the collate function tokenises (``Collate`` keywords);
* :meth:`Objective.embed_step`: the module DDP wraps (every embedding, one forward per micro-batch);
* calling it, ``objective(emb, batch, autocast)``: ``(loss, {term: detached value})`` of a micro-batch;
* :meth:`Objective.after_step`: after each optimiser step (an EMA teacher follows the student).

* ``geoalign``: GeoAlignCLIP's Eq. 5 with the config's ``lambdas`` (:mod:`.objective`);
* ``farslip``: FarSLIP's global + patch-to-patch + region-category objective (:mod:`.farslip`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any

import torch

from geoalign_core.model import GeoAlignCLIP

from .config import TrainConfig
from .farslip import Teacher, farslip_objective
from .objective import EmbedStep, geoalign_objective

__all__ = ["OBJECTIVES", "FarSLIPObjective", "GeoAlignObjective", "Objective", "create_objective"]


class Objective(ABC):
    """What a training step optimises (see the module docstring); subclasses fill in the parts."""

    #: the texts the collate function must tokenise (``need_detail``, ``need_region_text``, ``need_candidates``)
    batch_needs: dict[str, bool] = {}

    def __init__(self, model: GeoAlignCLIP, cfg: TrainConfig) -> None:
        self.model = model
        self.cfg = cfg

    @abstractmethod
    def embed_step(self, crop_size: int) -> EmbedStep:
        """The module DDP wraps: every embedding this objective needs, in one forward."""

    @abstractmethod
    def __call__(self, emb: dict[str, torch.Tensor], batch: dict, autocast: AbstractContextManager
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(loss to backpropagate, {term: detached value})`` of a micro-batch."""

    def after_step(self) -> None:  # noqa: B027 -- optional: most objectives have nothing to do here
        """After each optimiser step (nothing by default)."""


class GeoAlignObjective(Objective):
    """GeoAlignCLIP's Eq. 5: the five losses weighted by the config's ``lambdas`` (a weight 0 skips a term)."""

    def __init__(self, model: GeoAlignCLIP, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.lambdas = tuple(cfg.lambdas_resolved)
        _, l2, l3, _, l5 = self.lambdas
        self.batch_needs = {"need_detail": l5 > 0, "need_region_text": l2 > 0, "need_candidates": l3 > 0}

    def embed_step(self, crop_size: int) -> EmbedStep:
        return EmbedStep(self.model, self.lambdas, crop_size=crop_size,
                         vic_regions_per_image=self.cfg.vic_regions_per_image, vic_stop_grad=self.cfg.vic_stop_grad)

    def __call__(self, emb: dict[str, torch.Tensor], batch: dict, autocast: AbstractContextManager
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return geoalign_objective(emb, batch, self.model.logit_scale, self.lambdas)


class FarSLIPObjective(Objective):
    """FarSLIP's objective (:mod:`.farslip`): ``farslip_weights`` over global, patch-to-patch and
    region-category terms, the patch-to-patch targets from a teacher (``farslip_teacher``)."""

    batch_needs = {"need_detail": False, "need_region_text": True, "need_candidates": False}

    def __init__(self, model: GeoAlignCLIP, cfg: TrainConfig) -> None:
        super().__init__(model, cfg)
        self.weights = tuple(cfg.farslip_weights or (1.0, 1.0, 1.0))
        self.teacher = Teacher(model, cfg.farslip_teacher, cfg.farslip_momentum)

    def embed_step(self, crop_size: int) -> EmbedStep:
        # the global image and the region embeddings, and the crop views re-encoded at full size ([CLS] kept)
        return EmbedStep(self.model, (1.0, 1.0, 0.0, 0.0, 0.0), crop_size=crop_size,
                         vic_regions_per_image=self.cfg.vic_regions_per_image, vic_stop_grad=self.cfg.vic_stop_grad,
                         crop_views=True)

    def __call__(self, emb: dict[str, torch.Tensor], batch: dict, autocast: AbstractContextManager
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast:
            target = self.teacher.targets(emb["crop_images"])
        return farslip_objective(emb, batch, self.model.logit_scale, self.weights, target)

    def after_step(self) -> None:
        self.teacher.update(self.model)


#: every objective, by the name a config gives it
OBJECTIVES: dict[str, type[Objective]] = {"geoalign": GeoAlignObjective, "farslip": FarSLIPObjective}


def create_objective(cfg: TrainConfig, model: GeoAlignCLIP, **kwargs: Any) -> Objective:
    """The objective ``cfg.objective`` names, for ``model``."""
    return OBJECTIVES[cfg.objective](model, cfg, **kwargs)
