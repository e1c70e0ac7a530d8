"""The five GeoAlignCLIP losses (paper Eq. 1-5) and their weighted sum.

All inputs are L2-normalised embeddings; ``logit_scale`` is 1/tau. Each loss returns a
scalar tensor.

Under ``torch.distributed`` the contrastive terms (Eq. 1, Eq. 2 and both halves of HTC)
gather embeddings from every rank *with gradient* (``torch.distributed.nn.all_gather``),
so negatives span the global batch, as open_clip's ``ClipLoss(gather_with_grad=True)``
does. Region counts may differ between ranks: they are padded for the collective and
unpadded afterwards. Eq. 3 (each region against its own candidates) and Eq. 4 (a
per-region distance) need no gathering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` ([n_r, ...], n_r may differ per rank) from all ranks, keeping gradients.

    Outside torch.distributed (or with one process) this returns ``x`` itself.
    """
    if not _distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    sizes_i = _rank_sizes(x)
    m = max(sizes_i)
    if m == 0:
        return x
    pad = x.new_zeros((m - x.shape[0], *x.shape[1:]))
    parts = all_gather(torch.cat([x, pad], dim=0))
    return torch.cat([p[:s] for p, s in zip(parts, sizes_i)], dim=0)


def _rank_sizes(x: torch.Tensor) -> list[int]:
    """The first-dimension size of ``x`` on every rank (a collective)."""
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, n)
    return [int(s.item()) for s in sizes]


def _symmetric_infonce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b``; all other rows are negatives."""
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a_all, b_all = gather_with_grad(a), gather_with_grad(b)
    if a_all.shape[0] == 0:
        return (a.sum() + b.sum()) * 0.0
    logits = logit_scale * a_all @ b_all.t()
    labels = torch.arange(a_all.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def global_contrastive(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Eq. 1: symmetric InfoNCE between global image embeddings and their captions (``[N, D]``)."""
    return _symmetric_infonce(img, txt, logit_scale)


