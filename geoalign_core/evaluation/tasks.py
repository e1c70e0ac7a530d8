"""The evaluations behind ``geoalign eval``; each returns a JSON-friendly result dict.

* :func:`eval_scene` -- zero-shot scene classification of whole images (a folder per class, or
  a CSV ``image,label``): each image's global embedding against the class names (prompt
  templates averaged); top-1 / top-5 accuracy and per-class top-1.
* :func:`eval_regions` -- region-level classification as in the paper: every labelled box of
  ``samples.jsonl`` is embedded with ``encode_regions`` (RoIAlign on the dense grid of its chip)
  and classified among all class names of the data; top-1 / top-5 and per-class top-1.
* :func:`eval_retrieval` -- image-text retrieval on ``samples.jsonl`` (chips vs their captions),
  recall@1/5/10 in both directions. Identical captions are one text: retrieving any image with
  that caption counts (synthetic chips of one scene often share a brief caption).
* :func:`eval_hard_negatives` -- hard-negative accuracy: a region counts as correct when its
  phrase scores above ALL of its hard negatives; also per negative type (``colour``,
  ``category``, ``other`` = any other type), counting for each type only the negatives of that
  type. The same for descriptions vs ``description_negatives`` when the data has them.
* :func:`eval_tiles` -- tile classification on a labelled raster, measured as ``geoalign
  tile-classify`` works: its tile grid (no overlap), its tile reader (tiles resampled to the
  model's input, nodata filled with the tile's mean colour) and its class encoder and prompt
  templates. Each tile is labelled by its dominant class (the class whose polygons cover the
  largest part of the tile); tiles where that cover is below ``min_cover`` (default 25 %) or
  that are mostly nodata are skipped. Top-1 / top-5 among the classes of the labels.

Classification results also give ``mean_class_top1``, the mean of the per-class top-1
accuracies (balanced accuracy), because dominant classes (rivers, trees) can otherwise hide
poor results on rare ones.

Texts are compared by cosine similarity of L2-normalised embeddings.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import torch
from rasterio.windows import Window
from tqdm import tqdm

from geoalign_core.data.chipping import FeatureIndex, class_cover
from geoalign_core.data.labels import load_labels
from geoalign_core.data.schema import read_image, read_samples
from geoalign_core.data.text import clean_class, norm
from geoalign_core.errors import InputError
from geoalign_core.evaluation.common import (
    DEFAULT_TEMPLATES,
    batched,
    class_embeddings,
    encode_image_batches,
    encode_texts,
    to_model_input,
)
from geoalign_core.evaluation.metrics import (
    hard_negative_accuracy,
    per_class_accuracy,
    recall_at_k,
    topk_accuracy,
)
from geoalign_core.geo.grid import tile_windows
from geoalign_core.geo.raster import RasterSource
from geoalign_core.inference.encoder import Encoder
from geoalign_core.model import GeoAlignCLIP

__all__ = [
    "IMAGE_SUFFIXES",
    "eval_hard_negatives",
    "eval_regions",
    "eval_retrieval",
    "eval_scene",
    "eval_tiles",
    "load_scene_dataset",
    "region_class",
]

IMAGE_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp", ".jp2", ".gif"})
TOPK = (1, 5)
RECALL_K = (1, 5, 10)
PHRASE_TYPE_GROUPS = ("colour", "category", "other")
DEFAULT_MIN_COVER = 0.25


# ---------------------------------------------------------------------------- data
def load_scene_dataset(path: str | PathLike) -> tuple[list[Path], list[str]]:
    """Scene-classification data: a folder with one sub-folder of images per class, or a CSV
    with columns ``image`` and ``label`` (paths relative to the CSV's folder).

    Class names are the folder names / labels as text (``_`` -> space, lower case).

    Raises:
        InputError: missing data, no images, a CSV without the columns or with missing images.
    """
    p = Path(path)
    if p.is_dir():
        paths, labels = [], []
        for sub in sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")):
            files = sorted(f for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            labels += [clean_class(sub.name)] * len(files)
        if not paths:
            raise InputError(f"no images in class sub-folders of {p} (expected {p}/<class>/<image>.tif|png|jpg)")
        return paths, labels
    if not p.is_file():
        raise InputError(f"scene data not found: {p} (a folder per class, or a CSV with columns image,label)")
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV {p}: {exc}") from None
    if not rows:
        raise InputError(f"{p}: no rows (expected a header image,label and one row per image)")
    cols = {c.strip().lower(): c for c in rows[0] if c}
    img_col = next((cols[c] for c in ("image", "path", "file", "filename") if c in cols), None)
    lab_col = next((cols[c] for c in ("label", "class", "category") if c in cols), None)
    if img_col is None or lab_col is None:
        raise InputError(f"{p}: the CSV needs columns 'image' and 'label' (found: {', '.join(rows[0])})")
    paths, labels = [], []
    for n, row in enumerate(rows, start=2):
        img, lab = (row.get(img_col) or "").strip(), (row.get(lab_col) or "").strip()
        if not img or not lab:
            raise InputError(f"{p}:{n}: empty image or label")
        f = Path(img) if Path(img).is_absolute() else p.parent / img
        if not f.is_file():
            raise InputError(f"{p}:{n}: image not found: {f}")
        paths.append(f)
        labels.append(clean_class(lab))
    return paths, labels


def _resolve_classes(found: Sequence[str], classes: Sequence[str] | None, what: str) -> list[str]:
    names = sorted(set(found))
    if classes is None:
        return names
    given = [clean_class(c) for c in classes]
    missing = sorted(set(names) - set(given))
    if missing:
        raise InputError(f"the classes lack classes that occur in the {what}: {', '.join(missing[:10])}",
                         param="classes")
    return list(dict.fromkeys(given))


def _class_metrics(scores: torch.Tensor, targets: torch.Tensor, classes: list[str]) -> dict:
    acc = topk_accuracy(scores, targets, TOPK)
    per_class = per_class_accuracy(scores, targets, classes)
    metrics = {f"top{k}": v for k, v in acc.items()}
    metrics["mean_class_top1"] = float(np.mean([d["top1"] for d in per_class.values()])) if per_class else float("nan")
    return {"metrics": metrics, "per_class": per_class}


# ---------------------------------------------------------------------------- scene
def eval_scene(
    model: GeoAlignCLIP,
    data: str | PathLike,
    *,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Zero-shot scene classification (see the module docstring)."""
    paths, labels = load_scene_dataset(data)
    names = _resolve_classes(labels, classes, "data")
    text = class_embeddings(model, names, templates)
    emb = encode_image_batches(model, paths, batch_size, desc="scene", progress=progress)
    targets = torch.tensor([names.index(lb) for lb in labels], device=emb.device)
    res = {"task": "scene", "n": len(paths), "classes": names, **_class_metrics(emb @ text.T, targets, names)}
    return res


# ---------------------------------------------------------------------------- regions
@torch.inference_mode()
def encode_sample_regions(
    model: GeoAlignCLIP, samples: Sequence[dict], batch_size: int, *, desc: str, progress: bool
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Region embeddings ``[R, D]`` of every region of every sample, and their (sample, region) index."""
    s = model.image_size
    out, index = [], []
    order = list(range(len(samples)))
    with tqdm(total=len(samples), desc=desc, unit="img", disable=not progress) as bar:
        for chunk in batched(order, batch_size):
            imgs, boxes = [], []
            for i in chunk:
                regs = samples[i].get("regions", [])
                if not regs:
                    continue
                imgs.append(read_image(samples[i]["image"]))
                b = torch.tensor([r["bbox"] for r in regs], dtype=torch.float32).clamp(0, 1) * s
                boxes.append(b)
                index += [(i, j) for j in range(len(regs))]
            if imgs:
                x = to_model_input(imgs, model)
                out.append(model.encode_regions(x, boxes).float())
            bar.update(len(chunk))
    if not out:
        return torch.zeros(0, model.embed_dim, device=model.device), []
    return torch.cat(out), index


def region_class(r: dict) -> str:
    """A labelled region's class: its ``class`` key, else its phrase (cleaned)."""
    return clean_class(r.get("class") or r["phrase"])


def eval_regions(
    model: GeoAlignCLIP,
    data: str | PathLike | Sequence[str | PathLike],
    *,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Region-level classification (see the module docstring)."""
    samples = read_samples(data)
    labels = [region_class(r) for s in samples for r in s.get("regions", [])]
    if not labels:
        raise InputError("the samples have no regions to classify")
    names = _resolve_classes(labels, classes, "samples")
    text = class_embeddings(model, names, templates)
    emb, index = encode_sample_regions(model, samples, batch_size, desc="regions", progress=progress)
    targets = torch.tensor(
        [names.index(region_class(samples[i]["regions"][j])) for i, j in index], device=emb.device
    )
    return {
        "task": "regions",
        "n": len(index),
        "n_images": len(samples),
        "classes": names,
        **_class_metrics(emb @ text.T, targets, names),
    }


# ---------------------------------------------------------------------------- retrieval
def eval_retrieval(
    model: GeoAlignCLIP,
    data: str | PathLike | Sequence[str | PathLike],
    *,
    caption_key: str = "caption",
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Image-text retrieval recall@k (see the module docstring)."""
    samples = read_samples(data)
    if caption_key not in ("caption", "caption_detail"):
        raise InputError(f"caption key must be caption or caption_detail; got {caption_key!r}", param="caption_key")
    captions = [s.get(caption_key) or s["caption"] for s in samples]
    keys = list(dict.fromkeys(norm(c) for c in captions))
    first: dict[str, str] = {}
    for c in captions:
        first.setdefault(norm(c), c)
    texts = [first[k] for k in keys]
    col = {k: j for j, k in enumerate(keys)}
    positives = torch.zeros(len(samples), len(texts), dtype=torch.bool)
    for i, c in enumerate(captions):
        positives[i, col[norm(c)]] = True
    img = encode_image_batches(model, [s["image"] for s in samples], batch_size, desc="retrieval", progress=progress)
    txt = encode_texts(model, texts)
    rec = recall_at_k((img @ txt.T).cpu(), positives, RECALL_K)
    metrics = {f"i2t_R@{k}": v for k, v in rec["image_to_text"].items()}
    metrics |= {f"t2i_R@{k}": v for k, v in rec["text_to_image"].items()}
    metrics["mean_recall"] = float(np.mean(list(metrics.values())))
    return {
        "task": "retrieval",
        "n": len(samples),
        "n_texts": len(texts),
        "caption_key": caption_key,
        "metrics": metrics,
    }


# ---------------------------------------------------------------------------- hard negatives
def _type_group(kind: str) -> str:
    return kind if kind in ("colour", "category") else "other"


def _negative_scores(
    emb: torch.Tensor,
    items: list[tuple[int, str, list[str], list[str]]],
    text_emb: dict[str, torch.Tensor],
    groups: Sequence[str] | None,
) -> dict:
    """Accuracy overall and per type group for items ``(row, positive, negatives, types)``."""
    pos_scores, all_negs = [], []
    by_type: dict[str, tuple[list[float], list[torch.Tensor]]] = {}
    for row, pos, negs, types in items:
        e = emb[row]
        p = float(e @ text_emb[pos])
        n = torch.stack([e @ text_emb[t] for t in negs]) if negs else torch.zeros(0)
        pos_scores.append(p)
        all_negs.append(n)
        kinds = [(_type_group(k) if groups else k) for k in types] if len(types) == len(negs) else ["other"] * len(negs)
        for kind in sorted(set(kinds)):
            sel = torch.tensor([k == kind for k in kinds])
            ps, ns = by_type.setdefault(kind, ([], []))
            ps.append(p)
            ns.append(n[sel])
    out = {"all": hard_negative_accuracy(torch.tensor(pos_scores), all_negs), "n": len(items)}
    order = list(groups) if groups else sorted(by_type)
    for kind in order:
        if kind in by_type:
            ps, ns = by_type[kind]
            out[kind] = hard_negative_accuracy(torch.tensor(ps), ns)
            out[f"n_{kind}"] = len(ps)
    return out


def eval_hard_negatives(
    model: GeoAlignCLIP,
    data: str | PathLike | Sequence[str | PathLike],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Hard-negative accuracy of region phrases (and descriptions), overall and per type."""
    samples = read_samples(data)
    has_negs = any(r.get("hard_negatives") for s in samples for r in s.get("regions", []))
    if not has_negs:
        raise InputError("the samples have no hard_negatives", param="num_negatives")
    emb, index = encode_sample_regions(model, samples, batch_size, desc="hard-negatives", progress=progress)
    phrase_items, desc_items, texts = [], [], set()
    for row, (i, j) in enumerate(index):
        r = samples[i]["regions"][j]
        if r.get("hard_negatives"):
            phrase_items.append((row, r["phrase"], r["hard_negatives"], r.get("hard_negative_types", [])))
            texts.update([r["phrase"], *r["hard_negatives"]])
        if r.get("description_negatives") and r.get("description"):
            desc_items.append(
                (row, r["description"], r["description_negatives"], r.get("description_negative_types", []))
            )
            texts.update([r["description"], *r["description_negatives"]])
    text_list = sorted(texts)
    tq = encode_texts(model, text_list).cpu()
    text_emb = dict(zip(text_list, tq))
    emb = emb.cpu()
    metrics = {"phrase": _negative_scores(emb, phrase_items, text_emb, PHRASE_TYPE_GROUPS)}
    if desc_items:
        metrics["description"] = _negative_scores(emb, desc_items, text_emb, None)
    return {"task": "hard-negatives", "n": len(phrase_items), "n_images": len(samples), "metrics": metrics}


# ---------------------------------------------------------------------------- tiles
def _valid_fraction(src: RasterSource, window: Window) -> float:
    return float(src.read_raw(window)[1].mean())


def eval_tiles(
    model: GeoAlignCLIP,
    raster: str | PathLike,
    labels: str | PathLike,
    class_field: str,
    *,
    tile_size: int | None = None,
    min_cover: float = DEFAULT_MIN_COVER,
    max_nodata: float = 0.5,
    classes: Sequence[str] | None = None,
    bands: str | None = None,
    layer: str | None = None,
    allow_no_crs: bool = False,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    progress: bool = True,
) -> dict:
    """Tile classification against the dominant class of each tile (see the module docstring)."""
    if not 0.0 < min_cover <= 1.0:
        raise InputError(f"min cover must be in (0, 1]; got {min_cover}", param="min_cover")
    if not 0.0 <= max_nodata <= 1.0:
        raise InputError(f"max nodata must be in [0, 1]; got {max_nodata}", param="max_nodata")
    enc = Encoder(model, batch_size, templates=templates)
    ts = enc.tile_size(tile_size)
    with RasterSource(raster, bands, allow_no_crs=allow_no_crs) as src:
        ls = load_labels(labels, src, class_field, classes=classes, layer=layer)
        names = _resolve_classes(ls.classes, classes, "labels")
        index = FeatureIndex(ls.features)
        # the grid, tile reader and class encoder of ``geoalign tile-classify`` (no overlap, its default)
        grid = tile_windows(src.width, src.height, ts, 0.0)
        skipped: Counter[str] = Counter()
        kept: list[Window] = []
        target_of: dict[tuple[int, int], int] = {}
        for win in grid:
            col, row = int(win.col_off), int(win.row_off)
            cover = class_cover(index, col, row, ts, ts)
            if not cover:
                skipped["no label"] += 1
                continue
            cls, frac = next(iter(cover.items()))
            if frac < min_cover:
                skipped[f"dominant class covers < {min_cover:g}"] += 1
                continue
            kept.append(win)
            target_of[(col, row)] = names.index(cls)
        if not kept:
            raise InputError(
                f"no tile has a dominant class covering >= {min_cover:g} of it "
                f"({len(grid)} tiles of {ts} px; try a lower min cover or a larger tile size)", param="min_cover"
            )
        text = enc.encode_classes(names)
        embs, targets, used = [], [], []
        with tqdm(total=len(kept), desc="tiles", unit="tile", disable=not progress) as bar:
            for eb in enc.image_pass(src, kept, dense=False, skip_empty=False):
                use = []
                for i, tile in enumerate(eb.tiles):
                    # the validity of the window itself (the model-size mask of a resampled tile is coarser)
                    if 1.0 - _valid_fraction(src, tile.window) > max_nodata:
                        skipped["mostly nodata"] += 1
                        continue
                    use.append(i)
                    targets.append(target_of[(int(tile.window.col_off), int(tile.window.row_off))])
                    used.append((int(tile.window.col_off), int(tile.window.row_off)))
                if use:
                    embs.append(eb.glob[use])
                bar.update(len(eb.tiles))
    if not embs:
        raise InputError("every candidate tile is mostly nodata")
    emb = torch.cat(embs)
    t = torch.tensor(targets, device=emb.device)
    scores = emb @ text.T
    predicted = scores.argmax(dim=1).tolist()
    tiles = [{"col": c, "row": r, "label": names[y], "predicted": names[p]}
             for (c, r), y, p in zip(used, targets, predicted)]
    return {
        "task": "tiles",
        "n": int(t.numel()),
        "tiles_in_grid": len(grid),
        "tile_size": ts,
        "min_cover": min_cover,
        "skipped": dict(skipped),
        "classes": names,
        **_class_metrics(scores, t, names),
        "tiles": tiles,
    }
