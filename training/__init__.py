"""GeoAlign training pipeline: stage I (global contrastive) and stage II (Eq. 5) of GeoAlignCLIP.

* :mod:`training.config`  -- the YAML config (:class:`TrainConfig`), validated.
* :mod:`training.dataset` -- ``samples.jsonl`` reader, augmentation, collate, resumable sampler.
* :mod:`training.objective` -- the module DDP wraps (one forward = every embedding) and the loss.
* :mod:`training.engine`  -- the loop: AdamW + warm-up/cosine, bf16, checkpoints, resume, export.
* :mod:`training.train`   -- ``python -m training.train CONFIG`` (the torchrun entry point);
  ``geoalign train CONFIG`` is the same command.
"""

from __future__ import annotations

from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config", "train"]


def train(*args, **kwargs):
    """Run a training job; see :func:`training.engine.train`."""
    from .engine import train as _train

    return _train(*args, **kwargs)
