"""Small shims so one code base runs on QGIS 3.22 (Qt5) through QGIS 4.x (Qt6).

QGIS 3.30+ moved many enums into ``Qgis.*`` and QGIS 4 drops the old locations; Qt6 drops
``exec_`` and unscoped enums. Every lookup here tries the new name first, then the old one.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    Qgis,
    QgsColorRampShader,
    QgsFeatureSink,
    QgsPalLayerSettings,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsRasterBandStats,
    QgsUnitTypes,
    QgsWkbTypes,
)


def _pick(*candidates: tuple[Any, str]) -> Any:
    """The first attribute path that exists, e.g. ``(Qgis, "GeometryType.Polygon")``."""
    for owner, path in candidates:
        obj = owner
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise AttributeError(f"none of {[p for _, p in candidates]} exists in this QGIS")


def qgis_version_int() -> int:
    try:
        return int(Qgis.versionInt())
    except AttributeError:  # pragma: no cover - very old QGIS
        return int(Qgis.QGIS_VERSION_INT)


POLYGON_GEOMETRY = _pick((Qgis, "GeometryType.Polygon"), (QgsWkbTypes, "GeometryType.PolygonGeometry"),
                         (QgsWkbTypes, "PolygonGeometry"))
LABEL_OVER_POINT = _pick((Qgis, "LabelPlacement.OverPoint"), (QgsPalLayerSettings, "Placement.OverPoint"),
                         (QgsPalLayerSettings, "OverPoint"))
#: beside the polygon, not over it: a label never hides the small object it names
LABEL_OUTSIDE = _pick((Qgis, "LabelPlacement.OutsidePolygons"), (QgsPalLayerSettings, "Placement.OutsidePolygons"),
                      (QgsPalLayerSettings, "OutsidePolygons"))
DISTANCE_METERS = _pick((Qgis, "DistanceUnit.Meters"), (QgsUnitTypes, "DistanceMeters"))
SHADER_INTERPOLATED = _pick((Qgis, "ShaderInterpolationMethod.Linear"), (QgsColorRampShader, "Type.Interpolated"),
                            (QgsColorRampShader, "Interpolated"))
SHADER_CONTINUOUS = _pick((Qgis, "ShaderClassificationMethod.Continuous"),
                          (QgsColorRampShader, "ClassificationMode.Continuous"),
                          (QgsColorRampShader, "Continuous"))
STAT_MIN = _pick((Qgis, "RasterBandStatistic.Min"), (QgsRasterBandStats, "Stats.Min"), (QgsRasterBandStats, "Min"))
STAT_MAX = _pick((Qgis, "RasterBandStatistic.Max"), (QgsRasterBandStats, "Stats.Max"), (QgsRasterBandStats, "Max"))
SOURCE_POLYGON = _pick((Qgis, "ProcessingSourceType.VectorPolygon"), (QgsProcessing, "SourceType.TypeVectorPolygon"),
                       (QgsProcessing, "TypeVectorPolygon"))
NUMBER_DOUBLE = _pick((Qgis, "ProcessingNumberParameterType.Double"), (QgsProcessingParameterNumber, "Type.Double"),
                      (QgsProcessingParameterNumber, "Double"))
NUMBER_INTEGER = _pick((Qgis, "ProcessingNumberParameterType.Integer"),
                       (QgsProcessingParameterNumber, "Type.Integer"), (QgsProcessingParameterNumber, "Integer"))
FILE_BEHAVIOR_FOLDER = _pick((Qgis, "ProcessingFileParameterBehavior.Folder"),
                             (QgsProcessingParameterFile, "Behavior.Folder"), (QgsProcessingParameterFile, "Folder"))
FAST_INSERT = _pick((QgsFeatureSink, "Flag.FastInsert"), (QgsFeatureSink, "FastInsert"))
FLAG_NO_THREADING = _pick((Qgis, "ProcessingAlgorithmFlag.NoThreading"),
                          (QgsProcessingAlgorithm, "Flag.FlagNoThreading"), (QgsProcessingAlgorithm, "FlagNoThreading"))

try:  # QGIS >= 3.30
    WKB_POLYGON = Qgis.WkbType.Polygon
    WKB_MULTIPOLYGON = Qgis.WkbType.MultiPolygon
except AttributeError:
    WKB_POLYGON = QgsWkbTypes.Polygon
    WKB_MULTIPOLYGON = QgsWkbTypes.MultiPolygon


def raster_layer_filter() -> Any:
    """The QgsMapLayerComboBox filter for raster layers."""
    try:
        return Qgis.LayerFilter.RasterLayer  # QGIS >= 3.34
    except AttributeError:
        from qgis.core import QgsMapLayerProxyModel

        return QgsMapLayerProxyModel.RasterLayer


def polygon_layer_filter() -> Any:
    """The QgsMapLayerComboBox filter for polygon layers."""
    try:
        return Qgis.LayerFilter.PolygonLayer  # QGIS >= 3.34
    except AttributeError:
        from qgis.core import QgsMapLayerProxyModel

        return QgsMapLayerProxyModel.PolygonLayer


# ---------------------------------------------------------------------------- field types
def _field_types() -> dict[str, Any]:
    """QVariant types (QGIS < 3.38) or QMetaType types (QGIS >= 3.38, required by QGIS 4)."""
    if qgis_version_int() >= 33800:
        from qgis.PyQt.QtCore import QMetaType

        t = QMetaType.Type
        return {"str": t.QString, "float": t.Double, "int": t.LongLong, "bool": t.Bool}
    from qgis.PyQt.QtCore import QVariant

    return {"str": QVariant.String, "float": QVariant.Double, "int": QVariant.LongLong, "bool": QVariant.Bool}


FIELD_TYPES = _field_types()


MSG_INFO = _pick((Qgis, "MessageLevel.Info"), (Qgis, "Info"))
MSG_WARNING = _pick((Qgis, "MessageLevel.Warning"), (Qgis, "Warning"))
MSG_CRITICAL = _pick((Qgis, "MessageLevel.Critical"), (Qgis, "Critical"))
MSG_SUCCESS = _pick((Qgis, "MessageLevel.Success"), (Qgis, "Success"))


def param_flag_advanced() -> Any:
    from qgis.core import QgsProcessingParameterDefinition

    return _pick((Qgis, "ProcessingParameterFlag.Advanced"), (QgsProcessingParameterDefinition, "Flag.FlagAdvanced"),
                 (QgsProcessingParameterDefinition, "FlagAdvanced"))


def push_message(iface: Any, title: str, text: str, level: Any = None, duration: int = 8) -> None:
    """Message bar push that also works with test doubles of ``iface`` (all arguments positional)."""
    bar = iface.messageBar() if iface is not None else None
    if bar is None:
        return
    bar.pushMessage(title, text, MSG_INFO if level is None else level, duration)
