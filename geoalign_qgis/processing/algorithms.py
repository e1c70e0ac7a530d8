"""Processing algorithms: Tile classify, Find objects by text, Match regions, Heatmap.

Thin shells over :class:`geoalign_core.inference.Predictor` (shared with the dock through
:data:`geoalign_qgis.tasks.PREDICTORS`, so a model is loaded once per session). Vector
results go to a feature sink (any format, temporary layers, model builder); the heatmap is
a GeoTIFF raster destination. Nothing heavy is imported until an algorithm runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from .. import deps
from ..compat import FAST_INSERT, NUMBER_DOUBLE, NUMBER_INTEGER, SOURCE_POLYGON, WKB_POLYGON, param_flag_advanced
from ..convert import (
    Records,
    features_from_records,
    fields_for,
    gdf_from_records,
    records_from_features,
    records_from_gdf,
)
from ..tasks import PREDICTORS, DependencyError, call_in_worker, is_cancelled_error, user_message

ICON = Path(__file__).resolve().parent.parent / "icon.svg"
DEVICES = ["auto", "cpu", "cuda"]
DEFAULT_MODEL = "geoalign-demo"


def split_list(text: str | None, seps: str = "\n;") -> list[str]:
    import re

    out: dict[str, None] = {}
    for part in re.split(f"[{re.escape(seps)}]+", text or ""):
        p = " ".join(part.split())
        if p:
            out[p] = None
    return list(out)


class GeoAlignAlgorithm(QgsProcessingAlgorithm):
    """Shared parameters (raster, model, device, tiling) and plumbing."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"

    _name = ""
    _display = ""
    _help = ""

    def createInstance(self) -> GeoAlignAlgorithm:  # noqa: N802
        return type(self)()

    def name(self) -> str:
        return self._name

    def displayName(self) -> str:  # noqa: N802
        return self._display

    def group(self) -> str:
        return "Find by text"

    def groupId(self) -> str:  # noqa: N802
        return "findbytext"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def shortHelpString(self) -> str:  # noqa: N802
        text = self._help + (
            "\n\nModel: a zoo name (geoalign models list), an open_clip architecture, "
            "hf-hub:org/repo or a checkpoint file. Tile size 0 = the model's input size."
        )
        status = deps.check()
        return text if status.ok else f"{status.message()}\n\n{text}"

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802
        status = deps.check()
        return status.ok, status.message()

    # -- parameters -----------------------------------------------------------------
    def add_common(self, extent: bool = True) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model", defaultValue=DEFAULT_MODEL))
        if extent:
            self.addParameter(QgsProcessingParameterExtent(
                self.EXTENT, "Restrict to extent (default: the whole raster)", optional=True))

    def add_advanced(self) -> None:
        adv = param_flag_advanced()
        params = [
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", NUMBER_INTEGER, 16, False, 1, 4096),
            QgsProcessingParameterString(self.BANDS, "Bands (1-based, e.g. 3,2,1; default: RGB)",
                                         optional=True),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the model's input size)",
                                         NUMBER_INTEGER, 0, False, 0, 8192),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (fraction)", NUMBER_DOUBLE, 0.25, False,
                                         0.0, 0.89),
        ]
        for p in params:
            p.setFlags(p.flags() | adv)
            self.addParameter(p)

    # -- helpers --------------------------------------------------------------------
    def raster(self, parameters: dict, context: QgsProcessingContext) -> tuple[QgsRasterLayer, str]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("invalid raster layer")
        path = layer.source().split("|")[0]
        if layer.providerType() != "gdal" or not Path(path).is_file():
            raise QgsProcessingException(f"{layer.name()}: GeoAlign needs a raster file, not {layer.source()}")
        return layer, path

    def common(self, parameters: dict, context: QgsProcessingContext, layer: QgsRasterLayer,
               feedback: QgsProcessingFeedback) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "overlap": self.parameterAsDouble(parameters, self.OVERLAP, context),
            "progress": lambda done, total: feedback.setProgress(100.0 * done / max(total, 1)),
            "cancel": feedback.isCanceled,
        }
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        if tile > 0:
            kw["tile_size"] = tile
        bands = self.parameterAsString(parameters, self.BANDS, context).strip()
        if bands:
            try:
                kw["bands"] = [int(b) for b in bands.replace(" ", "").split(",") if b]
            except ValueError:
                raise QgsProcessingException(f"bands must be 1-based band numbers like 3,2,1, not {bands!r}") from None
        if self.EXTENT in parameters and parameters.get(self.EXTENT) not in (None, ""):
            ext = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            inter = ext.intersect(layer.extent())
            if inter.isEmpty():
                raise QgsProcessingException("the extent does not overlap the raster")
            kw["bounds"] = (inter.xMinimum(), inter.yMinimum(), inter.xMaximum(), inter.yMaximum())
        return kw

    def predictor_args(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        model = self.parameterAsString(parameters, self.MODEL, context).strip() or DEFAULT_MODEL
        device = DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]
        return {"model": model, "device": device,
                "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context) or 16}

    def predict(self, parameters: dict, context: QgsProcessingContext, method: str, *args: Any,
                **kwargs: Any) -> Any:
        """``Predictor.<method>(*args, **kwargs)`` on GeoAlign's worker thread (see tasks.py).

        Records arguments become GeoDataFrames there; a GeoDataFrame result comes back as Records.
        """
        load = self.predictor_args(parameters, context)

        def work() -> Any:
            a = [gdf_from_records(x) if isinstance(x, Records) else x for x in args]
            kw = {k: gdf_from_records(v) if isinstance(v, Records) else v for k, v in kwargs.items()}
            with PREDICTORS.use(**load) as predictor:
                out = getattr(predictor, method)(*a, **kw)
            return out if isinstance(out, (str, Path)) else records_from_gdf(out)

        return call_in_worker(work)

    def write_sink(self, parameters: dict, context: QgsProcessingContext, rec: Records,
                   layer: QgsRasterLayer, feedback: QgsProcessingFeedback) -> dict[str, Any]:
        fields = fields_for(rec)
        sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, WKB_POLYGON, layer.crs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
        for feat in features_from_records(rec, fields):
            if feedback.isCanceled():
                break
            sink.addFeature(feat, FAST_INSERT)
        feedback.pushInfo(f"{len(rec)} features")
        return {self.OUTPUT: dest}

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        ok, msg = self.canExecute()
        if not ok:
            raise QgsProcessingException(msg)
        try:
            return self.compute(parameters, context, feedback)
        except QgsProcessingException:
            raise
        except Exception as exc:
            if is_cancelled_error(exc):
                feedback.reportError("cancelled", False)
                return {}
            if isinstance(exc, DependencyError):
                raise QgsProcessingException(str(exc)) from None
            raise QgsProcessingException(user_message(exc)) from exc

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        """Each concrete algorithm overrides this (sip classes cannot use abc.abstractmethod)."""
        raise TypeError(f"{type(self).__name__} does not define compute()")


class TileClassifyAlgorithm(GeoAlignAlgorithm):
    CLASSES = "CLASSES"
    TOP_K = "TOP_K"
    _name = "tileclassify"
    _display = "Tile classify"
    _help = ("Cuts the raster into tiles and labels each tile with the most probable class "
             "(CLIP zero-shot classification). Output: one polygon per tile with label, score "
             "(probability) and top_k (JSON). Classes: comma or newline separated; empty = the "
             "built-in remote-sensing scene vocabulary.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterString(self.CLASSES, "Classes (comma separated; empty: built-in)",
                                                       optional=True, multiLine=True))
        self.addParameter(QgsProcessingParameterNumber(self.TOP_K, "Top k", NUMBER_INTEGER, 3, False, 1, 100))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Tiles"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        classes = split_list(self.parameterAsString(parameters, self.CLASSES, context), "\n;,") or None
        top_k = self.parameterAsInt(parameters, self.TOP_K, context)
        common = self.common(parameters, context, layer, feedback)
        feedback.pushInfo("loading the model")
        rec = self.predict(parameters, context, "tile_classify", raster, classes=classes, top_k=top_k, **common)
        return self.write_sink(parameters, context, rec, layer, feedback)


