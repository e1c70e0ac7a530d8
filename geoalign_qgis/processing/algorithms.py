"""Processing algorithms: Tile classify, Find objects by text, Match regions, Heatmap.

Thin shells over the GeoAlign engine process, through the same client as the dock
(:func:`geoalign_qgis.tasks.run_request`): the engine writes a GeoPackage, which is copied
into the algorithm's feature sink (any format, temporary layers, the model builder); the
heatmap is written by the engine straight to the raster destination. Progress, stage names
and cancel go through Processing's feedback. Loaded outputs get GeoAlign's styles and names.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from .. import indexes, layers
from ..compat import (
    FILE_BEHAVIOR_FOLDER,
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
    SOURCE_POLYGON,
    WKB_POLYGON,
    param_flag_advanced,
)
from ..engine import EngineCancelled, EngineError
from ..inputs import DEFAULT_MODEL, InputProblem, parse_bands, raster_path, split_texts
from ..protocol import DEFAULT_BATCH_SIZE
from ..tasks import NO_ENGINE, engine_location, log_error, profile_dir, remove_outputs, run_request
from ..vector_io import copy_features, open_result, result_fields, write_polygons

ICON = Path(__file__).resolve().parent.parent / "icon.svg"
DEVICES = ["auto", "cpu", "cuda"]


class Styler(QgsProcessingLayerPostProcessorInterface):
    """Gives a loaded output GeoAlign's style and marks it as a GeoAlign result.

    Processing keeps no Python reference to post-processors: each lives in :attr:`_alive`
    until it has run.
    """

    _alive: list[Styler] = []

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:  # noqa: N802
        try:
            if isinstance(layer, QgsVectorLayer):
                layers.style_result(layer, self.kind)
            elif isinstance(layer, QgsRasterLayer):
                layers.style_heatmap(layer, score=self.kind == "heatmap_score")
            layers.mark_output(layer)
        finally:
            with contextlib.suppress(ValueError):
                Styler._alive.remove(self)

    @classmethod
    def attach(cls, context: QgsProcessingContext, dest: str, kind: str, name: str) -> None:
        if not context.willLoadLayerOnCompletion(dest):
            return
        details = context.layerToLoadOnCompletionDetails(dest)
        details.name = name
        styler = cls(kind)
        cls._alive.append(styler)
        details.setPostProcessor(styler)


class GeoAlignAlgorithm(QgsProcessingAlgorithm):
    """Shared parameters (raster, model, device, tiling) and plumbing."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    BANDS = "BANDS"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    ALLOW_NO_CRS = "ALLOW_NO_CRS"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"
    MIN_SCORE = "MIN_SCORE"
    MAX_RESULTS = "MAX_RESULTS"
    PHRASES = "PHRASES"
    REGIONS = "REGIONS"

    _name = ""
    _display = ""
    _help = ""
    _overlap = 0.25

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
            "hf-hub:org/repo or a checkpoint file. Tile size 0 = the model's input size. "
            "The model runs in GeoAlign's engine process (see Plugins > GeoAlign > Settings)."
        )
        ok, msg = self.canExecute()
        return text if ok else f"{msg}\n\n{text}"

    def canExecute(self) -> tuple[bool, str]:  # noqa: N802
        loc = engine_location()
        return loc.found, "" if loc.found else (loc.problem or NO_ENGINE)

    # -- parameters -----------------------------------------------------------------
    def add_common(self, extent: bool = True, raster_optional: bool = False) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.INPUT, "Raster (or a collection index below)" if raster_optional else "Raster",
            optional=raster_optional))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model", defaultValue=DEFAULT_MODEL))
        if extent:
            self.addParameter(QgsProcessingParameterExtent(
                self.EXTENT, "Restrict to extent (default: the whole raster)", optional=True))

    def add_advanced(self) -> None:
        adv = param_flag_advanced()
        params = [
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size", NUMBER_INTEGER, DEFAULT_BATCH_SIZE, False, 1,
                                         4096),
            QgsProcessingParameterString(self.BANDS, "Bands (1-based, e.g. 3,2,1; default: RGB)",
                                         optional=True),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the model's input size)",
                                         NUMBER_INTEGER, 0, False, 0, 8192),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (fraction)", NUMBER_DOUBLE, self._overlap, False,
                                         0.0, 0.89),
            QgsProcessingParameterBoolean(self.ALLOW_NO_CRS, "Allow a raster without a CRS (results in pixel "
                                          "coordinates)", defaultValue=False),
        ]
        for p in params:
            p.setFlags(p.flags() | adv)
            self.addParameter(p)

    def add_limits(self) -> None:
        """Minimum score and maximum results, both optional (empty: the engine's defaults)."""
        self.addParameter(QgsProcessingParameterNumber(self.MIN_SCORE, "Minimum score (empty: the default)",
                                                       NUMBER_DOUBLE, None, True, 0.0, 1.0))
        self.addParameter(QgsProcessingParameterNumber(self.MAX_RESULTS, "Maximum results (empty: the default)",
                                                       NUMBER_INTEGER, None, True, 1, 1000000))

    # -- helpers --------------------------------------------------------------------
    def given(self, parameters: dict, name: str) -> bool:
        """Whether an optional parameter has a value (an empty number field gives None or "")."""
        return parameters.get(name) not in (None, "")

    def limits(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """``min_score`` and ``max_results`` where given (:meth:`add_limits`)."""
        out: dict[str, Any] = {}
        if self.given(parameters, self.MIN_SCORE):
            out["min_score"] = self.parameterAsDouble(parameters, self.MIN_SCORE, context)
        if self.given(parameters, self.MAX_RESULTS):
            out["max_results"] = self.parameterAsInt(parameters, self.MAX_RESULTS, context)
        return out

    def raster(self, parameters: dict, context: QgsProcessingContext) -> tuple[QgsRasterLayer, str]:
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is not None and layers.is_output(layer):
            raise QgsProcessingException(f"{layer.name()} is a GeoAlign result (a heatmap), not imagery: choose the "
                                         "raster it was made from")
        try:
            return layer, raster_path(layer)
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None

    def with_index(self, params: dict[str, Any], feedback: QgsProcessingFeedback | None = None) -> dict[str, Any]:
        """``params`` answered from the raster's scene index when the dock (or Index raster) made one for the
        model: only the text model runs; the tiling is the index's own."""
        if not params.get("raster") or params.get("index"):
            return params
        found = indexes.existing_index(params["raster"], params["model"], profile_dir())
        if found is None:
            return params
        if feedback is not None:
            feedback.pushInfo(f"answered from the raster's index {found}")
        out = {k: v for k, v in params.items() if k not in ("tile_size", "overlap")}
        return dict(out, index=str(found))

    def phrases_request(self, parameters: dict, context: QgsProcessingContext) -> tuple[QgsRasterLayer, dict]:
        """The raster layer and the request parameters of an algorithm with a PHRASES parameter."""
        layer, raster = self.raster(parameters, context)
        phrases = split_texts(self.parameterAsString(parameters, self.PHRASES, context))
        if not phrases:
            raise QgsProcessingException("give one or more phrases")
        return layer, {**self.request_params(parameters, context, layer, raster), "phrases": phrases}

    def request_params(self, parameters: dict, context: QgsProcessingContext, layer: QgsRasterLayer,
                       path: str) -> dict[str, Any]:
        """The engine parameters every request takes (raster, model, tiling, bands, extent)."""
        p: dict[str, Any] = {
            "raster": path,
            "model": self.parameterAsString(parameters, self.MODEL, context).strip() or DEFAULT_MODEL,
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context) or DEFAULT_BATCH_SIZE,
            "overlap": self.parameterAsDouble(parameters, self.OVERLAP, context),
            "allow_no_crs": self.parameterAsBoolean(parameters, self.ALLOW_NO_CRS, context),
            "metadata": {"client": "qgis-processing", "algorithm": self.id()},
        }
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        if tile > 0:
            p["tile_size"] = tile
        try:
            bands = parse_bands(self.parameterAsString(parameters, self.BANDS, context))
        except InputProblem as exc:
            raise QgsProcessingException(str(exc)) from None
        if bands:
            p["bands"] = bands
        if self.EXTENT in parameters and parameters.get(self.EXTENT) not in (None, ""):
            ext = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            inter = ext.intersect(layer.extent())
            if inter.isEmpty():
                raise QgsProcessingException("the extent does not overlap the raster")
            p["bounds"] = [inter.xMinimum(), inter.yMinimum(), inter.xMaximum(), inter.yMaximum()]
        return p

    def run_engine(self, request: str, params: dict, feedback: QgsProcessingFeedback) -> dict | None:
        """The request's result; None when cancelled. Engine errors become Processing errors."""
        feedback.pushInfo(f"GeoAlign engine: {request} with {params.get('model')}")
        try:
            result = run_request(request, params, feedback)
            feedback.setProgress(100)  # each stage counts from 0: the last one may end below 100
            return result
        except EngineCancelled:
            feedback.pushInfo("cancelled; nothing was written")
            return None
        except EngineError as exc:
            log_error(exc, self.displayName())
            message = str(exc)
            if exc.code == "no_crs":
                message += " (or tick the advanced parameter 'Allow a raster without a CRS')"
            raise QgsProcessingException(message) from None

    def vector_result(self, request: str, params: dict, layer_name: str, parameters: dict,
                      context: QgsProcessingContext, raster: QgsRasterLayer | None, feedback: QgsProcessingFeedback,
                      display: str) -> dict[str, Any]:
        """Run a request whose result is a GeoPackage layer and copy it into the OUTPUT sink."""
        tmp = Path(QgsProcessingUtils.generateTempFilename(f"geoalign_{layer_name}.gpkg"))
        params = dict(params, out=str(tmp), overwrite=True)
        try:
            result = self.run_engine(request, params, feedback)
            if result is None:
                return {}
            src = open_result(tmp, layer_name)
            fields = result_fields(src)
            crs = raster.crs() if raster is not None else src.crs()  # a collection: its scenes' common CRS
            sink, dest = self.parameterAsSink(parameters, self.OUTPUT, context, fields, WKB_POLYGON, crs)
            if sink is None:
                raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT))
            n = copy_features(src, sink, fields, feedback)
            del src
            feedback.pushInfo(result.get("summary") or f"{n} features")
        finally:
            remove_outputs([tmp])
        Styler.attach(context, dest, layer_name, display)
        return {self.OUTPUT: dest}

    def processAlgorithm(self, parameters: dict, context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        ok, msg = self.canExecute()
        if not ok:
            raise QgsProcessingException(msg)
        return self.compute(parameters, context, feedback)

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        """Each concrete algorithm overrides this (sip classes cannot use abc.abstractmethod)."""
        raise TypeError(f"{type(self).__name__} does not define compute()")


class TileClassifyAlgorithm(GeoAlignAlgorithm):
    CLASSES = "CLASSES"
    TOP_K = "TOP_K"
    _overlap = 0.0
    _name = "tileclassify"
    _display = "Tile classify"
    _help = ("Cuts the raster into tiles and labels each tile with the class that fits it best "
             "(CLIP zero-shot classification against the classes and the built-in vocabulary). Output: one "
             "polygon per tile with label, score (the estimated probability that the label is right, "
             "calibrated on held-out labelled data and stored in the model's card) and top_k (JSON). When no "
             "class is probably right, the label is 'none of these' (drawn as a dotted grey outline) and the "
             "score is the probability that the best class is wrong. A model without a calibration writes "
             "logodds instead of score. Classes: comma or newline separated; empty = the built-in "
             "remote-sensing scene vocabulary.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterString(self.CLASSES, "Classes (comma separated; empty: built-in)",
                                                       optional=True, multiLine=True))
        self.addParameter(QgsProcessingParameterNumber(self.TOP_K, "Top k", NUMBER_INTEGER, 3, False, 1, 100))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Tiles"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        classes = split_texts(self.parameterAsString(parameters, self.CLASSES, context), "\n;,") or None
        params = self.request_params(parameters, context, layer, raster)
        params.update(classes=classes, top_k=self.parameterAsInt(parameters, self.TOP_K, context))
        what = ", ".join(classes)[:50] if classes else "built-in classes"
        return self.vector_result("tile_classify", params, "tiles", parameters, context, layer, feedback,
                                  f"{layer.name()} tiles: {what}")


