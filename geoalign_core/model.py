"""GeoAlignCLIP: an open_clip CLIP with global, dense, region and crop embeddings.

Every ``encode_*`` method takes images that are already normalised with
:attr:`GeoAlignCLIP.preprocess` (float tensors ``[B, 3, H, W]``) and returns
L2-normalised embeddings in the joint image-text space of size ``D``.

* ``encode_image``   -> ``[B, D]``        the [CLS] (global) embedding.
* ``encode_dense``   -> ``[B, D, h, w]``  one embedding per ViT patch.
* ``encode_regions`` -> ``[sum K_i, D]``  RoIAlign on the dense patch grid, then average
  pooling: one backbone pass for any number of boxes (FarSLIP / RegionCLIP style).
* ``encode_crops``   -> ``[sum K_i, D]``  the "crop view": pixels cropped, resized to the
  model's input size and re-encoded; its [CLS] embedding.

Dense features come in two flavours (``dense_mode``):

* ``"standard"``: the last block as trained; patch tokens go through ``ln_post`` and the
  projection. This is what GeoAlign's region-phrase alignment trains, so GeoAlign-trained
  models (``geoalign-demo``) use it for regions and heatmaps.
* ``"value"``: the localisation-friendly variant of MaskCLIP / ClearCLIP / FarSLIP: in the
  last block the q-k attention, the residual and the MLP are dropped and each token keeps
  only its own value projection (``out_proj(v(ln_1(x)))``). Off-the-shelf CLIP weights
  (OpenAI, RemoteCLIP, ...) give much cleaner heatmaps with it; the zoo sets it for them.

Images of any size whose sides are multiples of the patch size are accepted: the
positional embedding is interpolated (bicubic) to the patch grid.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol, cast, overload

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from .box_ops import boxes_as_list, pool_regions, roi_align
from .errors import ModelError
from .skip_init import BUILD_LOCK, weights_left_uninitialised
from .spec import LONG_CONTEXT, ModelSpec, SpecNamed

DENSE_MODES = ("standard", "value")
KEEP_POSITIONS = 20


class OpenClipModel(Protocol):
    """The attributes of an open_clip ``CLIP`` that GeoAlign reads and sets.

    open_clip ships no type information, and ``nn.Module.__getattr__`` types every attribute of a
    module as ``Tensor | Module``; :func:`as_open_clip` gives these their real types.
    """

    context_length: int
    positional_embedding: torch.Tensor
    logit_scale: torch.Tensor

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


def as_open_clip(clip: nn.Module) -> OpenClipModel:
    """``clip`` itself (an open_clip CLIP), typed by the attributes GeoAlign uses."""
    # a cast, not a check: open_clip sets these attributes on the module at run time
    return cast(OpenClipModel, clip)


class Preprocess(nn.Module):
    """Normalise images in [0, 1] (``[B,3,H,W]`` float) the way the backbone expects."""

    # buffers (register_buffer below), declared so that they are typed as tensors
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], image_size: int):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.image_size = int(image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(0)
        mean = self.mean.to(images.device, images.dtype)
        std = self.std.to(images.device, images.dtype)
        return (images - mean) / std


def stretch_positional_embedding(pos: torch.Tensor, keep: int = KEEP_POSITIONS) -> torch.Tensor:
    """Long-CLIP knowledge-preserved stretching: 77 -> 248 positions.

    The first ``keep`` positions (well trained) are kept; every later gap is linearly
    interpolated four times; the tail is extrapolated from the last difference.
    """
    length, _ = pos.shape
    n_new = 4 * length - 3 * keep
    out = pos.new_zeros((n_new, pos.shape[1]))
    out[:keep] = pos[:keep]
    for i in range(length - 1 - keep):
        a, b = pos[i + keep], pos[i + 1 + keep]
        for j in range(4):
            out[4 * i + j + keep] = a * (4 - j) / 4 + b * j / 4
    last, step = pos[length - 1], (pos[length - 1] - pos[length - 2]) / 4
    for j in range(4):
        out[n_new - 4 + j] = last + j * step
    return out


def enable_long_text(clip: nn.Module) -> None:
    """Stretch an open_clip CLIP's text tower in place to 248 tokens (Long-CLIP)."""
    oc = as_open_clip(clip)
    pos = oc.positional_embedding
    if pos.shape[0] == LONG_CONTEXT:
        return
    if pos.shape[0] != 77:
        raise ModelError(f"long-text stretching needs a 77-token text tower, got {pos.shape[0]}")
    with torch.no_grad():
        new = stretch_positional_embedding(pos.detach().float()).to(pos.dtype)
    oc.positional_embedding = nn.Parameter(new)
    oc.context_length = LONG_CONTEXT
    mask = torch.full((LONG_CONTEXT, LONG_CONTEXT), float("-inf")).triu_(1)
    clip.register_buffer("attn_mask", mask.to(pos.device), persistent=False)


