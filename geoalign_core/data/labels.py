"""Labelled vector data -> polygon features in the raster's PIXEL grid, with their attributes.

:func:`load_labels` reads any OGR format (GeoPackage, Shapefile, GeoJSON, ...) through
:func:`geoalign_core.geo.read_vectors`, reprojects to the raster's CRS, then maps every
geometry to raster pixel coordinates (x = column, y = row, y down), where chipping, boxes,
positions ("upper left") and relations are computed.

Features that cannot become training regions are skipped and COUNTED, never fatal
(:class:`LabelSkips`): no / blank class value, a class value not in ``classes`` (when the user
gives the list), an empty or missing geometry, a geometry without area (points, lines), and
a geometry entirely outside the raster. Invalid polygons are repaired (``make_valid``).

CSV of PIXEL boxes (DeepForest style): a ``.csv`` with numeric columns ``xmin, ymin, xmax, ymax``
(column x, row y, y down, in the raster's own pixel grid) and no ``WKT`` column is read as one
box polygon per row, mapped to the raster's CRS through its affine transform
(:func:`read_pixel_boxes`). With an ``image_path`` column only the rows for this raster are used
(its file name, or its stem, compared ignoring case; rows with an empty ``image_path`` belong to
every raster); when every row names one and the same other image, all are used, with a warning
(a renamed file). Rows with missing coordinates count as "empty or missing geometry", boxes with
``xmax <= xmin`` or ``ymax <= ymin`` as degenerate, boxes without area inside the raster as
"outside the raster". A ``.csv`` with a ``WKT`` column is an ordinary vector file (polygons in map
coordinates, GDAL's CSV driver).

Attributes (all optional): the colour, size and orientation of a feature come from fields
found by name (``color``/``colour``, ``size``, ``orientation``; case-insensitive) or named
explicitly. When the size field is absent the size is derived from the geometry, relative
to the other features of the same class (area < 0.6 x the class median: "small", > 1.6 x:
"large", else "medium"; classes with fewer than 3 features get none). When the orientation
field is absent it is derived from the minimum rotated rectangle of the polygon (long side /
short side >= 1.5: "east-west", "north-south" or "diagonal" by the long side's direction in
the raster grid; rounder shapes get none).
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pyogrio
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from geoalign_core.data.text import clean_class
from geoalign_core.errors import InputError
from geoalign_core.geo.vectors import read_vectors

if TYPE_CHECKING:
    import geopandas as gpd

    from geoalign_core.geo.raster import RasterSource

__all__ = ["PIXEL_BOX_COLUMNS", "LabelFeature", "LabelSet", "LabelSkips", "is_pixel_box_csv", "load_labels",
           "polygonal", "read_pixel_boxes"]

log = logging.getLogger(__name__)

AUTO = "auto"
FIELD_ALIASES = {
    "color": ("color", "colour"),
    "size": ("size",),
    "orientation": ("orientation",),
}
SIZE_WORDS = ("small", "medium", "large")
ORIENTATION_WORDS = ("north-south", "east-west", "diagonal")
SMALL_RATIO, LARGE_RATIO = 0.6, 1.6
MIN_ASPECT = 1.5
_WORDLIKE = re.compile(r"^[a-z][a-z \-]{0,30}$")


@dataclass
class LabelFeature:
    """One labelled polygon, in raster pixel coordinates.

    Attributes:
        fid: 0-based position of the feature in the (non-empty) layer as read.
        cls: class name as text (lower case, ``_`` -> space).
        geom: Polygon / MultiPolygon in pixel coordinates (valid).
        color, size, orientation: attribute words or None.
        description: the ``--description-field`` text, or None.
    """

    fid: int
    cls: str
    geom: BaseGeometry
    color: str | None = None
    size: str | None = None
    orientation: str | None = None
    description: str | None = None

    @property
    def area(self) -> float:
        return float(self.geom.area)


@dataclass
class LabelSkips:
    """Features skipped while loading, by reason."""

    no_class: int = 0
    unknown_class: int = 0
    empty_geometry: int = 0
    not_polygon: int = 0
    unprojectable: int = 0
    outside_raster: int = 0
    degenerate_box: int = 0
    unknown_values: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {
            "empty or missing class value": self.no_class,
            "class value not in the given classes": self.unknown_class,
            "empty or missing geometry": self.empty_geometry,
            "not a polygon (point or line)": self.not_polygon,
            "cannot be reprojected to the raster's CRS (outside the area where it is defined)": self.unprojectable,
            "outside the raster": self.outside_raster,
            "degenerate pixel box (xmax <= xmin or ymax <= ymin)": self.degenerate_box,
        }

    @property
    def total(self) -> int:
        return (self.no_class + self.unknown_class + self.empty_geometry + self.not_polygon + self.unprojectable
                + self.outside_raster + self.degenerate_box)


@dataclass
class LabelSet:
    """The usable features of a label file plus what was skipped and which fields were used."""

    features: list[LabelFeature]
    skips: LabelSkips
    fields: dict[str, str | None]
    n_read: int

    @property
    def classes(self) -> list[str]:
        """Classes with at least one usable feature, sorted."""
        return sorted({f.cls for f in self.features})


def polygonal(geom: BaseGeometry | None) -> BaseGeometry | None:
    """The polygonal part of a geometry (Polygon / MultiPolygon), or None when it has no area."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom if geom.area > 0 else None
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    if not parts:
        return None
    return shapely.union_all(parts) if len(parts) > 1 else parts[0]


