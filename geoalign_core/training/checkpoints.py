"""Training checkpoints: where they live, atomic writes, safe reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from geoalign_core.errors import InputError
from geoalign_core.zoo import load_torch_file

__all__ = ["CKPT_DIR", "CKPT_FORMAT", "atomic_save", "checkpoint_path", "list_checkpoints", "read_checkpoint"]

CKPT_FORMAT = "geoalign-train-checkpoint"
CKPT_DIR = "checkpoints"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return out_dir / CKPT_DIR / f"step_{step:08d}.pt"


def list_checkpoints(out_dir: Path) -> list[Path]:
    d = out_dir / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("step_*.pt") if p.stem[5:].isdigit())


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> dict:
    obj = load_torch_file(path)  # one-line CheckpointError: unreadable, or not a safe checkpoint
    if not isinstance(obj, dict) or obj.get("format") != CKPT_FORMAT:
        raise InputError(f"{path} is not a geoalign training checkpoint")
    return obj


# ---------------------------------------------------------------------- logging