class FindObjectsAlgorithm(GeoAlignAlgorithm):
    REFINE = "REFINE"
    OBJECT_SIZE = "OBJECT_SIZE"
    INDEX = "INDEX"
    _name = "findobjects"
    _display = "Find objects by text"
    _help = ("Finds the objects that match one or more phrases (one per line, or separated by ';'). "
             "Output: a polygon (box) per object with phrase, score and rank (1 = best, per phrase). The "
             "score is the estimated probability that the box shows the phrase: of many boxes scored about "
             "0.7, about 70 % are right (calibrated on held-out labelled data; the model's card says on "
             "what). A phrase that is not in the scene finds nothing. A model without a calibration writes "
             "standout (how far the box stands out from the scene's typical region) instead of score. "
             "Optional regions: search only inside these polygons (any CRS); a box is kept when its centre "
             "lies in one of them. Object size (metres): the objects' typical side; boxes of about that size "
             "are searched and kept (empty: a fine-tuned model's learnt sizes for its classes, else any size). "
             "When the raster has a scene index for the model (the dock's 'Index this raster', or Index "
             "raster here), the phrases are answered from it. Collection index: a folder made by geoalign index "
             "A.tif B.tif ... --out FOLDER: the phrases are answered from it, over all its scenes, into one layer "
             "in the scenes' common CRS (else EPSG:4326) with a scene field; leave the raster, the extent and "
             "the regions empty (a collection is searched whole). The default model means the one the "
             "collection was built with. One scene's index (a .parquet file) is used with its raster.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common(raster_optional=True)
        self.addParameter(QgsProcessingParameterFile(
            self.INDEX, "Collection index (a folder made by geoalign index A.tif B.tif … --out FOLDER; "
            "optional)", behavior=FILE_BEHAVIOR_FOLDER, optional=True))
        self.addParameter(QgsProcessingParameterString(self.PHRASES, "Phrases (one per line)", multiLine=True))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, "Search only in these regions",
                                                              [SOURCE_POLYGON], optional=True))
        self.add_limits()
        self.addParameter(QgsProcessingParameterBoolean(
            self.REFINE, "Refine boxes: look at each again at twice the zoom (as the CLI; tighter boxes on small "
            "objects)", defaultValue=True))
        self.addParameter(QgsProcessingParameterNumber(self.OBJECT_SIZE, "Object size in metres (empty: the "
                                                       "model's sizes)", NUMBER_DOUBLE, None, True, 0.01, 100000.0))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Matches"))

    def search_params(self, parameters: dict, context: QgsProcessingContext) -> dict[str, Any]:
        """Min score, max results and object size, when given."""
        p = self.limits(parameters, context)
        if self.given(parameters, self.OBJECT_SIZE):
            p["object_size"] = self.parameterAsDouble(parameters, self.OBJECT_SIZE, context)
        return p

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        index = self.parameterAsFile(parameters, self.INDEX, context).strip()
        if index and Path(index).is_dir():
            return self.compute_collection(index, parameters, context, feedback)
        if parameters.get(self.INPUT) in (None, ""):
            raise QgsProcessingException("choose a raster, or a collection index (a folder made by geoalign index)")
        layer, params = self.phrases_request(parameters, context)
        phrases = params["phrases"]
        params["refine"] = self.parameterAsBoolean(parameters, self.REFINE, context)
        params.update(self.search_params(parameters, context))
        if index:  # one scene's index file, checked against the raster by the engine
            params = dict({k: v for k, v in params.items() if k not in ("tile_size", "overlap")}, index=index)
        params = self.with_index(params, feedback)
        with polygons_file(self, parameters, self.REGIONS, context, layer) as regions:
            if regions is not None:
                params["within"] = regions
            return self.vector_result("find", params, "matches", parameters, context, layer, feedback,
                                      f"{', '.join(phrases)[:50]} ({layer.name()})")

    def compute_collection(self, folder: str, parameters: dict, context: QgsProcessingContext,
                           feedback: QgsProcessingFeedback) -> dict:
        """Find over every scene of a collection index (the engine answers from it; no raster)."""
        for name, what in ((self.INPUT, "a raster"), (self.EXTENT, "an extent"), (self.REGIONS, "regions")):
            if parameters.get(name) not in (None, ""):
                raise QgsProcessingException(f"a collection index is searched whole, over its own scenes: leave "
                                             f"{what} out (or give one scene's index, idx/parts/<scene>.parquet)")
        phrases = split_texts(self.parameterAsString(parameters, self.PHRASES, context))
        if not phrases:
            raise QgsProcessingException("give one or more phrases")
        params: dict[str, Any] = {
            "index": folder,
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "batch_size": self.parameterAsInt(parameters, self.BATCH_SIZE, context) or DEFAULT_BATCH_SIZE,
            "phrases": phrases, "refine": False,  # refining reads the raster: a collection answers from the index
            "metadata": {"client": "qgis-processing", "algorithm": self.id(), "collection": folder},
            **self.search_params(parameters, context)}
        model = self.parameterAsString(parameters, self.MODEL, context).strip()
        if model and model != DEFAULT_MODEL:  # else the model the collection was built with (the engine reads it)
            params["model"] = model
        feedback.pushInfo(f"answered from the collection index {folder}")
        return self.vector_result("find", params, "matches", parameters, context, None, feedback,
                                  f"{', '.join(phrases)[:50]} (collection {Path(folder).name})")


