"""Building a scene index: one image pass over a raster's tile grid, every embedding kept.

The windows are cut into chunks; each chunk's embeddings are saved as soon as they are made
in ``<index>.partial/part-NNNNNN.npz`` (in a background thread, while the next chunk is being
made: :class:`~.part_writer.PartWriter`). A build that stops (Ctrl-C, cancel, a crash, a full
disk) leaves those parts behind, and the same command run again continues where it stopped:
a part is reused only when ``build.json`` in that folder says it was made from the same
raster (fingerprint), model (fingerprint), bands and tiling. At the end the parts are
assembled into the index file and its patch file (:func:`~.store.write_index`, atomically)
and the folder is removed.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from .. import __version__
from ..defaults import DEFAULT_OVERLAP
from ..errors import InputError
from ..geo import RasterSource
from ..geo.grid import area_window, check_tile_fits, clip_window, tile_windows
from ..geo.writers import check_not_an_input, check_output, disk_full_error
from ..inference.encoder import Cancel, Encoder, Progress, Stage, check_cancel, enter_stage
from ..outputs import INDEX_FORMATS, output_lock
from .fingerprint import raster_fingerprint
from .part_writer import PartWriter
from .store import FORMAT, FORMAT_VERSION, IndexPart, patches_path, quantize, write_index

__all__ = ["DEFAULT_INDEX_OVERLAP", "PART_BYTES", "IndexBuild", "build_index", "partial_dir", "store_background"]

DEFAULT_INDEX_OVERLAP = DEFAULT_OVERLAP  #: as find's: an index answers find like a live run with its defaults
PART_BYTES = 16 << 20  #: a build chunk holds about this much patch data (what an interrupt can lose)


def partial_dir(out: str | PathLike) -> Path:
    """Where an unfinished build of ``out`` keeps its parts."""
    return Path(f"{out}.partial")


class IndexBuild(dict):
    """What :func:`build_index` did (a dict): ``path``, ``patches``, ``n_tiles``, ``n_windows``,
    ``resumed_tiles``, ``seconds``, ``bytes``, ``summary`` (one line)."""


def model_meta(enc: Encoder) -> dict:
    m = enc.model
    return {
        "source": str(enc.model_source),
        "name": m.name,
        "arch": m.spec.arch,
        "dense_mode": m.dense_mode,
        "fingerprint": m.fingerprint(),
        "embed_dim": int(m.embed_dim),
        "input_size": int(m.image_size),
        "patch_size": int(m.patch_size),
        "logit_scale": round(float(enc.logit_scale), 6),
    }


def _settings(src: RasterSource, enc: Encoder, ts: int, overlap: float, area: Window, n_windows: int,
              chunk: int, fingerprint: str) -> dict:
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "raster_fingerprint": fingerprint,
        "model_fingerprint": enc.model.fingerprint(), "bands": list(src.bands), "tile_size": ts,
        "overlap": float(overlap), "area": [int(area.col_off), int(area.row_off), int(area.width),
                                            int(area.height)],
        "n_windows": n_windows, "chunk": chunk, "scene_stats": src.stats.to_dict(),
    }


def build_index(
    enc: Encoder,
    raster: str | PathLike,
    out: str | PathLike,
    *,
    overwrite: bool = False,
    bands: Sequence[int] | str | None = None,
    tile_size: int | None = None,
    overlap: float = DEFAULT_INDEX_OVERLAP,
    bounds: Sequence[float] | None = None,
    allow_no_crs: bool = False,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    stage: Stage | None = None,
    patches: str | PathLike | None = None,
    work: str | PathLike | None = None,
    scene: str | None = None,
) -> IndexBuild:
    """Index ``raster``: global and patch embeddings of every tile of its grid, into ``out`` (.parquet).

    Resumes an interrupted build of the same ``out`` (see the module docstring). Raises
    :class:`~geoalign_core.inference.Cancelled` when ``cancel()`` says so (the finished
    chunks stay for a resume); nothing is written to ``out`` until every tile is done.

    A collection (:mod:`.collection_build`) puts the patch file at ``patches`` and the
    unfinished chunks in ``work`` (defaults: beside ``out``) and names the ``scene``.
    """
    out = Path(out)
    check_output(out, overwrite, INDEX_FORMATS)
    check_not_an_input(out, raster)
    work = Path(work) if work is not None else partial_dir(out)
    # one build of an output at a time: a second one into the same --out is refused at once
    with output_lock(out, what="building an index into"):
        try:
            return _build(enc, raster, out, overwrite, bands, tile_size, overlap, bounds, allow_no_crs, progress,
                          cancel, stage, patches, work, scene)
        except Exception as exc:
            full = disk_full_error(out, exc)
            if full is None:
                raise
            kept = len(list(work.glob("part-*.npz"))) if work.is_dir() else 0
            if not kept:
                shutil.rmtree(work, ignore_errors=True)
            raise InputError(f"cannot write {out}: {_why(full)} (no index written; "
                             + (f"{kept} finished chunk(s) kept in {work} for a resume: free some space and run "
                                "the same command again)" if kept else "nothing kept: free some space or choose "
                                                                        "another output)")) from None


def _why(full: InputError) -> str:
    """The reason part of :func:`disk_full_error`'s message ("no space left on device", ...)."""
    text = str(full)
    return text.split(": ", 1)[1].split(" (nothing was written", 1)[0] if ": " in text else text


