"""Features in and out of the engine, as GeoPackages written and read by QGIS itself.

The engine reads regions from a file and writes results to files; QGIS's side of that uses
only QGIS's own GDAL (no pyogrio, shapely or pyproj in QGIS's process):

* :func:`write_polygons`: drawn rectangles or a Processing polygon source -> a GeoPackage
  the engine reads;
* :func:`result_fields` / :func:`copy_features`: a result GeoPackage -> a Processing sink.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransformContext,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProject,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from .compat import FAST_INSERT, FIELD_TYPES, WKB_MULTIPOLYGON

RESERVED = ("fid",)  # GeoPackage's own feature id: never copied as an attribute


def _writer(path: Path, fields: QgsFields, wkb_type: int, crs: QgsCoordinateReferenceSystem,
            layer: str) -> QgsVectorFileWriter:
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = layer
    options.fileEncoding = "UTF-8"
    context = QgsProject.instance().transformContext() if QgsProject.instance() else QgsCoordinateTransformContext()
    writer = QgsVectorFileWriter.create(str(path), fields, wkb_type, crs, context, options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise RuntimeError(f"cannot write {path}: {writer.errorMessage()}")
    return writer


def write_polygons(path: str | Path, features: Iterable[QgsFeature], fields: QgsFields,
                   crs: QgsCoordinateReferenceSystem, layer: str = "regions") -> int:
    """Write polygon features (geometries already in ``crs``) to a new GeoPackage; returns the count.

    Attribute columns named like GeoPackage's feature id ("fid") are left out.
    """
    keep = [i for i, f in enumerate(fields) if f.name().lower() not in RESERVED]
    out_fields = QgsFields()
    for i in keep:
        out_fields.append(fields.at(i))
    writer = _writer(Path(path), out_fields, WKB_MULTIPOLYGON, crs, layer)
    n = 0
    try:
        for feat in features:
            geom = feat.geometry()
            if geom is None or geom.isEmpty():
                continue
            g = QgsGeometry(geom)
            g.convertToMultiType()
            out = QgsFeature(out_fields)
            out.setGeometry(g)
            attrs = feat.attributes()
            out.setAttributes([attrs[i] if i < len(attrs) else None for i in keep])
            if not writer.addFeature(out, FAST_INSERT):
                raise RuntimeError(f"cannot write {path}: {writer.errorMessage()}")
            n += 1
    finally:
        del writer  # closes the file
    return n


def write_rectangles(path: str | Path, geometries: list[QgsGeometry], crs: QgsCoordinateReferenceSystem) -> int:
    """Drawn rectangles (already in ``crs``) as layer "regions" with a ``region`` number 1, 2, ..."""
    fields = QgsFields()
    fields.append(QgsField("region", FIELD_TYPES["int"]))
    feats = []
    for i, g in enumerate(geometries, start=1):
        f = QgsFeature(fields)
        f.setGeometry(g)
        f.setAttributes([i])
        feats.append(f)
    return write_polygons(path, feats, fields, crs)


def open_result(path: str | Path, layer: str) -> QgsVectorLayer:
    vl = QgsVectorLayer(f"{path}|layername={layer}", layer, "ogr")
    if not vl.isValid():
        raise RuntimeError(f"QGIS cannot open the engine's result {path} (layer {layer})")
    return vl


def result_fields(layer: QgsVectorLayer) -> QgsFields:
    """The result's attribute fields, without GeoPackage's feature id."""
    out = QgsFields()
    for f in layer.fields():
        if f.name().lower() not in RESERVED:
            out.append(QgsField(f))
    return out


def copy_features(layer: QgsVectorLayer, sink: QgsFeatureSink, fields: QgsFields, feedback=None) -> int:
    """Copy every feature of ``layer`` into ``sink`` (attributes by the names of ``fields``)."""
    names = [f.name() for f in fields]
    n = 0
    for feat in layer.getFeatures():
        if feedback is not None and feedback.isCanceled():
            break
        out = QgsFeature(fields)
        out.setGeometry(feat.geometry())
        out.setAttributes([feat[name] for name in names])
        sink.addFeature(out, FAST_INSERT)
        n += 1
    return n


__all__ = ["copy_features", "open_result", "result_fields", "write_polygons", "write_rectangles"]