@contextlib.contextmanager
def polygons_file(alg: QgsProcessingAlgorithm, parameters: dict, name: str, context: QgsProcessingContext,
                  layer: QgsRasterLayer, what: str = "regions"):
    """A polygon source, reprojected by QGIS into the raster's CRS, as a temporary GeoPackage whose layer
    is named ``what`` (or None: no source given)."""
    if parameters.get(name) in (None, ""):
        yield None
        return
    source = alg.parameterAsSource(parameters, name, context)
    if source is None:
        yield None
        return
    request = QgsFeatureRequest().setDestinationCrs(layer.crs(), context.transformContext())
    path = Path(QgsProcessingUtils.generateTempFilename(f"geoalign_{what}.gpkg"))
    try:
        n = write_polygons(path, source.getFeatures(request), source.fields(), layer.crs(), what)
        if n == 0:
            raise QgsProcessingException(f"the {what} layer has no polygons")
        yield str(path)
    finally:
        remove_outputs([path])


class MatchRegionsAlgorithm(GeoAlignAlgorithm):
    _name = "matchregions"
    _display = "Match regions"
    _help = ("Scores every input polygon against the phrases. Output: the input features "
             "(in the raster's CRS) with best_phrase, score (the estimated probability that the region shows "
             "it) and one score column per phrase. When no phrase is probably right, best_phrase is "
             "'none of these'.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(self.REGIONS, "Regions", [SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterString(self.PHRASES, "Phrases (one per line)", multiLine=True))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model", defaultValue=DEFAULT_MODEL))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Scored regions"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, params = self.phrases_request(parameters, context)
        phrases = params["phrases"]
        with polygons_file(self, parameters, self.REGIONS, context, layer) as regions:
            if regions is None:
                raise QgsProcessingException("the regions layer has no polygons")
            params["regions"] = regions
            params = self.with_index(params, feedback)
            return self.vector_result("match_regions", params, "regions", parameters, context, layer, feedback,
                                      f"regions: {', '.join(phrases)[:50]} ({layer.name()})")