def _interpolate_pos(pos: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    if grid == new_grid:
        return pos
    cls_pos, patch_pos = pos[:1], pos[1:]
    width = pos.shape[-1]
    patch_pos = patch_pos.reshape(1, grid[0], grid[1], width).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.float(), size=new_grid, mode="bicubic", align_corners=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(-1, width).to(pos.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


class GeoAlignCLIP(nn.Module, SpecNamed):
    """A CLIP model with multi-granularity (global / dense / region / crop) embeddings."""

    #: the model card (:class:`geoalign_core.card.ModelCard`) that :func:`~geoalign_core.load_model` found beside
    #: the weights; None: uncalibrated, unknown domain
    card: Any = None

    def __init__(self, clip: nn.Module, spec: ModelSpec, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if spec.dense_mode not in DENSE_MODES:
            raise ModelError(f"dense_mode must be one of {DENSE_MODES}, got {spec.dense_mode!r}")
        self.clip = clip
        self.spec = spec
        visual = clip.visual
        if not isinstance(visual, VisionTransformer):
            raise ModelError(
                f"{spec.arch}: GeoAlign needs an open_clip VisionTransformer image tower "
                f"(got {type(visual).__name__})"
            )
        if visual.attn_pool is not None:
            raise ModelError(f"{spec.arch}: attention-pooled vision towers are not supported")
        size = visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        patch = visual.patch_size
        self.patch_size = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        self.preprocess = Preprocess(mean, std, self.image_size)
        self.context_length = int(as_open_clip(clip).context_length)
        self.tokenizer = open_clip.get_tokenizer(spec.arch, context_length=self.context_length)

    # ------------------------------------------------------------------ properties
    @property
    def visual(self) -> VisionTransformer:
        return self.clip.visual

    @property
    def embed_dim(self) -> int:
        return int(self.visual.proj.shape[1])

    def fingerprint(self, fresh: bool = False) -> str:
        """A short hash of the weights (every tensor's name, shape, dtype and first 256 values)
        and of how embeddings are made (architecture, dense mode): equal for the same model,
        different for other weights of the same architecture (e.g. after fine-tuning).

        Stored in a scene index, so that a query with another model is refused. Computed once
        per model (re-computed after :meth:`load_state_dict`, or when ``fresh``: weights changed by training
        in place)."""
        cached = getattr(self, "_fingerprint", None)
        if cached is not None and not fresh:
            return cached
        h = hashlib.sha256(f"{self.spec.arch}|{self.spec.dense_mode}|{self.spec.long_text}".encode())
        with torch.no_grad():
            for name, t in self.clip.state_dict().items():
                h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
                h.update(t.detach().reshape(-1)[:256].float().cpu().numpy().tobytes())
        self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def load_state_dict(self, *args, **kwargs):  # noqa: D102 - nn.Module's, forgetting the fingerprint
        self._fingerprint = None
        return super().load_state_dict(*args, **kwargs)

    @property
    def logit_scale(self) -> torch.Tensor:
        """1/tau (the exponentiated learned temperature, clamped at 100 like open_clip)."""
        return as_open_clip(self.clip).logit_scale.exp().clamp(max=100.0).reshape(())

    @property
    def device(self) -> torch.device:
        return self.visual.proj.device

    def enable_long_text(self) -> None:
        """Stretch the text tower to 248 tokens (Long-CLIP) and switch the tokenizer."""
        enable_long_text(self.clip)
        self.spec.long_text = True
        self.context_length = LONG_CONTEXT
        self.tokenizer = open_clip.get_tokenizer(self.spec.arch, context_length=LONG_CONTEXT)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        as_open_clip(self.clip).set_grad_checkpointing(enable)

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_text_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(as_open_clip(self.clip).encode_text(tokens.to(self.device)), dim=-1)

    def encode_text(self, texts: Sequence[str] | str) -> torch.Tensor:
        """``list[str] -> [N, D]``; texts longer than the context are truncated by the tokenizer."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return self.encode_text_tokens(self.tokenize(texts))

    # ------------------------------------------------------------------ image tower
    def _grid(self, images: torch.Tensor) -> tuple[int, int]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ModelError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        p = self.patch_size
        if h % p or w % p:
            raise ModelError(f"image size {h}x{w} is not a multiple of the patch size {p}")
        return h // p, w // p

    def _tokens_before_last(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch embedding + positional embedding + all blocks but the last."""
        v = self.visual
        grid = self._grid(images)
        x = v.conv1(images.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1)
        base = self.image_size // self.patch_size
        x = x + _interpolate_pos(v.positional_embedding, (base, base), grid).to(x.dtype)
        x = v.ln_pre(x)
        tr = v.transformer
        if not tr.batch_first:
            x = x.transpose(0, 1)
        for blk in tr.resblocks[:-1]:
            if tr.grad_checkpointing and self.training:
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x, grid

    def _last_block(self, x: torch.Tensor) -> torch.Tensor:
        tr = self.visual.transformer
        blk = tr.resblocks[-1]
        if tr.grad_checkpointing and self.training:
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def _value_path(self, x: torch.Tensor) -> torch.Tensor:
        """Last block without q-k attention, residual and MLP: out_proj(v(ln_1(x)))."""
        blk = self.visual.transformer.resblocks[-1]
        attn = blk.attn
        if not isinstance(attn, nn.MultiheadAttention):
            raise ModelError(f"{self.spec.arch}: the value-path dense mode needs nn.MultiheadAttention blocks")
        w = attn.in_proj_weight.shape[1]
        wv = attn.in_proj_weight[2 * w :]
        bv = attn.in_proj_bias[2 * w :] if attn.in_proj_bias is not None else None
        y = F.linear(blk.ln_1(x), wv, bv)
        return attn.out_proj(y)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        x = self.visual.ln_post(x)
        return x @ self.visual.proj

    @overload
    def forward_visual(
        self, images: torch.Tensor, dense: Literal[True] = True, dense_mode: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    @overload
    def forward_visual(
        self, images: torch.Tensor, dense: Literal[False], dense_mode: str | None = None
    ) -> tuple[torch.Tensor, None]: ...

    @overload
    def forward_visual(
        self, images: torch.Tensor, dense: bool, dense_mode: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...

    def forward_visual(
        self, images: torch.Tensor, dense: bool = True, dense_mode: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One backbone pass -> (global ``[B, D]``, dense ``[B, D, h, w]`` or None), unnormalised."""
        mode = dense_mode or self.spec.dense_mode
        if mode not in DENSE_MODES:
            raise ModelError(f"dense_mode must be one of {DENSE_MODES}, got {mode!r}")
        x, (gh, gw) = self._tokens_before_last(images)
        batch_first = self.visual.transformer.batch_first
        y = self._last_block(x)
        if not batch_first:
            y = y.transpose(0, 1)
        pooled = y[:, 1:].mean(dim=1) if self.visual.pool_type == "avg" else y[:, 0]
        glob = self._project(pooled)
        if not dense:
            return glob, None
        if mode == "value":
            xv = x.transpose(0, 1) if not batch_first else x
            patches = self._project(self._value_path(xv[:, 1:]))
        else:
            patches = self._project(y[:, 1:])
        b = images.shape[0]
        dense_map = patches.reshape(b, gh, gw, -1).permute(0, 3, 1, 2)
        return glob, dense_map

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        glob, _ = self.forward_visual(images, dense=False)
        return F.normalize(glob, dim=-1)

    def encode_dense(self, images: torch.Tensor, dense_mode: str | None = None) -> torch.Tensor:
        _, dense = self.forward_visual(images, dense=True, dense_mode=dense_mode)
        return F.normalize(dense, dim=1)

    def pool_regions(
        self, dense: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor, output_size: int = 4
    ) -> torch.Tensor:
        """RoIAlign (aligned=True) of pixel boxes on a dense ``[B, D, h, w]`` map, then mean
        (:func:`~geoalign_core.box_ops.pool_regions`)."""
        return pool_regions(dense, boxes, self.patch_size, output_size)

    def encode_image_and_regions(
        self, images: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor, dense_mode: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global ``[B, D]`` and region ``[sum K_i, D]`` embeddings from ONE backbone pass."""
        glob, dense = self.forward_visual(images, dense=True, dense_mode=dense_mode)
        regions = self.pool_regions(dense, boxes)
        return F.normalize(glob, dim=-1), F.normalize(regions, dim=-1)

    def encode_regions(
        self, images: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor, dense_mode: str | None = None
    ) -> torch.Tensor:
        """Boxes in pixel xyxy (one ``[K_i, 4]`` tensor per image) -> ``[sum K_i, D]``."""
        _, regions = self.encode_image_and_regions(images, boxes, dense_mode=dense_mode)
        return regions

    def crop_boxes(
        self, images: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor, size: int | None = None
    ) -> torch.Tensor:
        """Pixel-space crops of the boxes, bilinearly resized to ``size`` (default: input size)."""
        size = int(size or self.image_size)
        blist = [b.to(images.device, images.dtype) for b in boxes_as_list(boxes, images.shape[0])]
        if sum(len(b) for b in blist) == 0:
            return images.new_zeros((0, 3, size, size))
        # sampling_ratio adapts to the box so that large boxes are averaged, not aliased
        return roi_align(images, blist, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    def encode_crops(
        self,
        images: torch.Tensor,
        boxes: Sequence[torch.Tensor] | torch.Tensor,
        size: int | None = None,
        chunk: int = 64,
    ) -> torch.Tensor:
        """The crop view: each box cropped in pixel space, resized, re-encoded; its [CLS]."""
        crops = self.crop_boxes(images, boxes, size)
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.embed_dim))
        out = [self.encode_image(crops[i : i + chunk]) for i in range(0, crops.shape[0], chunk)]
        return torch.cat(out, dim=0)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP-style forward: (image embeddings, text embeddings), both normalised."""
        return self.encode_image(images), self.encode_text_tokens(tokens)

    def extra_repr(self) -> str:
        return (
            f"arch={self.spec.arch}, image_size={self.image_size}, patch={self.patch_size}, "
            f"D={self.embed_dim}, context={self.context_length}, dense_mode={self.spec.dense_mode}"
        )


def build_clip(spec: ModelSpec, init: bool = True) -> tuple[nn.Module, tuple, tuple]:
    """Create the open_clip model for ``spec`` with random weights (no download); ``init=False``: weights left
    as allocated, for a caller that loads all of them next (strictly)."""
    from . import archs  # noqa: F401  (registers the tiny GeoAlign configs)

    if spec.arch not in open_clip.list_models():
        raise ModelError(
            f"unknown architecture {spec.arch!r}: use an open_clip model name "
            f"(see `python -c 'import open_clip; print(open_clip.list_models())'`)"
        )
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip logs "no pretrained weights" at WARNING: weights come later
    try:
        with BUILD_LOCK, (contextlib.nullcontext() if init else weights_left_uninitialised()):
            clip = open_clip.create_model(spec.arch, pretrained=None, force_quick_gelu=spec.quick_gelu,
                                          device="cpu")
    finally:
        root.setLevel(level)
    if spec.long_text:
        enable_long_text(clip)
    cfg = getattr(clip.visual, "preprocess_cfg", {}) or {}
    mean = tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return clip, mean, std
