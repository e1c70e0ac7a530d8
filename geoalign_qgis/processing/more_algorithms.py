"""Processing algorithms beyond the four searches: Index raster, Find similar, Fine-tune a model.

Same plumbing as :mod:`.algorithms` (the engine process does the work; progress, stages and
cancel go through Processing's feedback). Index raster writes the index where the dock looks for
it, so Find, Match regions and Heatmap (here and in the dock) are answered from it afterwards.
Fine-tune writes the new model into the plugin's model folder: the dock's Model list shows it.
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputString,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from .. import indexes
from ..compat import NUMBER_INTEGER, SOURCE_POLYGON
from ..tasks import profile_dir
from .base import DEVICES, GeoAlignAlgorithm, polygons_file


class IndexRasterAlgorithm(GeoAlignAlgorithm):
    INDEX = "INDEX"
    _name = "indexraster"
    _display = "Index raster"
    _help = ("Embeds the raster once for the model and keeps the result (a scene index) where the GeoAlign dock "
             "looks for it (Plugins > GeoAlign > Settings: by default beside the raster when it lies in the saved "
             "project's folder, else in the plugin's folder in the QGIS profile). "
             "Afterwards Find objects by text, Match regions, Heatmap and Find similar (here and in the dock) "
             "are answered from the index: only the text model runs. A cancelled indexing continues where it "
             "stopped when run again.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common(extent=False)
        self.add_advanced()
        self.addOutput(QgsProcessingOutputFile(self.INDEX, "Scene index"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        params = self.request_params(parameters, context, layer, raster)
        params.pop("metadata", None)
        from ..dock_index import index_place, project_home

        out = indexes.index_path(raster, params["model"], profile_dir(), index_place(), project_home())
        params.update(out=str(out), overwrite=True)
        result = self.run_engine("index", params, feedback)
        if result is None:
            return {}
        feedback.pushInfo(f"indexed {result.get('count', 0)} tiles: {out}")
        return {self.INDEX: str(out)}


class FindSimilarAlgorithm(GeoAlignAlgorithm):
    EXAMPLES = "EXAMPLES"
    PHRASE = "PHRASE"
    _name = "findsimilar"
    _display = "Find similar objects"
    _help = ("Finds the objects that look like the examples: polygons around one or more objects (any CRS). "
             "Output: a box per object with score and rank; the examples themselves are marked. An optional "
             "phrase steers the search (e.g. boxes around blue cars and the phrase 'red car'). Answered from "
             "the raster's scene index when it has one for the model.")

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterFeatureSource(self.EXAMPLES, "Examples (polygons around objects)",
                                                              [SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterString(self.PHRASE, "Steer with a phrase", optional=True))
        self.add_limits()
        self.add_advanced()
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT, "Similar objects"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        layer, raster = self.raster(parameters, context)
        params = self.request_params(parameters, context, layer, raster)
        phrase = " ".join(self.parameterAsString(parameters, self.PHRASE, context).split())
        if phrase:
            params["phrase"] = phrase
        params.update(self.limits(parameters, context))
        params = self.with_index(params, feedback)
        with polygons_file(self, parameters, self.EXAMPLES, context, layer) as examples:
            if examples is None:
                raise QgsProcessingException("the examples layer has no polygons")
            params["examples"] = examples
            return self.vector_result("similar", params, "similar", parameters, context, layer, feedback,
                                      f"like the examples ({layer.name()})")


class FinetuneAlgorithm(GeoAlignAlgorithm):
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    NAME = "NAME"
    STEPS = "STEPS"
    MODEL_FILE = "MODEL_FILE"
    REPORT = "REPORT"
    MODEL_NAME = "MODEL_NAME"
    _name = "finetune"
    _display = "Fine-tune a model on your labels"
    _help = ("Fine-tunes the model on the raster and labelled polygons (a class per polygon): chips with "
             "background boxes, the east 30 % held out, stage II training, then region top-1 before and after "
             "on the held-out part, weights blended back when the model forgets, and a calibration written "
             "into the new model's card (geoalign finetune). The new model goes to the plugin's model folder "
             "and appears in the dock's Model list. Steps 0: about 4 passes over the chips. The extent limits "
             "the chips (training and held-out part).")

    def group(self) -> str:
        return "Models"

    def groupId(self) -> str:  # noqa: N802
        return "models"

    def initAlgorithm(self, config: Any = None) -> None:  # noqa: N802
        self.add_common()
        self.addParameter(QgsProcessingParameterFeatureSource(self.LABELS, "Labelled polygons", [SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterField(self.CLASS_FIELD, "Class field",
                                                      parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterString(self.NAME, "Name of the new model"))
        self.addParameter(QgsProcessingParameterNumber(self.STEPS, "Training steps (0: automatic)", NUMBER_INTEGER, 0,
                                                       False, 0, 100000))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue=0))
        self.addOutput(QgsProcessingOutputFile(self.MODEL_FILE, "Model file"))
        self.addOutput(QgsProcessingOutputFile(self.REPORT, "Report"))
        self.addOutput(QgsProcessingOutputString(self.MODEL_NAME, "Model name"))

    def compute(self, parameters: dict, context: QgsProcessingContext, feedback: QgsProcessingFeedback) -> dict:
        from ..dock_finetune import model_slug, models_dir

        layer, raster = self.raster(parameters, context)
        name = model_slug(self.parameterAsString(parameters, self.NAME, context))
        if not name:
            raise QgsProcessingException("give the new model a name (letters, digits, - and _)")
        out = models_dir() / name
        if out.exists() and any(out.iterdir()):
            raise QgsProcessingException(f"a model named {name} exists already ({out}): choose another name")
        field = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        if not field:
            raise QgsProcessingException("give the labelled polygons and their class field")
        with polygons_file(self, parameters, self.LABELS, context, layer, "labels") as labels:
            if labels is None:
                raise QgsProcessingException("give the labelled polygons and their class field")
            params: dict[str, Any] = {
                "rasters": [raster], "labels": [labels], "class_field": field, "layer": "labels", "out": str(out),
                "model": self.parameterAsString(parameters, self.MODEL, context).strip() or None, "name": name,
                "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)], "overwrite": True,
                "log": str(models_dir() / f"{name}.log")}
            steps = self.parameterAsInt(parameters, self.STEPS, context)
            if steps > 0:
                params["steps"] = steps
            bounds = self.request_params(parameters, context, layer, raster).get("bounds")
            if bounds:
                params["bounds"] = bounds
            result = self.run_engine("finetune", params, feedback)
        if result is None:
            return {}
        before, after = result.get("before") or {}, result.get("after") or {}
        if "region_top1" in before and "region_top1" in after:
            feedback.pushInfo(f"held-out region top-1: {before['region_top1']:.3f} -> {after['region_top1']:.3f}")
        feedback.pushInfo(f"new model {name}: {result['model']} (report {result['report']}, log {result['log']})")
        return {self.MODEL_FILE: result["model"], self.REPORT: result["report"], self.MODEL_NAME: name}


MORE_ALGORITHMS: list[type[GeoAlignAlgorithm]] = [IndexRasterAlgorithm, FindSimilarAlgorithm, FinetuneAlgorithm]

__all__ = ["MORE_ALGORITHMS", "FindSimilarAlgorithm", "FinetuneAlgorithm", "IndexRasterAlgorithm"]
