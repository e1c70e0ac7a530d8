"""GeoDataFrame <-> QGIS features, through plain Python records.

Thread rule (see :mod:`geoalign_qgis.tasks`): anything that touches pyproj -- creating a
GeoDataFrame with a CRS, reprojecting, writing a GeoPackage -- runs on GeoAlign's own worker
thread, and QGIS objects stay on QGIS's threads. So conversions go through
:class:`Records`, which holds only bytes, strings and numbers:

* QGIS side: :func:`records_from_features`, :func:`records_from_geometries` (drawn
  rectangles), :func:`fields_for`, :func:`features_from_records`;
* worker side: :func:`gdf_from_records`, :func:`records_from_gdf`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsField,
    QgsFields,
    QgsGeometry,
)

from .compat import FIELD_TYPES


@dataclass
class Records:
    """Features as plain data: column names and kinds ("str", "float", "int", "bool"),
    one WKB geometry and one attribute list per feature, and a CRS string (or None)."""

    names: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    wkbs: list[bytes | None] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    crs: str | None = None

    def __len__(self) -> int:
        return len(self.wkbs)


# ---------------------------------------------------------------------------- QGIS side
def crs_string(crs: QgsCoordinateReferenceSystem) -> str | None:
    """A CRS string pyproj understands: the authority id when there is one, else WKT."""
    if not crs.isValid():
        return None
    auth = crs.authid()
    if auth and not auth.upper().startswith("USER:"):
        return auth
    return crs.toWkt()


def _qgis_value(v: Any) -> Any:
    if v is None or (hasattr(v, "isNull") and v.isNull()):
        return None
    if isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _qgis_kind(f: QgsField) -> str:
    name = f.typeName().lower()
    if f.isNumeric():
        return "float" if any(k in name for k in ("real", "double", "float", "decimal", "numeric")) else "int"
    if "bool" in name:
        return "bool"
    return "str"


def records_from_features(features: Iterable[QgsFeature], fields: QgsFields,
                          crs: QgsCoordinateReferenceSystem) -> Records:
    """Features (geometries already in ``crs``) as Records; features without geometry are skipped."""
    rec = Records([f.name() for f in fields], [_qgis_kind(f) for f in fields], crs=crs_string(crs))
    for feat in features:
        geom = feat.geometry()
        if geom is None or geom.isEmpty():
            continue
        rec.wkbs.append(bytes(geom.asWkb()))
        rec.rows.append([_qgis_value(v) for v in feat.attributes()])
    return rec


def records_from_geometries(geometries: list[QgsGeometry], crs: QgsCoordinateReferenceSystem) -> Records:
    """Plain polygons (drawn rectangles) with a ``region`` id column (1, 2, ...)."""
    return Records(["region"], ["int"], [bytes(g.asWkb()) for g in geometries],
                   [[i] for i in range(1, len(geometries) + 1)], crs_string(crs))


def fields_for(rec: Records) -> QgsFields:
    fields = QgsFields()
    for name, kind in zip(rec.names, rec.kinds):
        fields.append(QgsField(name, FIELD_TYPES[kind]))
    return fields


def features_from_records(rec: Records, fields: QgsFields) -> Iterator[QgsFeature]:
    for wkb, row in zip(rec.wkbs, rec.rows):
        feat = QgsFeature(fields)
        if wkb is not None:
            geom = QgsGeometry()
            geom.fromWkb(wkb)
            feat.setGeometry(geom)
        feat.setAttributes(list(row))
        yield feat


# ---------------------------------------------------------------------------- worker side
def _kind(dtype: Any) -> str:
    k = getattr(dtype, "kind", "O")
    return {"f": "float", "i": "int", "u": "int", "b": "bool"}.get(k, "str")


def _native(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if kind == "str" and not isinstance(value, str):
        return str(value)
    return value


def gdf_from_records(rec: Records) -> Any:
    import geopandas as gpd
    import shapely

    data = {n: [row[i] for row in rec.rows] for i, n in enumerate(rec.names)}
    geoms = [shapely.from_wkb(w) if w is not None else None for w in rec.wkbs]
    return gpd.GeoDataFrame(data, geometry=geoms, crs=rec.crs)


def records_from_gdf(gdf: Any) -> Records:
    import shapely

    geom_col = gdf.geometry.name
    names = [str(c) for c in gdf.columns if c != geom_col]
    kinds = [_kind(gdf[c].dtype) for c in names]
    crs = gdf.crs.to_wkt() if gdf.crs is not None else None
    wkbs = [None if g is None or g.is_empty else bytes(shapely.to_wkb(g)) for g in gdf.geometry.values]
    columns = [gdf[c].tolist() for c in names]
    rows = [[_native(col[i], k) for col, k in zip(columns, kinds)] for i in range(len(gdf))]
    return Records(names, kinds, wkbs, rows, crs)
