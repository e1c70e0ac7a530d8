"""Training samples: ``samples.jsonl`` reader, chip loading, augmentation, collate, sampler.

One JSON object per line (DESIGN.md)::

    {"image": "chips/000123.tif", "caption": "...", "caption_detail": "...",
     "regions": [{"bbox": [x0, y0, x1, y1], "phrase": "red car",
                  "description": "...", "hard_negatives": ["blue car", ...]}]}

Reading and validating the file, and reading the chips, are :mod:`geoalign_core.data.schema`'s
(:func:`~geoalign_core.data.schema.read_samples`, :func:`~geoalign_core.data.schema.read_image`),
shared with ``geoalign eval``, so a sample trains and evaluates the same way:

* ``image`` is relative to the folder of the jsonl file (absolute paths work too); any image
  GDAL reads. Pixels become float [0, 1]: ``uint8`` / 255, anything else the 2-98 % stretch
  of :mod:`geoalign_core.geo.stats` over the chip; nodata / alpha / NaN pixels become 0.
  Chips are resized (bilinear, antialiased) to the model input size.
* ``bbox`` is normalised xyxy within [0, 1] (an error otherwise); boxes thinner than 1e-6
  are dropped; boxes become pixel xyxy of the resized image.
* ``caption_detail`` defaults to ``caption``; ``description`` to ``phrase``.

Per step an image contributes at most R regions (a random subset) and each region Q text
candidates: its phrase first, then up to Q-1 of its ``hard_negatives``; when a region has
fewer, the rest are other phrases of the dataset (never equal to the positive, compared
case- and space-insensitively).

Augmentation: one of the 8 flips / 90-degree rotations, applied to the image and its boxes
together -- but only for samples none of whose texts mention a position or orientation
("left", "upper", "north", "horizontal", ...), since the texts would then be wrong. Both
stages use it; ``augment: false`` turns it off.

All randomness of a sample is a function of ``(seed, epoch, index)`` (its own NumPy
generator), and the order of samples a function of ``(seed, epoch)``
(:class:`ResumableSampler`), so a resumed run sees exactly the batches an uninterrupted
one would, whatever the number of loader workers.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler

from geoalign_core.data import schema
from geoalign_core.data.text import fill_template, norm
from geoalign_core.errors import InputError
from geoalign_core.inference.vocabulary import background_for

POSITION_WORDS = re.compile(
    r"\b(left|right|upper|lower|top|bottom|north\w*|south\w*|east\w*|west\w*|above|below|"
    r"horizontal\w*|vertical\w*|diagonal\w*|oriented|orientation|facing|clockwise|"
    r"anticlockwise|counterclockwise|leftmost|rightmost|topmost|bottommost)\b",
    re.IGNORECASE,
)
# Prompts of a region's class used as its RPA text with probability ``class_prompt_prob``
# ("{}": the class, "{a}": the class with its article, "{p}": its plural). They teach the text
# tower that the bare class name ("car"), its plural ("cars") and prompt-wrapped forms ("an
# aerial image of a car.") -- what users type and the toolkit's templates produce -- name the
# same regions as "red car".
CLASS_PROMPTS = (
    "{}", "{a}", "{p}", "{a}.", "an aerial image of {a}.", "a satellite image of {a}.", "an aerial photo of {}.",
    "a remote sensing image of {a}.", "a top-down view of {a}.", "a satellite photo of {}.",
    "an aerial image of {p}.", "a satellite image of {p}.",
)
# A chip's brief caption may become a prompt of its dominant class (``caption_prompt_prob``)
# when that class covers at least this share of it (the rule of ``geoalign eval tiles``).
DOMINANT_MIN_COVER = 0.25
# Used only when the dataset has no phrase other than a region's own to pad HNA candidates.
FALLBACK_NEGATIVES = (
    "background", "bare soil", "water", "grass", "road", "building", "tree", "parking lot",
    "field", "shadow",
)


@dataclass
class Region:
    bbox: tuple[float, float, float, float]  # normalised xyxy, clipped to [0, 1]
    phrase: str
    description: str
    hard_negatives: list[str] = field(default_factory=list)
    name: str | None = None  # the region's class (``class`` key), when the samples give it
    cover: float | None = None  # share of the chip its geometry covers (``cover`` key), when given


@dataclass
class Sample:
    image: Path
    caption: str
    caption_detail: str
    regions: list[Region]
    positional: bool  # some text names a position/orientation: no geometric augmentation
    dominant: str | None = None  # class covering the largest share (>= DOMINANT_MIN_COVER) of the chip


# ---------------------------------------------------------------------- reading jsonl
def _region(obj: dict) -> Region | None:
    """A schema-checked region (see :func:`geoalign_core.data.schema.check_sample`) -> Region."""
    x0, y0, x1, y1 = (min(max(float(v), 0.0), 1.0) for v in obj["bbox"])
    if x1 - x0 <= 1e-6 or y1 - y0 <= 1e-6:
        return None  # degenerate after clipping the schema's rounding tolerance
    phrase = obj["phrase"].strip()
    description = obj.get("description")
    description = description.strip() if isinstance(description, str) and description.strip() else phrase
    pos = norm(phrase)
    seen: set[str] = set()
    clean: list[str] = []
    for n in obj.get("hard_negatives", []):
        k = norm(n)
        if k and k != pos and k not in seen:
            seen.add(k)
            clean.append(n.strip())
    name = obj.get("class")
    name = name.strip() if isinstance(name, str) and name.strip() else None
    cover = obj.get("cover")
    cover = float(cover) if isinstance(cover, (int, float)) and not isinstance(cover, bool) else None
    return Region((x0, y0, x1, y1), phrase, description, clean, name, cover)


def dominant_class(regions: Sequence[Region]) -> str | None:
    """The class covering most of the chip (``cover``, else the box area), if >= DOMINANT_MIN_COVER."""
    share: dict[str, float] = {}
    for r in regions:
        if r.name:
            a = r.cover if r.cover is not None else (r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1])
            share[r.name] = share.get(r.name, 0.0) + a
    if not share:
        return None
    name, a = max(share.items(), key=lambda kv: kv[1])
    return name if a >= DOMINANT_MIN_COVER else None


def read_samples(path: str | Path) -> list[Sample]:
    """One ``samples.jsonl`` (or a folder holding one) -> training :class:`Sample` s.

    Parsing, validation (one-line errors naming ``file:line``) and image paths are
    :func:`geoalign_core.data.schema.read_samples`, the reader ``geoalign eval`` uses too;
    this adds the training view: defaults, de-duplicated hard negatives, the positional
    flag and the dominant class.
    """
    samples: list[Sample] = []
    for obj in schema.read_samples(path):
        caption = obj["caption"].strip()
        detail = obj.get("caption_detail", "").strip() or caption
        regions = [r for o in obj.get("regions", []) + obj.get("background_regions", [])
                   if (r := _region(o)) is not None]
        texts = [caption, detail] + [t for r in regions for t in (r.phrase, r.description, *r.hard_negatives)]
        positional = any(POSITION_WORDS.search(t) for t in texts)
        samples.append(Sample(Path(obj["image"]), caption, detail, regions, positional, dominant_class(regions)))
    return samples


# ---------------------------------------------------------------------- geometry
def dihedral_image(img: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` in 0..7 of a ``[C, H, W]`` image: rotate 90 deg (k % 4) times, then mirror if k >= 4."""
    out = torch.rot90(img, k % 4, dims=(1, 2))
    return out.flip(2) if k >= 4 else out


