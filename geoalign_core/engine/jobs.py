"""What the engine does for each request: the model requests are the CLI's runs
(:mod:`geoalign_core.inference.runs`) with the engine's progress, stage and cancel callbacks.

The model stack (torch, open_clip, rasterio, geopandas) is imported by the first request
that needs it, so the engine starts and says hello at once.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Context

#: what the engine needs to run models (import name -> distribution, for the check request)
STACK = ("torch", "torchvision", "open_clip", "numpy", "rasterio", "geopandas", "pyogrio", "shapely", "pyproj",
         "safetensors", "huggingface_hub")


# ---------------------------------------------------------------------------- models
class PredictorCache:
    """Keeps up to ``size`` Predictors loaded, keyed by (model, device); least recently used goes."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, device: str, batch_size: int) -> tuple[Any, bool]:
        """``(predictor, loaded now)``."""
        from ..inference import Predictor

        key = (model, device)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                predictor, loaded = self._items[key], False
            else:
                predictor, loaded = Predictor(model, device=device, batch_size=batch_size), True
                self._items[key] = predictor
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        predictor.batch_size = int(batch_size)
        return predictor, loaded

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)


class IndexCache:
    """Keeps up to ``size`` scene indexes open (phrases typed one after the other hit the same
    index), keyed by the files and their modification times, and by the predictor."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, predictor: Any, raster: str | None) -> Any:
        from ..index import open_index, patches_path

        p = Path(path)
        key = (str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0,
               patches_path(p).stat().st_mtime_ns if patches_path(p).exists() else 0, id(predictor))
        with self._lock:
            idx = self._items.get(key)
            if idx is None:
                idx = open_index(p, predictor)
                self._items[key] = idx
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        if raster is not None:
            idx.check_raster(raster)
        return idx


def remove_outputs(paths: list[str]) -> None:
    """Delete outputs of a cancelled request (and the GDAL side-cars next to them)."""
    for path in paths:
        for p in (path, *(path + s for s in ("-journal", "-wal", "-shm", ".aux.xml", ".ovr"))):
            with contextlib.suppress(OSError):
                Path(p).unlink()


# ---------------------------------------------------------------------------- requests
def _predictor(ctx: Context, params: dict) -> tuple[Any, bool]:
    from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL

    model = params.get("model")
    if not model and params.get("index"):  # an index is answered by the model it was built with
        from ..index import read_metadata

        model = read_metadata(params["index"])[1]["model"]["source"]
    model = model or DEFAULT_MODEL
    device = params.get("device") or "auto"
    batch = int(params.get("batch_size") or DEFAULT_BATCH_SIZE)
    if batch < 1:
        from ..errors import InputError

        raise InputError(f"batch size must be at least 1; got {batch}", param="batch_size")
    from ..threads import apply

    apply(params.get("threads"))  # torch's compute threads (None: the cores available)
    cached = (model, device) in ctx.engine.predictors.loaded()
    if not cached:
        ctx.stage(f"loading model {model}")
    return ctx.engine.predictors.get(model, device, batch)


def _check_inputs(ctx: Context, params: dict) -> None:
    """What the CLI checks before it loads a model: the output, the raster or index, the vector files."""
    from ..errors import InputError
    from ..geo import RASTER_FORMATS, VECTOR_FORMATS, RasterSource, check_not_an_input, check_output

    ctx.stage("checking inputs")
    if not params.get("raster") and not params.get("index"):
        raise InputError("give a raster or a scene index", param="raster")
    formats = RASTER_FORMATS if ctx.job.type == "heatmap" else VECTOR_FORMATS
    examples = params.get("examples") if isinstance(params.get("examples"), str) else None
    check_not_an_input(params["out"], params.get("raster"), params.get("index"), params.get("regions"),
                       params.get("within"), examples)
    check_output(params["out"], bool(params.get("overwrite", False)), formats)
    if params.get("index"):
        from ..index.store import check_patches, read_metadata

        emb, _ = read_metadata(params["index"])
        check_patches(Path(params["index"]), emb)
    if params.get("raster"):
        with RasterSource(params["raster"], params.get("bands"),
                          allow_no_crs=bool(params.get("allow_no_crs", False))):
            pass
    for key in ("regions", "within"):
        if params.get(key) and not Path(params[key]).exists():
            raise InputError(f"vector file not found: {params[key]}")
    if examples and not Path(examples).exists():
        raise InputError(f"vector file not found: {examples}")


def _source(ctx: Context, params: dict, predictor: Any) -> Any:
    """The raster path, or the (cached) open index checked against the model and the raster."""
    if not params.get("index"):
        return params["raster"]
    ctx.stage("opening the index")
    return ctx.engine.indexes.get(params["index"], predictor, params.get("raster"))


def _common(ctx: Context, params: dict) -> dict:
    """Keyword arguments every run takes: tiling, bands, bounds, callbacks, output handling."""
    kw: dict[str, Any] = {
        "progress": ctx.progress, "stage": ctx.stage, "cancel": ctx.cancelled,
        "overwrite": bool(params.get("overwrite", False)),
        "metadata": {"client": "engine", **(params.get("metadata") or {})},
    }
    for key in ("bands", "tile_size", "overlap", "bounds"):
        if params.get(key) is not None:
            kw[key] = params[key]
    kw["allow_no_crs"] = bool(params.get("allow_no_crs", False))
    if not Path(params["out"]).exists():  # a cancelled run removes only what it created
        ctx.outputs.append(params["out"])
    return kw


def _result(run: Any, loaded: bool, predictor: Any) -> dict:
    return run.to_dict() | {"model_loaded": loaded, "model": predictor.model_source, "device": str(predictor.device)}


def tile_classify(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    if params.get("top_k") is not None:
        kw["top_k"] = params["top_k"]
    res = runs.tile_classify(predictor, _source(ctx, params, predictor), params.get("classes"), params["out"], **kw)
    return _result(res, loaded, predictor)


def find(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("regions", "layer", "within", "buffer", "min_score", "max_results", "nms_iou",
                "refine", "write_empty", "object_size"):
        if params.get(key) is not None:
            kw[key] = params[key]
    if params.get("index") and params.get("refine") is None:
        kw["refine"] = False  # from an index: no image pass unless asked for
    res = runs.find(predictor, _source(ctx, params, predictor), params["phrases"], params["out"], **kw)
    return _result(res, loaded, predictor)


def match_regions(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("write_empty", "layer", "buffer"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.match_regions(predictor, _source(ctx, params, predictor), params["regions"], params["phrases"],
                             params["out"], **kw)
    return _result(res, loaded, predictor)


def heatmap(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("scale", "values"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.heatmap(predictor, _source(ctx, params, predictor), params["phrase"], params["out"], **kw)
    return _result(res, loaded, predictor)


def similar(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("layer", "buffer", "phrase", "text_weight", "min_score", "max_results", "nms_iou", "write_empty"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.similar(predictor, _source(ctx, params, predictor), params["examples"], params["out"], **kw)
    return _result(res, loaded, predictor)


def index(ctx: Context, params: dict) -> dict:
    """Build a scene index. A cancelled build keeps its finished parts: the same request resumes it."""
    from ..errors import InputError
    from ..geo import RasterSource, check_not_an_input, check_output
    from ..index.build import INDEX_FORMATS
    from ..inference import runs

    ctx.stage("checking inputs")
    check_not_an_input(params["out"], params["raster"])
    check_output(params["out"], bool(params.get("overwrite", False)), INDEX_FORMATS)
    with RasterSource(params["raster"], params.get("bands"), allow_no_crs=bool(params.get("allow_no_crs", False))):
        pass
    if not str(params["out"]).lower().endswith(".parquet"):
        raise InputError(f"an index is a .parquet file; got {params['out']}", param="out")
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    kw.pop("metadata")
    res = runs.index(predictor, params["raster"], params["out"], **kw)
    return _result(res, loaded, predictor)


def index_info(ctx: Context, params: dict) -> dict:
    """What an index holds, and whether its raster is still there and unchanged (no model loaded)."""
    from ..errors import IndexMismatch
    from ..index import SceneIndex

    idx = SceneIndex.open(params["index"], check_raster=False)
    info = idx.info()
    try:
        idx.check_raster()
        info["raster_state"] = "ok" if Path(idx.raster_path).exists() else "missing"
    except IndexMismatch as exc:
        info["raster_state"] = "changed"
        info["raster_message"] = str(exc)
    return info


def list_models(ctx: Context, params: dict) -> dict:
    from .. import zoo
    from ..card import card_line, load_card

    models = []
    for name, entry in zoo.ZOO.items():
        if zoo.is_available(name):
            state = "available offline"
        elif entry.repo is None:
            state = "weights missing"
        else:
            state = "downloads on first use"
        card = load_card(zoo.weights_path(entry))
        models.append({"name": name, "arch": entry.arch, "available": zoo.is_available(name), "state": state,
                       "description": entry.description, "path": str(zoo.weights_path(entry)),
                       "domain": card_line(card, name),
                       "calibrated": bool(card is not None and card.calibrated)})
    return {"models": models, "default": zoo.DEFAULT_MODEL, "cache": str(zoo.cache_dir())}


def check(ctx: Context, params: dict) -> dict:
    """Import the model stack (or ``modules``) and report versions, CUDA and what is missing."""
    return check_modules(params.get("modules") or STACK)


def check_modules(modules: list[str] | tuple[str, ...]) -> dict:
    import sys

    versions: dict[str, str] = {}
    missing: list[dict[str, str]] = []
    for name in modules:
        try:
            mod = importlib.import_module(str(name))
        except Exception as exc:  # ImportError, or a broken binary (OSError, RuntimeError)
            missing.append({"module": str(name), "error": " ".join(f"{type(exc).__name__}: {exc}".split())})
            continue
        versions[str(name)] = str(getattr(mod, "__version__", "") or "")
    out: dict[str, Any] = {"ok": not missing, "versions": versions, "missing": missing,
                           "python": sys.executable, "cuda": False, "devices": []}
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            out["cuda"] = bool(torch.cuda.is_available())
            out["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            out["torch_cuda"] = torch.version.cuda
    rasterio = sys.modules.get("rasterio")
    if rasterio is not None:
        out["gdal"] = getattr(rasterio, "__gdal_version__", "")
    return out


HANDLERS: dict[str, Callable[[Context, dict], dict]] = {
    "tile_classify": tile_classify,
    "find": find,
    "match_regions": match_regions,
    "heatmap": heatmap,
    "similar": similar,
    "index": index,
    "index_info": index_info,
    "list_models": list_models,
    "check": check,
}

__all__ = ["HANDLERS", "STACK", "PredictorCache", "check_modules"]
