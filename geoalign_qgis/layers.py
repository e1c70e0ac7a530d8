"""Result layers: where they are saved, how they are loaded, styled and grouped.

* boxes (matches, regions): graduated by ``score`` (viridis), labelled with the phrase,
  semi-transparent fill;
* tiles (tile classification): categorised by ``label``, semi-transparent, one legend entry
  per class with its tile count;
* heatmaps: the 0..1 score (what boxes show), transparent where it is low and rising through
  an "inferno" ramp with opacity, so the image stays readable and strong responses stand out;
* everything goes into a "GeoAlign" group at the top of the layer tree, vector results above
  heatmaps (a heatmap never hides the boxes). Every result carries the custom property
  ``geoalign/output`` so the dock never offers it as an input raster.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsCategorizedSymbolRenderer,
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
    QgsRendererCategory,
    QgsRendererRange,
    QgsSettings,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsStyle,
    QgsTextBufferSettings,
    QgsTextFormat,
    QgsUnitTypes,
    QgsVectorLayer,
    QgsVectorLayerSimpleLabeling,
)
from qgis.PyQt.QtGui import QColor

from .compat import DISTANCE_METERS, LABEL_OUTSIDE, SHADER_CONTINUOUS, SHADER_INTERPOLATED, STAT_MAX, STAT_MIN

GROUP_NAME = "GeoAlign"
OUTPUT_PROPERTY = "geoalign/output"
FILL_ALPHA = 70
LABEL_MIN_SCALE = 5000.0  # labels shown at 1:5000 and closer
TILE_ALPHA = 110
SCORE_CLASSES = 5
#: the label of a tile or region that no class or phrase fits (geoalign_core.inference.vocabulary.NONE_LABEL)
NONE_LABEL = "none of these"

# the heatmap ramp: (score, colour, alpha) -- "inferno", transparent below ~0.2
HEATMAP_STOPS = [(0.0, "#000004", 0), (0.2, "#320a5e", 0), (0.35, "#781c6d", 90), (0.5, "#bc3754", 150),
                 (0.65, "#ed6925", 190), (0.8, "#fbb61a", 215), (1.0, "#fcffa4", 235)]
# qualitative colours for tile classes (Tableau 10, then Set3)
_CATEGORY_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                     "#9c755f", "#bab0ac", "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462",
                     "#b3de69", "#fccde5", "#d9d9d9", "#bc80bd"]

# matplotlib's viridis at 0, .25, .5, .75, 1 (fallback when the style has no "Viridis" ramp)
_VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]

SETTINGS_RESULTS_DIR = "geoalign/results_dir"


# ---------------------------------------------------------------------------- files
def default_results_dir() -> Path:
    """Where results of an unsaved project go: the folder of the settings dialog, else
    ``<QGIS profile>/geoalign/results`` (kept across sessions: not a temporary folder, whose
    layers QGIS would call temporary and warn about when quitting)."""
    chosen = str(QgsSettings().value(SETTINGS_RESULTS_DIR, "", type=str) or "").strip()
    if chosen:
        return Path(chosen)
    return Path(QgsApplication.qgisSettingsDirPath()) / "geoalign" / "results"


def output_dir(project: QgsProject | None = None) -> Path:
    """``<project folder>/<project name>_geoalign`` for a saved project, else :func:`default_results_dir`."""
    project = project or QgsProject.instance()
    if project.fileName():
        folder = Path(project.absolutePath()) / f"{project.baseName() or 'project'}_geoalign"
    else:
        folder = default_results_dir()
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


def is_output(layer: QgsMapLayer | None) -> bool:
    """A layer GeoAlign made (never offered as an input raster)."""
    return layer is not None and str(layer.customProperty(OUTPUT_PROPERTY, "")).lower() in ("true", "1")


def mark_output(layer: QgsMapLayer) -> QgsMapLayer:
    layer.setCustomProperty(OUTPUT_PROPERTY, True)
    return layer


def add_to_group(layer: QgsMapLayer, project: QgsProject | None = None) -> QgsMapLayer:
    """Add ``layer`` to the project in the "GeoAlign" group: vector results on top, rasters
    (heatmaps) below every vector result, so boxes are never hidden by a heatmap."""
    project = project or QgsProject.instance()
    mark_output(layer)
    project.addMapLayer(layer, False)
    group = result_group(project)
    index = 0
    if isinstance(layer, QgsRasterLayer):
        children = group.children()
        index = next((i for i, c in enumerate(children)
                      if isinstance(getattr(c, "layer", lambda: None)(), QgsRasterLayer)), len(children))
    group.insertLayer(index, layer)
    # the analyst sees the new layer in the tree. QGIS 3.22's layer tree view shows a group that
    # was empty when created as collapsed even though the node says "expanded"; only a change
    # of the node's state reaches the view, hence the toggle.
    group.setExpanded(False)
    group.setExpanded(True)
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
    digits = legend_digits(lo, hi, n)
    for i in range(n):
        a = lo + (hi - lo) * i / n
        b = lo + (hi - lo) * (i + 1) / n
        color = ramp.color(i / (n - 1) if n > 1 else 1.0)
        ranges.append(QgsRendererRange(a, b, _fill_symbol(color), f"{a:.{digits}f} - {b:.{digits}f}"))
    renderer = QgsGraduatedSymbolRenderer(score_field, ranges)
    renderer.setSourceColorRamp(ramp.clone())
    layer.setRenderer(renderer)
    if label_field and layer.fields().indexOf(label_field) >= 0:
        set_labels(layer, label_field)
    layer.triggerRepaint()


def legend_digits(lo: float, hi: float, classes: int) -> int:
    """Decimals that tell the class bounds apart: 3, or more when the scores are close together
    (calibrated scores of a confident model crowd near 1: 0.99941 - 0.99953, not 1.000 - 1.000)."""
    step = (hi - lo) / max(1, classes)
    if step <= 0:
        return 3
    return int(min(8, max(3, math.ceil(-math.log10(step) - 1e-6) + 1)))


SETTINGS_LABELS = "geoalign/dock/labels"  #: the dock's "Label the boxes" (QgsSettings, default on)


def labels_wanted() -> bool:
    return str(QgsSettings().value(SETTINGS_LABELS, "true")).lower() in ("true", "1")


SCREEN_PIXEL_M = 0.00028  # QGIS's (OGC's) screen pixel: 0.28 mm
MAX_ZOOM = 4.0  # zooming to a result stops when one image pixel covers this many screen pixels


def min_zoom_scale(raster: Any) -> float:
    """The map scale (denominator) past which zooming to a result only magnifies the raster's pixels;
    0 when unknown (no CRS: pixel coordinates)."""
    try:
        crs = raster.crs()
        upp = float(raster.rasterUnitsPerPixelX())
    except (AttributeError, RuntimeError):
        return 0.0
    if not crs.isValid() or upp <= 0:
        return 0.0
    metres = upp * 111_320.0 if crs.isGeographic() else upp * QgsUnitTypes.fromUnitToUnitFactor(
        crs.mapUnits(), DISTANCE_METERS)
    return metres / SCREEN_PIXEL_M / MAX_ZOOM


def set_labels(layer: QgsVectorLayer, field: str) -> None:
    settings = QgsPalLayerSettings()
    settings.fieldName = field
    settings.isExpression = False
    settings.placement = LABEL_OUTSIDE  # beside the box: a label never hides the small object it names
    fmt = QgsTextFormat()
    fmt.setSize(9)
    fmt.setColor(QColor("white"))
    buffer = QgsTextBufferSettings()
    buffer.setEnabled(True)
    buffer.setSize(0.8)
    buffer.setColor(QColor(0, 0, 0, 200))
    fmt.setBuffer(buffer)
    settings.setFormat(fmt)
    # labels only when zoomed in: over a whole scene, the labels of hundreds of boxes (and of
    # every earlier run) would cover the image
    settings.scaleVisibility = True
    settings.maximumScale = 0.0
    settings.minimumScale = LABEL_MIN_SCALE
    layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
    layer.setLabelsEnabled(labels_wanted())  # off: the labelling stays set up, one click away in the styling panel


TRAINING_COLOUR = "0,230,255,255"  #: the outline of training boxes (as the "Draw boxes" tool's rubber band)


def style_training_boxes(layer: QgsVectorLayer, field: str = "class") -> None:
    """Labelled polygons for fine-tuning: outlines only (no fill, the image under a box stays visible: the
    analyst checks the box against it) and each polygon's class as its label, beside the box, at any scale."""
    symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "style": "no", "outline_color": TRAINING_COLOUR,
                                         "outline_width": "0.6", "outline_width_unit": "MM"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    if layer.fields().indexOf(field) >= 0:
        set_labels(layer, field)
        settings = layer.labeling().settings()
        settings.scaleVisibility = False  # a handful of boxes: their classes are always worth showing
        layer.setLabeling(QgsVectorLayerSimpleLabeling(settings))
        layer.setLabelsEnabled(True)
    layer.triggerRepaint()