def dihedral_boxes(boxes: np.ndarray, k: int) -> np.ndarray:
    """The same transform on normalised xyxy boxes ``[K, 4]`` (square images)."""
    b = boxes.copy()
    for _ in range(k % 4):  # torch.rot90(k=1, dims=(H, W)): new x = old y, new y = 1 - old x
        x0, y0, x1, y1 = b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy()
        b = np.stack([y0, 1.0 - x1, y1, 1.0 - x0], axis=1)
    if k >= 4:
        b = np.stack([1.0 - b[:, 2], b[:, 1], 1.0 - b[:, 0], b[:, 3]], axis=1)
    return b


def class_prompt(name: str, rng: np.random.Generator) -> str:
    """One of :data:`CLASS_PROMPTS` for ``name``, chosen by ``rng``."""
    t = CLASS_PROMPTS[int(rng.integers(len(CLASS_PROMPTS)))]
    return fill_template(t, name)


# ---------------------------------------------------------------------- dataset
class GeoAlignDataset(Dataset):
    """Samples of one or more ``samples.jsonl`` files, ready for GeoAlignCLIP training.

    ``dataset[(epoch, index)]`` (or ``dataset[index]`` for epoch 0) returns a dict with
    ``image`` (float ``[3, S, S]`` in [0, 1]), ``boxes`` (pixel xyxy ``[K, 4]``, K <= R),
    ``caption``, ``caption_detail``, ``region_texts`` (K), ``candidates`` (K lists of Q
    texts, the positive first) and ``index``.
    """

    def __init__(
        self,
        sources: str | Path | Sequence[str | Path],
        image_size: int,
        *,
        regions_per_image: int = 8,
        num_candidates: int = 8,
        augment: bool = True,
        seed: int = 0,
        region_text: str = "phrase",
        class_prompt_prob: float = 0.0,
        caption_prompt_prob: float = 0.0,
        background_negatives: bool = False,
    ):
        if isinstance(sources, (str, Path)):
            sources = [sources]
        self.samples: list[Sample] = [s for src in sources for s in read_samples(src)]
        self.image_size = int(image_size)
        self.regions_per_image = int(regions_per_image)
        self.num_candidates = int(num_candidates)
        self.augment = bool(augment)
        self.seed = int(seed)
        if region_text not in ("phrase", "description"):
            raise InputError(f"region_text must be 'phrase' or 'description', got {region_text!r}")
        self.region_text = region_text
        if not 0.0 <= class_prompt_prob <= 1.0:
            raise InputError(f"class_prompt_prob must be in [0, 1], got {class_prompt_prob}")
        self.class_prompt_prob = float(class_prompt_prob)
        if not 0.0 <= caption_prompt_prob <= 1.0:
            raise InputError(f"caption_prompt_prob must be in [0, 1], got {caption_prompt_prob}")
        self.caption_prompt_prob = float(caption_prompt_prob)
        self.background_negatives = bool(background_negatives)
        pool: dict[str, str] = {}
        for s in self.samples:
            for r in s.regions:
                pool.setdefault(norm(r.phrase), r.phrase)
        self.phrase_pool: list[str] = list(pool.values())
        self._pool_keys: list[str] = list(pool.keys())

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_regions(self) -> int:
        return sum(len(s.regions) for s in self.samples)

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(epoch), int(index)])

    def candidates(self, region: Region, rng: np.random.Generator) -> list[str]:
        """Positive phrase first, then Q-1 negatives (hard ones first, padded from the dataset).

        With ``background_negatives``, a labelled region's hard negatives also hold the background
        phrases ``find`` scores it against (:func:`~geoalign_core.inference.vocabulary.background_for`
        its phrase and class), so HNA trains the score ``find`` reports."""
        q1 = self.num_candidates - 1
        negs = list(region.hard_negatives)
        if self.background_negatives and norm(region.phrase) != "background":  # not a background box
            own = {norm(n) for n in negs}
            negs += [b for b in background_for([region.phrase, *([region.name] if region.name else [])])
                     if norm(b) not in own]
        if len(negs) > q1:
            pick = sorted(rng.choice(len(negs), size=q1, replace=False).tolist())
            negs = [negs[i] for i in pick]
        if len(negs) < q1:
            exclude = {norm(region.phrase)} | {norm(n) for n in negs}
            options = [p for p, k in zip(self.phrase_pool, self._pool_keys) if k not in exclude]
            if len(options) < q1 - len(negs):
                options += [f for f in FALLBACK_NEGATIVES if norm(f) not in exclude and f not in options]
            if options:
                take = min(q1 - len(negs), len(options))
                negs += [options[i] for i in rng.choice(len(options), size=take, replace=False).tolist()]
            while len(negs) < q1:  # tiny vocabularies: repeat negatives (never the positive)
                negs.append(negs[int(rng.integers(len(negs)))])
        return [region.phrase, *negs]

    def region_text_of(self, region: Region, rng: np.random.Generator) -> str:
        """RPA text: the phrase (or description), or with ``class_prompt_prob`` a class prompt."""
        if self.class_prompt_prob > 0.0 and region.name and rng.random() < self.class_prompt_prob:
            return class_prompt(region.name, rng)
        return region.phrase if self.region_text == "phrase" else region.description

    def caption_of(self, sample: Sample, rng: np.random.Generator) -> str:
        """Brief caption, or with ``caption_prompt_prob`` a prompt of the chip's dominant class."""
        if self.caption_prompt_prob > 0.0 and sample.dominant and rng.random() < self.caption_prompt_prob:
            return class_prompt(sample.dominant, rng)
        return sample.caption

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        s = self.samples[index]
        rng = self.rng(epoch, index)
        regions = s.regions
        if len(regions) > self.regions_per_image:
            pick = sorted(rng.choice(len(regions), size=self.regions_per_image, replace=False).tolist())
            regions = [regions[i] for i in pick]
        k = int(rng.integers(8)) if self.augment and not s.positional else 0
        cands = [self.candidates(r, rng) for r in regions]
        texts = [self.region_text_of(r, rng) for r in regions]
        caption = self.caption_of(s, rng)

        img = torch.from_numpy(schema.read_image(s.image))
        size = self.image_size
        if tuple(img.shape[1:]) != (size, size):
            img = F.interpolate(img[None], size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)[0].clamp_(0.0, 1.0)
        boxes = np.array([r.bbox for r in regions], dtype=np.float64).reshape(-1, 4)
        if k:
            img = dihedral_image(img, k).contiguous()
            boxes = dihedral_boxes(boxes, k)
        return {
            "image": img,
            "boxes": torch.from_numpy(boxes * size).float(),
            "caption": caption,
            "caption_detail": s.caption_detail,
            "region_texts": texts,
            "region_classes": [r.name or norm(r.phrase) for r in regions],
            "candidates": cands,
            "index": index,
        }