def region_phrase(reg: torch.Tensor, phr: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Eq. 2 (RPA): symmetric InfoNCE over the K regions and their phrases (``[K, D]``)."""
    return _symmetric_infonce(reg, phr, logit_scale)


def hard_negative(reg: torch.Tensor, cands: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Eq. 3 (HNA): each region ``[K, D]`` against its candidates ``[K, Q, D]`` (index 0 = positive)."""
    if cands.dim() != 3 or cands.shape[0] != reg.shape[0]:
        raise ValueError(f"cands must be [K, Q, D] with K={reg.shape[0]}, got {tuple(cands.shape)}")
    if reg.shape[0] == 0:
        return (reg.sum() + cands.sum()) * 0.0
    logits = logit_scale * torch.einsum("kd,kqd->kq", reg, cands)
    labels = torch.zeros(reg.shape[0], dtype=torch.long, device=reg.device)
    return F.cross_entropy(logits, labels)


def visual_intra_consistency(reg: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
    """Eq. 4 (VIC): mean over regions of 1 - cos(RoI view, crop view)."""
    if reg.shape != crop.shape:
        raise ValueError(f"RoI and crop embeddings differ in shape: {tuple(reg.shape)} vs {tuple(crop.shape)}")
    if reg.shape[0] == 0:
        return (reg.sum() + crop.sum()) * 0.0
    return (1.0 - (reg * crop).sum(dim=-1)).mean()


def hierarchical_text(
    img: torch.Tensor, brief: torch.Tensor, detail: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """HTC: Eq. 1 for (image, brief caption) plus Eq. 1 for (image, detailed caption)."""
    return global_contrastive(img, brief, logit_scale) + global_contrastive(img, detail, logit_scale)


def patch_to_patch(reg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """FarSLIP's patch-to-patch self-distillation: mean over regions of 1 - cos(the region's
    RoIAlign-pooled patch features in the full image, the mean-pooled patch features of the same
    box cropped and re-encoded at full input size by the teacher). Inputs ``[K, D]``, any norm."""
    if reg.shape != target.shape:
        raise ValueError(f"region and target embeddings differ in shape: {tuple(reg.shape)} vs {tuple(target.shape)}")
    if reg.shape[0] == 0:
        return reg.sum() * 0.0
    return (1.0 - F.cosine_similarity(reg, target.detach(), dim=-1)).mean()


def _gather_labels(x: torch.Tensor) -> torch.Tensor:
    """:func:`gather_with_grad` for integer labels (no gradient)."""
    if not _distributed():
        return x
    sizes_i = _rank_sizes(x)
    padded = torch.cat([x, x.new_zeros(max(sizes_i) - x.shape[0])])
    parts = [torch.zeros_like(padded) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_i)])


def multi_positive_contrastive(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor,
                               logit_scale: torch.Tensor) -> torch.Tensor:
    """FarSLIP's region-category alignment: InfoNCE between the crops' [CLS] embeddings ``a [K, D]``
    and their category texts ``b [K, D]`` where every pair of the same category (``labels [K]``)
    is a positive: each row's loss is the mean over its positives of ``-log softmax``, both
    directions averaged (with all-distinct labels it is Eq. 1's symmetric InfoNCE)."""
    if a.shape != b.shape or labels.shape[0] != a.shape[0]:
        raise ValueError(f"a, b must be [K, D] and labels [K]; got {tuple(a.shape)}, {tuple(b.shape)}, "
                         f"{tuple(labels.shape)}")
    a_all, b_all, lab = gather_with_grad(a), gather_with_grad(b), _gather_labels(labels)
    if a_all.shape[0] == 0:
        return (a.sum() + b.sum()) * 0.0
    pos = (lab[:, None] == lab[None, :]).float()
    logits = logit_scale * a_all @ b_all.t()

    def one_way(lg: torch.Tensor) -> torch.Tensor:
        logp = lg.log_softmax(dim=1)
        return (-(logp * pos).sum(dim=1) / pos.sum(dim=1)).mean()

    return 0.5 * (one_way(logits) + one_way(logits.t()))


LOSS_NAMES = ("global", "rpa", "hna", "vic", "htc")
#: terms logged beside Eq. 1-5: FarSLIP's (``objective: farslip``) and the distillation toward the start
EXTRA_TERMS = ("p2p", "rca", "distill")
LOGGED_TERMS = LOSS_NAMES + EXTRA_TERMS
STAGE1_LAMBDAS = (1.0, 0.0, 0.0, 0.0, 0.0)


def rank_share(n_local: int, device: torch.device) -> float:
    """The factor that makes a per-item mean on this rank average, under DDP's gradient
    averaging, to the mean over ALL items of the global batch: ``n_local * world / n_global``
    (1 outside torch.distributed). Ranks may hold different numbers of items."""
    if not _distributed():
        return 1.0
    t = torch.tensor([n_local], dtype=torch.long, device=device)
    dist.all_reduce(t)
    n_all = int(t.item())
    return n_local * dist.get_world_size() / n_all if n_all else 0.0


class GeoAlignLoss(nn.Module):
    """Eq. 5: ``l1*L_g + l2*L_RPA + l3*L_HNA + l4*L_VIC + l5*L_HTC`` -- the combiner training runs.

    Stage I uses ``lambdas=(1, 0, 0, 0, 0)``. Terms whose weight is 0 are not computed
    (and need no inputs). ``forward`` returns ``(total, {name: value})`` where the dict
    holds the detached unweighted terms that were computed (this rank's share under DDP).

    Under torch.distributed the contrastive terms (Eq. 1, Eq. 2, HTC) gather from every rank,
    so each rank computes the global-batch value; the per-region means (Eq. 3, Eq. 4) are local
    and scaled by :func:`rank_share`, so that DDP's gradient averaging yields the gradient of
    the mean over all regions of the global batch -- the same loss and gradient as one process
    on the joined batch.
    """

    def __init__(self, lambdas: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0)):
        super().__init__()
        lambdas = tuple(float(x) for x in lambdas)
        if len(lambdas) != 5:
            raise ValueError(f"lambdas must hold five weights (l1..l5), got {len(lambdas)}")
        self.lambdas = lambdas

    def forward(
        self,
        logit_scale: torch.Tensor,
        img: torch.Tensor,
        brief: torch.Tensor | None = None,
        detail: torch.Tensor | None = None,
        reg: torch.Tensor | None = None,
        phr: torch.Tensor | None = None,
        cands: torch.Tensor | None = None,
        crop: torch.Tensor | None = None,
        crop_reg: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``crop_reg``: the RoI embeddings of the regions in ``crop`` (default ``reg``: all of them)."""
        l1, l2, l3, l4, l5 = self.lambdas
        terms: dict[str, torch.Tensor] = {}

        def need(name: str, x: torch.Tensor | None) -> torch.Tensor:
            """``x``, an input of term ``name``; the error when it is missing."""
            if x is None:
                raise ValueError(f"loss term {name!r} has a non-zero weight but its inputs are missing")
            return x

        if l1:
            terms["global"] = global_contrastive(img, need("global", brief), logit_scale)
        if l2:
            terms["rpa"] = region_phrase(need("rpa", reg), need("rpa", phr), logit_scale)
        if l3:
            hreg, hcands = need("hna", reg), need("hna", cands)
            terms["hna"] = hard_negative(hreg, hcands, logit_scale) * rank_share(hreg.shape[0], hreg.device)
        if l4:
            vreg, vcrop = need("vic", reg if crop_reg is None else crop_reg), need("vic", crop)
            terms["vic"] = visual_intra_consistency(vreg, vcrop) * rank_share(vreg.shape[0], vcrop.device)
        if l5:
            terms["htc"] = hierarchical_text(img, need("htc", brief), need("htc", detail), logit_scale)
        weights = dict(zip(LOSS_NAMES, self.lambdas))
        if terms:
            # sum() starts from the int 0: with at least one term its result is a tensor
            total = cast(torch.Tensor, sum(weights[k] * v for k, v in terms.items()))
        else:
            total = img.sum() * 0.0
        return total, {k: v.detach() for k, v in terms.items()}