def _build(enc: Encoder, raster: str | PathLike, out: Path, overwrite: bool, bands: Sequence[int] | str | None,
           tile_size: int | None, overlap: float, bounds: Sequence[float] | None, allow_no_crs: bool,
           progress: Progress | None, cancel: Cancel | None, stage: Stage | None, patches: str | PathLike | None,
           work: Path, scene: str | None) -> IndexBuild:
    t0 = time.perf_counter()
    ts = enc.tile_size(tile_size)
    with RasterSource(raster, bands, allow_no_crs=allow_no_crs) as src:
        area = area_window(src.transform, src.width, src.height, bounds, src.path)
        check_tile_fits(ts, area, enc.input_size)
        windows = tile_windows(src.width, src.height, ts, overlap, area=area)
        h = w = enc.input_size // enc.model.patch_size
        per_tile = h * w * (enc.model.embed_dim + 8)
        chunk = max(enc.batch_size, PART_BYTES // per_tile // enc.batch_size * enc.batch_size)
        enter_stage(stage, "checking the raster")
        fingerprint = raster_fingerprint(src)
        settings = _settings(src, enc, ts, overlap, area, len(windows), chunk, fingerprint)
        done_parts = _resume(work, settings)
        resumed = sum(_count(p) for p in done_parts.values())
        n_chunks = math.ceil(len(windows) / chunk)
        enter_stage(stage, "indexing tiles")
        base = sum(min(chunk, len(windows) - k * chunk) for k in done_parts)
        with PartWriter() as writer:  # a chunk is saved while the next one is being made
            for k in range(n_chunks):
                if k in done_parts:
                    continue
                check_cancel(cancel)
                lo, hi = k * chunk, min(len(windows), (k + 1) * chunk)
                part = _index_chunk(enc, src, windows, lo, hi, progress, cancel, base, len(windows))
                base += hi - lo
                path = work / f"part-{k:06d}.npz"
                writer.submit(part.save, path)
                done_parts[k] = path
        if progress is not None:
            progress(len(windows), len(windows))
        enter_stage(stage, "writing the index")
        full = Window(0, 0, src.width, src.height)
        footprints = [clip_window(win, full) for win in windows]
        n = write_index(
            out, [done_parts[k] for k in sorted(done_parts)], footprints, windows, src.crs, src.transform,
            _emb_meta(enc), _geoalign_meta(src, enc, ts, overlap, area, bounds, len(windows), fingerprint,
                                           allow_no_crs, time.perf_counter() - t0),
            overwrite=overwrite, patches=Path(patches) if patches is not None else None, scene=scene,
        )
    shutil.rmtree(work, ignore_errors=True)
    store_background(enc, out)  # the index is written: a cancel no longer applies
    ppath = Path(patches) if patches is not None else patches_path(out)
    size = out.stat().st_size + ppath.stat().st_size
    secs = time.perf_counter() - t0
    summary = (f"indexed {n} tiles of {src.path} into {out} (+ {ppath.name}), {size / 1e6:.1f} MB, "
               f"in {secs:.1f} s" + (f"; {resumed} tiles reused from an interrupted build" if resumed else ""))
    return IndexBuild(path=out, patches=ppath, n_tiles=n, n_windows=len(windows),
                      resumed_tiles=resumed, seconds=secs, bytes=size, summary=summary)


def store_background(enc: Encoder, out: str | PathLike, cancel: Cancel | None = None) -> Path | None:
    """Every patch of the index ``out`` against the model's background phrases, stored beside its patch
    file (:mod:`.background`: a query then scans its phrases only); None where it could not be written."""
    from .scene_index import SceneIndex

    return SceneIndex.open(out, enc, check_raster=False).store_background(cancel)


def _count(part: Path) -> int:
    with np.load(part) as z:
        return len(z["ids"])


def _resume(work: Path, settings: dict) -> dict[int, Path]:
    """The finished parts of an earlier build with the same settings (none: a fresh folder)."""
    spec = work / "build.json"
    if work.is_dir():
        try:
            same = json.loads(spec.read_text()) == settings
        except (OSError, ValueError):
            same = False
        if same:
            parts = {}
            for p in sorted(work.glob("part-*.npz")):
                try:
                    parts[int(p.stem.split("-")[1])] = p
                except ValueError:
                    continue
            return parts
        warnings.warn(f"an unfinished build with other settings (raster, model, bands or tiling) was in {work}; "
                      "starting over", UserWarning, stacklevel=3)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    spec.write_text(json.dumps(settings))
    return {}


def _index_chunk(enc: Encoder, src: RasterSource, windows: list[Window], lo: int, hi: int,
                 progress: Progress | None, cancel: Cancel | None, base: int, total: int) -> IndexPart:
    def chunk_progress(done: int, _total: int) -> None:
        if progress is not None:
            progress(base + done, total)

    ids, valid, glob, q, scale, norm = [], [], [], [], [], []
    for eb in enc.image_pass(src, windows[lo:hi], dense=True, progress=chunk_progress, cancel=cancel):
        assert eb.dense is not None  # the pass asked for dense embeddings
        bq, bs, bn = quantize(eb.dense)
        ids.append(np.asarray([lo + t.index for t in eb.tiles], dtype=np.int32))
        valid.append(eb.valid.numpy())
        glob.append(eb.glob.cpu().numpy().astype(np.float32))
        q.append(bq)
        scale.append(bs)
        norm.append(bn)
    if not ids:
        s, hw, d = enc.input_size, (enc.input_size // enc.model.patch_size) ** 2, enc.model.embed_dim
        return IndexPart(np.zeros(0, np.int32), np.zeros((0, s, s), bool), np.zeros((0, d), np.float32),
                         np.zeros((0, hw, d), np.int8), np.zeros((0, hw), np.float32), np.zeros((0, hw), np.float32))
    return IndexPart(np.concatenate(ids), np.concatenate(valid), np.concatenate(glob), np.concatenate(q),
                     np.concatenate(scale), np.concatenate(norm))


def _emb_meta(enc: Encoder) -> dict:
    m = enc.model
    g = enc.input_size // m.patch_size
    return {
        "version": "0.0.1",
        "model": {"name": m.name, "source": str(enc.model_source), "architecture": m.spec.arch,
                  "fingerprint": m.fingerprint(), "framework": "open_clip (GeoAlignCLIP)"},
        "embedding": {"column": "embedding", "dim": int(m.embed_dim), "dtype": "float32", "normalized": True,
                      "level": "tile", "what": "the tile's global image embedding (CLIP image space)"},
        "patch_embeddings": {
            "dim": int(m.embed_dim), "dtype": "int8", "grid": [g, g], "patch_size_px": int(m.patch_size),
            "dense_mode": m.dense_mode, "normalized": False,
            "quantization": "symmetric int8 per patch vector: value = q * patch_scale[i] "
                            "(patch_scale = max|x| / 127); patch_norm[i] = ||x||",
            "scale_column": "patch_scale", "norm_column": "patch_norm",
        },
    }


def _geoalign_meta(src: RasterSource, enc: Encoder, ts: int, overlap: float, area: Window,
                   bounds: Sequence[float] | None, n_windows: int, fingerprint: str, allow_no_crs: bool,
                   seconds: float) -> dict:
    path = src.path
    shown = str(path.resolve()) if isinstance(path, Path) else str(path)
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "raster": {
            "path": shown, "width": src.width, "height": src.height,
            "crs": src.crs.to_wkt() if src.crs is not None else None,
            "transform": list(src.transform)[:6], "bands": list(src.bands), "georeferencing": src.georeferencing,
            "scene_stats": src.stats.to_dict(), "fingerprint": fingerprint, "allow_no_crs": bool(allow_no_crs),
        },
        "tiling": {"tile_size": ts, "overlap": float(overlap),
                   "area": [int(area.col_off), int(area.row_off), int(area.width), int(area.height)],
                   "bounds": list(bounds) if bounds is not None else None, "n_windows": n_windows},
        "model": model_meta(enc),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "geoalign_version": __version__,
        "build": {"seconds": round(seconds, 2), "batch_size": enc.batch_size, "device": str(enc.device)},
    }
