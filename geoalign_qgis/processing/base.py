"""The base of GeoAlign's Processing algorithms: parameters, the engine request, results and styles.

:class:`GeoAlignAlgorithm` is what every algorithm shares (the raster, model, device and limits
parameters, the request sent to the engine process through the dock's client
(:func:`geoalign_qgis.tasks.run_request`), progress and cancel through Processing's feedback,
the result copied into a feature sink); :class:`Styler` gives loaded outputs GeoAlign's styles
and names; :func:`polygons_file` hands a polygon source to the engine as a GeoPackage. The
algorithms themselves are in :mod:`.algorithms` and :mod:`.more_algorithms`.
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
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QIcon

from .. import indexes, layers
from ..compat import (
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
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