class FindObjectsAlgorithm(GeoAlignAlgorithm):
    PHRASES = "PHRASES"
    REGIONS = "REGIONS"
    MIN_SCORE = "MIN_SCORE"
    MAX_RESULTS = "MAX_RESULTS"
    REFINE = "REFINE"
    _name = "findobjects"
    _display = "Find objects by text"
    _help = ("Finds the objects that match one or more phrases (one per line, or separated by ';'). "
             "Output: a polygon (box) per object with phrase, score (probability of the phrase "
             "against the other phrases and generic background) and rank (1 = best, per phrase). "
             "Optional regions: search only these polygons (any CRS).")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterString(self.PHRASES, "Phrases (one per line)", multiLine=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, "Search only in these regions",
                                                              [SOURCE_POLYGON], optional=True))
        self.addParameter(QgsProcessingParameterNumber(self.MIN_SCORE, "Minimum score (empty: the default)",
                                                       NUMBER_DOUBLE, None, True, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_RESULTS, "Maximum results (empty: the default)",
                                                       NUMBER_INTEGER, None, True, 1, 1000000))
        self.addParameter(QgsProcessingParameterBoolean(
            self.REFINE, "Refine boxes: look at each again at twice the zoom (as the CLI; tighter boxes on small "
            "objects)", defaultValue=True))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Matches"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        phrases = split_list(self.parameterAsString(parameters, self.PHRASES, context))
        if not phrases:
            raise QgsProcessingException("give one or more phrases")
        kw = self.common(parameters, context, layer, feedback)
        regions = regions_records(self, parameters, self.REGIONS, context, layer)
        if regions is not None:
            kw["regions"] = regions
        if parameters.get(self.MIN_SCORE) not in (None, ""):
            kw["min_score"] = self.parameterAsDouble(parameters, self.MIN_SCORE, context)
        if parameters.get(self.MAX_RESULTS) not in (None, ""):
            kw["max_results"] = self.parameterAsInt(parameters, self.MAX_RESULTS, context)
        kw["refine"] = self.parameterAsBoolean(parameters, self.REFINE, context)
        feedback.pushInfo("loading the model")
        rec = self.predict(parameters, context, "find", raster, phrases, **kw)
        return self.write_sink(parameters, context, rec, layer, feedback)


