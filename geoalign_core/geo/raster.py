"""Raster input: :class:`RasterSource` opens, validates and reads a raster window by window.

A RasterSource never reads the whole raster: tiles and regions are windowed reads (boundless:
windows may extend beyond the raster, the padding is invalid), the normalisation statistics
come from one decimated read of at most ~1024 x 1024 pixels (overviews are used when present).

Band selection rules: :mod:`geoalign_core.geo.bands`. Validity rules and black-border
auto-detection: :mod:`geoalign_core.geo.masks`. Normalisation rule:
:mod:`geoalign_core.geo.stats`. Tiling: :mod:`geoalign_core.geo.tiling`.

Example::

    with RasterSource("scene.tif") as src:
        for tile in iter_tiles(src, tile_size=224, overlap=0.25):   # geoalign_core.geo.tiling
            model(tile.image)  # float32 [3, 224, 224] in [0, 1]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
import rasterio.windows
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from geoalign_core.errors import InputError
from geoalign_core.geo.bands import BandSelection, select_bands
from geoalign_core.geo.gdal_errors import READ_ERRORS, gdal_message
from geoalign_core.geo.georef import place_on_ground
from geoalign_core.geo.masks import detect_black_border, finite_mask
from geoalign_core.geo.paths import check_raster_path, is_gdal_path
from geoalign_core.geo.stats import SceneStats, compute_scene_stats
from geoalign_core.geo.tile import Tile

__all__ = ["RasterSource"]

STATS_SAMPLE_SIDE = 1024
#: the map frame of a raster without any georeferencing: x = column, y = -row (as QGIS shows it)
PIXEL_FRAME = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)

def _int_window(window: Window) -> Window:
    """Window with integer offsets (floor) and extents (ceil of the far edge)."""
    c0, r0 = math.floor(window.col_off + 1e-9), math.floor(window.row_off + 1e-9)
    c1 = math.ceil(window.col_off + window.width - 1e-9)
    r1 = math.ceil(window.row_off + window.height - 1e-9)
    return Window(c0, r0, max(c1 - c0, 1), max(r1 - r0, 1))


class RasterSource:
    """An open raster, validated, with band selection, validity masks and normalisation.

    Placing it on the ground (:mod:`geoalign_core.geo.georef`): a geotransform as it is, else its
    GCPs or RPCs through a warped VRT; ``georeferencing`` says which ("transform", "gcps", "rpcs",
    or "none" for pixel coordinates: InputError unless ``allow_no_crs``; then ``crs`` is None).

    Paletted bands are expanded through their colour table to R, G, B (entries with alpha 0
    are invalid). A container of subdatasets (HDF5, NetCDF, ...) is refused with the list of
    its subdatasets, any of which can be given as the raster.

    Args:
        path: any raster GDAL reads (GeoTIFF, COG, VRT, JPEG2000, ...), local or a GDAL name
            (``/vsizip/a.zip/b.tif``, ``/vsicurl/https://...``, a URL, ``NETCDF:"f.nc":var``).
        bands: 1-based band selection (one band or three, list or ``"4,3,2"``); None for the
            default rules of :mod:`geoalign_core.geo.bands`.
        allow_no_crs: accept a raster without a CRS; it is then addressed in pixel
            coordinates (its transform, the identity with y down when it has none) and
            ``crs`` is None. Without it such a raster raises InputError.
        nodata: override the raster's nodata value (a pixel is invalid when all selected
            bands equal it), e.g. ``0`` for a scene whose black surround has no nodata set.
        treat_black_as_nodata: True: pure black (all selected bands 0) is invalid;
            False: never; None (default): auto-detect a black border on uint8 RGB rasters
            without nodata, alpha or mask (see :mod:`geoalign_core.geo.masks`).
        stats: precomputed scene statistics (e.g. from an index); computed when None.

    Raises:
        InputError: missing file, not a raster / unreadable, no CRS (unless allowed),
            bad band selection.
    """

    def __init__(
        self,
        path: str | PathLike,
        bands: str | Sequence[int] | None = None,
        *,
        allow_no_crs: bool = False,
        nodata: float | None = None,
        treat_black_as_nodata: bool | None = None,
        stats: SceneStats | None = None,
    ) -> None:
        self.path: Path | str = str(path) if is_gdal_path(path) else Path(path)
        self._bands_arg = bands
        self.allow_no_crs = allow_no_crs
        self._nodata_override = None if nodata is None else float(nodata)
        self._black_arg = treat_black_as_nodata
        self._source: rasterio.io.DatasetReader | None = None
        self.georeferencing = "transform"
        self._crs_ignored = False  # a CRS declared without any georeferencing (identity transform, no GCPs)
        check_raster_path(self.path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.dataset = rasterio.open(self.path)
        except READ_ERRORS as exc:
            raise InputError(f"not a readable raster: {self.path} ({gdal_message(exc)})") from None
        try:
            self._check_subdatasets()
            self._place_on_ground()
            self._validate()
        except BaseException:
            self.close()
            raise
        if stats is not None:
            self.__dict__["stats"] = stats

    def _check_subdatasets(self) -> None:
        ds = self.dataset
        subs = list(ds.subdatasets or [])
        if ds.count == 0 and subs:
            shown = ", ".join(repr(s) for s in subs[:8]) + (f", ... ({len(subs)} in all)" if len(subs) > 8 else "")
            raise InputError(f"{self.path} holds {len(subs)} subdatasets and no bands of its own; "
                             f"give one of them as the raster: {shown}")

    def _place_on_ground(self) -> None:
        """Swap the dataset for a warped VRT when only GCPs or RPCs place it (see the class doc)."""
        ground = place_on_ground(self.dataset, self.path, self.allow_no_crs)
        self.georeferencing, self._crs_ignored = ground.georeferencing, ground.crs_ignored
        if ground.warped is not None:
            self._source, self.dataset = self.dataset, ground.warped

    def _validate(self) -> None:
        ds = self.dataset
        if ds.count < 1 or ds.width < 1 or ds.height < 1:
            raise InputError(f"not a raster with pixels: {self.path} ({ds.count} bands, {ds.width}x{ds.height})")
        if self.crs is None and not self.allow_no_crs:
            raise InputError(
                f"raster has no CRS (coordinate reference system): {self.path}",
                code="no_crs", param="allow_no_crs",
            )
        self.selection: BandSelection = select_bands(ds.count, ds.colorinterp, self._bands_arg)
        self._palette: np.ndarray | None = None
        band = self.selection.rgb[0]
        if not self.selection.is_rgb and ds.colorinterp[band - 1] == ColorInterp.palette:
            self._palette = self._palette_lut(band)
        self._read_indexes = self.selection.read_indexes
        self._channel_pos = [self._read_indexes.index(b) for b in self.selection.rgb]
        self._alpha_pos = self._read_indexes.index(self.selection.alpha) if self.selection.alpha is not None else None
        flags = ds.mask_flag_enums
        nodatavals = ds.nodatavals
        # per selected channel: nodata value to compare against, and whether a GDAL mask band
        # (internal .msk / per-dataset mask, not alpha) must be read
        self._band_nodata: list[float | None] = []
        self._band_needs_mask: list[bool] = []
        for b in self.selection.rgb:
            f = flags[b - 1]
            nd = nodatavals[b - 1] if MaskFlags.nodata in f else None
            if self._nodata_override is not None:
                nd = self._nodata_override
            self._band_nodata.append(nd)
            self._band_needs_mask.append(MaskFlags.per_dataset in f and MaskFlags.alpha not in f)

    def _palette_lut(self, band: int) -> np.ndarray | None:
        """``[N, 4]`` uint8 RGBA lookup table of a paletted band (None when it has no colour table)."""
        try:
            cmap = self.dataset.colormap(band)
        except ValueError:
            return None
        if not cmap:
            return None
        n = max(256, max(cmap) + 1)
        lut = np.zeros((n, 4), dtype=np.uint8)  # indexes missing from the table: transparent
        for i, rgba in cmap.items():
            lut[i] = rgba
        return lut

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Close the dataset handle (and the raster under a warped VRT)."""
        if getattr(self, "dataset", None) is not None:
            self.dataset.close()
        if self._source is not None:
            self._source.close()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clone(self) -> RasterSource:
        """A new, independent handle on the same raster with the same settings and statistics.

        Use one per thread: GDAL dataset handles must not be shared between threads.
        """
        path, kwargs = self.reopen_args()
        return RasterSource(path, **kwargs)

    def reopen_args(self) -> tuple[str | Path, dict[str, Any]]:
        """``(path, keyword arguments)`` that make a :class:`RasterSource` equal to this one, the
        scene statistics included (picklable: for a handle in another process)."""
        return self.path, {"bands": self._bands_arg, "allow_no_crs": self.allow_no_crs,
                           "nodata": self._nodata_override, "treat_black_as_nodata": self.black_is_nodata,
                           "stats": self.stats}

    def __repr__(self) -> str:
        return (
            f"RasterSource({str(self.path)!r}, {self.width}x{self.height}, "
            f"{self.count} band(s) {self.dtype}, "
            f"crs={self.crs.to_string() if self.crs else None}, bands={self.selection.rgb})"
        )

    # ------------------------------------------------------------------ properties
    @property
    def width(self) -> int:
        """Raster width in pixels."""
        return self.dataset.width

    @property
    def height(self) -> int:
        """Raster height in pixels."""
        return self.dataset.height

    @property
    def count(self) -> int:
        """Number of bands in the raster (not the selection)."""
        return self.dataset.count

    @property
    def dtype(self) -> str:
        """Data type name of the selected bands, e.g. ``"uint8"`` (always uint8 for a paletted band)."""
        if self._palette is not None:
            return "uint8"
        return self.dataset.dtypes[self.selection.rgb[0] - 1]

    @property
    def crs(self) -> CRS | None:
        """The raster's CRS, or None (pixel coordinates; only with ``allow_no_crs``)."""
        return None if self._crs_ignored else self.dataset.crs

    @property
    def transform(self) -> Affine:
        """Pixel -> map affine transform.

        A raster with no georeferencing at all (``allow_no_crs``) gets x = column, y = -row, the
        frame QGIS shows such a raster in, so that outputs overlay it there.
        """
        t = self.dataset.transform
        if self.georeferencing == "none" and t.is_identity:
            return PIXEL_FRAME
        return t

    @property
    def bounds(self) -> BoundingBox:
        """Extent (left, bottom, right, top) in map coordinates."""
        return BoundingBox(*rasterio.windows.bounds(Window(0, 0, self.width, self.height), self.transform))

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in map units."""
        return self.dataset.res

    @property
    def nodata(self) -> float | None:
        """Effective nodata value of the first selected band (override, else the raster's)."""
        return self._band_nodata[0]

    @property
    def bands(self) -> tuple[int, int, int]:
        """The 1-based bands feeding R, G, B."""
        return self.selection.rgb

    @property
    def alpha_band(self) -> int | None:
        """1-based alpha band used as mask, or None."""
        return self.selection.alpha

    def window_bounds(self, window: Window) -> BoundingBox:
        """Map extent of a pixel window."""
        return BoundingBox(*rasterio.windows.bounds(window, self.transform))

    # ------------------------------------------------------------------ reading
    def _read_raw(
        self,
        window: Window,
        out_shape: tuple[int, int] | None = None,
        resampling: Resampling = Resampling.nearest,
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Boundless read of the selected bands.

        Returns ``(data [3, H, W] raw dtype, valid [H, W] without the black rule, any_read)``;
        pixels outside the raster are 0 and invalid.
        """
        window = _int_window(window)
        h, w = out_shape if out_shape is not None else (int(window.height), int(window.width))
        n = len(self._read_indexes)
        raw = np.zeros((n, h, w), dtype=self.dataset.dtypes[self._read_indexes[0] - 1])
        band_valid = np.zeros((3, h, w), dtype=bool)
        alpha_ok = np.ones((h, w), dtype=bool)
        finite = np.ones((h, w), dtype=bool)
        c0, r0 = int(window.col_off), int(window.row_off)
        c1, r1 = c0 + int(window.width), r0 + int(window.height)
        ic0, ir0, ic1, ir1 = max(c0, 0), max(r0, 0), min(c1, self.width), min(r1, self.height)
        sx, sy = w / window.width, h / window.height
        dc0, dr0 = round((ic0 - c0) * sx), round((ir0 - r0) * sy)
        dc1, dr1 = round((ic1 - c0) * sx), round((ir1 - r0) * sy)
        if ic1 <= ic0 or ir1 <= ir0 or dc1 <= dc0 or dr1 <= dr0:
            out = np.zeros((3, h, w), dtype=np.uint8) if self._palette is not None else raw[self._channel_pos]
            return out, band_valid[0], False
        inner = Window(ic0, ir0, ic1 - ic0, ir1 - ir0)
        shape = (dr1 - dr0, dc1 - dc0)
        ds = self.dataset
        try:
            data = ds.read(self._read_indexes, window=inner, out_shape=(n, *shape), resampling=resampling)
            dst = (slice(dr0, dr1), slice(dc0, dc1))
            raw[(slice(None),) + dst] = data
            for k, pos in enumerate(self._channel_pos):
                bv = np.ones(shape, dtype=bool)
                nd = self._band_nodata[k]
                if nd is not None:
                    bv = ~np.isnan(data[pos]) if math.isnan(nd) else data[pos] != nd
                if self._band_needs_mask[k]:
                    m = ds.read_masks(
                        self.selection.rgb[k], window=inner, out_shape=shape, resampling=Resampling.nearest
                    )
                    bv &= m > 0
                band_valid[(k,) + dst] = bv
            if self._alpha_pos is not None:
                alpha_ok[dst] = data[self._alpha_pos] > 0
            finite[dst] = finite_mask(data[self._channel_pos])
        except READ_ERRORS as exc:
            raise self._read_failed(exc) from None
        valid = band_valid.any(axis=0) & alpha_ok & finite
        if self._palette is not None:  # indexes -> colours of the colour table
            lut = self._palette
            rgba = lut[np.clip(raw[self._channel_pos[0]].astype(np.int64), 0, len(lut) - 1)]
            valid &= rgba[..., 3] > 0
            return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1)), valid, True
        return raw[self._channel_pos], valid, True

    def _read_failed(self, exc: BaseException) -> InputError:
        return InputError(f"cannot read {self.path} (corrupt or truncated?): {gdal_message(exc)}")

    def read_all_bands(self, window: Window) -> np.ndarray:
        """Every band of ``window`` (inside the raster) as stored, ``[count, H, W]``; a failed read
        (a corrupt or truncated file) is the same InputError as a failed tile read."""
        try:
            return self.dataset.read(window=window)
        except READ_ERRORS as exc:
            raise self._read_failed(exc) from None

    def _black_mask(self, data: np.ndarray) -> np.ndarray:
        return (data == 0).all(axis=0)

    @cached_property
    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Decimated read of the whole raster (at most STATS_SAMPLE_SIDE per side).

        GDAL serves it from overviews when the raster has them; without overviews it decodes
        the blocks under the sampled pixels, which for a very large raster is slow but
        bounded in memory (``gdaladdo`` makes it fast).
        """
        scale = max(self.width, self.height) / STATS_SAMPLE_SIDE
        if scale <= 1:
            shape = (self.height, self.width)
        else:
            shape = (max(1, round(self.height / scale)), max(1, round(self.width / scale)))
        data, valid, _ = self._read_raw(Window(0, 0, self.width, self.height), out_shape=shape)
        return data, valid

    @cached_property
    def black_is_nodata(self) -> bool:
        """Whether pure black (all selected bands 0) counts as nodata (explicit or auto-detected)."""
        if self._black_arg is not None:
            return bool(self._black_arg)
        eligible = (
            self._nodata_override is None
            and all(nd is None for nd in self._band_nodata)
            and not any(self._band_needs_mask)
            and self.selection.alpha is None
            and self.dtype == "uint8"
            and self.selection.is_rgb
        )
        if not eligible:
            return False
        data, valid = self._sample
        return detect_black_border(data, valid)

    @cached_property
    def stats(self) -> SceneStats:
        """Normalisation statistics, computed once from the decimated sample's valid pixels."""
        data, valid = self._sample
        if self.black_is_nodata:
            valid = valid & ~self._black_mask(data)
        return compute_scene_stats([data[c][valid] for c in range(3)], self.dtype)

    def normalize(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Map raw selected-band values ``[3, H, W]`` to float32 [0, 1] with the scene statistics
        (into ``out`` when given)."""
        return self.stats.normalize(data, out)

    def read_raw(
        self,
        window: Window,
        out_shape: tuple[int, int] | None = None,
        resampling: Resampling = Resampling.nearest,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boundless read of the selected bands: ``(raw [3, H, W] in the raster's dtype, valid [H, W])``."""
        data, valid, any_read = self._read_raw(window, out_shape, resampling)
        if any_read and self.black_is_nodata:
            valid &= ~self._black_mask(data)
        return data, valid

    def read_tile(
        self,
        window: Window,
        index: int = -1,
        out_shape: tuple[int, int] | None = None,
        resampling: Resampling = Resampling.nearest,
        out: np.ndarray | None = None,
    ) -> Tile:
        """Read one window (boundless) as a normalised :class:`Tile`.

        Args:
            window: pixel window; parts beyond the raster are padding (invalid, image 0).
            index: the tile's index in its grid (stored in ``Tile.index``).
            out_shape: ``(H, W)`` to resample the window to; None keeps the native resolution.
            resampling: resampling used when ``out_shape`` differs from the window size.
            out: float32 ``[3, H, W]`` to write the image into (``Tile.image`` is then ``out``).
        """
        window = _int_window(window)
        data, valid = self.read_raw(window, out_shape, resampling)
        image = self.normalize(data, out)
        if not valid.all():
            np.copyto(image, np.float32(0.0), where=~valid)
        h, w = valid.shape
        transform = rasterio.windows.transform(window, self.transform) * Affine.scale(
            window.width / w, window.height / h
        )
        return Tile(image, valid, window, transform, self.window_bounds(window), index)

    def read_valid_mask(self, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Validity of the whole raster, decimated to ``out_shape`` (default: the stats sample grid)."""
        if out_shape is None:
            data, valid = self._sample
            return valid & ~self._black_mask(data) if self.black_is_nodata else valid.copy()
        return self.read_raw(Window(0, 0, self.width, self.height), out_shape)[1]
