"""Where a task's embeddings come from: a raster read live, or a scene index.

Every task (:mod:`.classify`, :mod:`.find`, :mod:`.regions`, :mod:`.heatmap`, :mod:`.similar`)
works on an *embedding source*: the raster's identity (path, CRS, transform, size, bands),
its tile grid, and :class:`~.encoder.EmbeddingBatch` es for windows of that grid. Two kinds
exist:

* :class:`LiveSource`: a raster and an encoder; every batch is an image pass (the backbone);
* :class:`geoalign_core.index.SceneIndex`: embeddings stored once by ``geoalign index``; a
  batch is read from disk, and only the text tower runs.

:func:`open_source` gives the right one for what a task was handed (a path or an index).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

from ..defaults import DEFAULT_OVERLAP
from ..geo import RasterSource
from ..geo.grid import area_window, assign_to_windows, check_tile_fits, tile_windows
from .encoder import Cancel, EmbeddingBatch, Encoder, Progress, check_cancel, tile_scale
from .metadata import raster_identity

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS

__all__ = ["EmbeddingSource", "LiveSource", "open_source", "scan_grid"]


class EmbeddingSource(Protocol):
    """What a task needs from where its embeddings come from (see the module docstring)."""

    live: bool
    out_of_domain: bool  #: real imagery for a synthetic-only model (set by :func:`open_source`)
    path: Any
    crs: CRS | None
    transform: Affine
    width: int
    height: int

    def tile_size(self, tile_size: int | None) -> int: ...

    def overlap(self, overlap: float | None, default: float) -> float: ...

    def windows(self, tile_size: int, overlap: float, area: Window) -> list[Window]: ...

    def candidate_windows(self, windows: list[Window], texts: torch.Tensor, n_phrases: int,
                          min_score: float | torch.Tensor, max_results: int, logit_scale: float | None
                          ) -> tuple[list[Window], torch.Tensor | None]: ...

    def embeddings(self, windows: Sequence[Window], dense: bool = True, progress: Progress | None = None,
                   cancel: Cancel | None = None, skip_empty: bool = True) -> Iterator[EmbeddingBatch]: ...

    def candidate_batches(self, windows: list[Window], bound: torch.Tensor, floor: Callable[[], torch.Tensor],
                          progress: Progress | None = None, cancel: Cancel | None = None
                          ) -> Iterator[EmbeddingBatch]: ...

    def region_embeddings(self, boxes: np.ndarray, area: Window, tile_size: int, overlap: float,
                          progress: Progress | None, cancel: Cancel | None) -> torch.Tensor: ...

    def mask_invalid(self, values: np.ndarray, area: Window, scale: int, cancel: Cancel | None) -> None: ...

    def calibration(self, area: Window, tile_size: int, overlap: float, texts: torch.Tensor, n_phrases: int,
                    cancel: Cancel | None = None) -> Any: ...

    def raster_meta(self) -> dict: ...

    def raster_available(self) -> bool: ...

    def live_source(self) -> contextlib.AbstractContextManager[LiveSource]: ...


class LiveSource:
    """A raster read live: its grid from :func:`~geoalign_core.geo.grid.tile_windows`, its
    embeddings from the encoder's image pass (one backbone pass per tile)."""

    live = True
    out_of_domain = False  #: set by :func:`open_source`: real imagery for a synthetic-only model

    def __init__(self, enc: Encoder, raster: RasterSource) -> None:
        self.enc = enc
        self.raster = raster
        # the raster's identity (fixed for an open raster)
        self.path: Any = raster.path
        self.crs: CRS | None = raster.crs
        self.transform: Affine = raster.transform
        self.width: int = raster.width
        self.height: int = raster.height

    def raster_meta(self) -> dict:
        r = self.raster
        return raster_identity(r.path, r.crs, r.georeferencing, r.bands, r.stats)

    # the grid
    def tile_size(self, tile_size: int | None) -> int:
        return self.enc.tile_size(tile_size)

    def overlap(self, overlap: float | None, default: float) -> float:
        return float(default if overlap is None else overlap)

    def windows(self, tile_size: int, overlap: float, area: Window) -> list[Window]:
        check_tile_fits(tile_size, area, self.enc.input_size)
        return tile_windows(self.width, self.height, tile_size, overlap, area=area)

    def candidate_windows(self, windows: list[Window], texts: torch.Tensor, n_phrases: int,
                          min_score: float | torch.Tensor, max_results: int, logit_scale: float | None
                          ) -> tuple[list[Window], torch.Tensor | None]:
        """All of them, in grid order and without bounds: what a tile holds is known only after its image pass."""
        return windows, None

    def candidate_batches(self, windows: list[Window], bound: torch.Tensor, floor: Callable[[], torch.Tensor],
                          progress: Progress | None = None, cancel: Cancel | None = None
                          ) -> Iterator[EmbeddingBatch]:
        """Every window's embeddings (the image pass): a live raster has no bounds to skip a tile by."""
        return self.embeddings(windows, dense=True, progress=progress, cancel=cancel)

    def calibration(self, area: Window, tile_size: int, overlap: float, texts: torch.Tensor, n_phrases: int,
                    cancel: Cancel | None = None):
        """find's score calibration over the area's tiles (:func:`~.calibration.measure`: an image
        pass over up to 16 of them)."""
        from .calibration import measure

        return measure(self.enc, self, self.windows(tile_size, overlap, area), texts, n_phrases, cancel)

    # embeddings
    def embeddings(self, windows: Sequence[Window], dense: bool = True, progress: Progress | None = None,
                   cancel: Cancel | None = None, skip_empty: bool = True) -> Iterator[EmbeddingBatch]:
        return self.enc.image_pass(self.raster, windows, dense=dense, progress=progress, cancel=cancel,
                                   skip_empty=skip_empty)

    def region_embeddings(self, boxes: np.ndarray, area: Window, tile_size: int, overlap: float,
                          progress: Progress | None, cancel: Cancel | None) -> torch.Tensor:
        """``[K, D]`` normalised embeddings of raster-pixel boxes: each box RoIAlign-pooled from
        the dense map of the grid tile that holds it whole, or of its own window around it."""
        enc = self.enc
        check_tile_fits(tile_size, area, enc.input_size)
        windows, members = assign_to_windows(boxes, area, tile_size, overlap)
        out = torch.zeros((len(boxes), enc.model.embed_dim), device=enc.device)
        for eb in self.embeddings(windows, dense=True, progress=progress, cancel=cancel, skip_empty=False):
            blist = [tile_boxes(boxes[members[t.index]], t) for t in eb.tiles]
            idx = [torch.from_numpy(members[t.index]) for t in eb.tiles]
            with torch.no_grad():
                assert eb.dense is not None  # the pass above asked for dense embeddings
                reg = F.normalize(enc.model.pool_regions(eb.dense, blist).float(), dim=-1)
            out[torch.cat(idx).to(enc.device)] = reg
        return out

    def mask_invalid(self, values: np.ndarray, area: Window, scale: int, cancel: Cancel | None) -> None:
        """Set output cells whose raster pixel (nearest, at the output resolution) is nodata to NaN.

        Tiles resampled to the model's input size carry a coarser validity mask; this strip-wise
        pass makes nodata exact on the output grid without holding the raster in memory.
        """
        out_h, out_w = values.shape
        rows = max(1, 4_000_000 // max(out_w, 1))
        for r in range(0, out_h, rows):
            check_cancel(cancel)
            n = min(rows, out_h - r)
            win = Window(area.col_off, area.row_off + r * scale, out_w * scale, n * scale)
            _, valid = self.raster.read_raw(win, out_shape=(n, out_w))
            values[r : r + n][~valid] = np.nan

    @contextlib.contextmanager
    def live_source(self) -> Iterator[LiveSource]:
        """A source that can read any window (for the box refinement of ``find``): itself."""
        yield self

    def raster_available(self) -> bool:
        """Whether :meth:`live_source` can read the raster: always."""
        return True


def tile_boxes(boxes: np.ndarray, tile: Any) -> torch.Tensor:
    """Raster-pixel boxes ``[K, 4]`` in a tile's model-input pixels (float32)."""
    b = np.asarray(boxes, dtype=np.float64).copy()
    b[:, 0::2] -= float(tile.window.col_off)
    b[:, 1::2] -= float(tile.window.row_off)
    return torch.from_numpy(b / tile_scale(tile)).float()


def scan_grid(src: EmbeddingSource, tile_size: int | None, overlap: float | None, bounds: Sequence[float] | None,
              default_overlap: float = DEFAULT_OVERLAP) -> tuple[int, float, Window]:
    """What a task scans of ``src``: its tile size, its overlap (``default_overlap`` when None) and the
    area (the pixel window of ``bounds``, else the whole raster)."""
    return (src.tile_size(tile_size), src.overlap(overlap, default_overlap),
            area_window(src.transform, src.width, src.height, bounds, src.path))


@contextlib.contextmanager
def open_source(enc: Encoder, raster: str | PathLike | Any, bands: Sequence[int] | str | None = None,
                allow_no_crs: bool = False, phrases: Sequence[str] = ()) -> Iterator[Any]:
    """The embedding source for ``raster``: a :class:`LiveSource` over an opened raster, or the
    index itself when handed a :class:`~geoalign_core.index.SceneIndex` (``bands`` must then be
    those of the index or None).

    A raster (or ``phrases``) outside the model card's domain gives one warning line per reason
    (:func:`geoalign_core.card.domain_warnings`)."""
    if hasattr(raster, "embeddings") and hasattr(raster, "windows"):
        index: Any = raster  # an opened scene index: the embedding source itself
        index.check_compatible(enc, bands)
        index.out_of_domain = warn_domain(enc, None, phrases, getattr(index, "raster_path", None))
        yield index
        return
    with RasterSource(raster, bands, allow_no_crs=allow_no_crs) as src:
        live = LiveSource(enc, src)
        live.out_of_domain = warn_domain(enc, src, phrases)
        yield live


def _tags_of(path: Any) -> dict | None:
    """The GeoTIFF tags of the raster at ``path`` (None: it cannot be opened)."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return dict(ds.tags())
    except Exception:  # noqa: BLE001 - gone or unreadable: its origin is unknown
        return None


def warn_domain(enc: Encoder, raster: RasterSource | None, phrases: Sequence[str] = (),
                raster_path: Any = None) -> bool:
    """Warn (one line each) where ``raster`` (or the indexed ``raster_path``) or ``phrases`` lie outside the
    model's training domain; True when the raster is outside it (a synthetic-only model on real imagery)."""
    import warnings

    from ..card import domain_warnings, out_of_domain, raster_is_synthetic
    from ..geo.grid import pixel_size_m

    card = enc.card
    if card is None:
        return False
    synthetic: bool | None = None
    if raster is None:
        tags = _tags_of(raster_path) if raster_path else None
        synthetic = None if tags is None else raster_is_synthetic(tags)
        lines = domain_warnings(card, bands=card.domain.bands or 3, gsd_m=None, synthetic=synthetic,
                                phrases=phrases)
    else:
        ds = raster.dataset
        try:
            tags = dict(ds.tags())
        except Exception:  # noqa: BLE001 - a driver without tags: unknown origin
            tags = {}
        gsd = None
        if raster.crs is not None and raster.georeferencing != "none":
            mx, my = pixel_size_m(raster.crs, raster.transform, raster.width, raster.height)
            gsd = (mx + my) / 2.0
        n_bands = len(set(raster.selection.rgb))
        synthetic = raster_is_synthetic(tags)
        lines = domain_warnings(card, bands=n_bands if n_bands > 1 else 1, gsd_m=gsd, synthetic=synthetic,
                                phrases=phrases)
    for line in lines:
        warnings.warn(line, UserWarning, stacklevel=3)
    return out_of_domain(card, synthetic)
