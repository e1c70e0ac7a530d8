"""Vector input: read features in any OGR format, bring them to the raster's CRS and pixel grid.

Map <-> pixel conversion uses the raster's affine transform: pixel ``(col, row)`` maps to
``transform * (col, row)``; pixel boxes are ``[x0, y0, x1, y1]`` in (fractional) pixel
columns/rows of the raster, ``x0 < x1`` and ``y0 < y1``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from shapely.geometry import Polygon

from geoalign_core.errors import GeoAlignWarning, InputError
from geoalign_core.geo.paths import check_vector_path

__all__ = [
    "boxes_to_pixels", "clip_to_raster", "drop_unprojectable", "mark_unprojectable", "parse_crs",
    "pixel_boxes_to_polygons", "read_vectors", "results_in_crs",
]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_layer(path: Path, layer: str | int | None) -> str | int | None:
    """The layer to read: as given (a name, or a 0-based index), else the first, with a warning
    when there are others; InputError for a layer the file does not have."""
    import pyogrio

    try:
        names = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except Exception as exc:
        raise InputError(f"cannot read vector file {path}: {_one_line(exc)}") from None
    if layer is None:
        if len(names) > 1:
            warnings.warn(GeoAlignWarning(f"{path.name} has {len(names)} layers ({', '.join(names[:6])}"
                                          f"{', ...' if len(names) > 6 else ''}); reading the first, {names[0]!r}",
                                          param="layer"), stacklevel=3)
        return names[0] if names else None
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit() and layer not in names:
        layer = int(layer)
    if isinstance(layer, int):
        if not 0 <= layer < len(names):
            raise InputError(f"{path} has no layer {layer}: its layers are 0..{len(names) - 1} "
                             f"({', '.join(names[:6])})")
        return names[layer]
    if layer not in names:
        raise InputError(f"{path} has no layer {layer!r}; its layers: {', '.join(names[:10])}")
    return layer


def read_vectors(path: str | PathLike, target_crs: object | None, layer: str | int | None = None) -> gpd.GeoDataFrame:
    """Read a vector file (GeoPackage, GeoJSON, Shapefile, ... any OGR format) into ``target_crs``.

    Args:
        path: the vector file.
        target_crs: the raster's CRS (anything pyproj understands); None keeps the features'
            coordinates as they are (a raster in pixel coordinates).
        layer: layer name or 0-based index for multi-layer sources (default: the first layer,
            with a warning when there are others).

    Features without geometry are dropped. Geometries without a CRS are assumed to be in
    ``target_crs`` (with a warning). Features that cannot be reprojected (infinite or empty
    after the transformation) are kept, their positions listed in
    ``gdf.attrs["unprojectable"]`` for the caller to report (:func:`drop_unprojectable`).

    Raises:
        InputError: missing or unreadable file, unknown layer, no features with a geometry.
    """
    path = Path(path)
    check_vector_path(path)
    layer = _check_layer(path, layer)
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as exc:  # pyogrio's DataSourceError / DataLayerError, fiona's, OSError, ...
        raise InputError(f"cannot read vector file {path}: {_one_line(exc)}") from None
    if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry is None:
        raise InputError(f"no geometries in vector file {path}")
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    if len(gdf) == 0:
        raise InputError(f"no features with a geometry in {path}" + (f" (layer {layer})" if layer else ""))
    if target_crs is None:
        return gdf.reset_index(drop=True)
    if gdf.crs is None:
        crs_name = ProjCRS.from_user_input(target_crs).to_string()
        warnings.warn(
            f"{path.name} has no CRS; assuming the raster's ({crs_name})",
            stacklevel=2,
        )
        return gdf.set_crs(target_crs).reset_index(drop=True)
    try:
        out = gdf.to_crs(target_crs).reset_index(drop=True)
    except Exception as exc:
        raise InputError(f"cannot reproject {path} to the raster's CRS: {_one_line(exc)}") from None
    return mark_unprojectable(out)


def mark_unprojectable(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """List in ``gdf.attrs["unprojectable"]`` the features a reprojection left infinite or empty
    (what :func:`read_vectors` does after its own reprojection); returns ``gdf``."""
    bounds = gdf.geometry.bounds.to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(bounds).all(axis=1) | gdf.geometry.is_empty.to_numpy())
    gdf.attrs["unprojectable"] = bad.tolist()
    return gdf


def drop_unprojectable(gdf: gpd.GeoDataFrame, path: str | PathLike) -> gpd.GeoDataFrame:
    """Drop the features :func:`read_vectors` could not reproject (e.g. off the disk of a
    geostationary projection), with one warning that says how many.

    Raises:
        InputError: none of the features can be reprojected (nothing would be left to use).
    """
    bad = gdf.attrs.get("unprojectable") or []
    if not bad:
        return gdf
    if len(bad) == len(gdf):
        raise InputError(f"none of the {len(gdf)} features of {Path(path).name} can be reprojected to the "
                         "raster's CRS (they lie outside the area where that projection is defined; check the "
                         "CRS of the raster and of the vector file)")
    warnings.warn(f"{len(bad)} of the {len(gdf)} features of {Path(path).name} cannot be reprojected to the "
                  "raster's CRS (outside the area where that projection is defined); they are skipped",
                  stacklevel=2)
    keep = np.ones(len(gdf), dtype=bool)
    keep[bad] = False
    out = gdf[keep].reset_index(drop=True)
    out.attrs["unprojectable"] = []
    return out


def clip_to_raster(gdf: gpd.GeoDataFrame, bounds: Sequence[float]) -> tuple[gpd.GeoDataFrame, int]:
    """Keep the features that overlap the raster's ``bounds`` (left, bottom, right, top).

    Features are kept whole (not cut). Returns ``(inside, n_outside)``; n_outside counts
    the features entirely outside the raster, which callers report as skipped.

    Raises:
        InputError: no feature overlaps the raster.
    """
    left, bottom, right, top = (float(v) for v in bounds)
    extent = shapely.box(min(left, right), min(bottom, top), max(left, right), max(bottom, top))
    inside = gdf.geometry.intersects(extent)
    n_outside = int((~inside).sum())
    if not inside.any():
        raise InputError(f"none of the {len(gdf)} features overlap the raster (check the CRS of the vector file)")
    return gdf[inside.values], n_outside


def boxes_to_pixels(gdf: gpd.GeoDataFrame | gpd.GeoSeries, transform: Affine) -> np.ndarray:
    """Pixel-space bounding box ``[K, 4]`` (xyxy, float64) of each feature's geometry.

    The map bounding box's four corners go through ``~transform``; the result is the pixel
    box around them, so it is correct for north-up and y-down (pixel) grids alike.
    """
    geoms = gdf.geometry if isinstance(gdf, gpd.GeoDataFrame) else gdf
    if len(geoms) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    b = geoms.bounds.to_numpy(dtype=np.float64)  # minx, miny, maxx, maxy
    xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], axis=1)
    ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], axis=1)
    inv = ~transform
    cols = inv.a * xs + inv.b * ys + inv.c
    rows = inv.d * xs + inv.e * ys + inv.f
    return np.stack([cols.min(1), rows.min(1), cols.max(1), rows.max(1)], axis=1)


def pixel_boxes_to_polygons(boxes: np.ndarray | Sequence[Sequence[float]], transform: Affine) -> list[Polygon]:
    """Map polygons of pixel boxes ``[K, 4]`` (xyxy): the inverse of :func:`boxes_to_pixels`."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out: list[Polygon] = []
    for x0, y0, x1, y1 in arr:
        corners = [transform * (x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        poly = Polygon(corners)
        out.append(shapely.geometry.polygon.orient(poly, sign=1.0))
    return out


def parse_crs(crs: object) -> ProjCRS:
    """A CRS from what a user wrote (``EPSG:4326``, a WKT or PROJ string, a CRS object); InputError if unknown."""
    try:
        return ProjCRS.from_user_input(crs)
    except Exception:  # noqa: BLE001 -- pyproj's errors vary
        raise InputError(f"unknown CRS {crs!r}", param="crs") from None


def results_in_crs(gdf: gpd.GeoDataFrame, crs: object | None) -> gpd.GeoDataFrame:
    """A task's results reprojected to ``crs`` (None: as they are), with their metadata (``attrs``)."""
    if crs is None:
        return gdf
    target = parse_crs(crs)
    if gdf.crs is None:
        raise InputError("the raster has no CRS: its results cannot be reprojected", param="crs")
    attrs = dict(gdf.attrs)
    out = gdf.to_crs(target)
    out.attrs = attrs
    return out
