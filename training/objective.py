"""What one training step computes: every embedding in ONE module forward, then Eq. 5.

:class:`EmbedStep` is the ``nn.Module`` that DDP wraps: its ``forward`` runs the image tower
once for the global and the RoI-region embeddings (``encode_image_and_regions``), the crop
view for VIC (``encode_crops``) and the text tower once over the batch's distinct texts, so
DDP's hooks see a single forward per micro-batch.

:func:`geoalign_objective` combines the paper's losses (:mod:`geoalign_core.losses`) with the
configured weights. The contrastive terms (Eq. 1, Eq. 2, HTC) gather embeddings from all
ranks with gradient, so every rank computes the global-batch value. The per-region means
(Eq. 3, Eq. 4) are local; each rank scales its term by ``K_rank * world / K_global`` so that
DDP's gradient averaging yields the gradient of the mean over ALL regions of the global
batch -- the same loss (and gradient) as one process on the joined batch, also when ranks
hold different numbers of regions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import text_global_pool
from torch import nn

from geoalign_core.losses import (
    LOSS_NAMES,
    global_contrastive,
    hard_negative,
    hierarchical_text,
    region_phrase,
    visual_intra_consistency,
)
from geoalign_core.model import GeoAlignCLIP


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def encode_text_trimmed(model: GeoAlignCLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text_tokens`` computed on the tokens up to the longest text's EOT only.

    The text tower is causal and pools at the EOT token, so the padding after it never
    influences the result: trimming gives the same embeddings (up to float rounding) for a
    fraction of the cost (phrases are a few tokens out of 77 or 248). Falls back to the
    full context for towers that are not causal, argmax-pooled open_clip CLIPs.
    """
    clip = model.clip
    tokens = tokens.to(model.device)
    if (
        not isinstance(clip, CLIP)
        or clip.text_pool_type != "argmax"
        or clip.attn_mask is None
        or tokens.shape[0] == 0
    ):
        return model.encode_text_tokens(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    tok = tokens[:, :length]
    cast_dtype = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(tok).to(cast_dtype)
    x = x + clip.positional_embedding[:length].to(cast_dtype)
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    x = text_global_pool(x, tok, "argmax")
    proj = clip.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)


def vic_subset(n_regions: Sequence[int], per_image: int) -> torch.Tensor:
    """Indices (into the flat region list) of the first ``per_image`` regions of each image (0: all)."""
    keep: list[int] = []
    start = 0
    for n in n_regions:
        n = int(n)
        take = n if per_image <= 0 else min(n, per_image)
        keep.extend(range(start, start + take))
        start += n
    return torch.tensor(keep, dtype=torch.long)


class EmbedStep(nn.Module):
    """The module DDP wraps: ``forward(batch)`` -> every embedding the objective needs."""

    def __init__(
        self,
        model: GeoAlignCLIP,
        lambdas: Sequence[float],
        crop_size: int | None = None,
        vic_regions_per_image: int = 4,
        vic_stop_grad: bool = False,
        trim_text: bool = True,
    ):
        super().__init__()
        self.model = model
        self.lambdas = tuple(float(x) for x in lambdas)
        _, l2, l3, l4, _ = self.lambdas
        self.need_regions = bool(l2 or l3 or l4)
        self.need_crops = bool(l4)
        self.crop_size = crop_size
        self.vic_regions_per_image = int(vic_regions_per_image)
        self.vic_stop_grad = bool(vic_stop_grad)
        self.trim_text = bool(trim_text)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        m = self.model
        dev = m.device
        images = m.preprocess(batch["images"].to(dev, non_blocking=True))
        out: dict[str, torch.Tensor] = {}
        if self.need_regions:
            boxes = [b.to(dev) for b in batch["boxes"]]
            if torch.is_autocast_enabled(dev.type):
                # encode_image_and_regions, with RoIAlign kept in fp32: under bf16 autocast the
                # dense map is bf16 and pool_regions would round the pixel boxes to bf16 (1 px
                # steps above 128 px)
                glob, dense = m.forward_visual(images, dense=True)
                with torch.autocast(dev.type, enabled=False):
                    reg = m.pool_regions(dense.float(), boxes)
                out["img"], out["reg"] = F.normalize(glob.float(), dim=-1), F.normalize(reg, dim=-1)
            else:
                out["img"], out["reg"] = m.encode_image_and_regions(images, boxes)
        else:
            out["img"] = m.encode_image(images)
        if self.need_crops:
            keep = vic_subset(batch["n_regions"].tolist(), self.vic_regions_per_image)
            crop_boxes = torch.cat([b.reshape(-1, 4) for b in batch["boxes"]])[keep]
            img_of = batch["region_image"][keep]
            per_image = [crop_boxes[img_of == i].to(dev) for i in range(images.shape[0])]
            if self.vic_stop_grad:
                with torch.no_grad():
                    out["crop"] = m.encode_crops(images, per_image, size=self.crop_size)
            else:
                out["crop"] = m.encode_crops(images, per_image, size=self.crop_size)
            out["vic_keep"] = keep.to(dev)
        tokens = batch["tokens"]
        out["text"] = encode_text_trimmed(m, tokens) if self.trim_text else m.encode_text_tokens(tokens)
        return out


def _global_count(n: int, device: torch.device) -> int:
    if not _distributed():
        return n
    t = torch.tensor([n], dtype=torch.long, device=device)
    dist.all_reduce(t)
    return int(t.item())


def geoalign_objective(
    emb: dict[str, torch.Tensor],
    batch: dict,
    logit_scale: torch.Tensor,
    lambdas: Sequence[float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5 on a micro-batch -> (loss to backpropagate, {term: detached value}).

    Each returned term is this rank's share: averaging the totals (and terms) over ranks
    gives the global-batch value (see the module docstring). Terms with weight 0 are skipped.
    """
    l1, l2, l3, l4, l5 = (float(x) for x in lambdas)
    img = emb["img"].float()
    text = emb["text"].float()
    dev = img.device
    scale = logit_scale.float()
    world = dist.get_world_size() if _distributed() else 1
    terms: dict[str, torch.Tensor] = {}
    brief = text[batch["brief_idx"].to(dev)]
    if l1:
        terms["global"] = global_contrastive(img, brief, scale)
    if l2 or l3 or l4:
        reg = emb["reg"].float()
    if l2:
        terms["rpa"] = region_phrase(reg, text[batch["region_idx"].to(dev)], scale)
    if l3:
        k_local = reg.shape[0]
        k_all = _global_count(k_local, dev)
        share = k_local * world / k_all if k_all else 0.0
        terms["hna"] = hard_negative(reg, text[batch["cand_idx"].to(dev)], scale) * share
    if l4:
        keep = emb["vic_keep"]
        n_local = int(keep.numel())
        n_all = _global_count(n_local, dev)
        share = n_local * world / n_all if n_all else 0.0
        terms["vic"] = visual_intra_consistency(reg[keep], emb["crop"].float()) * share
    if l5:
        detail = text[batch["detail_idx"].to(dev)]
        terms["htc"] = hierarchical_text(img, brief, detail, scale)
    weights = dict(zip(LOSS_NAMES, (l1, l2, l3, l4, l5)))
    total = sum(weights[k] * v for k, v in terms.items())
    return total, {k: v.detach() for k, v in terms.items()}
