"""The mean of RoIAlign's output bins, as one matrix product per image (inference on the CPU).

A region's embedding is the mean of ``torchvision.ops.roi_align``'s ``n x n`` bins over a dense
map (``aligned=True``, adaptive sampling: :meth:`GeoAlignCLIP.pool_regions
<geoalign_core.model.GeoAlignCLIP.pool_regions>`). Every bin averages bilinear samples on a grid,
and bilinear interpolation weighs rows and columns separately, so the mean over all bins is a
weighted sum of the map's cells with weights ``wy[row] * wx[col]``: a ``[K, h * w] x [h * w, D]``
product per image (batched) instead of ``K x n^2 x samples`` gathers of ``D`` channels. Same sample points,
same bilinear weights and border rules as torchvision's kernel; the sums run in another order (a
float rounding apart, about 1e-7 of the values).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["PAD_BYTES", "roi_mean"]

PAD_BYTES = 32 << 20  #: the padded weights of one batched product (small products one by one are slow on a busy CPU)


def _axis_weights(lo: torch.Tensor, hi: torch.Tensor, scale: float, n: int, pooled: int) -> torch.Tensor:
    """``[K, n]``: each cell's share of the mean of the samples along one axis (row or column) of ``K`` boxes
    from ``lo`` to ``hi`` (input pixels), as torchvision's RoIAlign places and weighs them."""
    start = lo * scale - 0.5  # aligned=True: pixel centres
    size = hi * scale - 0.5 - start
    bin_size = size / pooled
    grid = torch.ceil(size / pooled).clamp_min(0)  # samples per bin (sampling_ratio=-1)
    k = len(lo)
    out = torch.zeros((k, n), dtype=torch.float32, device=lo.device)
    g = int(grid.max()) if k else 0
    if g == 0:
        return out
    p = torch.arange(pooled, dtype=torch.float32, device=lo.device).view(1, pooled, 1)
    i = torch.arange(g, dtype=torch.float32, device=lo.device).view(1, 1, g)
    gr, bs = grid.view(k, 1, 1), bin_size.view(k, 1, 1)
    y = start.view(k, 1, 1) + p * bs + (i + 0.5) * bs / gr.clamp_min(1)
    used = ((i < gr) & (y >= -1.0) & (y <= n)).float()  # a sample outside the map counts as 0
    y = y.clamp_min(0.0)
    low = y.floor()
    last = low >= n - 1
    low = torch.where(last, torch.full_like(low, n - 1), low)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(y), y - low)
    out.scatter_add_(1, low.long().reshape(k, -1), ((1.0 - frac) * used).reshape(k, -1))
    out.scatter_add_(1, high.long().reshape(k, -1), (frac * used).reshape(k, -1))
    return out / (pooled * grid.view(k, 1).clamp_min(1))


def roi_mean(dense: torch.Tensor, boxes: Sequence[torch.Tensor], output_size: int, spatial_scale: float
             ) -> torch.Tensor:
    """``roi_align(dense, boxes, (output_size, output_size), spatial_scale, sampling_ratio=-1,
    aligned=True).mean(dim=(2, 3))``: ``dense [B, D, h, w]`` float, ``boxes`` one ``[K_i, 4]`` float32
    tensor of ``x0, y0, x1, y1`` per image -> ``[sum K_i, D]``."""
    b, d, h, w = dense.shape
    sizes = [len(x) for x in boxes]
    out = dense.new_empty((sum(sizes), d))
    if not len(out):
        return out
    allb = torch.cat([x.reshape(-1, 4) for x in boxes]).to(torch.float32)
    wy = _axis_weights(allb[:, 1], allb[:, 3], spatial_scale, h, output_size)
    wx = _axis_weights(allb[:, 0], allb[:, 2], spatial_scale, w, output_size)
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(allb), h * w).to(dense.dtype)
    flat = dense.reshape(b, d, h * w)
    image = torch.repeat_interleave(torch.arange(b), torch.tensor(sizes))
    starts = torch.tensor([0, *sizes]).cumsum(0)[:-1]
    slot = torch.arange(len(allb)) - starts[image]  # a box's place among its image's boxes
    lo = 0
    while lo < b:  # images in groups, one batched product each (a padded [images, boxes, h * w] of <= PAD_BYTES)
        hi, most = lo, 0
        while hi < b and (hi == lo or (hi + 1 - lo) * max(most, sizes[hi]) * h * w * 4 <= PAD_BYTES):
            most = max(most, sizes[hi])
            hi += 1
        rows = slice(int(starts[lo]), int(starts[hi - 1]) + sizes[hi - 1])
        if most:
            padded = weights.new_zeros((hi - lo, most, h * w))
            padded[image[rows] - lo, slot[rows]] = weights[rows]
            res = torch.bmm(padded, flat[lo:hi].transpose(1, 2))  # [images, most, D]
            out[rows] = res[image[rows] - lo, slot[rows]]
        lo = hi
    return out
