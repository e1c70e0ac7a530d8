"""Feeding the model: the batch size and the number of tile readers chosen for the device.

A CPU computes a batch of 16 tiles as fast per tile as one of 256, and one reader keeps
up with it; a GPU needs large batches and several readers to be busy at all
(docs/benchmarks.md, "Feeding a GPU"). The user's ``--batch-size`` / ``--workers`` always win;
these are the defaults when they are left out.
"""

from __future__ import annotations

import os

import torch

from ..defaults import DEFAULT_BATCH_SIZE

__all__ = ["GPU_MEMORY_SHARE", "MAX_GPU_BATCH", "device_batch_size", "resolve_workers", "tile_bytes"]

GPU_MEMORY_SHARE = 0.25  #: of the GPU's free memory, what one batch's activations may take
MAX_GPU_BATCH = 512  #: beyond this a GPU gains nothing more at 224 px (and a batch is a lot to lose on cancel)


def tile_bytes(model) -> int:
    """An upper estimate of one tile's memory in the image pass (half precision, no gradients):
    its input, the widest activations of one transformer block (the MLP's 4x width, q/k/v, the
    attention matrix of every head) and its dense output, in bytes."""
    size, patch, dim = int(model.image_size), int(model.patch_size), int(model.embed_dim)
    tokens = (size // patch) ** 2 + 1
    visual = getattr(getattr(model, "clip", None), "visual", None)
    width = int(getattr(getattr(visual, "transformer", None), "width", 0) or 4 * dim)
    heads = max(1, width // 64)
    activations = 2 * tokens * width * (4 + 3 + 2) + 2 * heads * tokens * tokens
    return 4 * 3 * size * size + activations + 4 * dim * tokens


def device_batch_size(model, free_bytes: int | None = None) -> int:
    """Tiles per backbone pass when the user did not say: :data:`~geoalign_core.defaults.DEFAULT_BATCH_SIZE`
    on a CPU; on a GPU the largest power of two whose activations (:func:`tile_bytes`) fit in
    :data:`GPU_MEMORY_SHARE` of the free memory (``free_bytes``: that memory, else asked from the
    device), from 16 to :data:`MAX_GPU_BATCH`."""
    device = torch.device(model.device)
    if device.type != "cuda" and free_bytes is None:
        return DEFAULT_BATCH_SIZE
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    fit = int(GPU_MEMORY_SHARE * free_bytes) // max(1, tile_bytes(model))
    batch = DEFAULT_BATCH_SIZE
    while batch * 2 <= min(fit, MAX_GPU_BATCH):
        batch *= 2
    return batch


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Tile readers: ``workers`` when given, else ``$GEOALIGN_READERS`` (a positive integer),
    else :func:`~geoalign_core.geo.readers.default_workers` for the device."""
    from ..geo.readers import MAX_WORKERS, default_workers

    if workers is not None:
        return int(workers)
    env = os.environ.get("GEOALIGN_READERS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return min(int(env), MAX_WORKERS)
    return default_workers(torch.device(device).type == "cuda")
