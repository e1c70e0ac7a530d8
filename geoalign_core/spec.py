"""How a GeoAlignCLIP is built (:class:`ModelSpec`), stored in the metadata of exported weights.

A module of its own, without torch or open_clip, so that reading a checkpoint's description
(the text-only path of :mod:`geoalign_core.text_model`, ``geoalign models``) imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path

__all__ = ["LONG_CONTEXT", "SPEC_KEY", "ModelSpec", "SpecNamed"]

LONG_CONTEXT = 248  #: tokens of a Long-CLIP text tower
SPEC_KEY = "geoalign_spec"  #: the safetensors metadata key holding a :class:`ModelSpec` as JSON


@dataclass
class ModelSpec:
    """How a GeoAlignCLIP is built: stored next to exported weights so they reload alone."""

    arch: str
    quick_gelu: bool = False
    long_text: bool = False
    dense_mode: str = "standard"
    name: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        known = {k: d[k] for k in ("arch", "quick_gelu", "long_text", "dense_mode", "name", "extra") if k in d}
        return cls(**known)

    def resolve(self, path: str | PathLike, positions: int | None, quick_gelu: bool | None = None,
                dense_mode: str | None = None, name: str | None = None) -> ModelSpec:
        """This spec with a loader's overrides applied (None: keep), named after the file when it has
        no name, and ``long_text`` set from the checkpoint's ``positions`` (its positional
        embedding's length; None when it has none). The whole model's loader and its text side's
        both call it, so they cannot disagree. Returns self."""
        if quick_gelu is not None:
            self.quick_gelu = bool(quick_gelu)
        if dense_mode:
            self.dense_mode = dense_mode
        self.name = name or self.name or Path(path).stem
        self.long_text = positions == LONG_CONTEXT
        return self


class SpecNamed:
    """The name and dense mode of a model that holds its :class:`ModelSpec` as ``spec`` (the whole model
    and its text side alike)."""

    spec: ModelSpec

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.arch

    @property
    def dense_mode(self) -> str:
        return self.spec.dense_mode
