"""A scene index opened for queries: every task of :mod:`geoalign_core.inference`, from stored embeddings.

:class:`SceneIndex` is an embedding source (:mod:`geoalign_core.inference.source`): the tasks
run on it unchanged, reading tiles from the memory-mapped patch file instead of running the
image tower. Only the text tower runs for a new phrase.

How a query differs from a live run on the raster:

* the grid is the index's: its tile size and overlap (a different one is refused), and with
  ``bounds`` the index tiles that touch them (a live run starts its grid at the bounds);
* ``find`` first ranks every stored patch against the phrases in one matrix product over the
  int8 patch file, and builds and pools candidate boxes only in the tiles whose best patch
  could reach the score threshold (:meth:`SceneIndex.candidate_windows`); its box refinement
  is off by default (it re-reads the raster and runs the image tower for the kept boxes);
* a region that no tile holds whole (larger than a tile, or across tile borders) is pooled
  piece by piece from the tiles it covers (each pixel from the tile whose centre is nearest),
  where a live run looks at it in a window of its own;
* a heatmap's nodata comes from the tiles' stored validity (at the model's input size).
"""

from __future__ import annotations

import contextlib
import mmap
import warnings
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio.windows
import torch
import torch.nn.functional as F
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.windows import Window

from ..errors import GeoAlignError, InputError
from ..geo import Tile
from ..geo.bands import parse_bands
from ..geo.grid import assign_to_windows
from ..geo.stats import SceneStats
from ..inference import scoring
from ..inference.encoder import Cancel, EmbeddingBatch, Encoder, Progress, check_cancel
from ..inference.source import LiveSource, tile_boxes
from .pooling import valid_patches
from .store import check_patches, dequantize, load_patches, patches_path, read_metadata, unusable

__all__ = ["BATCH_TILES", "IndexMismatch", "SceneIndex"]

BATCH_TILES = 64  #: tiles dequantised per batch
_SIM_CHUNK = 1 << 18  #: patches per matrix product when ranking the whole index (128 MB of 512-d int8)


class IndexMismatch(GeoAlignError):
    """The index does not belong to this model or raster (another model, a changed raster)."""


