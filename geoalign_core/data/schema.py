"""The training-sample schema (``samples.jsonl``), its reader, and the image loader.

One JSON object per line, one chip per object (DESIGN.md)::

    {"image": "chips/000123.tif",                     # relative to the jsonl's folder
     "caption": "An aerial image of a road and three cars.",
     "caption_detail": "An aerial image showing ... Three cars: ...",
     "regions": [{"bbox": [x0, y0, x1, y1],           # normalised to [0, 1], xyxy, y down
                  "phrase": "red car",
                  "description": "a small red car on the road in the upper left, oriented east-west",
                  "hard_negatives": ["blue car", "red truck", ...]}]}

``geoalign prepare`` adds these keys (readers must ignore keys they do not know):

* per sample: ``width``, ``height`` (chip pixels), ``window`` ``[col, row, width, height]`` in
  the source raster, ``bounds`` ``[left, bottom, right, top]`` and ``crs`` (the raster's CRS
  as ``EPSG:n`` or WKT), ``source`` (the raster's path), ``classes`` (classes in the chip);
* per region: ``class``, ``attributes`` (``color`` / ``size`` / ``orientation``, each a word
  or null), ``position``, ``relation`` (or null), ``feature_id`` (0-based index of the label
  feature), ``visible`` (fraction of the object inside the chip), ``cover`` (fraction of the
  chip it covers), ``hard_negative_types`` (parallel to ``hard_negatives``: ``colour``,
  ``category`` or ``colour+category``), ``description_negatives`` and
  ``description_negative_types`` (``size``, ``orientation``, ``position``, ``colour``,
  ``category``).

* per sample, ``background_regions``: boxes the labels leave empty (``bbox``, ``phrase`` =
  "background", ``description``, ``hard_negatives`` = the dataset's classes), sampled by prepare
  at the labelled objects' size away from every label; training aligns them with their phrase
  like the labelled regions, so that even one-class data teaches object vs not-object.

``dataset.json`` beside the jsonl records the classes, the parameters and the summary.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors

from geoalign_core.errors import InputError

__all__ = [
    "CHIPS_DIR",
    "DATASET_FILE",
    "SAMPLES_FILE",
    "check_sample",
    "read_image",
    "read_samples",
    "resolve_samples_path",
]

SAMPLES_FILE = "samples.jsonl"
DATASET_FILE = "dataset.json"
CHIPS_DIR = "chips"


def resolve_samples_path(path: str | PathLike) -> Path:
    """``DIR`` (holding samples.jsonl) or a ``.jsonl`` file -> the jsonl path.

    Raises:
        InputError: neither exists.
    """
    p = Path(path)
    if p.is_dir():
        p = p / SAMPLES_FILE
    if not p.is_file():
        raise InputError(f"samples not found: {p} (give a folder with {SAMPLES_FILE} or a .jsonl file)")
    return p


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_sample(obj: object, where: str) -> dict:
    """Validate one sample object against the schema; returns it. Raises InputError with ``where``."""
    if not isinstance(obj, dict):
        raise InputError(f"{where}: each line must be a JSON object")
    for key in ("image", "caption"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise InputError(f"{where}: {key!r} must be a non-empty string")
    if "caption_detail" in obj and not isinstance(obj["caption_detail"], str):
        raise InputError(f"{where}: 'caption_detail' must be a string")
    for rkey in ("regions", "background_regions"):
        _check_regions(obj.get(rkey, []), rkey, where)
    return obj


def _check_regions(regions: object, rkey: str, where: str) -> None:
    if not isinstance(regions, list):
        raise InputError(f"{where}: {rkey!r} must be a list")
    for i, r in enumerate(regions):
        rw = f"{where} {'region' if rkey == 'regions' else 'background region'} {i}"
        if not isinstance(r, dict):
            raise InputError(f"{rw}: must be an object with bbox and phrase")
        bbox = r.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise InputError(f"{rw}: 'bbox' must be four numbers [x0, y0, x1, y1] normalised to [0, 1]")
        x0, y0, x1, y1 = bbox
        if not (-1e-6 <= x0 < x1 <= 1 + 1e-6 and -1e-6 <= y0 < y1 <= 1 + 1e-6):
            raise InputError(f"{rw}: 'bbox' {bbox} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if not isinstance(r.get("phrase"), str) or not r["phrase"].strip():
            raise InputError(f"{rw}: 'phrase' must be a non-empty string")
        for key in ("hard_negatives", "hard_negative_types", "description_negatives", "description_negative_types"):
            v = r.get(key, [])
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise InputError(f"{rw}: {key!r} must be a list of strings")
        if "hard_negative_types" in r and len(r["hard_negative_types"]) != len(r.get("hard_negatives", [])):
            raise InputError(f"{rw}: 'hard_negative_types' must be as long as 'hard_negatives'")


def read_samples(paths: str | PathLike | Sequence[str | PathLike], check_images: bool = True) -> list[dict]:
    """Read and validate one or more ``samples.jsonl`` (or folders holding one).

    Each returned dict is the sample as written, with ``image`` made absolute (resolved against
    its jsonl's folder) and ``_file`` set to ``"path:line"`` for messages.

    Raises:
        InputError: missing file, bad JSON, a sample that breaks the schema, a missing image,
            or no samples at all.
    """
    if isinstance(paths, (str, PathLike)):
        paths = [paths]
    out: list[dict] = []
    for given in paths:
        path = resolve_samples_path(given)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read {path}: {exc}") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
            check_sample(obj, where)
            img = Path(obj["image"])
            img = img if img.is_absolute() else path.parent / img
            if check_images and not img.is_file():
                raise InputError(f"{where}: image not found: {img}")
            obj["image"] = str(img)
            obj["_file"] = where
            out.append(obj)
    if not out:
        raise InputError(f"no samples in {', '.join(str(p) for p in paths)}")
    return out


def _rgb_indexes(ds: rasterio.io.DatasetReader) -> list[int]:
    from geoalign_core.geo.bands import select_bands

    return list(select_bands(ds.count, ds.colorinterp).rgb)


def read_image(path: str | PathLike) -> np.ndarray:
    """Any image GDAL reads -> float32 ``[3, H, W]`` in [0, 1]; invalid pixels 0.

    ``uint8`` images are divided by 255 (the chips ``geoalign prepare`` writes are scene-normalised
    uint8, so this is exact); other types get the per-image 2-98 % stretch of
    :mod:`geoalign_core.geo.stats`. Bands follow :mod:`geoalign_core.geo.bands` (RGB by colour
    interpretation, else the first three, one band replicated); nodata / alpha / mask pixels are 0.

    Raises:
        InputError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                idx = _rgb_indexes(ds)
                data = ds.read(idx)
                mask = ds.read_masks(idx)
                dtype = ds.dtypes[idx[0] - 1]
    except (rasterio.errors.RasterioError, OSError) as exc:
        raise InputError(f"cannot read image {path}: {' '.join(str(exc).split())}") from None
    valid = (mask > 0).any(axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    if dtype == "uint8":
        img = data.astype(np.float32) / 255.0
    else:
        from geoalign_core.geo.stats import compute_scene_stats

        stats = compute_scene_stats([data[c][valid] for c in range(3)], dtype)
        img = stats.normalize(data)
    img[:, ~valid] = 0.0
    return img
