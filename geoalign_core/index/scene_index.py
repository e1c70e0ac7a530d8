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

from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MAX_RESULTS, DEFAULT_MIN_SCORE
from ..errors import GeoAlignError, IndexMismatch, InputError
from ..geo import RasterSource, Tile
from ..geo.bands import parse_bands
from ..geo.grid import assign_to_windows
from ..geo.stats import SceneStats
from ..inference import calibration, classify, find, heatmap, scoring, similar
from ..inference import regions as regions_task
from ..inference.encoder import Cancel, EmbeddingBatch, Encoder, Progress, check_cancel
from ..inference.metadata import raster_identity
from ..inference.source import LiveSource, tile_boxes
from .background import StoredBackground, load_background, save_background
from .fingerprint import raster_fingerprint
from .patch_scores import best_patch_scores
from .pieces import pool_pieces
from .pooling import valid_patches
from .scenes import is_collection
from .store import check_patches, dequantize, load_patches, patches_path, read_metadata, unusable
from .text_side import TextSide

__all__ = ["BATCH_TILES", "IndexMismatch", "SceneIndex"]

BATCH_TILES = 64  #: tiles dequantised per batch


class SceneIndex(TextSide):
    """A scene index (``geoalign index``), opened for queries.

    Open one with :meth:`open` (or :func:`~geoalign_core.index.open_index`, which also opens a
    collection folder); query it like a raster with the same methods as a
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
        self._background: StoredBackground | None | bool = False  # False: not looked for yet
        self._windows_memo: tuple[tuple, list[Window]] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | PathLike, model: Any = None, *, device: str = "auto",
             batch_size: int = DEFAULT_BATCH_SIZE, check_raster: bool = True) -> SceneIndex:
        """Open an index file (and check its patch file beside it).

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
        if is_collection(path):
            raise InputError(f"{path} is a collection folder: open it with geoalign_core.index.open_index "
                             "(a SceneCollection)", param="index")
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
        target = self.raster_path if raster is None else raster
        if raster is None and not _reachable(target):
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

    def own_model(self) -> str:
        return str(self.model_info["source"])

    def check_compatible(self, enc: Encoder, bands: Sequence[int] | str | None = None) -> None:
        """Refuse a model other than the index's, or bands other than its own."""
        fp = enc.model.fingerprint()
        if fp != self.model_info["fingerprint"]:
            raise IndexMismatch(
                f"{self.path.name} was built with the model {self.model_info['source']!r} "
                f"({self.model_info['arch']}, fingerprint {self.model_info['fingerprint']}); this is "
                f"{enc.model_source!r} (fingerprint {fp}): query it with its own model or index the raster again",
                param="model")
        chosen = parse_bands(bands) if bands is not None else None
        if chosen is not None and tuple(chosen) != self.bands:
            raise InputError(f"{self.path.name} was built from bands {list(self.bands)}; index the raster again "
                             f"for bands {bands}", param="bands")

    # ------------------------------------------------------------------ source: identity and grid
    def __len__(self) -> int:
        return len(self.patches)

    def raster_meta(self) -> dict:
        return raster_identity(self.raster_path, self.crs, self.georeferencing, self.bands, self.stats,
                               index=str(self.path))

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
        rows = np.flatnonzero(sel)
        key = (ts, hash(rows.tobytes()), len(rows))  # a query asks twice (its tiles, its calibration's)
        if self._windows_memo is None or self._windows_memo[0] != key:
            self._windows_memo = (key, [Window(c, r, ts, ts) for c, r in zip(self.col_off[rows].tolist(),
                                                                             self.row_off[rows].tolist())])
        return list(self._windows_memo[1])

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

    def row_at(self, col_off: int, row_off: int) -> int | None:
        """The row of the tile at this grid offset (None: no tile there, e.g. an empty one)."""
        return self._row.get((int(col_off), int(row_off)))

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
                tiles.append(Tile(None, self._valid(int(r)), win,  # type: ignore[arg-type]  # no pixels in an index
                                  rasterio.windows.transform(win, self.transform),
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

    def patch_scores(self, rows: np.ndarray, queries: torch.Tensor, n_queries: int,
                     logit_scale: float | None, cancel: Cancel | None = None) -> torch.Tensor:
        """Best patch score per (tile, query) ``[len(rows), n_queries]`` over the tiles' valid patches
        (:func:`~.patch_scores.best_patch_scores`); the last query's scores are kept, for the same
        query again (a collection ranks scenes first). With the index's stored background
        (:mod:`.background`) only the phrase rows are scanned; a scan of every tile against the model's
        whole background stores it when there is none."""
        rows = np.asarray(rows, dtype=np.int64)
        key = (hash(rows.tobytes()), len(rows), hash(queries.detach().cpu().float().numpy().tobytes()), n_queries,
               logit_scale)
        if self._scores_memo is not None and self._scores_memo[0] == key:
            return self._scores_memo[1].clone()
        stored = self.stored_background()
        left_out = None if stored is None else stored.plan(queries, n_queries, logit_scale)
        keep = None
        if stored is None and logit_scale is not None and len(queries) - n_queries == len(self.encoder.background) \
                and len(rows) == len(self) and np.array_equal(np.sort(rows), np.arange(len(self))):
            keep = np.empty(self.scale.shape, dtype=np.float32)  # the whole index against the whole background
        out = best_patch_scores(self.patches, self.scale, self.norm, lambda sel: valid_patches(self, sel), rows,
                                queries, n_queries, logit_scale, cancel,
                                background=None if stored is None or left_out is None else (stored.lse, left_out),
                                keep_lse=keep)
        if keep is not None:
            assert logit_scale is not None
            self._keep_background(keep, queries[n_queries:], logit_scale)
        self._scores_memo = (key, out.clone())
        return out

    def stored_background(self) -> StoredBackground | None:
        """The index's stored background (:mod:`.background`), or None: none, or not this index's."""
        if self._background is False:
            self._background = load_background(patches_path(self.path, self.emb), self.emb, self.meta)
        return self._background if isinstance(self._background, StoredBackground) else None

    def store_background(self, cancel: Cancel | None = None) -> Path | None:
        """Score every stored patch against the model's background phrases and store the result beside
        the patch file (:mod:`.background`; what :func:`~.build.build_index` does last). Returns the
        file, or None where it could not be written."""
        enc = self.encoder
        texts = enc.encode_phrases(list(enc.background)).float().cpu()
        keep = np.empty(self.scale.shape, dtype=np.float32)
        best_patch_scores(self.patches, self.scale, self.norm, lambda sel: valid_patches(self, sel),
                          np.arange(len(self)), texts, 0, enc.logit_scale, cancel, keep_lse=keep)
        return self._keep_background(keep, texts, enc.logit_scale)

    def _keep_background(self, lse: np.ndarray, texts: torch.Tensor, logit_scale: float) -> Path | None:
        texts = texts.detach().float().cpu()
        self._background = StoredBackground(lse, texts, float(logit_scale))
        return save_background(patches_path(self.path, self.emb), self.emb, self.meta, lse, texts, logit_scale)

    def calibration(self, area: Window, tile_size: int, overlap: float, texts: torch.Tensor, n_phrases: int,
                    cancel: Cancel | None = None):
        """find's score calibration (:func:`geoalign_core.inference.calibration.measure`) over all
        the stored tiles of ``area`` (also inside :meth:`restricted`), measured once per
        (area, phrase set) and kept."""
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
                assert eb.dense is not None  # the pass asked for dense embeddings
                out[idx.to(enc.device)] = F.normalize(enc.model.pool_regions(eb.dense, blist).float(), dim=-1)
        for k in split:
            check_cancel(cancel)
            out[k] = pool_pieces(self, boxes[k])
        return out

    def mask_invalid(self, values: np.ndarray, area: Window, scale: int, cancel: Cancel | None) -> None:
        """Nothing to add: the stored tiles' validity already masked the heatmap."""

    @contextlib.contextmanager
    def live_source(self) -> Iterator[LiveSource]:
        """The indexed raster, read live (for ``find``'s box refinement): it must still be where the
        index says, unchanged; read with the index's bands and scene statistics."""
        path = self.raster_path
        if not _reachable(path):
            raise InputError(f"box refinement re-reads the raster, and {path} is not there any more: "
                             "query without refinement", param="refine")
        self.check_raster(path)
        with RasterSource(path, self.bands, allow_no_crs=bool(self.meta["raster"].get("allow_no_crs")),
                          stats=self.stats) as src:
            yield LiveSource(self.encoder, src)

    def raster_available(self) -> bool:
        """Whether :meth:`live_source` can read the indexed raster: still where the index says, unchanged
        (``find`` computes its zoom view from an index only to collect calibration data, :mod:`~..inference.zoom`)."""
        path = self.raster_path
        if not _reachable(path):
            return False
        try:
            self.check_raster(path)
        except (GeoAlignError, OSError):  # changed since it was indexed, or unreadable
            return False
        return True

    # ------------------------------------------------------------------ queries
    def find(self, phrases: Sequence[str] | str, regions: Any = None, min_score: float = DEFAULT_MIN_SCORE,
             max_results: int = DEFAULT_MAX_RESULTS, **kwargs: Any):
        """:func:`geoalign_core.inference.find.find` from the index (box refinement off by default)."""
        return find.find(self.encoder, self, phrases, regions, min_score, max_results, **kwargs)

    def tile_classify(self, classes: Sequence[str] | None = None, top_k: int = 3, **kwargs: Any):
        """:func:`geoalign_core.inference.classify.tile_classify` of the index's tiles."""
        return classify.tile_classify(self.encoder, self, classes, top_k, **kwargs)

    def match_regions(self, regions: Any, phrases: Sequence[str] | str, **kwargs: Any):
        """:func:`geoalign_core.inference.regions.match_regions` from the index."""
        return regions_task.match_regions(self.encoder, self, regions, phrases, **kwargs)

    def heatmap(self, phrase: str, out_path: str | PathLike, overwrite: bool = False, **kwargs: Any) -> Path:
        """:func:`geoalign_core.inference.heatmap.heatmap` from the index; returns the file written."""
        return heatmap.heatmap(self.encoder, self, phrase, out_path, overwrite, **kwargs)

    def similar(self, examples: Any, **kwargs: Any):
        """:func:`geoalign_core.inference.similar.similar` from the index: more regions like ``examples``."""
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


def _reachable(path: str | PathLike) -> bool:
    """Whether the raster at ``path`` may still be read: a URL or GDAL virtual path, or a file that exists."""
    return "://" in str(path) or str(path).startswith("/vsi") or Path(path).exists()