def regions_records(alg: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext,
                    layer: QgsRasterLayer) -> Records | None:
    """A polygon source, reprojected by QGIS into the raster's CRS, as Records (or None)."""
    if parameters.get(name) in (None, ""):
        return None
    source = alg.parameterAsSource(parameters, name, context)
    if source is None:
        return None
    request = QgsFeatureRequest().setDestinationCrs(layer.crs(), context.transformContext())
    return records_from_features(source.getFeatures(request), source.fields(), layer.crs())


class MatchRegionsAlgorithm(GeoAlignAlgorithm):
    PHRASES = "PHRASES"
    REGIONS = "REGIONS"
    _name = "matchregions"
    _display = "Match regions"
    _help = ("Scores every input polygon against the phrases. Output: the input features "
             "(in the raster's CRS) with best_phrase, score, and one score column per phrase.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, "Regions", [SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterString(self.PHRASES, "Phrases (one per line)", multiLine=True))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model", defaultValue=DEFAULT_MODEL))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Scored regions"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        phrases = split_list(self.parameterAsString(parameters, self.PHRASES, context))
        if not phrases:
            raise QgsProcessingException("give one or more phrases")
        regions = regions_records(self, parameters, self.REGIONS, context, layer)
        if regions is None or len(regions) == 0:
            raise QgsProcessingException("the regions layer has no polygons")
        kw = self.common(parameters, context, layer, feedback)
        feedback.pushInfo("loading the model")
        rec = self.predict(parameters, context, "match_regions", raster, regions, phrases, **kw)
        return self.write_sink(parameters, context, rec, layer, feedback)


class HeatmapAlgorithm(GeoAlignAlgorithm):
    PHRASE = "PHRASE"
    _name = "heatmap"
    _display = "Heatmap"
    _help = ("Similarity of every patch of the raster to a phrase (cosine similarity, -1..1), as a "
             "float32 GeoTIFF on the raster's grid (or a coarser grid with a correct transform).")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterString(self.PHRASE, "Phrase"))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Heatmap"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        phrase = " ".join(self.parameterAsString(parameters, self.PHRASE, context).split())
        if not phrase:
            raise QgsProcessingException("give a phrase")
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        kw = self.common(parameters, context, layer, feedback)
        feedback.pushInfo("loading the model")
        path = self.predict(parameters, context, "heatmap", raster, phrase, out, overwrite=True, **kw)
        return {self.OUTPUT: str(path)}


ALGORITHMS = [TileClassifyAlgorithm, FindObjectsAlgorithm, MatchRegionsAlgorithm, HeatmapAlgorithm]
