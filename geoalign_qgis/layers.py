"""Result layers: where they are saved, how they are loaded, styled and grouped.

* vector results (matches, regions, tiles): graduated by ``score`` (viridis), labelled with
  the phrase, semi-transparent fill;
* heatmaps: single-band pseudocolour (viridis), semi-transparent;
* everything goes into a "GeoAlign" group at the top of the layer tree.
"""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path

from qgis.core import (
    QgsColorRampShader,
    QgsFillSymbol,
    QgsGradientColorRamp,
    QgsGradientStop,
    QgsGraduatedSymbolRenderer,
    QgsLayerTreeGroup,
    QgsMapLayer,
    QgsPalLayerSettings,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsRendererRange,
    QgsSingleBandPseudoColorRenderer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from .compat import LABEL_OVER_POINT, SHADER_CONTINUOUS, SHADER_INTERPOLATED, STAT_MAX, STAT_MIN

GROUP_NAME = "GeoAlign"
HEATMAP_OPACITY = 0.6
FILL_ALPHA = 70
SCORE_CLASSES = 5

# matplotlib's viridis at 0, .25, .5, .75, 1 (fallback when the style has no "Viridis" ramp)
_VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]

_session_dir: Path | None = None


# ---------------------------------------------------------------------------- files
def output_dir(project: QgsProject | None = None) -> Path:
    """``<project folder>/<project name>_geoalign`` for a saved project, else a session temp folder."""
    global _session_dir
    project = project or QgsProject.instance()
    if project.fileName():
        folder = Path(project.absolutePath()) / f"{project.baseName() or 'project'}_geoalign"
    else:
        if _session_dir is None or not _session_dir.is_dir():
            _session_dir = Path(tempfile.mkdtemp(prefix="geoalign-qgis-"))
        folder = _session_dir
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    return s[:limit] or "result"


def output_path(kind: str, source_name: str, suffix: str, project: QgsProject | None = None) -> Path:
    """A new, unused file name such as ``scene_matches_20250101-120000.gpkg``."""
    folder = output_dir(project)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{slug(source_name)}_{kind}_{stamp}"
    path = folder / f"{base}{suffix}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{base}_{n}{suffix}"
    return path


# ---------------------------------------------------------------------------- tree
def result_group(project: QgsProject | None = None) -> QgsLayerTreeGroup:
    project = project or QgsProject.instance()
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP_NAME)
    if group is None:
        group = root.insertGroup(0, GROUP_NAME)
    return group


def add_to_group(layer: QgsMapLayer, project: QgsProject | None = None) -> QgsMapLayer:
    """Add ``layer`` to the project, on top of the "GeoAlign" group."""
    project = project or QgsProject.instance()
    project.addMapLayer(layer, False)
    result_group(project).insertLayer(0, layer)
    return layer


# ---------------------------------------------------------------------------- colours
def viridis():
    ramp = QgsStyle.defaultStyle().colorRamp("Viridis")
    if ramp is not None:
        return ramp
    stops = [QgsGradientStop(i / (len(_VIRIDIS) - 1), QColor(c)) for i, c in enumerate(_VIRIDIS[1:-1], start=1)]
    return QgsGradientColorRamp(QColor(_VIRIDIS[0]), QColor(_VIRIDIS[-1]), False, stops)


def _fill_symbol(color: QColor) -> QgsFillSymbol:
    fill = QColor(color)
    fill.setAlpha(FILL_ALPHA)
    return QgsFillSymbol.createSimple({
        "color": ",".join(str(v) for v in fill.getRgb()),
        "outline_color": ",".join(str(v) for v in color.getRgb()),
        "outline_width": "0.7",
        "outline_width_unit": "MM",
    })


def style_scores(layer: QgsVectorLayer, score_field: str = "score", label_field: str | None = "phrase",
                 classes: int = SCORE_CLASSES) -> None:
    """Graduated (equal interval, viridis) by ``score_field``; labels from ``label_field``."""
    idx = layer.fields().indexOf(score_field)
    lo = hi = None
    if idx >= 0 and layer.featureCount() > 0:
        lo, hi = layer.minimumValue(idx), layer.maximumValue(idx)
    try:
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1e-6
    ramp = viridis()
    ranges = []
    n = max(1, classes)
    for i in range(n):
        a = lo + (hi - lo) * i / n
        b = lo + (hi - lo) * (i + 1) / n
        color = ramp.color(i / (n - 1) if n > 1 else 1.0)
        ranges.append(QgsRendererRange(a, b, _fill_symbol(color), f"{a:.3f} - {b:.3f}"))
    renderer = QgsGraduatedSymbolRenderer(score_field, ranges)
    renderer.setSourceColorRamp(ramp.clone())
    layer.setRenderer(renderer)
    if label_field and layer.fields().indexOf(label_field) >= 0:
        set_labels(layer, label_field)
    layer.triggerRepaint()


def set_labels(layer: QgsVectorLayer, field: str) -> None:
    settings = QgsPalLayerSettings()
    settings.fieldName = field
    settings.isExpression = False
    settings.placement = LABEL_OVER_POINT
    fmt = QgsTextFormat()
    fmt.setSize(9)
    fmt.setColor(QColor("white"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(0.8)
    buffer.setColor(QColor(0, 0, 0, 200))
    fmt.setBuffer(buffer)
    settings.setFormat(fmt)
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(True)


def style_heatmap(layer: QgsRasterLayer, opacity: float = HEATMAP_OPACITY) -> QgsSingleBandPseudoColorRenderer:
    """Single-band pseudocolour, viridis stretched to the band's min/max, semi-transparent."""
    provider = layer.dataProvider()
    stats = provider.bandStatistics(1, STAT_MIN | STAT_MAX, layer.extent(), 0)
    lo, hi = float(stats.minimumValue), float(stats.maximumValue)
    if not (hi > lo):
        hi = lo + 1e-6
    ramp = viridis()
    shader_fn = QgsColorRampShader(lo, hi, ramp.clone(), SHADER_INTERPOLATED, SHADER_CONTINUOUS)
    n = 9
    values = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    items = [QgsColorRampShader.ColorRampItem(v, ramp.color(i / (n - 1)), f"{v:.3f}") for i, v in enumerate(values)]
    shader_fn.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    renderer.setOpacity(opacity)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


# ---------------------------------------------------------------------------- loading
def load_vector(path: str | Path, layer_name: str, display_name: str, label_field: str | None = "phrase",
                project: QgsProject | None = None) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", display_name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the result {path} (layer {layer_name})")
    style_scores(layer, label_field=label_field)
    add_to_group(layer, project)
    return layer


def load_heatmap(path: str | Path, display_name: str, project: QgsProject | None = None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), display_name)
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the heatmap {path}")
    style_heatmap(layer)
    add_to_group(layer, project)
    return layer
