"""Shared pieces of the evaluations: prompt templates, batched image / text / region encoding,
result tables and JSON output."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from geoalign_core.data.schema import read_image
from geoalign_core.errors import InputError
from geoalign_core.geo.writers import atomic_output, check_output
from geoalign_core.inference.encoder import class_embeddings as _class_embeddings
from geoalign_core.inference.vocabulary import PROMPT_TEMPLATES
from geoalign_core.model import GeoAlignCLIP

__all__ = [
    "DEFAULT_TEMPLATES",
    "class_embeddings",
    "encode_image_batches",
    "encode_texts",
    "format_table",
    "load_templates",
    "to_model_input",
    "write_json",
]

# the one template set, shared with ``geoalign tile-classify`` (geoalign_core.inference.vocabulary)
DEFAULT_TEMPLATES: tuple[str, ...] = PROMPT_TEMPLATES


def load_templates(value: str | None) -> tuple[str, ...]:
    """``--templates``: ``default`` (:data:`DEFAULT_TEMPLATES`), ``none`` (the bare class name),
    or a text file with one template per line using ``{}`` (class) or ``{a}`` (class with article).

    Raises:
        InputError: missing file, no templates, a template without placeholder or with a bad one.
    """
    if value is None or value == "default":
        return DEFAULT_TEMPLATES
    if value == "none":
        return ("{}",)
    path = Path(value)
    if not path.is_file():
        raise InputError(f"templates: not 'default', 'none' or a file: {value}", param="templates")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    templates = tuple(ln for ln in lines if ln and not ln.startswith("#"))
    if not templates:
        raise InputError(f"templates file {path} has no templates", param="templates")
    for t in templates:
        try:
            filled = t.format("X", a="a X")
        except (IndexError, KeyError, ValueError) as exc:
            raise InputError(f"templates: bad template {t!r} ({exc}); use {{}} or {{a}}", param="templates") from None
        if filled == t:
            raise InputError(f"templates: template {t!r} has no {{}} or {{a}} placeholder", param="templates")
    return templates


@torch.inference_mode()
def encode_texts(model: GeoAlignCLIP, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``[N, D]`` normalised text embeddings, encoded in batches (on the model's device)."""
    if not texts:
        return torch.zeros(0, model.embed_dim, device=model.device)
    out = [model.encode_text(list(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
    return torch.cat(out).float()


@torch.inference_mode()
def class_embeddings(
    model: GeoAlignCLIP, classes: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """``[C, D]`` class embeddings: the class encoder of tile classification
    (:func:`geoalign_core.inference.encoder.class_embeddings`)."""
    return _class_embeddings(lambda texts: encode_texts(model, texts, batch_size), classes, templates)


def to_model_input(images: Sequence[np.ndarray], model: GeoAlignCLIP) -> torch.Tensor:
    """Float ``[3, H, W]`` images in [0, 1] -> a normalised ``[B, 3, S, S]`` batch (S = model input size).

    Images of another size are resized (bilinear, antialiased).
    """
    s = model.image_size
    batch = []
    for img in images:
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        if t.shape[-2:] != (s, s):
            t = F.interpolate(t[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[0]
        batch.append(t)
    x = torch.stack(batch).to(model.device)
    return model.preprocess(x)


def batched(items: Sequence, n: int) -> Iterator[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@torch.inference_mode()
def encode_image_batches(
    model: GeoAlignCLIP,
    paths: Sequence[str | PathLike],
    batch_size: int,
    *,
    desc: str = "images",
    progress: bool = True,
    loader: Callable[[str | PathLike], np.ndarray] = read_image,
) -> torch.Tensor:
    """Global ``[N, D]`` embeddings of image files, in batches, with a progress bar."""
    out = []
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
        for chunk in batched(paths, batch_size):
            x = to_model_input([loader(p) for p in chunk], model)
            out.append(model.encode_image(x).float())
            bar.update(len(chunk))
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim, device=model.device)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


def _clean(obj: object) -> object:
    """JSON-safe: NaN -> None, tuple -> list, int keys -> str."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(result: dict, path: str | PathLike, overwrite: bool = False) -> Path:
    """Write the result atomically (checked with :func:`check_output` first)."""
    path = check_output(path, overwrite)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(json.dumps(_clean(result), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