def _int8_dot(queries: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``queries [T, D]`` (float) x int8 vectors ``q [P, D]`` -> ``[T, P]`` float32 dot products.

    Uses PyTorch's int8-weight kernel (bfloat16 activations; ~0.3 % relative error, plenty to
    rank patches) where the CPU has it, else a float matrix product.
    """
    try:
        ones = torch.ones(q.shape[0], dtype=torch.bfloat16)
        return torch._weight_int8pack_mm(queries.bfloat16().cpu(), q, ones).float()
    except (RuntimeError, AttributeError, NotImplementedError):
        return queries.float().cpu() @ q.float().T


class SceneIndex:
    """A scene index (``geoalign index``), opened for queries.

    Open one with :meth:`open`; query it like a raster with the same methods as a
    :class:`~geoalign_core.inference.Predictor` (without the raster argument)::

        idx = SceneIndex.open("scene.parquet")            # loads the model the index was built with
        matches = idx.find(["red car", "swimming pool"])  # a GeoDataFrame, as Predictor.find
        idx.heatmap("tennis court", "court.tif")
        similar = idx.similar(example_box)                 # more like this

    Attributes:
        path: the index file; ``raster_path``: the raster it was built from (it need not exist
        any more: only the box refinement reads it); ``meta`` / ``emb``: its metadata.
    """

    out_of_domain = False  #: set by the tasks (inference.source.open_source): real imagery for a synthetic-only model

    live = False

    def __init__(self, path: Path, emb: dict, meta: dict, table: Any, patches: np.ndarray) -> None:
        self.path = path
        self.emb = emb
        self.meta = meta
        r, t, m = meta["raster"], meta["tiling"], meta["model"]
        self.raster_path = r["path"]
        self.path_for_messages = path.name
        self.width, self.height = int(r["width"]), int(r["height"])
        self.crs = CRS.from_wkt(r["crs"]) if r.get("crs") else None
        self.transform = Affine(*r["transform"])
        self.bands = tuple(r["bands"])
        self.georeferencing = r.get("georeferencing", "transform")
        self.stats = SceneStats.from_dict(r["scene_stats"])
        self.fingerprint = r["fingerprint"]
        self._ts = int(t["tile_size"])
        self._overlap = float(t["overlap"])
        self.model_info = m
        self.patches = patches
        n = len(patches)
        self.grid = tuple(emb["patch_embeddings"]["grid"])
        self.input_size = int(emb["patch_embeddings"].get("input_size", m["input_size"]))
        cols = {name: table.column(name) for name in table.column_names}
        self.col_off = cols["col_off"].to_numpy()
        self.row_off = cols["row_off"].to_numpy()
        self.valid_fraction = cols["valid_fraction"].to_numpy()
        self._masks = cols["valid_mask"].to_pylist()
        d = int(emb["embedding"]["dim"])
        self.glob = torch.from_numpy(np.asarray(cols["embedding"].combine_chunks().flatten()).reshape(n, d).copy())
        hw = self.grid[0] * self.grid[1]
        self.scale = np.asarray(cols["patch_scale"].combine_chunks().flatten()).reshape(n, hw)
        self.norm = np.asarray(cols["patch_norm"].combine_chunks().flatten()).reshape(n, hw)
        self._row = {(int(c), int(rr)): i for i, (c, rr) in enumerate(zip(self.col_off, self.row_off))}
        self._enc: Encoder | None = None
        self._pvalid: dict[int, torch.Tensor] = {}
        self._only: np.ndarray | None = None  # rows a query is restricted to (a collection's ANN search)
        self._scores_memo: tuple[tuple, torch.Tensor] | None = None
        self._cal_memo: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | PathLike, model: Any = None, *, device: str = "auto", batch_size: int = 32,
             check_raster: bool = True) -> SceneIndex:
        """Open an index file (and check its patch file beside it); a collection folder
        (``geoalign index A.tif B.tif --out idx/``) opens as a
        :class:`~geoalign_core.index.collection.SceneCollection`.

        Args:
            model: what answers the text side: None (the model the index was built with,
                loaded on first use), a model name or path, a loaded
                :class:`~geoalign_core.model.GeoAlignCLIP`, or an
                :class:`~geoalign_core.inference.Encoder` / ``Predictor``. A model other than
                the index's (other weights, other dense mode) is refused (:class:`IndexMismatch`).
            check_raster: when the raster is still at the path the index records, refuse the
                index if the raster changed since (its fingerprint, a few milliseconds).
        """
        path = Path(path)
        from .scenes import is_collection

        if is_collection(path):
            from .collection import SceneCollection

            return SceneCollection.open(path, model, device=device, batch_size=batch_size,  # type: ignore[return-value]
                                        check_raster=check_raster)
        emb, meta = read_metadata(path)
        ppath = check_patches(path, emb)
        try:
            table = pq.read_table(path, columns=["col_off", "row_off", "valid_fraction", "valid_mask", "embedding",
                                                 "patch_scale", "patch_norm"])
        except (pa.ArrowInvalid, KeyError, OSError) as exc:
            raise unusable(path, f"its table lacks a column ({' '.join(str(exc).split())})") from None
        patches = load_patches(path, ppath, emb, table.num_rows)
        try:
            idx = cls(path, emb, meta, table, patches)
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # a column of other sizes or types
            raise unusable(path, f"its columns do not fit its metadata ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())})") from None
        if check_raster:
            idx.check_raster()
        idx._device, idx._batch_size = device, batch_size
        if model is not None:
            idx.bind(model)
        return idx

    def check_raster(self, raster: str | PathLike | None = None) -> None:
        """Refuse a raster that is not the one indexed: ``raster`` (or, for None, the recorded
        path when it still exists) must have the recorded fingerprint."""
        from ..geo import RasterSource
        from .fingerprint import raster_fingerprint

        target = self.raster_path if raster is None else raster
        if raster is None and not ("://" in str(target) or str(target).startswith("/vsi")
                                   or Path(target).exists()):
            return
        with RasterSource(target, self.bands, allow_no_crs=True) as src:
            fp = raster_fingerprint(src)
        if fp != self.fingerprint:
            if raster is None:
                raise IndexMismatch(f"the raster {target} changed since it was indexed into {self.path.name}: "
                                    f"index it again (geoalign index {target} --out {self.path} --overwrite)",
                                    param="index")
            raise IndexMismatch(f"{self.path.name} is the index of {self.raster_path}, not of {target}",
                                param="index")

    def bind(self, model: Any) -> Encoder:
        """Use ``model`` for the text side (see :meth:`open`); returns its encoder."""
        from ..inference import Predictor

        enc = model if isinstance(model, Encoder) else Predictor(model, device=self._device,
                                                                batch_size=self._batch_size)
        self.check_compatible(enc)
        self._enc = enc
        return enc

    @property
    def encoder(self) -> Encoder:
        """The encoder that answers queries (the index's own model unless :meth:`bind` set one)."""
        if self._enc is None:
            self.bind(self.model_info["source"])
        return self._enc  # type: ignore[return-value]

    def check_compatible(self, enc: Encoder, bands: Sequence[int] | str | None = None) -> None:
        """Refuse a model other than the index's, or bands other than its own."""
        fp = enc.model.fingerprint()
        if fp != self.model_info["fingerprint"]:
            raise IndexMismatch(
                f"{self.path.name} was built with the model {self.model_info['source']!r} "
                f"({self.model_info['arch']}, fingerprint {self.model_info['fingerprint']}); this is "
                f"{enc.model_source!r} (fingerprint {fp}): query it with its own model or index the raster again",
                param="model")
        if bands is not None and tuple(parse_bands(bands)) != self.bands:
            raise InputError(f"{self.path.name} was built from bands {list(self.bands)}; index the raster again "
                             f"for bands {bands}", param="bands")

    # ------------------------------------------------------------------ source: identity and grid
    def __len__(self) -> int:
        return len(self.patches)

    def raster_meta(self) -> dict:
        return {
            "raster": self.raster_path,
            "index": str(self.path),
            "crs": self.crs.to_string() if self.crs is not None else None,
            "georeferencing": self.georeferencing,
            "bands": list(self.bands),
            "scene_stats": self.stats.to_dict(),
        }

    def tile_size(self, tile_size: int | None) -> int:
        if tile_size is not None and int(tile_size) != self._ts:
            raise InputError(f"{self.path.name} was built with {self._ts} px tiles; leave the tile size out, "
                             f"or index the raster again with tile size {tile_size}", param="tile_size")
        return self._ts

    def overlap(self, overlap: float | None, default: float) -> float:
        if overlap is not None and abs(float(overlap) - self._overlap) > 1e-9:
            raise InputError(f"{self.path.name} was built with overlap {self._overlap:g}; leave the overlap out, "
                             f"or index the raster again with overlap {overlap}", param="overlap")
        return self._overlap

    def windows(self, tile_size: int, overlap: float, area: Window) -> list[Window]:
        """The index's tiles that touch ``area`` (row-major)."""
        c0, r0 = int(area.col_off), int(area.row_off)
        c1, r1 = c0 + int(area.width), r0 + int(area.height)
        ts = self._ts
        sel = ((self.col_off < c1) & (self.col_off + ts > c0) & (self.row_off < r1) & (self.row_off + ts > r0))
        if self._only is not None:
            only = np.zeros(len(sel), dtype=bool)
            only[self._only] = True
            sel &= only
        return [Window(int(self.col_off[i]), int(self.row_off[i]), ts, ts) for i in np.flatnonzero(sel)]

    @contextlib.contextmanager
    def restricted(self, rows: np.ndarray | None) -> Iterator[SceneIndex]:
        """Within the ``with``, queries see only the tiles ``rows`` (None: all of them)."""
        before, self._only = self._only, None if rows is None else np.asarray(rows, dtype=np.int64)
        try:
            yield self
        finally:
            self._only = before

    def rows(self, windows: Sequence[Window]) -> np.ndarray:
        try:
            return np.asarray([self._row[(int(w.col_off), int(w.row_off))] for w in windows], dtype=np.int64)
        except KeyError as exc:
            raise ValueError(f"window at {exc.args[0]} is not a tile of this index") from None

    # ------------------------------------------------------------------ source: embeddings
    def _valid(self, row: int) -> np.ndarray:
        s = self.input_size
        m = self._masks[row]
        if m is None:
            return np.ones((s, s), dtype=bool)
        return np.unpackbits(np.frombuffer(m, dtype=np.uint8), count=s * s).reshape(s, s).astype(bool)

    def embeddings(self, windows: Sequence[Window], dense: bool = True, progress: Progress | None = None,
                   cancel: Cancel | None = None, skip_empty: bool = True) -> Iterator[EmbeddingBatch]:
        """Stored embeddings of ``windows`` (tiles of this index) as :class:`EmbeddingBatch` es."""
        rows = self.rows(windows)
        total = len(rows)
        device = self.encoder.device
        for lo in range(0, total, BATCH_TILES):
            check_cancel(cancel)
            sel = rows[lo : lo + BATCH_TILES]
            tiles = []
            for k, r in enumerate(sel):
                win = Window(int(self.col_off[r]), int(self.row_off[r]), self._ts, self._ts)
                tiles.append(Tile(None, self._valid(int(r)), win, rasterio.windows.transform(win, self.transform),
                                  BoundingBox(*rasterio.windows.bounds(win, self.transform)), lo + k))
            valid = torch.from_numpy(np.stack([t.valid for t in tiles]))
            dmap = None
            if dense:
                order = np.argsort(sel)  # memory-mapped reads in file order
                q = np.empty((len(sel),) + self.patches.shape[1:], dtype=np.int8)
                q[order] = self.patches[sel[order]]
                dmap = dequantize(q, self.scale[sel], self.grid).to(device)
            yield EmbeddingBatch(tiles, valid, self.glob[torch.from_numpy(sel)].to(device), dmap,
                                 min(total, lo + BATCH_TILES))
            if progress is not None:
                progress(min(total, lo + BATCH_TILES), total)

    def patch_validity(self, row: int) -> torch.Tensor:
        """bool ``[h * w]``: patches with at least half their pixels valid (as ``find`` counts them)."""
        if self._masks[row] is None:
            return torch.ones(self.grid[0] * self.grid[1], dtype=torch.bool)
        if row not in self._pvalid:
            v = torch.from_numpy(self._valid(row))[None]
            p = self.input_size // self.grid[0]
            self._pvalid[row] = (scoring.patch_validity(v, p)[0] >= 0.5).reshape(-1)
        return self._pvalid[row]

    @contextlib.contextmanager
    def _rows_of_patches(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """The int8 patches of ``rows`` (ascending) for the duration of the ``with``.

        A run of consecutive rows is a view of the memory map, and its pages are handed back
        afterwards (``madvise(MADV_DONTNEED)``; they stay in the page cache): a scan of the whole
        index keeps one chunk of the patch file in this process, whatever the index's size.
        """
        if not (len(rows) and rows[-1] - rows[0] + 1 == len(rows)):
            yield np.ascontiguousarray(self.patches[rows])
            return
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        yield self.patches[lo:hi]
        mm = getattr(self.patches, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
            row_bytes = int(np.prod(self.patches.shape[1:]))
            start = int(self.patches.offset) + lo * row_bytes
            end = int(self.patches.offset) + hi * row_bytes
            page = mmap.PAGESIZE
            first = (start + page - 1) // page * page  # whole pages inside the run only
            with contextlib.suppress(OSError, ValueError):
                if end - first >= page:
                    mm.madvise(mmap.MADV_DONTNEED, first, (end - first) // page * page)

    def patch_scores(self, rows: np.ndarray, queries: torch.Tensor, n_queries: int,
                     logit_scale: float | None, cancel: Cancel | None = None) -> torch.Tensor:
        """Best patch score per (tile, query) ``[len(rows), n_queries]`` over the tiles' valid patches.

        With ``logit_scale``: the probability of each query against the other rows of
        ``queries`` (find's score of a one-patch region: ``queries`` = phrases, then background
        phrases); without: the cosine similarity of each patch with each query.
        """
        hw = self.grid[0] * self.grid[1]
        rows = np.asarray(rows, dtype=np.int64)
        key = (hash(rows.tobytes()), len(rows), hash(queries.detach().cpu().float().numpy().tobytes()), n_queries,
               logit_scale)
        if self._scores_memo is not None and self._scores_memo[0] == key:
            return self._scores_memo[1].clone()  # the same query again (a collection ranks scenes first)
        out = torch.full((len(rows), n_queries), -1.0)
        step = max(1, _SIM_CHUNK // hw)
        order = np.argsort(rows)
        for lo in range(0, len(rows), step):
            check_cancel(cancel)
            part = order[lo : lo + step]
            sel = rows[part]
            with self._rows_of_patches(sel) as block, warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a read-only view: only read
                dots = _int8_dot(queries, torch.from_numpy(block.reshape(-1, self.patches.shape[2])))  # [T, P]
            scale = torch.from_numpy(self.scale[sel].reshape(-1))
            norm = torch.from_numpy(self.norm[sel].reshape(-1)).clamp_min(1e-12)
            cos = dots * (scale / norm)[None]
            if logit_scale is not None:
                score = (float(logit_scale) * cos).softmax(dim=0)[:n_queries]
            else:
                score = cos[:n_queries]
            score = score.T.reshape(len(sel), hw, n_queries)
            pv = valid_patches(self, sel)
            score = torch.where(pv[..., None], score, torch.full_like(score, -1.0))
            out[torch.from_numpy(part)] = score.amax(dim=1)
        self._scores_memo = (key, out.clone())
        return out

    def calibration(self, area: Window, tile_size: int, overlap: float, texts: torch.Tensor, n_phrases: int,
                    cancel: Cancel | None = None):
        """find's score calibration (:func:`geoalign_core.inference.calibration.measure`) over all
        the stored tiles of ``area`` (also inside :meth:`restricted`), measured once per
        (area, phrase set) and kept."""
        from ..inference import calibration

        key = (int(area.col_off), int(area.row_off), int(area.width), int(area.height), int(tile_size),
               float(overlap), n_phrases, hash(texts.detach().cpu().float().numpy().tobytes()))
        if key not in self._cal_memo:
            with self.restricted(None):
                windows = self.windows(tile_size, overlap, area)
            self._cal_memo[key] = calibration.measure(self.encoder, self, windows, texts, n_phrases, cancel)
        return self._cal_memo[key]

    def candidate_windows(self, windows: list[Window], texts: torch.Tensor, n_phrases: int,
                          min_score: float | torch.Tensor, max_results: int, logit_scale: float | None
                          ) -> tuple[list[Window], torch.Tensor]:
        """The windows worth pooling candidate boxes in, best first, from one pass over every stored patch.

        Each tile's best patch score per phrase (:meth:`patch_scores`) bounds what its regions
        can score (:func:`~geoalign_core.inference.scoring.score_bound`: a region's embedding
        averages its patches', so it can beat its best patch, but not by far). Tiles whose bound stays below
        ``min_score`` (a number, or one per phrase) for every phrase are dropped; the rest come
        best first, with their bounds ``[T, N]``, so
        that :func:`~geoalign_core.inference.find.find_candidates` can stop once no remaining
        tile can reach the ``max_results``-th best box. ``logit_scale=None``: ``texts`` are
        query vectors scored by cosine similarity (``similar``).
        """
        if not windows:
            return windows, torch.zeros((0, n_phrases))
        rows = self.rows(windows)
        bound = scoring.score_bound(self.patch_scores(rows, texts, n_phrases, logit_scale),
                                    probability=logit_scale is not None)
        top = bound.amax(dim=1)
        order = torch.argsort(top, descending=True, stable=True)
        minimum = torch.as_tensor(min_score, dtype=bound.dtype).expand(n_phrases)
        order = order[(bound[order] >= minimum.view(1, -1)).any(dim=1)]
        return [windows[int(i)] for i in order], bound[order]

    def candidate_batches(self, windows: list[Window], bound: torch.Tensor, floor: Callable[[], torch.Tensor],
                          progress: Progress | None = None, cancel: Cancel | None = None) -> Iterator[EmbeddingBatch]:
        """:meth:`candidate_windows`' tiles that can still reach ``floor()``, lazily
        (:func:`~geoalign_core.index.pooling.lazy_batches`)."""
        from .pooling import lazy_batches

        return lazy_batches(self, windows, bound, floor, BATCH_TILES, progress, cancel)

    def region_embeddings(self, boxes: np.ndarray, area: Window, tile_size: int, overlap: float,
                          progress: Progress | None, cancel: Cancel | None) -> torch.Tensor:
        """``[K, D]`` normalised embeddings of raster-pixel boxes pooled from the stored tiles:
        from the tile that holds a box whole (the tile a live run uses), else piece by piece."""
        enc = self.encoder
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = torch.zeros((len(boxes), enc.model.embed_dim), device=enc.device)
        windows, members = assign_to_windows(boxes, area, self._ts, self._overlap)
        whole, whole_members, split = [], [], []
        for win, m in zip(windows, members):
            if int(win.width) == self._ts and (int(win.col_off), int(win.row_off)) in self._row:
                whole.append(win)
                whole_members.append(m)
            else:
                split.extend(m.tolist())
        for eb in self.embeddings(whole, dense=True, progress=progress, cancel=cancel):
            blist = [tile_boxes(boxes[whole_members[t.index]], t) for t in eb.tiles]
            idx = torch.from_numpy(np.concatenate([whole_members[t.index] for t in eb.tiles]))
            with torch.no_grad():
                out[idx.to(enc.device)] = F.normalize(enc.model.pool_regions(eb.dense, blist).float(), dim=-1)
        for k in split:
            check_cancel(cancel)
            out[k] = self._pool_pieces(boxes[k])
        return out

    def _cores(self, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per grid offset along an axis, the span of pixels nearest that tile's centre."""
        offs = np.unique(offsets)
        centres = offs + self._ts / 2.0
        mids = (centres[1:] + centres[:-1]) / 2.0
        lo = np.concatenate([[-np.inf], mids])
        hi = np.concatenate([mids, [np.inf]])
        return offs, np.stack([lo, hi], axis=1)

    def _pool_pieces(self, box: np.ndarray) -> torch.Tensor:
        """A box pooled piecewise: each part from the tile whose centre is nearest, weighted by area."""
        enc = self.encoder
        xs, xspan = self._cores(self.col_off)
        ys, yspan = self._cores(self.row_off)
        x0, y0, x1, y1 = (float(v) for v in box)
        acc = torch.zeros(enc.model.embed_dim, device=enc.device)
        total = 0.0
        for cx, (sx0, sx1) in zip(xs, xspan):
            px0, px1 = max(x0, sx0), min(x1, sx1)
            if px1 - px0 <= 0:
                continue
            for cy, (sy0, sy1) in zip(ys, yspan):
                py0, py1 = max(y0, sy0), min(y1, sy1)
                if py1 - py0 <= 0:
                    continue
                row = self._row.get((int(cx), int(cy)))
                if row is None:  # an empty tile: no data there
                    continue
                k = self.input_size / self._ts  # model-input pixels per raster pixel
                piece = torch.tensor([[(px0 - cx) * k, (py0 - cy) * k, (px1 - cx) * k, (py1 - cy) * k]])
                dense = dequantize(self.patches[row : row + 1], self.scale[row : row + 1], self.grid).to(enc.device)
                with torch.no_grad():
                    pooled = enc.model.pool_regions(dense, [piece]).float()[0]
                a = (px1 - px0) * (py1 - py0)
                acc += a * pooled
                total += a
        if total == 0:
            return acc
        return F.normalize(acc / total, dim=-1)

    def mask_invalid(self, values: np.ndarray, area: Window, scale: int, cancel: Cancel | None) -> None:
        """Nothing to add: the stored tiles' validity already masked the heatmap."""

    @contextlib.contextmanager
    def live_source(self) -> Iterator[LiveSource]:
        """The indexed raster, read live (for ``find``'s box refinement): it must still be where the
        index says, unchanged; read with the index's bands and scene statistics."""
        from ..geo import RasterSource

        path = self.raster_path
        if not ("://" in str(path) or str(path).startswith("/vsi") or Path(path).exists()):
            raise InputError(f"box refinement re-reads the raster, and {path} is not there any more: "
                             "query without refinement", param="refine")
        self.check_raster(path)
        with RasterSource(path, self.bands, allow_no_crs=bool(self.meta["raster"].get("allow_no_crs")),
                          stats=self.stats) as src:
            yield LiveSource(self.encoder, src)

    # ------------------------------------------------------------------ queries
    def find(self, phrases: Sequence[str] | str, regions: Any = None, min_score: float | None = None,
             max_results: int | None = None, *, refine: bool = False, **kwargs: Any):
        """:func:`geoalign_core.inference.find.find` from the index (box refinement off by default)."""
        from ..defaults import DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE
        from ..inference import find

        return find.find(self.encoder, self, phrases, regions,
                         DEFAULT_MIN_SCORE if min_score is None else min_score,
                         DEFAULT_MAX_RESULTS if max_results is None else max_results, refine=refine, **kwargs)

    def tile_classify(self, classes: Sequence[str] | None = None, top_k: int = 3, **kwargs: Any):
        """:func:`geoalign_core.inference.classify.tile_classify` of the index's tiles."""
        from ..inference import classify

        return classify.tile_classify(self.encoder, self, classes, top_k, **kwargs)

    def match_regions(self, regions: Any, phrases: Sequence[str] | str, **kwargs: Any):
        """:func:`geoalign_core.inference.regions.match_regions` from the index."""
        from ..inference import regions as regions_mod

        return regions_mod.match_regions(self.encoder, self, regions, phrases, **kwargs)

    def heatmap(self, phrase: str, out_path: str | PathLike, overwrite: bool = False, **kwargs: Any) -> Path:
        """:func:`geoalign_core.inference.heatmap.heatmap` from the index; returns the file written."""
        from ..inference import heatmap

        return heatmap.heatmap(self.encoder, self, phrase, out_path, overwrite, **kwargs)

    def similar(self, examples: Any, **kwargs: Any):
        """:func:`geoalign_core.inference.similar.similar` from the index: more regions like ``examples``."""
        from ..inference import similar

        return similar.similar(self.encoder, self, examples, **kwargs)

    def tiles(self):
        """The index's tiles as a GeoDataFrame (geometry, window, validity, global embedding)."""
        import geopandas as gpd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gpd.read_parquet(self.path)

    def info(self) -> dict:
        """What the index holds (for ``geoalign index --info`` and the plugin)."""
        ppath = patches_path(self.path, self.emb)
        return {
            "index": str(self.path), "raster": self.raster_path, "tiles": len(self),
            "tile_size": self._ts, "overlap": self._overlap, "model": self.model_info["source"],
            "model_fingerprint": self.model_info["fingerprint"], "dim": int(self.emb["embedding"]["dim"]),
            "patch_grid": list(self.grid), "bytes": self.path.stat().st_size + ppath.stat().st_size,
            "created": self.meta.get("created"),
        }
