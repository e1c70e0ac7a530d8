"""The text side of a GeoAlignCLIP without open_clip: what a query from an index needs.

A query from a scene index runs no image tower: the patch embeddings are stored. It encodes the
phrase (the model's background and vocabulary phrases come from the text store), scans, pools
stored patches and scores. Building the whole model for that imports open_clip, which imports
torchvision, which imports ``torch._dynamo``: on the docs' machine about 2 s of a fresh process's
5.5 s (see docs/benchmarks.md, "CLI start-up").

:func:`load_text_model` builds only open_clip's text transformer, in plain PyTorch with open_clip's
module names (so the checkpoint's text weights load as they are, strictly), and open_clip's own
BPE tokenizer, read from open_clip's installed ``tokenizer.py`` without importing the package. The
embeddings are the same as the whole model's (a test compares them bit for bit). Anything else --
the image tower for a live run, a refinement that re-reads pixels -- loads the whole model the
first time it is asked for (:meth:`TextModel.__getattr__`).

It covers GeoAlign's own checkpoints (safetensors with a :class:`~geoalign_core.spec.ModelSpec` in
their metadata: ``geoalign-demo``, exported and fine-tuned models) whose architecture has a plain
CLIP text tower. Other sources (open_clip and hub checkpoints, hugging-face text towers, a
77-token checkpoint asked to run long) return None: the caller loads the whole model.

The model's fingerprint (:meth:`~geoalign_core.model.GeoAlignCLIP.fingerprint`, which an index is
checked against) hashes every tensor of the whole model, so it is recorded per weights file when
the whole model is loaded (:func:`remember_fingerprint`; building an index does) and read back here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .box_ops import pool_regions
from .spec import SPEC_KEY, ModelSpec, SpecNamed

__all__ = ["TextModel", "TextTower", "load_text_model", "remember_fingerprint"]

#: text-config keys of a plain CLIP text tower (any other key -- a hugging-face tower, another pooling,
#: a different tokenizer -- is left to open_clip)
PLAIN_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
FINGERPRINT_FOLDER = "fingerprints"


# ---------------------------------------------------------------------------- architecture and tokenizer
def _open_clip_folder() -> Path | None:
    spec = importlib.util.find_spec("open_clip")  # finds the package without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(folders[0]) if folders else None


def arch_config(arch: str) -> dict | None:
    """open_clip's JSON config of ``arch`` (GeoAlign's own first, then open_clip's), None when unknown."""
    oc = _open_clip_folder()
    for folder in (Path(__file__).parent / "archs", oc / "model_configs" if oc else None):
        path = folder / f"{arch}.json" if folder is not None else None
        if path is not None and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def _tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer`` module: the package's own when it is imported already, else the same file
    executed on its own (it imports no other part of open_clip)."""
    if "open_clip.tokenizer" in sys.modules:
        return sys.modules["open_clip.tokenizer"]
    name = "geoalign_core._open_clip_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    folder = _open_clip_folder()
    if folder is None:
        raise ImportError("open_clip is not installed")
    spec = importlib.util.spec_from_file_location(name, folder / "tokenizer.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot read {folder / 'tokenizer.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- the tower
class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """open_clip's ``ResidualAttentionBlock`` (pre-norm attention and MLP), same parameter names."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act: Callable[[], nn.Module]):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, hidden)), ("gelu", act()),
                                              ("c_proj", nn.Linear(hidden, width))]))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)  # one tensor as query, key and value: the same (packed) projection as open_clip's
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Blocks(nn.Module):
    def __init__(self, width: int, heads: int, layers: int, mlp_ratio: float, act: Callable[[], nn.Module]):
        super().__init__()
        self.resblocks = nn.ModuleList([_Block(width, heads, mlp_ratio, act) for _ in range(layers)])


