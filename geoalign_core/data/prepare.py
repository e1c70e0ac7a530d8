"""``geoalign prepare``: a raster + labelled polygons -> georeferenced chips + ``samples.jsonl``.

Pipeline (:func:`prepare_dataset`):

1. open the raster (:class:`~geoalign_core.geo.RasterSource`: band selection, nodata / alpha /
   mask, scene normalisation) and load the labels (:func:`~geoalign_core.data.labels.load_labels`:
   any OGR format and CRS, reprojected, mapped to the pixel grid; bad features counted and skipped);
2. walk the chip grid (:func:`~geoalign_core.data.chipping.chip_grid`) and drop, in this order,
   chips that are mostly nodata (> ``max_nodata`` invalid pixels), blank (the largest per-band
   standard deviation of the valid, normalised pixels below ``min_std``: no texture), dominated
   by one region (a clipped region covering > ``max_cover`` of the chip, the paper's 75 % rule),
   or without any labelled region (unless ``keep_empty``);
3. for each kept chip: region boxes, texts (:mod:`~geoalign_core.data.captions`) and hard
   negatives (:mod:`~geoalign_core.data.negatives`, seeded per chip by ``(seed, chip index)``);
4. write ``chips/NNNNNN.tif`` (NNNNNN = the chip's index in the row-major grid), one line of
   ``samples.jsonl`` per chip and ``dataset.json``, all into a hidden folder inside the output
   folder that is moved into place only at the end (an interrupted or failed run leaves nothing).

Chips are 3-band uint8 RGB GeoTIFFs (DEFLATE) on the source grid: the selected bands mapped
to [0, 255] with the scene's normalisation (a uint8 RGB source is copied exactly), with the
chip's own transform and the raster's CRS, and an internal mask where the source is nodata.
Any reader gets what the model sees by dividing by 255.

Everything is deterministic: the same inputs and options give byte-identical outputs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.windows import Window
from tqdm import tqdm

from geoalign_core.data.background import background_boxes, background_record, object_size
from geoalign_core.data.captions import RegionText, chip_captions, describe_regions
from geoalign_core.data.chipping import ChipRegion, FeatureIndex, chip_grid, chip_regions
from geoalign_core.data.labels import AUTO, LabelSet, LabelSkips, load_labels
from geoalign_core.data.negatives import description_negatives, phrase_negatives
from geoalign_core.data.schema import CHIPS_DIR, DATASET_FILE, SAMPLES_FILE
from geoalign_core.defaults import DEFAULT_CHIP_SIZE
from geoalign_core.errors import InputError
from geoalign_core.geo.grid import area_window, chip_windows
from geoalign_core.geo.raster import RasterSource
from geoalign_core.geo.writers import c_library_stderr_held, disk_full_error
from geoalign_core.outputs import exists_error, output_lock

__all__ = ["DROP_REASONS", "PrepareOptions", "PrepareSummary", "prepare_dataset"]

DROP_REASONS = ("mostly nodata", "blank (no texture)", "one region covers too much", "no labelled region",
                "across the train/val split")
VAL_SAMPLES_FILE = "samples_val.jsonl"
FORMAT = "geoalign-samples/1"

log = logging.getLogger("geoalign.prepare")


@dataclass
class PrepareOptions:
    """Options of :func:`prepare_dataset` (the CLI flags of ``geoalign prepare``)."""

    class_field: str
    description_field: str | None = None
    chip_size: int = DEFAULT_CHIP_SIZE
    stride: int | None = None  # default: chip_size (no overlap)
    min_region_px: float = 4.0
    min_visible: float = 0.3
    max_cover: float = 0.75
    max_nodata: float = 0.5
    min_std: float = 0.01
    num_negatives: int = 6
    bands: str | None = None
    seed: int = 0
    classes: list[str] | None = None
    layer: str | None = None
    color_field: str | None = AUTO
    size_field: str | None = AUTO
    orientation_field: str | None = AUTO
    keep_empty: bool = False
    allow_no_crs: bool = False
    bounds: Sequence[float] | None = None  # only chips inside these map coordinates (the raster's CRS)
    val_fraction: float = 0.0  # this share of the area, at its east (or south) end, is held out spatially
    background: int = 2  # unlabelled boxes of object size, away from every label, per chip (object vs not)

    def check(self) -> None:
        """Raise InputError on out-of-range values."""
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise InputError(f"val fraction must be in [0, 1); got {self.val_fraction}", param="val_fraction")
        chip_windows(self.chip_size, self.chip_size, self.chip_size, self.stride)  # the grid's own checks
        for name, v in (("max_cover", self.max_cover), ("max_nodata", self.max_nodata),
                        ("min_visible", self.min_visible)):
            if not 0.0 <= v <= 1.0:
                raise InputError(f"{name.replace('_', ' ')} must be a fraction in [0, 1]; got {v}", param=name)
        for name in ("min_region_px", "min_std", "num_negatives", "background"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', ' ')} must be >= 0; got {getattr(self, name)}", param=name)


@dataclass
class PrepareSummary:
    """What ``prepare`` did: chips written and dropped, regions, skipped features."""

    chips_total: int = 0
    chips_written: int = 0
    chips_val: int = 0  # of chips_written, held out in samples_val.jsonl
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    regions: int = 0
    background: int = 0  # background boxes added (not counted in ``regions``)
    slivers: int = 0
    class_counts: Counter = field(default_factory=Counter)
    features_read: int = 0
    features_used: int = 0
    skips: LabelSkips = field(default_factory=LabelSkips)

    def to_dict(self) -> dict:
        d = {
            "chips_total": self.chips_total,
            "chips_written": self.chips_written,
            "chips_train": self.chips_written - self.chips_val,
            "chips_val": self.chips_val,
            "chips_dropped": dict(self.dropped),
            "regions": self.regions,
            "background_regions": self.background,
            "regions_dropped_as_slivers": self.slivers,
            "regions_per_class": dict(sorted(self.class_counts.items())),
            "features_read": self.features_read,
            "features_used": self.features_used,
            "features_skipped": self.skips.as_dict(),
        }
        if self.skips.unknown_values:
            d["unknown_class_values"] = dict(self.skips.unknown_values.most_common())
        return d

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"chips: {self.chips_written} written of {self.chips_total} in the grid"
               + (f" ({self.chips_written - self.chips_val} train, {self.chips_val} val)" if self.chips_val else "")]
        for reason, n in self.dropped.items():
            if n:
                out.append(f"  dropped, {reason}: {n}")
        out.append(f"regions: {self.regions} labelled ({self.slivers} clipped slivers dropped), "
                   f"{self.background} background (unlabelled, away from every label)")
        if self.class_counts:
            out.append("  " + ", ".join(f"{c}: {n}" for c, n in sorted(self.class_counts.items())))
        out.append(f"features: {self.features_used} used of {self.features_read} read")
        for reason, n in self.skips.as_dict().items():
            if n:
                out.append(f"  skipped, {reason}: {n}")
        if self.skips.unknown_values:
            vals = ", ".join(f"{v!r} ({n})" for v, n in self.skips.unknown_values.most_common(5))
            out.append(f"  unknown class values: {vals}")
        return out


class _Split:
    """The spatial train/val rule: along the area's longer axis, the last ``fraction`` is validation
    (east for a wide area, south for a tall one); a ``chip`` px chip at (col, row) is ``"train"``
    when it ends before the line, ``"val"`` when it starts after it, and None (dropped) when it
    crosses it: no pixel is in both."""

    def __init__(self, area: Window, chip: int, fraction: float) -> None:
        self.horizontal = area.width >= area.height
        start, length = (area.col_off, area.width) if self.horizontal else (area.row_off, area.height)
        self.line = float(start) + float(length) * (1.0 - fraction)
        self.where = "east" if self.horizontal else "south"
        self.chip = chip

    def __call__(self, col: int, row: int) -> str | None:
        lo = col if self.horizontal else row
        if lo + self.chip <= self.line:
            return "train"
        if lo >= self.line:
            return "val"
        return None


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"the output must be a folder; {out} is a file", param="out")
    if out.is_dir():
        existing = [n for n in (SAMPLES_FILE, CHIPS_DIR, DATASET_FILE) if (out / n).exists()]
        if existing and not overwrite:
            raise InputError(f"output already exists: {out / existing[0]}", param="overwrite")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder's parent does not exist: {parent}")
    if not os.access(out if out.is_dir() else parent, os.W_OK):
        raise InputError(f"cannot write to {out if out.is_dir() else parent}")


def _class_colours(labels: LabelSet) -> dict[str, list[str]]:
    cols: dict[str, set[str]] = {}
    for f in labels.features:
        if f.color:
            cols.setdefault(f.cls, set()).add(f.color)
    return {k: sorted(v) for k, v in sorted(cols.items())}


def _write_chip(path: Path, rgb: np.ndarray, valid: np.ndarray, transform: Affine, crs: object) -> None:
    profile = {
        "driver": "GTiff", "width": rgb.shape[2], "height": rgb.shape[1], "count": 3, "dtype": "uint8",
        "crs": crs, "transform": transform, "compress": "deflate", "predictor": 2, "photometric": "RGB",
        "interleave": "pixel",
    }
    with c_library_stderr_held(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb)
        if not valid.all():
            dst.write_mask(np.where(valid, 255, 0).astype(np.uint8))


def _r(x: float, nd: int = 6) -> float:
    return float(round(float(x), nd))


def _region_record(
    region: ChipRegion,
    text: RegionText,
    rng: np.random.Generator,
    q: int,
    class_colours: dict[str, list[str]],
    classes: list[str],
) -> dict:
    f = region.feature
    negs = phrase_negatives(f.cls, f.color, q, rng, class_colours=class_colours, dataset_classes=classes)
    dnegs = description_negatives(
        text.description, f.cls, f.color, q, rng, class_colours=class_colours, dataset_classes=classes
    )
    return {
        "bbox": [_r(v) for v in region.bbox],
        "phrase": text.phrase,
        "description": text.description,
        "hard_negatives": [t for t, _ in negs],
        "hard_negative_types": [k for _, k in negs],
        "description_negatives": [t for t, _ in dnegs],
        "description_negative_types": [k for _, k in dnegs],
        "class": f.cls,
        "attributes": {"color": f.color, "size": f.size, "orientation": f.orientation},
        "position": text.position,
        "relation": text.relation,
        "feature_id": f.fid,
        "visible": _r(region.visible, 4),
        "cover": _r(region.cover, 4),
    }


def prepare_dataset(
    raster: str | PathLike,
    labels_path: str | PathLike,
    out: str | PathLike,
    options: PrepareOptions,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareSummary:
    """Convert a raster and its labels into chips + ``samples.jsonl`` + ``dataset.json`` in ``out``.

    Raises:
        InputError: bad options, unreadable inputs, missing fields, existing outputs without
            ``overwrite``, or no chip left after the filters (nothing is written then).
    """
    options.check()
    out = Path(out)
    _check_out_dir(out, overwrite)
    # one run per folder at a time: a second run into the same --out is refused at once
    with output_lock(out, what="writing"):
        _check_out_dir(out, overwrite)  # again, now that no other run can write there
        src = RasterSource(raster, options.bands, allow_no_crs=options.allow_no_crs)
        try:
            labels = load_labels(
                labels_path, src, options.class_field,
                description_field=options.description_field, classes=options.classes, layer=options.layer,
                color_field=options.color_field, size_field=options.size_field,
                orientation_field=options.orientation_field,
            )
            return _run(src, labels, raster, labels_path, out, options, overwrite, progress)
        finally:
            src.close()


def _run(
    src: RasterSource,
    labels: LabelSet,
    raster: str | PathLike,
    labels_path: str | PathLike,
    out: Path,
    opt: PrepareOptions,
    overwrite: bool,
    progress: bool,
) -> PrepareSummary:
    cs = int(opt.chip_size)
    area = area_window(src.transform, src.width, src.height, opt.bounds, src.path)
    if opt.bounds is not None and (area.width < cs or area.height < cs):
        raise InputError(f"the bounds hold {int(area.width)} x {int(area.height)} pixels, less than one "
                         f"{cs} px chip", param="bounds")
    grid = [(c + int(area.col_off), r + int(area.row_off))
            for c, r in chip_grid(int(area.width), int(area.height), cs, opt.stride)]
    split = _Split(area, cs, opt.val_fraction) if opt.val_fraction else None
    box_size = object_size(labels.features, cs)
    index = FeatureIndex(labels.features)
    classes = labels.classes
    colours = _class_colours(labels)
    summary = PrepareSummary(
        chips_total=len(grid), features_read=labels.n_read, features_used=len(labels.features), skips=labels.skips
    )
    crs_text = src.crs.to_string() if src.crs is not None else None
    stats = src.stats
    created = not out.exists()
    out.mkdir(exist_ok=True)
    remove_stale_work_folders(out)
    tmp = out / f"{WORK_PREFIX}{secrets.token_hex(4)}"
    try:
        (tmp / CHIPS_DIR).mkdir(parents=True)
        (tmp / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        with open(tmp / SAMPLES_FILE, "w", encoding="utf-8") as train_f, \
                open(tmp / VAL_SAMPLES_FILE, "w", encoding="utf-8") as val_f:
            for gi, (col, row) in enumerate(tqdm(grid, desc="prepare", unit="chip", disable=not progress)):
                window = Window(col, row, cs, cs)
                side = split(col, row) if split is not None else "train"
                if side is None:
                    summary.dropped["across the train/val split"] += 1
                    continue
                data, valid = src.read_raw(window)
                if 1.0 - float(valid.mean()) > opt.max_nodata:
                    summary.dropped["mostly nodata"] += 1
                    continue
                image = stats.normalize(data)
                image[:, ~valid] = 0.0
                spread = max(float(image[c][valid].std()) for c in range(3)) if valid.any() else 0.0
                if spread < opt.min_std:
                    summary.dropped["blank (no texture)"] += 1
                    continue
                regions, slivers, max_cover = chip_regions(
                    index, col, row, cs, min_region_px=opt.min_region_px, min_visible=opt.min_visible
                )
                if max_cover > opt.max_cover:
                    summary.dropped["one region covers too much"] += 1
                    continue
                if not regions and not opt.keep_empty:
                    summary.dropped["no labelled region"] += 1
                    continue
                rng = np.random.default_rng([int(opt.seed), gi])
                texts = describe_regions(regions)
                caption, detail = chip_captions(regions, texts)
                name = f"{CHIPS_DIR}/{gi:06d}.tif"
                transform = src.transform * Affine.translation(col, row)
                rgb = np.round(image * 255.0).astype(np.uint8)
                _write_chip(tmp / name, rgb, valid, transform, src.crs)
                left, bottom, right, top = rasterio.windows.bounds(window, src.transform)
                back = background_boxes(index, col, row, cs, valid, box_size, opt.background, rng)
                sample = {
                    "image": name,
                    "caption": caption,
                    "caption_detail": detail,
                    "regions": [
                        _region_record(r, t, rng, opt.num_negatives, colours, classes) for r, t in zip(regions, texts)
                    ],
                    "background_regions": [background_record(b, cs, classes, rng, opt.num_negatives) for b in back],
                    "width": cs,
                    "height": cs,
                    "window": [col, row, cs, cs],
                    "bounds": [_r(v, 4) for v in (left, bottom, right, top)],
                    "crs": crs_text,
                    "source": str(Path(raster).resolve()),
                    "classes": sorted({r.cls for r in regions}),
                }
                if split is not None:
                    sample["split"] = side
                (val_f if side == "val" else train_f).write(json.dumps(sample, ensure_ascii=False) + "\n")
                summary.chips_written += 1
                summary.chips_val += side == "val"
                summary.regions += len(regions)
                summary.background += len(back)
                summary.slivers += slivers
                summary.class_counts.update(r.cls for r in regions)
        if summary.chips_written == 0:
            reasons = ", ".join(f"{n} {r}" for r, n in summary.dropped.items() if n)
            raise InputError(f"no chip left to write: all {summary.chips_total} chips were dropped ({reasons})")
        if split is not None and summary.chips_val in (0, summary.chips_written):
            which = "validation" if summary.chips_val == 0 else "training"
            raise InputError(f"no {which} chip left with val fraction {opt.val_fraction:g}: the area holds too few "
                             "chips for a spatial split (a larger area, a smaller chip size or another fraction)",
                             param="val_fraction")
        if split is None:
            (tmp / VAL_SAMPLES_FILE).unlink()
        meta = {
            "format": FORMAT,
            "source": str(Path(raster).resolve()),
            "labels": str(Path(labels_path).resolve()),
            "crs": crs_text,
            "bands": list(src.bands),
            "normalisation": stats.to_dict(),
            "chip_format": "GeoTIFF, 3-band uint8 RGB (scene-normalised; divide by 255), internal nodata mask",
            "classes": classes,
            "fields": labels.fields,
            "class_colours": colours,
            "parameters": _params(opt),
            "area": [int(area.col_off), int(area.row_off), int(area.width), int(area.height)],
            "split": None if split is None else {
                "val_fraction": float(opt.val_fraction), "val_file": VAL_SAMPLES_FILE,
                "rule": f"chips whose window lies in the {split.where} {opt.val_fraction:g} of the area are "
                        "validation, those wholly before it training; chips across the line are dropped"},
            "summary": summary.to_dict(),
        }
        (tmp / DATASET_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _move_into_place(tmp, out, overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()
        full = disk_full_error(out, exc)
        if full is not None:
            raise full from None
        raise
    return summary


def _params(opt: PrepareOptions) -> dict:
    d = asdict(opt)
    d["stride"] = opt.stride or opt.chip_size
    return d


WORK_PREFIX = ".prepare-"
OWNER_FILE = "owner.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_work_folders(out: Path) -> int:
    """Delete the hidden work folders of earlier runs that were killed (kill -9, power loss).

    A folder counts as stale when the process named in its owner file no longer runs on this
    host (or, without an owner file, when it is over a day old). Returns how many were removed.
    """
    import time

    removed = 0
    host = socket.gethostname()
    for folder in out.glob(f"{WORK_PREFIX}*"):
        if not folder.is_dir():
            continue
        try:
            owner = json.loads((folder / OWNER_FILE).read_text())
            stale = owner.get("host") == host and not _alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            stale = time.time() - folder.stat().st_mtime > 86400
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        log.warning("removed %d work folder(s) left in %s by interrupted runs", removed, out)
    return removed


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Swap the new outputs in; previous outputs (with ``overwrite``) go into ``tmp`` and are deleted."""
    names: Sequence[str] = (CHIPS_DIR, SAMPLES_FILE, VAL_SAMPLES_FILE, DATASET_FILE)
    old = tmp / "previous"
    if not overwrite:
        existing = [n for n in names if (out / n).exists() or (out / n).is_symlink()]
        if existing:  # written by something else meanwhile: keep it, write nothing
            raise exists_error(out / existing[0])
    if overwrite:
        old.mkdir()
        for n in names:
            p = out / n
            if p.exists() or p.is_symlink():
                os.replace(p, old / n)
    for n in names:
        if (tmp / n).exists():  # no samples_val.jsonl without a split
            os.replace(tmp / n, out / n)
    shutil.rmtree(tmp, ignore_errors=True)
