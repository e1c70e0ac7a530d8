"""Training configuration: a dataclass read from YAML and validated.

Every key is optional except ``model``, ``data`` and ``out_dir``. Keys left out (or set to
``null``) whose default depends on the stage take the paper's values (section 5.1):

=============  ==================  ==================
key            stage I             stage II
=============  ==================  ==================
lr             1e-4                1e-6
weight_decay   0.05                1e-3
warmup_steps   200                 50
lambdas        [1, 0, 0, 0, 0]     [1, 1, 1, 1, 1]
=============  ==================  ==================

Relative paths (``data``, ``out_dir``, a checkpoint ``model``) are relative to the
current working directory (run from the repository root). Unknown keys, wrong types and
out-of-range values raise :class:`~geoalign_core.errors.InputError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import glob
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoalign_core.errors import InputError

STAGE_DEFAULTS: dict[int, dict[str, Any]] = {
    1: {"lr": 1e-4, "weight_decay": 0.05, "warmup_steps": 200, "lambdas": [1.0, 0.0, 0.0, 0.0, 0.0]},
    2: {"lr": 1e-6, "weight_decay": 1e-3, "warmup_steps": 50, "lambdas": [1.0, 1.0, 1.0, 1.0, 1.0]},
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
REGION_TEXTS = ("phrase", "description")
DENSE_MODES = ("standard", "value")


@dataclass
class TrainConfig:
    """One training job (one stage). See ``geoalign_core/training/configs/*.yaml`` for commented examples."""

    # what to train, from where, to where
    model: str = ""  # zoo name, open_clip arch (random init), .safetensors/.pt checkpoint
    stage: int = 1
    data: list[str] = field(default_factory=list)  # dirs holding samples.jsonl, or .jsonl files
    out_dir: str = ""
    export: str = "model.safetensors"  # file name (inside out_dir) of the final weights
    export_half: bool = False  # store the export in fp16 (half the size)
    long_text: bool | None = None  # stretch the text tower to 248 tokens (Long-CLIP); null: as loaded
    dense_mode: str = "standard"  # dense features used for RoI regions (and stored in the export)
    # objective (Eq. 5)
    lambdas: list[float] | None = None  # l1..l5 = global, RPA, HNA, VIC, HTC
    region_text: str = "phrase"  # RPA text of a region: its phrase or its description
    class_prompt_prob: float = 0.0  # chance the RPA text is a prompt of the region's class (its `class` key)
    caption_prompt_prob: float = 0.0  # chance the brief caption is a prompt of the chip's dominant class
    regions_per_image: int = 8  # R: regions per image used per step (random subset)
    num_candidates: int = 8  # Q: HNA candidates per region (positive + Q-1 negatives)
    background_negatives: bool = False  # find's background phrases among every labelled region's HNA negatives
    distill: float = 0.0  # weight of 1 - cos toward a frozen copy of the start (image, region, text embeddings)
    objective: str = "geoalign"  # geoalign: Eq. 5 with lambdas; farslip: geoalign_core/training/farslip.py
    farslip_weights: list[float] | None = None  # [w_global, w_p2p, w_rca]; null: [1, 1, 1] (FarSLIP's)
    farslip_teacher: str = "ema"  # target of p2p distillation: ema, frozen (the start) or self
    farslip_momentum: float = 0.99  # EMA teacher momentum
    crop_size: int | None = None  # VIC crop view size in px; null: half the input size
    vic_regions_per_image: int = 4  # regions per image re-encoded as crops (0: all R)
    vic_stop_grad: bool = False  # treat the crop view as a fixed target
    # optimisation
    lr: float | None = None
    weight_decay: float | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    max_grad_norm: float | None = None
    epochs: float = 1.0
    max_steps: int | None = None  # optimiser steps; overrides epochs when set
    batch_size: int = 32  # images per device per micro-batch
    grad_accum: int = 1
    grad_checkpointing: bool = False
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    lock_image: bool = False  # freeze the image tower
    lock_text: bool = False  # freeze the text tower
    # data loading
    augment: bool = True  # flips / 90 deg rotations (never for samples whose texts name positions)
    num_workers: int = 4
    # run
    seed: int = 0
    device: str = "auto"
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = True  # also log to TensorBoard when it is installed

    # ------------------------------------------------------------------ derived
    def resolved(self, key: str) -> Any:
        """The value of a stage-dependent key (``lr``, ``weight_decay``, ``warmup_steps``, ``lambdas``)."""
        value = getattr(self, key)
        return STAGE_DEFAULTS[self.stage][key] if value is None else value

    @property
    def lambdas_resolved(self) -> tuple[float, float, float, float, float]:
        return tuple(float(x) for x in self.resolved("lambdas"))  # type: ignore[return-value]

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)

    @property
    def export_path(self) -> Path:
        p = Path(self.export)
        return p if p.is_absolute() else self.out_path / p

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------- validation
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_INT = ("stage", "regions_per_image", "num_candidates", "vic_regions_per_image", "batch_size", "grad_accum",
        "num_workers", "seed", "log_every", "ckpt_every", "keep_checkpoints")
_OPT_INT = ("warmup_steps", "max_steps", "crop_size")
_FLOAT = ("min_lr_ratio", "eps", "epochs", "class_prompt_prob", "caption_prompt_prob", "distill", "farslip_momentum")
_OPT_FLOAT = ("lr", "weight_decay", "max_grad_norm")
_BOOL = ("export_half", "vic_stop_grad", "grad_checkpointing", "lock_image", "lock_text", "augment",
         "tensorboard", "background_negatives")
_OPT_BOOL = ("long_text",)
_STR = ("model", "out_dir", "export", "dense_mode", "region_text", "precision", "device", "objective",
        "farslip_teacher")


def _bad(key: str, msg: str) -> InputError:
    return InputError(f"config key {key!r}: {msg}")


def _as_int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise _bad(key, f"expected an integer, got {v!r}")
    return v


def _as_float(key: str, v: Any) -> float:
    if isinstance(v, bool):
        raise _bad(key, f"expected a number, got {v!r}")
    if isinstance(v, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            raise _bad(key, f"expected a number, got {v!r}") from None
    if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise _bad(key, f"expected a finite number, got {v!r}")
    return float(v)


def _coerce(key: str, v: Any) -> Any:
    if key in _OPT_INT + _OPT_FLOAT + _OPT_BOOL + ("lambdas", "farslip_weights") and v is None:
        return None
    if key in _INT or key in _OPT_INT:
        return _as_int(key, v)
    if key in _FLOAT or key in _OPT_FLOAT:
        return _as_float(key, v)
    if key in _BOOL or key in _OPT_BOOL:
        if not isinstance(v, bool):
            raise _bad(key, f"expected true or false, got {v!r}")
        return v
    if key in _STR:
        if not isinstance(v, str):
            raise _bad(key, f"expected a string, got {v!r}")
        return v
    if key == "data":
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
            raise _bad(key, "expected a path or a non-empty list of paths")
        out: list[str] = []
        for item in items:  # shell-style patterns ("runs/demo/data/scene_1*") expand, sorted
            if any(c in item for c in "*?["):
                # a pattern matching nothing stays as it is: reading the data reports it
                out.extend(sorted(glob.glob(item)) or [item])
            else:
                out.append(item)
        return out
    if key in ("lambdas", "betas", "farslip_weights"):
        if not isinstance(v, list):
            raise _bad(key, f"expected a list of numbers, got {v!r}")
        return [_as_float(key, x) for x in v]
    raise _bad(key, "unknown key")  # pragma: no cover - guarded by the caller


def _check(cfg: TrainConfig) -> None:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise _bad(key, msg)

    for key in ("model", "out_dir"):
        need(bool(getattr(cfg, key).strip()), key, "is required")
    need(bool(cfg.data), "data", "is required (a folder with samples.jsonl, or a list of them)")
    need(cfg.stage in (1, 2), "stage", f"must be 1 or 2, got {cfg.stage}")
    need(bool(cfg.export.strip()) and cfg.export.endswith(".safetensors"), "export",
         f"must be a .safetensors file name, got {cfg.export!r}")
    need(cfg.dense_mode in DENSE_MODES, "dense_mode", f"must be one of {DENSE_MODES}, got {cfg.dense_mode!r}")
    need(cfg.region_text in REGION_TEXTS, "region_text",
         f"must be one of {REGION_TEXTS}, got {cfg.region_text!r}")
    need(0.0 <= cfg.class_prompt_prob <= 1.0, "class_prompt_prob", "must be in [0, 1]")
    need(cfg.distill >= 0.0, "distill", "must be >= 0")
    need(cfg.objective in ("geoalign", "farslip"), "objective", "must be 'geoalign' or 'farslip'")
    need(cfg.farslip_teacher in ("ema", "frozen", "self"), "farslip_teacher", "must be 'ema', 'frozen' or 'self'")
    need(0.0 <= cfg.farslip_momentum < 1.0, "farslip_momentum", "must be in [0, 1)")
    need(cfg.farslip_weights is None or (len(cfg.farslip_weights) == 3 and all(w >= 0 for w in cfg.farslip_weights)),
         "farslip_weights", "must be three weights >= 0 (global, p2p, rca)")
    need(cfg.objective != "farslip" or cfg.stage == 2, "objective", "farslip needs regions: a stage 2 config")
    need(0.0 <= cfg.caption_prompt_prob <= 1.0, "caption_prompt_prob", "must be in [0, 1]")
    need(cfg.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}, got {cfg.precision!r}")
    need(cfg.device in DEVICES, "device", f"must be one of {DEVICES}, got {cfg.device!r}")
    lam = cfg.lambdas_resolved
    need(len(lam) == 5, "lambdas", f"needs five weights (global, rpa, hna, vic, htc), got {len(lam)}")
    need(all(x >= 0 for x in lam) and any(x > 0 for x in lam), "lambdas",
         "weights must be >= 0 and at least one > 0")
    if cfg.stage == 1:
        need(lam[1:] == (0.0, 0.0, 0.0, 0.0), "lambdas",
             "stage 1 trains Eq. 1 only: l2..l5 must be 0 (use stage: 2 for the other losses)")
    need(cfg.resolved("lr") > 0, "lr", "must be > 0")
    need(cfg.resolved("weight_decay") >= 0, "weight_decay", "must be >= 0")
    need(cfg.resolved("warmup_steps") >= 0, "warmup_steps", "must be >= 0")
    need(0.0 <= cfg.min_lr_ratio <= 1.0, "min_lr_ratio", "must be in [0, 1]")
    need(len(cfg.betas) == 2 and all(0.0 <= b < 1.0 for b in cfg.betas), "betas", "needs two numbers in [0, 1)")
    need(cfg.eps > 0, "eps", "must be > 0")
    need(cfg.max_grad_norm is None or cfg.max_grad_norm > 0, "max_grad_norm", "must be > 0 (or null)")
    need(cfg.epochs > 0, "epochs", "must be > 0")
    need(cfg.max_steps is None or cfg.max_steps >= 1, "max_steps", "must be >= 1 (or null)")
    for key in ("batch_size", "grad_accum", "regions_per_image", "log_every", "ckpt_every", "keep_checkpoints"):
        need(getattr(cfg, key) >= 1, key, "must be >= 1")
    need(cfg.num_candidates >= 2, "num_candidates", "must be >= 2 (the positive and at least one negative)")
    need(cfg.vic_regions_per_image >= 0, "vic_regions_per_image", "must be >= 0 (0: all regions)")
    need(cfg.crop_size is None or cfg.crop_size >= 8, "crop_size", "must be >= 8 px (or null)")
    need(cfg.num_workers >= 0, "num_workers", "must be >= 0")
    need(not (cfg.lock_image and cfg.lock_text), "lock_image",
         "locking both towers leaves only the temperature to train")


def config_from_dict(raw: Any, source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a mapping (e.g. parsed YAML)."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping of keys to values at the top level")
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise InputError(
            f"{source}: unknown config key(s) {', '.join(unknown)} (known: {', '.join(_FIELDS)})"
        )
    values = {k: _coerce(k, v) for k, v in raw.items()}
    cfg = TrainConfig(**values)
    _check(cfg)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` (VALUE read as YAML) -> (key, value)."""
    if "=" not in text:
        raise InputError(f"--set expects KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise InputError(f"--set {key}: cannot read {value!r} as a YAML value") from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config, apply ``overrides`` (key -> value) and validate."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{path}: cannot parse YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping of keys to values at the top level")
    raw = dict(raw)
    raw.update(overrides or {})
    return config_from_dict(raw, source=str(path))