class TextTower(nn.Module):
    """open_clip CLIP's text transformer and ``logit_scale``, with the parameter names of the whole model's
    state dict, so its text entries load strictly; :meth:`forward` is ``CLIP.encode_text`` (argmax pooling)."""

    def __init__(self, text_cfg: dict, embed_dim: int, context_length: int, quick_gelu: bool):
        super().__init__()
        width = int(text_cfg["width"])
        act: Callable[[], nn.Module] = QuickGELU if quick_gelu else nn.GELU
        self.token_embedding = nn.Embedding(int(text_cfg["vocab_size"]), width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = _Blocks(width, int(text_cfg["heads"]), int(text_cfg["layers"]),
                                   float(text_cfg.get("mlp_ratio", 4.0)), act)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))
        mask = torch.full((context_length, context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(tokens) + self.positional_embedding
        for block in self.transformer.resblocks:
            x = block(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        return x @ self.text_projection


# ---------------------------------------------------------------------------- fingerprints
def _fingerprint_file(weights: str | os.PathLike, spec: ModelSpec) -> Path:
    from .zoo_table import cache_dir

    path = Path(weights).resolve()
    st = path.stat()
    key = json.dumps([str(path), st.st_size, st.st_mtime_ns, spec.to_dict()], sort_keys=True)
    return cache_dir() / FINGERPRINT_FOLDER / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.txt"


def remember_fingerprint(weights: str | os.PathLike, model: Any) -> None:
    """Record ``model``'s fingerprint for the text-only path (best effort: a read-only cache is no error)."""
    try:
        target = _fingerprint_file(weights, model.spec)
        if _recorded_fingerprint(Path(weights), model.spec) == model.fingerprint():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(model.fingerprint(), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass


def _recorded_fingerprint(weights: Path, spec: ModelSpec) -> str | None:
    try:
        text = _fingerprint_file(weights, spec).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


# ---------------------------------------------------------------------------- the text-side model
class TextModel(SpecNamed):
    """The text side of a GeoAlignCLIP: the attributes a query from an index reads (name, spec, card,
    tokenizer, context length, embedding size, ``logit_scale``, fingerprint, patch and input size, region
    pooling). Any other attribute loads the whole model once (``load_full``) and answers from it."""

    training = False

    def __init__(self, tower: TextTower, spec: ModelSpec, cfg: dict, weights: Path, card: Any,
                 load_full: Callable[[], Any]):
        self.tower = tower.eval().requires_grad_(False)
        self.spec = spec
        self.card = card
        self.weights = weights
        self.context_length = int(tower.positional_embedding.shape[0])
        self.tokenizer = _tokenizer_module().SimpleTokenizer(context_length=self.context_length)
        vision = cfg["vision_cfg"]
        self.image_size = int(vision["image_size"])
        self.patch_size = int(vision["patch_size"])
        self.embed_dim = int(cfg["embed_dim"])
        self._load_full = load_full
        self._full: Any = None

    @property
    def device(self) -> torch.device:
        return self.tower.text_projection.device

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.tower.logit_scale.exp().clamp(max=100.0).reshape(())

    def full(self) -> Any:
        """The whole model (:func:`~geoalign_core.zoo.load_model`), loaded on first use."""
        if self._full is None:
            self._full = self._load_full()
        return self._full

    def fingerprint(self, fresh: bool = False) -> str:
        """The whole model's fingerprint: recorded when it was last loaded whole, else computed by loading it."""
        if self._full is None:
            recorded = _recorded_fingerprint(self.weights, self.spec)
            if recorded is not None:
                return recorded
        return self.full().fingerprint(fresh=fresh)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_text(self, texts: Sequence[str] | str) -> torch.Tensor:
        """``list[str] -> [N, D]``, normalised, as :meth:`GeoAlignCLIP.encode_text`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return torch.zeros(0, self.embed_dim, device=self.device)
        with torch.no_grad():
            return F.normalize(self.tower(self.tokenize(texts).to(self.device)), dim=-1)

    def pool_regions(self, dense: torch.Tensor, boxes: Sequence[torch.Tensor] | torch.Tensor,
                     output_size: int = 4) -> torch.Tensor:
        return pool_regions(dense, boxes, self.patch_size, output_size)

    def eval(self) -> TextModel:
        return self

    def __getattr__(self, name: str) -> Any:  # only for attributes not defined above: the image side
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.full(), name)


def _checkpoint(name_or_path: str) -> tuple[Path, dict[str, Any]] | None:
    """The weights file and the zoo entry's overrides, for a zoo name or a checkpoint path."""
    from .zoo_table import ZOO, weights_path

    entry = ZOO.get(name_or_path)
    if entry is not None:
        path = weights_path(entry)
        return (path, {"arch": entry.arch, "quick_gelu": entry.quick_gelu, "long_text": entry.long_text,
                       "dense_mode": entry.dense_mode, "name": entry.name}) if path.is_file() else None
    path = Path(name_or_path)
    return (path, {}) if path.suffix.lower() == ".safetensors" and path.is_file() else None


def load_text_model(name_or_path: str | os.PathLike, device: str | torch.device | None = "auto",
                    load_full: Callable[[], Any] | None = None) -> TextModel | None:
    """The text side of a zoo model or checkpoint on the CPU, or None where this path does not apply (the
    caller then loads the whole model): see the module's docstring. ``load_full``: how the whole model is
    loaded when an image-side attribute is asked for (default: :func:`~geoalign_core.zoo.load_model`)."""
    if str(device) not in ("cpu", "auto", "None") or (str(device) != "cpu" and torch.cuda.is_available()):
        return None
    found = _checkpoint(str(name_or_path))
    if found is None:
        return None
    path, overrides = found
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            if SPEC_KEY not in meta:
                return None
            spec = ModelSpec.from_dict(json.loads(meta[SPEC_KEY]))
            keys = [k for k in f.keys() if not k.startswith("visual.")]  # noqa: SIM118
            sd = {k: f.get_tensor(k) for k in keys}
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return None  # the whole model's loader reports what is wrong with the file
    if overrides.get("arch") not in (None, spec.arch):
        return None
    pos = sd.get("positional_embedding")
    spec.resolve(path, None if pos is None else int(pos.shape[0]), overrides.get("quick_gelu"),
                 overrides.get("dense_mode"), overrides.get("name"))
    cfg = arch_config(spec.arch)
    if cfg is None or pos is None or "vision_cfg" not in cfg or set(cfg.get("text_cfg", {})) - PLAIN_TEXT_KEYS \
            or set(cfg) - {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}:
        return None
    spec.quick_gelu = spec.quick_gelu or bool(cfg.get("quick_gelu", False))
    if bool(overrides.get("long_text")) and not spec.long_text:
        return None  # stretched at load time (Long-CLIP): the whole model does it
    tower = TextTower(cfg["text_cfg"], int(cfg["embed_dim"]), int(pos.shape[0]), spec.quick_gelu)
    if "logit_scale" in sd:
        sd["logit_scale"] = sd["logit_scale"].reshape(())
    try:
        tower.load_state_dict(sd, strict=True)
    except RuntimeError:
        return None
    from .card import load_card

    if load_full is None:
        def load_full() -> Any:
            from .zoo import load_model

            return load_model(name_or_path, "cpu")
    return TextModel(tower, spec, cfg, path, load_card(path), load_full)
