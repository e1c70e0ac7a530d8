"""RoIAlign's mean as one matrix product per image (geoalign_core.roi_mean): the same numbers as
torchvision's roi_align for boxes of every kind -- fractional, thin, empty, reversed, partly or wholly
outside the map, whole-map -- on square and oblong maps, and what pool_regions uses without gradients."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

import geoalign_core.roi_mean as roi_mean_mod
from geoalign_core.roi_mean import roi_mean


def _boxes(gen: torch.Generator, k: int, width: float, height: float) -> torch.Tensor:
    x0 = torch.rand(k, generator=gen) * width * 1.2 - 0.1 * width
    y0 = torch.rand(k, generator=gen) * height * 1.2 - 0.1 * height
    w = torch.rand(k, generator=gen) * width
    h = torch.rand(k, generator=gen) * height
    out = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    special = torch.tensor([[0, 0, width, height], [16, 16, 48, 48], [8, 8, 16, 16], [5.5, 7.25, 5.5, 30],
                            [40, 40, 30, 30], [-50, -50, -20, -20], [width + 5, 0, width + 40, 20],
                            [0.0, 0.0, 1.0, 1.0], [width - 3, height - 3, width, height]], dtype=torch.float32)
    return torch.cat([special, out])


def _reference(dense, boxes, size, scale):
    return roi_align(dense, boxes, output_size=(size, size), spatial_scale=scale, sampling_ratio=-1,
                     aligned=True).mean(dim=(2, 3))


@pytest.mark.parametrize("pad_bytes", [1, roi_mean_mod.PAD_BYTES])
def test_the_mean_of_roi_align_bins_for_every_kind_of_box(pad_bytes, monkeypatch):
    monkeypatch.setattr(roi_mean_mod, "PAD_BYTES", pad_bytes)  # one image per product, or all in one
    gen = torch.Generator().manual_seed(0)
    for (h, w, patch, size) in ((14, 14, 16, 4), (7, 12, 8, 4), (14, 14, 16, 2), (5, 3, 32, 3)):
        dense = torch.randn(3, 24, h, w, generator=gen)
        boxes = [_boxes(gen, 40, w * patch, h * patch) for _ in range(3)]
        boxes[1] = boxes[1][:0]  # an image without boxes
        want = _reference(dense, boxes, size, 1.0 / patch)
        got = roi_mean(dense, boxes, size, 1.0 / patch)
        assert got.shape == want.shape
        assert (got - want).abs().max() < 1e-5 * max(1.0, float(want.abs().max()))


def test_pool_regions_without_gradients_is_roi_align(tiny_model):
    gen = torch.Generator().manual_seed(1)
    p = tiny_model.patch_size
    dense = torch.randn(2, tiny_model.embed_dim, 6, 6, generator=gen)
    boxes = [_boxes(gen, 20, 6 * p, 6 * p) for _ in range(2)]
    with torch.no_grad():
        fast = tiny_model.pool_regions(dense, boxes)
    slow = tiny_model.pool_regions(dense.clone().requires_grad_(True), boxes)  # training: roi_align
    assert slow.requires_grad
    assert torch.allclose(fast, slow.detach(), atol=1e-5)
    assert torch.allclose(fast, _reference(dense, boxes, 4, 1.0 / p), atol=1e-5)