# ---------------------------------------------------------------------- batching
def class_ids(names: Sequence[str]) -> torch.Tensor:
    """Stable integer ids of class names, the same on every rank (a CRC32 of the lower-case name)."""
    return torch.tensor([zlib.crc32(n.strip().lower().encode("utf-8")) for n in names], dtype=torch.long)


class Collate:
    """Batch samples with any number of regions each (zero included).

    Texts are de-duplicated: ``texts`` holds each distinct string once (``tokens`` their
    tokens when a tokenizer is given) and integer index tensors say which text is whose:
    ``brief_idx`` [B], ``detail_idx`` [B], ``region_idx`` [K], ``cand_idx`` [K, Q], with
    K = sum of regions over the batch. ``boxes`` is one ``[K_i, 4]`` tensor per image and
    ``region_image`` [K] the image of each region, ``region_class`` [K] its class id
    (:func:`class_ids`). Texts a loss does not need are skipped.
    """

    def __init__(self, tokenizer=None, need_detail: bool = True, need_region_text: bool = True,
                 need_candidates: bool = True):
        self.tokenizer = tokenizer
        self.need_detail = need_detail
        self.need_region_text = need_region_text
        self.need_candidates = need_candidates

    def __call__(self, items: list[dict]) -> dict:
        texts: dict[str, int] = {}

        def tid(t: str) -> int:
            return texts.setdefault(t, len(texts))

        brief = [tid(it["caption"]) for it in items]
        detail = [tid(it["caption_detail"]) for it in items] if self.need_detail else []
        region = [tid(t) for it in items for t in it["region_texts"]] if self.need_region_text else []
        q = max((len(c) for it in items for c in it["candidates"]), default=0)
        cand = [[tid(t) for t in c] for it in items for c in it["candidates"]] if self.need_candidates else []
        counts = [len(it["boxes"]) for it in items]
        batch = {
            "images": torch.stack([it["image"] for it in items]),
            "boxes": [it["boxes"].reshape(-1, 4) for it in items],
            "n_regions": torch.tensor(counts, dtype=torch.long),
            "region_image": torch.repeat_interleave(torch.arange(len(items)), torch.tensor(counts, dtype=torch.long)),
            "texts": list(texts),
            "brief_idx": torch.tensor(brief, dtype=torch.long),
            "detail_idx": torch.tensor(detail, dtype=torch.long),
            "region_idx": torch.tensor(region, dtype=torch.long),
            "region_class": class_ids([c for it in items for c in it.get("region_classes", [])]),
            "cand_idx": torch.tensor(cand, dtype=torch.long).reshape(len(cand), q if cand else 0),
            "indices": torch.tensor([it["index"] for it in items], dtype=torch.long),
        }
        if self.tokenizer is not None:
            batch["tokens"] = self.tokenizer(batch["texts"])
        return batch


class _Sized:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class ResumableSampler(Sampler):
    """A :class:`DistributedSampler` (order a function of seed and epoch) that yields
    ``(epoch, index)`` keys and can start ``skip`` samples into the epoch (for resume)."""

    def __init__(self, n: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        self.inner = DistributedSampler(_Sized(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                        seed=seed, drop_last=False)
        self.epoch = 0
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = int(epoch), int(skip)

    @property
    def samples_per_epoch(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        self.inner.set_epoch(self.epoch)
        for i, idx in enumerate(self.inner):
            if i >= self.skip:
                yield (self.epoch, int(idx))

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)
