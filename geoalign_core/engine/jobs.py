"""What the engine does for each request: the model requests are the CLI's runs
(:mod:`geoalign_core.inference.runs`) with the engine's progress, stage and cancel callbacks.

The model stack (torch, open_clip, rasterio, geopandas) is imported by the first request
that needs it, so the engine starts and says hello at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..defaults import DEFAULT_MODEL
from ..params import TASKS, RasterTask

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

    def get(self, model: str, device: str, batch_size: int | None, workers: int | None = None
            ) -> tuple[Any, bool]:
        """``(predictor, loaded now)``; ``batch_size`` / ``workers`` None: chosen for the device."""
        from ..inference import Predictor

        key = (model, device)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                predictor, loaded = self._items[key], False
            else:
                predictor, loaded = Predictor(model, device=device, batch_size=batch_size, workers=workers), True
                self._items[key] = predictor
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        if batch_size is not None:
            predictor.batch_size = int(batch_size)
        predictor.workers = workers
        return predictor, loaded

    def loaded(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._items)


class IndexCache:
    """Keeps up to ``size`` scene indexes (files or collection folders) open -- phrases typed one after
    the other hit the same index --, keyed by the files and their modification times, and by the predictor."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, predictor: Any, check_raster: bool = True) -> Any:
        from ..index import open_index, patches_path

        p = Path(path)
        key = (str(p.resolve()), p.stat().st_mtime_ns if p.exists() else 0,
               patches_path(p).stat().st_mtime_ns if patches_path(p).exists() else 0, id(predictor))
        with self._lock:
            idx = self._items.get(key)
            if idx is None:
                idx = open_index(p, predictor, check_raster=check_raster)
                self._items[key] = idx
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
            else:
                self._items.move_to_end(key)
        return idx


# ---------------------------------------------------------------------------- requests
def _predictor(ctx: Context, p: RasterTask) -> tuple[Any, bool]:
    """The (cached) predictor of a task: its model, else the index's, else the default."""
    from ..index.opening import index_model
    from ..threads import apply

    model = p.model or (index_model(p.index) if p.index else None) or DEFAULT_MODEL
    apply(p.threads)  # torch's compute threads (None: the cores available)
    if (model, p.device) not in ctx.engine.predictors.loaded():
        ctx.stage(f"loading model {model}")
    return ctx.engine.predictors.get(model, p.device, p.batch_size, p.workers)


def run_task(ctx: Context, params: dict) -> dict:
    """A task request: the CLI's one input check, then its run (:func:`geoalign_core.inference.runs.run_task`);
    an index request cancelled keeps its finished parts: the same request resumes it."""
    from ..checks import check_task
    from ..inference import runs

    ctx.stage("checking inputs")
    p = check_task(TASKS[ctx.job.type](**params))
    if p.task != "index":
        p = dataclasses.replace(p, metadata={"client": "engine", **(p.metadata or {})})
    predictor, loaded = _predictor(ctx, p)
    if not Path(str(p.out)).exists():  # a cancelled run removes only what it created
        ctx.outputs.append(str(p.out))
    if p.index:
        ctx.stage("opening the index")
    source = runs.source_for(p, predictor, ctx.engine.indexes.get)
    res = runs.run_task(p, predictor, source, progress=ctx.progress, stage=ctx.stage, cancel=ctx.cancelled)
    return res.to_dict() | {"model_loaded": loaded, "model": predictor.model_source, "device": str(predictor.device)}


def index_info(ctx: Context, params: dict) -> dict:
    """What an index (a file or a collection folder) holds, and for one raster's index whether the raster is
    still there and unchanged (no model loaded)."""
    from ..errors import IndexMismatch
    from ..index import open_index

    idx = open_index(params["index"], check_raster=False)
    info = idx.info()
    if not hasattr(idx, "raster_path"):  # a collection: its scenes are checked when each is opened
        return info
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
    if params.get("folders"):  # the user's own models (fine-tuned from the map), newest first
        from .finetune_job import local_models

        models = local_models([str(f) for f in params["folders"]]) + models
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


def finetune(ctx: Context, params: dict) -> dict:
    from .finetune_job import finetune as run

    return run(ctx, params)


HANDLERS: dict[str, Callable[[Context, dict], dict]] = {
    "finetune": finetune,
    **{task: run_task for task in TASKS},
    "index_info": index_info,
    "list_models": list_models,
    "check": check,
}

__all__ = ["HANDLERS", "STACK", "PredictorCache", "check_modules"]