HEATMAP_VALUES = ["score", "similarity"]


class HeatmapAlgorithm(GeoAlignAlgorithm):
    PHRASE = "PHRASE"
    VALUES = "VALUES"
    _name = "heatmap"
    _display = "Heatmap"
    _help = ("A phrase's response over the raster as a float32 GeoTIFF on the raster's grid (or a coarser "
             "grid with a correct transform). Values: score (0..1, the estimated probability that a one-patch "
             "region shows the phrase, calibrated on held-out labelled data as found boxes are; a model without a "
             "calibration maps standout instead) or similarity (cosine similarity of each patch with the phrase, "
             "-1..1, not a probability).")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterString(self.PHRASE, "Phrase"))
        self.addParameter(QgsProcessingParameterEnum(self.VALUES, "Values", options=HEATMAP_VALUES, defaultValue=0))
        self.add_advanced()
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Heatmap"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        phrase = " ".join(self.parameterAsString(parameters, self.PHRASE, context).split())
        if not phrase:
            raise QgsProcessingException("give a phrase")
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        values = HEATMAP_VALUES[self.parameterAsEnum(parameters, self.VALUES, context)]
        params = self.request_params(parameters, context, layer, raster)
        params.update(phrase=phrase, out=str(out), overwrite=True, values=values)
        result = self.run_engine("heatmap", self.with_index(params, feedback), feedback)
        if result is None:
            return {}
        feedback.pushInfo(result.get("summary", ""))
        Styler.attach(context, str(out), "heatmap_score" if values == "score" else "heatmap",
                      f"heatmap {values}: {phrase} ({layer.name()})")
        return {self.OUTPUT: str(out)}


ALGORITHMS: list[type[GeoAlignAlgorithm]] = [TileClassifyAlgorithm, FindObjectsAlgorithm, MatchRegionsAlgorithm,
                                             HeatmapAlgorithm]