def style_heatmap(layer: QgsRasterLayer, score: bool = True) -> QgsSingleBandPseudoColorRenderer:
    """The heatmap ramp (:data:`HEATMAP_STOPS`): transparent at low values, opaque warm colours at high.

    ``score`` (the dock's heatmaps): values are 0..1 scores and the legend reads 0.00 .. 1.00.
    Otherwise (cosine similarity, e.g. from the CLI) the ramp is stretched over the band's range.
    """
    provider = layer.dataProvider()
    if score:
        lo, hi = 0.0, 1.0
    else:
        stats = provider.bandStatistics(1, STAT_MIN | STAT_MAX, layer.extent(), 0)
        lo, hi = float(stats.minimumValue), float(stats.maximumValue)
        if not (hi > lo):
            hi = lo + 1e-6
    shader_fn = QgsColorRampShader(lo, hi, None, SHADER_INTERPOLATED, SHADER_CONTINUOUS)
    items = []
    for frac, colour, alpha in HEATMAP_STOPS:
        c = QColor(colour)
        c.setAlpha(alpha)
        value = lo + (hi - lo) * frac
        items.append(QgsColorRampShader.ColorRampItem(value, c, f"{value:.2f}"))
    shader_fn.setColorRampItemList(items)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(shader_fn)
    renderer = QgsSingleBandPseudoColorRenderer(provider, 1, shader)
    renderer.setClassificationMin(lo)
    renderer.setClassificationMax(hi)
    renderer.setOpacity(1.0)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


