"""The model zoo's table and cache paths, without torch or open_clip.

:data:`ZOO` (name -> :class:`ZooEntry`), :func:`cache_dir`, :func:`weights_path` and
:func:`is_available` are what ``geoalign models list`` / ``models info`` and the engine's model
list need; :mod:`geoalign_core.zoo` (loading, downloading) re-exports them. Importing this module
loads nothing heavy (a test checks ``sys.modules``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import ModelSpec

__all__ = ["WEIGHTS_DIR", "ZOO", "ZooEntry", "cache_dir", "is_available", "weights_path"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class ZooEntry:
    """A named model: where its weights live and how to build the network around them."""

    name: str
    arch: str
    repo: str | None  # Hugging Face hub repo; None for weights bundled in the package
    filename: str
    quick_gelu: bool = False
    long_text: bool = False
    dense_mode: str = "value"
    description: str = ""

    def spec(self) -> ModelSpec:
        from .model import ModelSpec  # torch: only when a model is built

        return ModelSpec(
            arch=self.arch,
            quick_gelu=self.quick_gelu,
            long_text=self.long_text,
            dense_mode=self.dense_mode,
            name=self.name,
        )


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "geoalign-demo", "GeoAlign-Tiny", None, "geoalign-demo.safetensors",
            dense_mode="standard",
            description="tiny GeoAlignCLIP trained on the synthetic scenes (bundled, offline)",
        ),
        ZooEntry(
            "openai-vit-b-16", "ViT-B-16", "timm/vit_base_patch16_clip_224.openai", "open_clip_model.safetensors",
            quick_gelu=True, description="OpenAI CLIP ViT-B/16",
        ),
        ZooEntry(
            "openai-vit-l-14", "ViT-L-14", "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors",
            quick_gelu=True, description="OpenAI CLIP ViT-L/14",
        ),
        ZooEntry(
            "remoteclip-vit-b-32", "ViT-B-32", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-B-32.pt",
            description="RemoteCLIP ViT-B/32 (Liu et al. 2024)",
        ),
        ZooEntry(
            "remoteclip-vit-l-14", "ViT-L-14", "chendelong/RemoteCLIP", "RemoteCLIP-ViT-L-14.pt",
            description="RemoteCLIP ViT-L/14 (Liu et al. 2024)",
        ),
        ZooEntry(
            "georsclip-vit-b-32", "ViT-B-32", "Zilun/GeoRSCLIP", "ckpt/RS5M_ViT-B-32.pt",
            quick_gelu=True, description="GeoRSCLIP ViT-B/32, RS5M (Zhang et al. 2024)",
        ),
        ZooEntry(
            "skyclip-vit-l-14", "ViT-L-14", "furiousteabag/SkyCLIP",
            "SkyCLIP_ViT_L14_top30pct_filtered_by_CLIP_laion_RS_epoch_20.pt",
            quick_gelu=True, description="SkyCLIP ViT-L/14, SkyScript top30pct (Wang et al. 2024)",
        ),
        ZooEntry(
            "farslip-vit-b-16", "ViT-B-16", "ZhenShiL/FarSLIP", "FarSLIP1_ViT-B-16.pt",
            quick_gelu=True, long_text=True, description="FarSLIP stage 1 ViT-B/16, Long-CLIP text (248 tokens)",
        ),
    ]
}


# ---------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    env = os.environ.get("GEOALIGN_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "geoalign"


def weights_path(entry: ZooEntry) -> Path:
    """Where the entry's weights are (bundled) or will be cached."""
    if entry.repo is None:
        return WEIGHTS_DIR / entry.filename
    return cache_dir() / entry.name / entry.filename


def is_available(name: str) -> bool:
    """True when the model can be loaded without network."""
    entry = ZOO.get(name)
    return entry is not None and weights_path(entry).is_file()
