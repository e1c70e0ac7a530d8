"""Each task's parameters: one typed set per task, with its defaults (from :mod:`.defaults`).

One dataclass per task (:data:`TASKS`) names every parameter the task takes, its default, its
type and what it means. The other places a task's parameters appear derive from it, or are
checked against it by ``tests/test_params.py``:

* the Python API: the task function (``api="task"``, e.g. :func:`geoalign_core.inference.find.find`),
  the run that writes its file (``"run"``, :mod:`geoalign_core.inference.runs`), the
  :class:`~geoalign_core.inference.Predictor` (``"predictor"``), the source handed to it
  (``"source"``: a raster path, or an index opened by :func:`geoalign_core.index.open_index`) or
  :func:`geoalign_core.threads.apply` (``"threads"``);
* the ``geoalign`` command: its options are built from the fields (``cli="option"``), or written by
  the command itself where their form differs (``"positional"``, ``"custom"``: a positional
  argument, a pair of flags, a file read into a list); ``""`` -- not on the command line;
* the engine protocol: the parameters a request takes and their JSON types
  (:func:`request_types`, :data:`geoalign_core.engine.protocol.PARAMS`);
* the QGIS plugin's forms: they send only parameters of this set (the plugin checks a request
  with :func:`geoalign_core.engine.protocol.check_params` before sending it).

Standard library only, and no import of the rest of the package but :mod:`.defaults`: this module
ships in the QGIS plugin's zip, whose Python cannot import the model stack.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from .defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_RESULTS,
    DEFAULT_MIN_SCORE,
    DEFAULT_NMS_IOU,
    DEFAULT_OVERLAP,
    DEFAULT_SIMILAR_MIN_SCORE,
    DEFAULT_TEXT_WEIGHT,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TOP_K,
    REFINE_MAX_BOXES,
)

__all__ = [
    "API_PLACES",
    "CLI_FORMS",
    "DEVICES",
    "HEATMAP_VALUES",
    "FindParams",
    "HeatmapParams",
    "IndexParams",
    "MatchRegionsParams",
    "SimilarParams",
    "TASKS",
    "TileClassifyParams",
    "fields_of",
    "param",
    "request_types",
]

DEVICES = ("auto", "cpu", "cuda")  #: where a model runs
HEATMAP_VALUES = ("similarity", "score")  #: what a heatmap holds
API_PLACES = ("task", "run", "predictor", "source", "threads", "")  #: where the Python API takes a parameter
CLI_FORMS = ("option", "positional", "custom", "")  #: how the command line takes it


def param(default: Any = None, help: str = "", *, api: str = "task", cli: str = "option",  # noqa: A002
          metavar: str | None = None, choices: tuple[str, ...] | None = None, required: bool = False,
          protocol: bool = True) -> Any:
    """A task parameter: its default and what the surfaces need to know about it.

    Args:
        default: the value when none is given.
        help: what it means (the command-line help; the plugin's tooltip).
        api: where the Python API takes it (:data:`API_PLACES`).
        cli: how the command line takes it (:data:`CLI_FORMS`); an option is ``--name-with-dashes``.
        metavar: the value's name in the command-line help.
        choices: the values allowed (checked by every surface, listed in the help).
        required: a request must give it (the command line: a positional, or a checked option).
        protocol: the engine accepts it.
    """
    if api not in API_PLACES or cli not in CLI_FORMS:
        raise ValueError(f"api must be one of {API_PLACES} and cli one of {CLI_FORMS}")
    return dataclasses.field(default=default, metadata={
        "help": help, "api": api, "cli": cli, "metavar": metavar, "choices": choices, "required": required,
        "protocol": protocol})


#: JSON types of the Python types a field's annotation names (a number may be written as an integer)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,), "dict": (dict,),
    "None": (type(None),),
}


def json_types(field: dataclasses.Field) -> tuple[type, ...]:
    """The JSON types a request may give ``field`` as, from its annotation (``"list[int] | str | None"``)."""
    out: list[type] = []
    for part in str(field.type).split("|"):
        out.extend(_JSON_TYPES[part.strip().split("[")[0]])
    return tuple(dict.fromkeys(out))


def _crs() -> Any:
    return param(None, "write the results in this CRS (EPSG:4326, a WKT or PROJ string; default: the raster's; for "
                       "a collection index: the scenes' common CRS, else EPSG:4326)", metavar="CRS")


def _write_empty() -> Any:
    return param(True, "write the output even when nothing is found", api="run", cli="")


def _nms_iou() -> Any:
    return param(DEFAULT_NMS_IOU, "boxes overlapping a better one by more than IOU are dropped", metavar="IOU")


def _overlap(default: float | None) -> Any:
    return param(default, "overlap between neighbouring tiles, 0 <= FRAC < 0.9", metavar="FRAC")


@dataclass
class RasterTask:
    """What every task over a raster (or its index) takes: the source, the output, the model, the tiling."""

    task: ClassVar[str] = ""
    #: the overlap of a live run when none is given (an index has its own)
    default_overlap: ClassVar[float] = DEFAULT_OVERLAP

    raster: str | None = param(None, "input raster (GeoTIFF, COG, VRT, any GDAL raster; or a scene index .parquet)",
                               api="source", cli="positional")
    index: str | None = param(None, "answer from this scene index (geoalign index; a .parquet file, or a collection "
                                    "folder): no image pass, only the text model; the raster may then be left out",
                              api="source", metavar="IDX")
    out: str | None = param(None, "the output file", api="run", required=True)
    overwrite: bool = param(False, "replace an existing output file", api="run")
    model: str | None = param(None, "zoo name, open_clip architecture, hf-hub:org/repo or checkpoint path (default: "
                                    "the bundled model; with an index: the model it was built with)",
                              api="predictor", cli="custom")
    device: str = param("auto", "where the model runs", api="predictor", cli="custom", choices=DEVICES)
    batch_size: int | None = param(None, f"tiles per model pass (default: {DEFAULT_BATCH_SIZE} on a CPU; on a GPU the "
                                         "largest power of two that fits a quarter of its free memory, up to 512)",
                                   api="predictor", metavar="N")
    workers: int | None = param(None, "reader processes decoding tiles, each with its own file handle "
                                      "(default: 1, a thread, on a CPU; on a GPU the cores available less one, up "
                                      "to 8)", api="predictor", metavar="N")
    threads: int | None = param(None, "torch compute threads (default: the cores available to this process -- its "
                                      "CPU affinity and cgroup quota, or OMP_NUM_THREADS -- divided among torchrun's "
                                      "local ranks; a single process without a quota leaves out the cores other "
                                      "programs kept busy while it started)", api="threads", cli="custom",
                                metavar="N")
    bands: list[int] | str | None = param(None, "1-based bands for R,G,B (one band or three), e.g. 4,3,2")
    tile_size: int | None = param(None, "tile side in raster pixels (default: the model's input size); tiles are "
                                        "resampled to it", metavar="PX")
    overlap: float | None = _overlap(None)
    bounds: list[float] | None = param(None, "only process this area, in the raster's CRS",
                                       metavar="MINX,MINY,MAXX,MAXY")
    allow_no_crs: bool = param(False, "accept a raster without a CRS (outputs are then in pixel coordinates)")
    metadata: dict | None = param(None, "what the client adds to the output's metadata", api="run", cli="")


@dataclass
class VectorInput:
    """Tasks that read a vector file (regions, a search zone, examples): its layer and buffer."""

    layer: str | int | None = param(None, "layer of a multi-layer vector file (name or 0-based index)")
    buffer: float | None = param(None, "buffer point and line features by DIST (units of the raster's CRS) to give "
                                       "them an area", metavar="DIST")


@dataclass
class TileClassifyParams(RasterTask):
    """Classify every tile of a raster against classes (zero-shot).

    Zero-shot classification of every tile: each class through remote-sensing prompt templates (averaged),
    against the classes and the built-in vocabulary. Writes GeoPackage layer 'tiles' (label, score = the
    estimated probability that the label is right, top_k = JSON) in the raster's CRS; 'none of these' where no
    class is probably right.
    """

    task: ClassVar[str] = "tile_classify"
    default_overlap: ClassVar[float] = DEFAULT_TILE_OVERLAP

    classes: list[str] | None = param(None, "the classes (default: the built-in remote-sensing scene vocabulary)",
                                      cli="custom")
    top_k: int = param(DEFAULT_TOP_K, "classes kept per tile in top_k", metavar="K")
    crs: str | None = _crs()


@dataclass
class FindParams(VectorInput, RasterTask):
    """Find objects matching phrases (boxes with scores).

    Find objects by text: candidate boxes from each phrase's dense similarity map and multi-scale windows (or
    the --regions features), scored by RoIAlign region embeddings from one backbone pass per tile against the
    phrase's competitors (the built-in vocabulary and background phrases). The score is the estimated
    probability that the box shows the phrase, calibrated on held-out labelled data (the model's card; `geoalign
    models info NAME`); a model without a calibration writes 'standout' instead. NMS across tile borders,
    --min-score, top --max-results per phrase. Writes GeoPackage layer 'matches' (phrase, score, rank).
    """

    task: ClassVar[str] = "find"

    phrases: list[str] | None = param(None, 'what to look for, e.g. "red car"', cli="positional", required=True)
    within: str | None = param(None, "vector file of polygons (any OGR format, any CRS): search inside them only (a "
                                     "box is kept when its centre lies in one)", cli="custom")
    regions: str | None = param(None, "vector file: its features' boxes are the candidates (each scored as a whole)",
                                cli="custom")
    min_score: float = param(DEFAULT_MIN_SCORE, "drop matches whose score (the estimated probability that the box "
                                                "shows the phrase) is below S, 0..1 (0.5: probably right)",
                             metavar="S")
    max_results: int = param(DEFAULT_MAX_RESULTS, "best N matches per phrase", metavar="N")
    object_size: float | list[float] | None = param(
        None, "the objects' typical size in metres (a side, or width,height): windows of that size join the "
              "candidates and boxes far from it (area outside 1/2.5 .. 2.5x) are dropped; without it, the sizes a "
              "fine-tuned model or the model card knows for the class a phrase names apply ('red car' -> car)",
        metavar="W[,H]")
    nms_iou: float = _nms_iou()
    refine: bool | None = param(None, "look at the best boxes of each phrase again at twice the zoom (the best "
                                      f"max results + 20, at most {REFINE_MAX_BOXES} per phrase) and move each "
                                      "when a better placed box scores at least as high (default: on for a raster, "
                                      "off for an index: it re-reads the raster and runs the image model)",
                                cli="custom")
    exact: bool | None = param(None, "with a collection index: scan every stored patch even when it has an ANN "
                                     "index (default: the ANN search when it has one and is large)")
    crs: str | None = _crs()
    write_empty: bool = _write_empty()


@dataclass
class MatchRegionsParams(VectorInput, RasterTask):
    """Score every feature of a vector file against phrases.

    Score the bounding box of every input feature (any OGR format and CRS, reprojected to the raster's) against
    every phrase: RoIAlign region embeddings against the phrases, generic background phrases and the built-in
    vocabulary; score = the estimated probability that the region shows the phrase (the model card's
    calibration). Writes GeoPackage layer 'regions': the features with best_phrase, score and one score column
    per phrase. Features outside the raster are reported and skipped.
    """

    task: ClassVar[str] = "match_regions"

    regions: str | None = param(None, "vector file with the regions (any OGR format, any CRS)", cli="positional",
                                required=True)
    phrases: list[str] | None = param(None, "phrases to score", cli="positional", required=True)
    write_empty: bool = _write_empty()


@dataclass
class HeatmapParams(RasterTask):
    """Similarity of every pixel to a phrase, as a float32 GeoTIFF.

    Dense patch-phrase cosine similarity (the model's dense mode), resampled onto the raster's grid (or a grid
    coarser by --scale) and averaged where tiles overlap; float32 Cloud-Optimised GeoTIFF with the raster's CRS,
    NaN nodata where the input has no data. --values score maps the estimated probability that a one-patch
    region shows the phrase.
    """

    task: ClassVar[str] = "heatmap"

    phrase: str | None = param(None, 'what to map, e.g. "red car"', cli="positional", required=True)
    scale: int | None = param(None, "raster pixels per output cell (default: 1, coarser only for huge rasters)",
                              metavar="N")
    values: str = param("similarity", "similarity: cosine similarity of each patch with the phrase (-1..1); score: "
                                      "the estimated probability that a one-patch region shows the phrase, as find "
                                      "scores boxes", choices=HEATMAP_VALUES)


@dataclass
class SimilarParams(VectorInput, RasterTask):
    """Find more regions like an example box (query by example), from a raster or its index.

    Query by example: the example regions' embedding (RoIAlign, averaged over the examples) is the query;
    candidate boxes of about the examples' size are built and pooled as find builds them, scored by their
    similarity with the query: score = the estimated probability that a region is the same kind of thing as the
    examples. With --phrase the query becomes normalize(examples + W * phrase), e.g. an example car and --phrase
    'red car'. The example itself is a candidate (column 'example'). Writes GeoPackage layer 'similar' (score,
    rank, example).
    """

    task: ClassVar[str] = "similar"

    examples: list[list[float]] | list[float] | str | None = param(
        None, "the example regions: boxes [minx, miny, maxx, maxy] in the raster's CRS, or a vector file (any OGR "
              "format, any CRS)", cli="custom", required=True)
    phrase: str | None = param(None, 'steer the query with text, e.g. "red car"')
    text_weight: float = param(DEFAULT_TEXT_WEIGHT, "weight of the phrase against the examples", metavar="W")
    min_score: float = param(DEFAULT_SIMILAR_MIN_SCORE, "drop regions whose score (the estimated probability that "
                                                        "the region is the same kind of thing as the examples; an "
                                                        "uncalibrated model: the cosine similarity) is below S",
                             metavar="S")
    max_results: int = param(DEFAULT_MAX_RESULTS, "best N regions", metavar="N")
    nms_iou: float = _nms_iou()
    write_empty: bool = _write_empty()


@dataclass
class IndexParams(RasterTask):
    """Embed a raster once into a scene index, for instant find / heatmap / similar.

    One image pass over the raster's tile grid, keeping every tile's global embedding and patch grid (int8) in a
    GeoParquet file (one row per tile) and a .patches.npy file beside it. Afterwards `geoalign
    find|heatmap|tile-classify|match-regions|similar --index FILE` answer with the text model only. An
    interrupted build (Ctrl-C, a crash) resumes when the same command is run again.
    """

    task: ClassVar[str] = "index"

    raster: str | None = param(None, "the raster to index", api="source", cli="custom", required=True)
    index: str | None = param(None, "(an index is what this task writes)", api="", cli="", protocol=False)
    overlap: float | None = _overlap(DEFAULT_OVERLAP)
    metadata: dict | None = param(None, "(an index keeps its own metadata)", api="", cli="", protocol=False)


#: every task, by its name in the engine protocol (the command line writes ``_`` as ``-``)
TASKS: dict[str, type[RasterTask]] = {
    cls.task: cls for cls in (TileClassifyParams, FindParams, MatchRegionsParams, HeatmapParams, SimilarParams,
                              IndexParams)
}


def fields_of(task: str, *, protocol: bool | None = None, api: str | None = None,
              cli: str | None = None) -> dict[str, dataclasses.Field]:
    """The fields of ``task`` (name -> field), optionally only those the protocol accepts, with this
    API place or this command-line form."""
    out = {}
    for f in dataclasses.fields(TASKS[task]):
        m = f.metadata
        if protocol is not None and m["protocol"] != protocol:
            continue
        if (api is not None and m["api"] != api) or (cli is not None and m["cli"] != cli):
            continue
        out[f.name] = f
    return out


def request_types(task: str) -> dict[str, tuple[tuple[type, ...], bool]]:
    """What an engine request of ``task`` takes: parameter -> (JSON types, required)."""
    return {name: (json_types(f), bool(f.metadata["required"])) for name, f in fields_of(task, protocol=True).items()}