def style_tiles(layer: QgsVectorLayer, field: str = "label") -> QgsCategorizedSymbolRenderer:
    """Categorised by ``field`` (one colour per class, by tile count), semi-transparent, no outlines."""
    idx = layer.fields().indexOf(field)
    counts: dict[str, int] = {}
    if idx >= 0:
        for f in layer.getFeatures():
            counts[str(f[field])] = counts.get(str(f[field]), 0) + 1
    cats = []
    ranked = sorted(counts.items(), key=lambda kv: (kv[0] == NONE_LABEL, -kv[1], kv[0]))
    for i, (value, n) in enumerate(ranked):
        if value == NONE_LABEL:  # no class fits: outlined in grey, not filled, so the image shows through
            symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "150,150,150,160",
                                                 "outline_width": "0.2", "outline_width_unit": "MM",
                                                 "outline_style": "dot"})
            cats.append(QgsRendererCategory(value, symbol, f"{value} ({n})"))
            continue
        colour = QColor(_CATEGORY_COLOURS[i % len(_CATEGORY_COLOURS)])
        fill = QColor(colour)
        fill.setAlpha(TILE_ALPHA)
        symbol = QgsFillSymbol.createSimple({
            "color": ",".join(str(v) for v in fill.getRgb()),
            "outline_color": ",".join(str(v) for v in colour.getRgb()),
            "outline_width": "0.2", "outline_width_unit": "MM",
        })
        cats.append(QgsRendererCategory(value, symbol, f"{value} ({n})"))
    renderer = QgsCategorizedSymbolRenderer(field, cats)
    layer.setRenderer(renderer)
    layer.triggerRepaint()
    return renderer


# ---------------------------------------------------------------------------- loading
def score_field(layer: QgsVectorLayer) -> str:
    """The layer's value field: ``score`` (a calibrated probability), else what an uncalibrated model
    wrote (``standout`` for boxes and regions, ``logodds`` for tiles)."""
    for name in ("score", "standout", "logodds", "similarity"):
        if layer.fields().indexOf(name) >= 0:
            return name
    return "score"


def style_result(layer: QgsVectorLayer, kind: str) -> None:
    """The style of a result layer: "matches" / "regions" / "similar" (graduated by score), "tiles" (categorised)."""
    if kind == "tiles":
        style_tiles(layer)
    elif kind == "similar":
        style_scores(layer, score_field(layer), label_field=None)
    else:
        style_scores(layer, score_field(layer), label_field="best_phrase" if kind == "regions" else "phrase")


def adopt_project_crs(layer: QgsMapLayer, project: QgsProject | None = None) -> None:
    """A result of a raster without a CRS is in pixel coordinates, stored with an undefined SRS: give it the
    project's CRS, in which QGIS draws that raster too, so that QGIS never looks for a transform from
    "Undefined SRS" (as it did each time such a project was reopened)."""
    proj = project or QgsProject.instance()
    if proj.crs().isValid():
        layer.setCrs(proj.crs())
        layer.setCustomProperty("geoalign/pixel_coordinates", True)


def load_vector(path: str | Path, layer_name: str, display_name: str,
                project: QgsProject | None = None, pixel_coordinates: bool = False) -> QgsVectorLayer:
    """Open layer ``layer_name`` ("matches", "regions", "tiles", "similar") of a result GeoPackage, styled, in
    the group; ``pixel_coordinates``: its raster had no CRS (:func:`adopt_project_crs`)."""
    layer = QgsVectorLayer(f"{path}|layername={layer_name}", display_name, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the result {path} (layer {layer_name})")
    if pixel_coordinates:
        adopt_project_crs(layer, project)
    style_result(layer, layer_name)
    add_to_group(layer, project)
    return layer


def load_heatmap(path: str | Path, display_name: str, score: bool = True,
                 project: QgsProject | None = None) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), display_name)
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open the heatmap {path}")
    style_heatmap(layer, score=score)
    add_to_group(layer, project)
    return layer
