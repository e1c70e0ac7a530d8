"""Processing algorithms: Tile classify, Find objects by text, Match regions, Heatmap.

Thin shells over the GeoAlign engine process, through the same client as the dock
(:func:`geoalign_qgis.tasks.run_request`; their shared part: :mod:`.base`): the engine writes a
GeoPackage, which is copied into the algorithm's feature sink (any format, temporary layers, the
model builder); the heatmap is written by the engine straight to the raster destination.
Progress, stage names and cancel go through Processing's feedback. Loaded outputs get GeoAlign's
styles and names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..compat import (
    FILE_BEHAVIOR_FOLDER,
    NUMBER_DOUBLE,
    NUMBER_INTEGER,
    SOURCE_POLYGON,
)
from ..inputs import DEFAULT_MODEL, split_texts
from ..protocol import DEFAULT_BATCH_SIZE
from .base import DEVICES, GeoAlignAlgorithm, Styler, polygons_file


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
