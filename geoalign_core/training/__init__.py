"""GeoAlign training pipeline: stage I (global contrastive) and stage II (Eq. 5) of GeoAlignCLIP.

* :mod:`geoalign_core.training.config`  -- the YAML config (:class:`TrainConfig`), validated.
* :mod:`geoalign_core.training.dataset` -- ``samples.jsonl`` reader, augmentation, collate, resumable sampler.
* :mod:`geoalign_core.training.objective` -- the module DDP wraps (one forward = every embedding) and the loss.
* :mod:`geoalign_core.training.engine`  -- the loop: AdamW + warm-up/cosine, bf16, checkpoints, resume, export.
* :mod:`geoalign_core.training.train`   -- ``python -m geoalign_core.training.train CONFIG`` (the torchrun entry point);
  ``geoalign train CONFIG`` is the same command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoalign_core._lazy import lazy_names

if TYPE_CHECKING:
    from .config import TrainConfig, load_config

# the config (and with it yaml) is imported on first use: `geoalign --help` builds the train
# parser from geoalign_core.training.train without loading it
__getattr__ = lazy_names(__name__, {"config": ("TrainConfig", "load_config")})

__all__ = ["TrainConfig", "load_config", "train"]


def train(*args, **kwargs):
    """Run a training job; see :func:`geoalign_core.training.engine.train`."""
    from .engine import train as _train

    return _train(*args, **kwargs)
