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


def cancelled_error() -> Exception:
    from ..inference import Cancelled

    return Cancelled("cancelled")


def is_cancelled(exc: BaseException) -> bool:
    try:
        from ..inference import Cancelled
    except ImportError:  # the model stack itself is broken: not a cancel
        return False
    return isinstance(exc, Cancelled)


def remove_outputs(paths: list[str]) -> None:
    """Delete outputs of a cancelled request (and the GDAL side-cars next to them)."""
    for path in paths:
        for p in (path, *(path + s for s in ("-journal", "-wal", "-shm", ".aux.xml", ".ovr"))):
            with contextlib.suppress(OSError):
                Path(p).unlink()


# ---------------------------------------------------------------------------- requests
def _predictor(ctx: Context, params: dict) -> tuple[Any, bool]:
    from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MODEL

    model = params.get("model") or DEFAULT_MODEL
    device = params.get("device") or "auto"
    batch = int(params.get("batch_size") or DEFAULT_BATCH_SIZE)
    if batch < 1:
        from ..errors import InputError

        raise InputError(f"batch size must be at least 1; got {batch}", param="batch_size")
    cached = (model, device) in ctx.engine.predictors.loaded()
    if not cached:
        ctx.stage(f"loading model {model}")
    return ctx.engine.predictors.get(model, device, batch)


def _check_inputs(ctx: Context, params: dict) -> None:
    """What the CLI checks before it loads a model: the output, the raster, the regions file."""
    from ..errors import InputError
    from ..geo import RASTER_FORMATS, VECTOR_FORMATS, RasterSource, check_not_an_input, check_output

    ctx.stage("checking inputs")
    formats = RASTER_FORMATS if ctx.job.type == "heatmap" else VECTOR_FORMATS
    check_not_an_input(params["out"], params["raster"], params.get("regions"), params.get("within"))
    check_output(params["out"], bool(params.get("overwrite", False)), formats)
    with RasterSource(params["raster"], params.get("bands"), allow_no_crs=bool(params.get("allow_no_crs", False))):
        pass
    for key in ("regions", "within"):
        if params.get(key) and not Path(params[key]).exists():
            raise InputError(f"vector file not found: {params[key]}")


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
    res = runs.tile_classify(predictor, params["raster"], params.get("classes"), params["out"], **kw)
    return _result(res, loaded, predictor)


def find(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("regions", "regions_layer", "within", "within_layer", "buffer", "min_score", "max_results", "nms_iou",
                "refine", "write_empty"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.find(predictor, params["raster"], params["phrases"], params["out"], **kw)
    return _result(res, loaded, predictor)


def match_regions(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("write_empty", "layer", "buffer"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.match_regions(predictor, params["raster"], params["regions"], params["phrases"], params["out"], **kw)
    return _result(res, loaded, predictor)


def heatmap(ctx: Context, params: dict) -> dict:
    from ..inference import runs

    _check_inputs(ctx, params)
    predictor, loaded = _predictor(ctx, params)
    kw = _common(ctx, params)
    for key in ("scale", "values"):
        if params.get(key) is not None:
            kw[key] = params[key]
    res = runs.heatmap(predictor, params["raster"], params["phrase"], params["out"], **kw)
    return _result(res, loaded, predictor)


def list_models(ctx: Context, params: dict) -> dict:
    from .. import zoo

    models = []
    for name, entry in zoo.ZOO.items():
        if zoo.is_available(name):
            state = "available offline"
        elif entry.repo is None:
            state = "weights missing"
        else:
            state = "downloads on first use"
        models.append({"name": name, "arch": entry.arch, "available": zoo.is_available(name), "state": state,
                       "description": entry.description, "path": str(zoo.weights_path(entry))})
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
    "list_models": list_models,
    "check": check,
}

__all__ = ["HANDLERS", "STACK", "PredictorCache", "check_modules"]