def _resolve_field(columns: list[str], requested: str | None, kind: str) -> str | None:
    """Field name for ``kind`` ("color", ...): explicit name, ``"auto"`` (by alias), or None/"none"."""
    if requested is None or requested.lower() == "none":
        return None
    lower = {c.lower(): c for c in columns}
    if requested == AUTO:
        for alias in FIELD_ALIASES.get(kind, ()):
            if alias in lower:
                return lower[alias]
        return None
    if requested in columns:
        return requested
    if requested.lower() in lower:
        return lower[requested.lower()]
    raise InputError(f"--{kind}-field {requested!r} is not a field of the labels (fields: {', '.join(columns)})")


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return not str(value).strip() or str(value).strip().lower() in ("nan", "none", "null")


def _word(value: object, allowed: tuple[str, ...] | None = None) -> str | None:
    """An attribute value usable in text ("red", "dark green"), else None."""
    if _blank(value):
        return None
    w = " ".join(str(value).replace("_", " ").lower().split())
    if not _WORDLIKE.match(w) or w in ("none", "unknown", "other", "n a", "na"):
        return None
    if allowed is not None:
        return w if w in allowed else None
    return w


def _orientation_of_shape(geom: BaseGeometry) -> str | None:
    rect = geom.minimum_rotated_rectangle
    if rect.geom_type != "Polygon":
        return None
    pts = list(rect.exterior.coords)
    e1 = (pts[1][0] - pts[0][0], pts[1][1] - pts[0][1])
    e2 = (pts[2][0] - pts[1][0], pts[2][1] - pts[1][1])
    l1, l2 = math.hypot(*e1), math.hypot(*e2)
    if min(l1, l2) <= 0 or max(l1, l2) / min(l1, l2) < MIN_ASPECT:
        return None
    e = e1 if l1 >= l2 else e2
    a = math.degrees(math.atan2(e[1], e[0])) % 180.0
    if a < 22.5 or a >= 157.5:
        return "east-west"
    if 67.5 <= a < 112.5:
        return "north-south"
    return "diagonal"


def _derive_sizes(features: list[LabelFeature]) -> None:
    by_class: dict[str, list[LabelFeature]] = {}
    for f in features:
        by_class.setdefault(f.cls, []).append(f)
    for feats in by_class.values():
        if len(feats) < 3:
            continue
        med = float(np.median([f.area for f in feats]))
        if med <= 0:
            continue
        for f in feats:
            r = f.area / med
            f.size = "small" if r < SMALL_RATIO else "large" if r > LARGE_RATIO else "medium"


_FLAG_VALUES = {"yes", "true", "1", "y"}


def _flag_class(values: list, field: str) -> str | None:
    """OpenStreetMap style ``building=yes``: when every non-blank value of the class field is a
    yes-flag, the class is the field's name (with a warning), not "yes"."""
    seen = {str(v).strip().lower() for v in values if not _blank(v)}
    if not seen or not seen <= _FLAG_VALUES:
        return None
    cls = clean_class(field)
    warnings.warn(f"every value of the class field {field!r} is a yes-flag ({', '.join(sorted(seen))}): the class "
                  f"is {cls!r}, the field's name", UserWarning, stacklevel=3)
    return cls


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


def _check_csv(path: Path) -> bool:
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
    blank = np.array([_blank(v) for v in images], dtype=bool)
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
    _check_csv(path)
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


