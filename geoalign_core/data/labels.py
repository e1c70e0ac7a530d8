"""Labelled vector data -> polygon features in the raster's PIXEL grid, with their attributes.

:func:`load_labels` reads any OGR format (GeoPackage, Shapefile, GeoJSON, ...) through
:func:`geoalign_core.geo.read_vectors`, reprojects to the raster's CRS, then maps every
geometry to raster pixel coordinates (x = column, y = row, y down), where chipping, boxes,
positions ("upper left") and relations are computed.

Features that cannot become training regions are skipped and COUNTED, never fatal
(:class:`LabelSkips`): no / blank class value, a class value not in ``classes`` (when the user
gives the list), an empty or missing geometry, a geometry without area (points, lines), and
a geometry entirely outside the raster. Invalid polygons are repaired (``make_valid``).

A CSV of PIXEL boxes (DeepForest style) is read by :mod:`geoalign_core.data.pixel_boxes`.

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
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyogrio
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from geoalign_core.data.pixel_boxes import PIXEL_BOX_COLUMNS, check_csv, is_pixel_box_csv, read_pixel_boxes
from geoalign_core.data.text import clean_class, is_blank
from geoalign_core.errors import InputError
from geoalign_core.geo.vectors import read_vectors

if TYPE_CHECKING:

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


def _skipped(reason: str) -> Any:
    """A count of skipped features and the reason it counts (what :meth:`LabelSkips.as_dict` says)."""
    return field(default=0, metadata={"reason": reason})


@dataclass
class LabelSkips:
    """Features skipped while loading, by reason."""

    no_class: int = _skipped("empty or missing class value")
    unknown_class: int = _skipped("class value not in the given classes")
    empty_geometry: int = _skipped("empty or missing geometry")
    not_polygon: int = _skipped("not a polygon (point or line)")
    unprojectable: int = _skipped("cannot be reprojected to the raster's CRS (outside the area where it is defined)")
    outside_raster: int = _skipped("outside the raster")
    degenerate_box: int = _skipped("degenerate pixel box (xmax <= xmin or ymax <= ymin)")
    unknown_values: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        """Reason -> features skipped for it."""
        return {f.metadata["reason"]: getattr(self, f.name) for f in fields(self) if "reason" in f.metadata}

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


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


def _word(value: object, allowed: tuple[str, ...] | None = None) -> str | None:
    """An attribute value usable in text ("red", "dark green"), else None."""
    if is_blank(value):
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
    seen = {str(v).strip().lower() for v in values if not is_blank(v)}
    if not seen or not seen <= _FLAG_VALUES:
        return None
    cls = clean_class(field)
    warnings.warn(f"every value of the class field {field!r} is a yes-flag ({', '.join(sorted(seen))}): the class "
                  f"is {cls!r}, the field's name", UserWarning, stacklevel=3)
    return cls


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
    if Path(path).suffix.lower() == ".csv" and Path(path).is_file() and check_csv(Path(path)):
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
        if is_blank(value):
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
        if not is_blank(descs[i]):
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
