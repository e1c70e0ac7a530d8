"""torchvision's box kernels (RoIAlign, NMS) without importing the torchvision package.

``import torchvision`` imports ``torch._dynamo`` (its ``ops.roi_align`` module does, at import
time): about 1.4 s on the docs' machine, which a query from an index -- it needs two of
torchvision's compiled kernels and nothing else -- would pay in every fresh process. The kernels
live in torchvision's compiled library (``torchvision/_C*.so``), which registers them as
``torch.ops.torchvision.*`` when loaded (a few milliseconds). This module loads that library on
first use and calls the same kernels (CPU and CUDA, with their autograd), so results are
torchvision's own; where the library is not found it imports ``torchvision.ops`` instead.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

from .errors import ModelError
from .roi_mean import roi_mean

__all__ = ["batched_nms", "box_iou", "boxes_as_list", "nms", "pool_regions", "roi_align"]

_LOCK = threading.Lock()
_LOADED = False


def _ops():
    """``torch.ops.torchvision`` with its kernels registered (torchvision's library loaded once)."""
    global _LOADED
    if not _LOADED:
        with _LOCK:
            if not _LOADED:
                _load_library()
                _LOADED = True
    return torch.ops.torchvision


def _load_library() -> None:
    spec = importlib.util.find_spec("torchvision")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        for lib in sorted(Path(folder).glob("_C*")):
            if lib.suffix in (".so", ".pyd", ".dylib"):
                try:
                    torch.ops.load_library(str(lib))
                except OSError:
                    continue
                if hasattr(torch.ops.torchvision, "nms"):
                    return
    import torchvision.ops  # noqa: F401  (the package registers its kernels itself)


def roi_align(feature: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """``torchvision.ops.roi_align`` for boxes given as one ``[K_i, 4]`` xyxy tensor per image."""
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype, device=b.device), b], dim=1)
                      for i, b in enumerate(boxes)]) if len(boxes) else feature.new_zeros((0, 5))
    return _ops().roi_align(feature, rois.to(feature.dtype), float(spatial_scale), int(output_size[0]),
                            int(output_size[1]), int(sampling_ratio), bool(aligned))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """``torchvision.ops.nms``: indices kept, best first (a box goes when its IoU with a better kept box
    is above ``iou``)."""
    return _ops().nms(boxes, scores, float(iou))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou: float) -> torch.Tensor:
    """:func:`nms` per label, all kept indices best first (``torchvision.ops.batched_nms``, computed label by
    label: no coordinate offsets that could round a borderline IoU differently)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    keep = torch.cat([sel[nms(boxes[sel], scores[sel], iou)]
                      for sel in (torch.nonzero(labels == lab).flatten() for lab in torch.unique(labels))])
    return keep[scores[keep].argsort(descending=True, stable=True)]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union of xyxy boxes ``a [N, 4]`` and ``b [M, 4]`` -> ``[N, M]``."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    wh = (torch.minimum(a[:, None, 2:], b[None, :, 2:]) - torch.maximum(a[:, None, :2], b[None, :, :2])).clamp_min(0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None] - inter)


def boxes_as_list(boxes: torch.Tensor | Sequence[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """Accept a list of ``[K_i, 4]`` tensors (one per image) or one ``[K, 5]`` tensor."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.shape[1] != 5:
            raise ModelError("boxes must be a list of [K_i, 4] tensors or one [K, 5] (batch, x0, y0, x1, y1)")
        return [boxes[boxes[:, 0] == i, 1:] for i in range(batch)]
    boxes = list(boxes)
    if len(boxes) != batch:
        raise ModelError(f"got {len(boxes)} box lists for {batch} images")
    out = []
    for b in boxes:
        b = torch.as_tensor(b, dtype=torch.float32)
        if b.numel() == 0:
            b = b.reshape(0, 4)
        if b.dim() != 2 or b.shape[1] != 4:
            raise ModelError(f"each box list must have shape [K, 4] (pixel x0, y0, x1, y1), got {tuple(b.shape)}")
        out.append(b)
    return out


def pool_regions(dense: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor, patch_size: int,
                 output_size: int = 4) -> torch.Tensor:
    """RoIAlign (aligned=True) of pixel boxes on a dense ``[B, D, h, w]`` map of ``patch_size`` px
    cells, then the mean over the output bins: ``[sum K_i, D]`` (FarSLIP's region features). On the CPU
    without gradients: the same mean as one matrix product per image (:func:`~.roi_mean.roi_mean`)."""
    blist = boxes_as_list(boxes, dense.shape[0])
    if sum(len(b) for b in blist) == 0:
        return dense.new_zeros((0, dense.shape[1]))
    # boxes stay float32 (bf16 would round pixel coordinates above 128 to whole pixels);
    # the map follows, so RoIAlign runs in float32 also under autocast
    blist = [b.to(dense.device, torch.float32) for b in blist]
    if dense.device.type == "cpu" and not (torch.is_grad_enabled() and dense.requires_grad):
        return roi_mean(dense.float(), blist, output_size, 1.0 / patch_size)  # the same, one product per image
    pooled = roi_align(dense.float(), blist, output_size=(output_size, output_size), spatial_scale=1.0 / patch_size,
                       sampling_ratio=-1, aligned=True)  # adaptive: about one bilinear sample per patch per bin
    return pooled.mean(dim=(2, 3))