def load_labels(
    path: str | PathLike,
    source: RasterSource,
    class_field: str,
    *,
    description_field: str | None = None,
    classes: Sequence[str] | None = None,
    layer: str | None = None,
    color_field: str | None = AUTO,
    size_field: str | None = AUTO,
    orientation_field: str | None = AUTO,
) -> LabelSet:
    """Read labels, reproject them to the raster's CRS and map them to its pixel grid.

    Args:
        path: vector file in any OGR format and any CRS, or a CSV of pixel boxes of ``source``
            (:func:`read_pixel_boxes`).
        source: the raster the labels belong to.
        class_field: field holding the class value (required).
        description_field: optional field with a free-text description per feature.
        classes: when given, the only class values accepted (compared after
            :func:`geoalign_core.data.text.clean_class`); others are skipped as unknown.
        layer: layer name for multi-layer sources (default: the first).
        color_field, size_field, orientation_field: attribute fields; ``"auto"`` finds them
            by name, None / ``"none"`` ignores them.

    Raises:
        InputError: unreadable file, missing class / description field, no feature overlaps the raster,
            a CSV with neither pixel-box columns nor a WKT column.
    """
    pre_skip: dict[int, str] = {}  # rows skipped before their geometry is looked at (pixel boxes)
    if Path(path).suffix.lower() == ".csv" and Path(path).is_file() and _check_csv(Path(path)):
        gdf, pre_skip = read_pixel_boxes(path, source)
        n_total = len(gdf)
    else:
        gdf = read_vectors(path, source.crs, layer=layer)
        try:
            n_total = int(pyogrio.read_info(path, layer=layer, force_feature_count=True).get("features", -1))
        except Exception:  # noqa: BLE001 - only used for the skipped-features count
            n_total = -1
    skips = LabelSkips()
    skips.empty_geometry = max(0, n_total - len(gdf)) if n_total >= 0 else 0
    columns = [c for c in gdf.columns if c != gdf.geometry.name]
    if class_field not in columns:
        raise InputError(
            f"class field {class_field!r} is not a field of {path} (fields: {', '.join(columns) or 'none'})",
            param="class_field",
        )
    if description_field is not None and description_field not in columns:
        raise InputError(
            f"description field {description_field!r} is not a field of {path} (fields: {', '.join(columns)})",
            param="description_field",
        )
    fields = {
        "class": class_field,
        "description": description_field,
        "color": _resolve_field(columns, color_field, "color"),
        "size": _resolve_field(columns, size_field, "size"),
        "orientation": _resolve_field(columns, orientation_field, "orientation"),
    }
    allowed = None if classes is None else {clean_class(c) for c in classes}
    inv = ~source.transform
    mat = [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f]
    extent = shapely.box(0, 0, source.width, source.height)
    features: list[LabelFeature] = []
    numeric = 0

    def column(name: str | None) -> list:
        return list(gdf[name].values) if name else [None] * len(gdf)

    values, colors, sizes, orients, descs = (
        column(fields[k]) for k in ("class", "color", "size", "orientation", "description")
    )
    unprojectable = set(gdf.attrs.get("unprojectable") or [])
    flag_class = _flag_class(values, class_field)
    for i, geom in enumerate(gdf.geometry.values):
        value = values[i]
        if _blank(value):
            skips.no_class += 1
            continue
        cls = flag_class or clean_class(value)
        if allowed is not None and cls not in allowed:
            skips.unknown_class += 1
            skips.unknown_values[cls] += 1
            continue
        if i in unprojectable:
            skips.unprojectable += 1
            continue
        if i in pre_skip:
            setattr(skips, pre_skip[i], getattr(skips, pre_skip[i]) + 1)
            continue
        if geom is None or geom.is_empty:
            skips.empty_geometry += 1
            continue
        if not geom.is_valid:
            geom = shapely.make_valid(geom)
        poly = polygonal(geom)
        if poly is None:
            skips.not_polygon += 1
            continue
        pix = affinity.affine_transform(poly, mat)
        if not pix.is_valid:
            pix = polygonal(shapely.make_valid(pix))
            if pix is None:
                skips.not_polygon += 1
                continue
        if not pix.intersects(extent):
            skips.outside_raster += 1
            continue
        if re.fullmatch(r"-?\d+(\.\d+)?", cls):
            numeric += 1
        feat = LabelFeature(fid=i, cls=cls, geom=pix, color=_word(colors[i]))
        feat.size = _word(sizes[i], SIZE_WORDS)
        feat.orientation = (
            _word(orients[i], ORIENTATION_WORDS) if fields["orientation"] else _orientation_of_shape(pix)
        )
        if not _blank(descs[i]):
            feat.description = " ".join(str(descs[i]).split())
        features.append(feat)
    if not features:
        if skips.outside_raster and not (skips.no_class or skips.unknown_class or skips.not_polygon
                                         or skips.unprojectable or skips.degenerate_box):
            hint = (f"check that they are pixel boxes of this {source.width} x {source.height} px raster"
                    if pre_skip else "check the CRS of the vector file")
            raise InputError(f"none of the {skips.outside_raster} features of {path} overlap the raster ({hint})")
        raise InputError(f"no usable labelled polygons in {path} ({_skip_text(skips)})")
    if not fields["size"]:
        _derive_sizes(features)
    if numeric == len(features):
        log.warning(
            "every class value of %s is a number: the generated texts will use those numbers as words "
            "(give a field with class names)",
            path,
        )
    return LabelSet(features, skips, fields, n_total if n_total >= 0 else len(gdf))


def _skip_text(skips: LabelSkips) -> str:
    parts = [f"{n} {reason}" for reason, n in skips.as_dict().items() if n]
    return ", ".join(parts) or "nothing usable"
