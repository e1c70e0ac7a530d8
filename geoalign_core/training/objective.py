"""What one training step computes: every embedding in ONE module forward, then Eq. 5.

:class:`EmbedStep` is the ``nn.Module`` that DDP wraps: its ``forward`` runs the image tower
once for the global and the RoI-region embeddings (``encode_image_and_regions``), the crop
view for VIC (``encode_crops``) and the text tower once over the batch's distinct texts, so
DDP's hooks see a single forward per micro-batch.

:func:`geoalign_objective` feeds them to :class:`geoalign_core.losses.GeoAlignLoss` (Eq. 5 with
the configured weights; the contrastive terms gather from all ranks, the per-region terms are
scaled to their rank's share, so DDP yields the loss and gradient of the joined batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import text_global_pool
from torch import nn

from geoalign_core.losses import GeoAlignLoss
from geoalign_core.model import GeoAlignCLIP


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
        crop_views: bool = False,
    ):
        super().__init__()
        self.model = model
        self.lambdas = tuple(float(x) for x in lambdas)
        _, l2, l3, l4, _ = self.lambdas
        self.crop_views = bool(crop_views)  # each region cropped, re-encoded at full input size, [CLS] kept
        self.need_regions = bool(l2 or l3 or l4) or self.crop_views
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
            keep, per_image = self._crop_subset(batch, images.shape[0], dev)
            if self.vic_stop_grad:
                with torch.no_grad():
                    out["crop"] = m.encode_crops(images, per_image, size=self.crop_size)
            else:
                out["crop"] = m.encode_crops(images, per_image, size=self.crop_size)
            out["vic_keep"] = keep.to(dev)
        if self.crop_views:  # the crops' [CLS] (FarSLIP's region-category term); the crops go on to a teacher
            keep, per_image = self._crop_subset(batch, images.shape[0], dev)
            crops = m.crop_boxes(images, per_image, m.image_size)
            out["crop_cls"] = m.encode_image(crops) if crops.shape[0] else crops.new_zeros((0, m.embed_dim))
            out["crop_images"] = crops.detach()
            out["crop_keep"] = keep.to(dev)
        tokens = batch["tokens"]
        out["text"] = encode_text_trimmed(m, tokens) if self.trim_text else m.encode_text_tokens(tokens)
        return out


    def _crop_subset(self, batch: dict, n_images: int, dev: torch.device) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The regions re-encoded as crops (:func:`vic_subset`): their flat indices and their boxes per image."""
        keep = vic_subset(batch["n_regions"].tolist(), self.vic_regions_per_image)
        crop_boxes = torch.cat([b.reshape(-1, 4) for b in batch["boxes"]])[keep]
        img_of = batch["region_image"][keep]
        return keep, [crop_boxes[img_of == i].to(dev) for i in range(n_images)]


def geoalign_objective(
    emb: dict[str, torch.Tensor],
    batch: dict,
    logit_scale: torch.Tensor,
    lambdas: Sequence[float],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. 5 on a micro-batch -> (loss to backpropagate, {term: detached value}).

    Picks the texts of each term from the batch's distinct texts and hands everything to
    :class:`geoalign_core.losses.GeoAlignLoss` (the one combiner, distributed-aware). Each returned
    term is this rank's share: averaging the totals (and terms) over ranks gives the
    global-batch value. Terms with weight 0 are skipped.
    """
    l1, l2, l3, l4, l5 = (float(x) for x in lambdas)
    img = emb["img"].float()
    text = emb["text"].float()
    dev = img.device

    def texts(key: str, used: bool) -> torch.Tensor | None:
        return text[batch[key].to(dev)] if used else None

    reg = emb["reg"].float() if (l2 or l3 or l4) else None
    crop = emb["crop"].float() if l4 else None
    crop_reg = reg[emb["vic_keep"]] if l4 else None
    return GeoAlignLoss(lambdas)(
        logit_scale.float(), img,
        brief=texts("brief_idx", bool(l1 or l5)), detail=texts("detail_idx", bool(l5)),
        reg=reg, phr=texts("region_idx", bool(l2)), cands=texts("cand_idx", bool(l3)),
        crop=crop, crop_reg=crop_reg,
    )
