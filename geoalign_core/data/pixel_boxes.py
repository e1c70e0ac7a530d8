"""A CSV of PIXEL boxes (DeepForest style): a ``.csv`` with numeric columns ``xmin, ymin, xmax, ymax``
(column x, row y, y down, in the raster's own pixel grid) and no ``WKT`` column is read as one
box polygon per row, mapped to the raster's CRS through its affine transform
(:func:`read_pixel_boxes`). With an ``image_path`` column only the rows for this raster are used
(its file name, or its stem, compared ignoring case; rows with an empty ``image_path`` belong to
every raster); when every row names one and the same other image, all are used, with a warning
(a renamed file). Rows with missing coordinates count as "empty or missing geometry", boxes with
``xmax <= xmin`` or ``ymax <= ymin`` as degenerate, boxes without area inside the raster as
"outside the raster". A ``.csv`` with a ``WKT`` column is an ordinary vector file (polygons in map
coordinates, GDAL's CSV driver).
"""

from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from geoalign_core.data.text import is_blank
from geoalign_core.errors import InputError

if TYPE_CHECKING:
    import geopandas as gpd

    from geoalign_core.geo.raster import RasterSource

__all__ = ["IMAGE_COLUMN", "PIXEL_BOX_COLUMNS", "check_csv", "is_pixel_box_csv", "read_pixel_boxes"]


PIXEL_BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")  #: a CSV of pixel boxes (DeepForest style) has these
IMAGE_COLUMN = "image_path"  #: optional: the image each row of a pixel-box CSV belongs to


def _csv_header(path: Path) -> list[str]:
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read CSV {path}: {' '.join(str(exc).split())}") from None
    return [h.strip() for h in header]


def _has_wkt(header: list[str]) -> bool:
    """GDAL's CSV driver reads a ``WKT`` column (or one starting with ``_WKT``) as the geometry."""
    return any(h.lower() == "wkt" or h.lower().startswith("_wkt") for h in header)


def is_pixel_box_csv(path: str | PathLike) -> bool:
    """Whether ``path`` is a CSV of pixel boxes: a ``.csv`` whose header holds ``xmin, ymin, xmax, ymax``
    (any case) and no ``WKT`` column. False for anything else, unreadable files included."""
    p = Path(path)
    if p.suffix.lower() != ".csv" or not p.is_file():
        return False
    try:
        header = _csv_header(p)
    except InputError:
        return False
    lower = {h.lower() for h in header}
    return set(PIXEL_BOX_COLUMNS) <= lower and not _has_wkt(header)


def check_csv(path: Path) -> bool:
    """For a ``.csv``: True when it is a pixel-box CSV, False when GDAL reads it as vectors (a ``WKT``
    column); InputError for a CSV that is neither (one line naming the missing columns)."""
    header = _csv_header(path)
    if _has_wkt(header):
        return False
    missing = [c for c in PIXEL_BOX_COLUMNS if c not in {h.lower() for h in header}]
    if missing:
        raise InputError(
            f"{path} has no geometry: a labels CSV needs the pixel-box columns {','.join(PIXEL_BOX_COLUMNS)} "
            f"(missing: {', '.join(missing)}) or a WKT column; its columns: {', '.join(header) or 'none'}"
        )
    return True


def _same_image(value: str, name: str) -> bool:
    base = PurePosixPath(value.strip().replace("\\", "/")).name.lower()
    name = name.lower()
    return base == name or PurePosixPath(base).stem == PurePosixPath(name).stem


def _rows_for_raster(images: list[str], raster_name: str, path: Path) -> np.ndarray:
    """Which rows of a pixel-box CSV belong to the raster (see the module docstring)."""
    blank = np.array([is_blank(v) for v in images], dtype=bool)
    keep = blank | np.array([not b and _same_image(str(v), raster_name) for v, b in zip(images, blank)], dtype=bool)
    others = sorted({PurePosixPath(str(v).strip().replace("\\", "/")).name for v, k in zip(images, keep) if not k})
    if not others:
        return keep
    if not keep.any():
        if len(others) == 1:
            warnings.warn(f"every row of {path.name} is for {others[0]}, not {raster_name}: using its boxes on "
                          f"{raster_name} (pixel boxes of {raster_name}'s own grid)", UserWarning, stacklevel=4)
            return np.ones(len(images), dtype=bool)
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise InputError(f"no row of {path} is for {raster_name}: its {IMAGE_COLUMN} names {len(others)} other "
                         f"images ({shown})", param="labels")
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    warnings.warn(f"{int((~keep).sum())} of the {len(keep)} rows of {path.name} are for other images ({shown}): "
                  f"only the {int(keep.sum())} rows for {raster_name} are used", UserWarning, stacklevel=4)
    return keep


def read_pixel_boxes(path: str | PathLike, source: RasterSource) -> tuple[gpd.GeoDataFrame, dict[int, str]]:
    """A CSV of pixel boxes -> a GeoDataFrame in the raster's CRS (one box polygon per row of this
    raster, its other columns as attributes) and the rows to skip before their geometry is looked at
    (``{row: LabelSkips attribute}``: degenerate boxes, boxes outside the raster).

    Rows with a missing or non-numeric coordinate get no geometry. See the module docstring for the
    ``image_path`` rule.

    Raises:
        InputError: unreadable CSV, missing box columns, a box column without any number, a raster
            placed by GCPs / RPCs (its pixel grid is not the file's), no row for the raster.
    """
    import geopandas as gpd
    import pandas as pd

    from geoalign_core.geo.vectors import pixel_boxes_to_polygons

    path = Path(path)
    if not path.exists():
        raise InputError(f"vector file not found: {path}")
    check_csv(path)
    if getattr(source, "georeferencing", "transform") in ("gcps", "rpcs"):
        raise InputError(f"{path.name} holds pixel boxes, but {source.path} is placed on the ground by "
                         f"{source.georeferencing.upper()} (warped): warp it with gdalwarp and give boxes of the "
                         "warped grid, or polygons in map coordinates")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read CSV {path}: {' '.join(str(exc).split())}") from None
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c.lower(): c for c in df.columns}
    if len(df) == 0:
        raise InputError(f"no rows in {path}")
    raster_name = PurePosixPath(str(source.path)).name
    if IMAGE_COLUMN in lower:
        df = df[_rows_for_raster(list(df[lower[IMAGE_COLUMN]]), raster_name, path)].reset_index(drop=True)
    coords = np.stack([pd.to_numeric(df[lower[c]].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
                       for c in PIXEL_BOX_COLUMNS], axis=1)
    for j, c in enumerate(PIXEL_BOX_COLUMNS):
        if np.isnan(coords[:, j]).all():
            raise InputError(f"column {lower[c]!r} of {path} holds no numbers (pixel boxes need numeric "
                             f"{','.join(PIXEL_BOX_COLUMNS)})")
    finite = np.isfinite(coords).all(axis=1)
    skip: dict[int, str] = {}
    geoms: list = [None] * len(df)
    polys = pixel_boxes_to_polygons(np.where(finite[:, None], coords, 0.0), source.transform)
    for i in np.flatnonzero(finite):
        x0, y0, x1, y1 = coords[i]
        if x1 <= x0 or y1 <= y0:
            skip[int(i)] = "degenerate_box"
        elif min(x1, source.width) <= max(x0, 0.0) or min(y1, source.height) <= max(y0, 0.0):
            skip[int(i)] = "outside_raster"
        geoms[i] = polys[i]
    gdf = gpd.GeoDataFrame(df, geometry=geoms, crs=source.crs)
    return gdf, skip
