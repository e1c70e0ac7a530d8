"""The engine protocol: JSON lines between a client (the QGIS plugin) and the engine process.

Standard library only, and of this package only :mod:`geoalign_core.params` and
:mod:`geoalign_core.defaults`: the QGIS plugin's zip ships these three modules
(``geoalign_qgis/package.py``), and the plugin takes :data:`PROTOCOL_VERSION`, the defaults,
:func:`check_params` and :func:`remove_outputs` from them. The full description, with examples,
is ``docs/engine_protocol.md``; the client side lives in ``geoalign_qgis/engine.py``.

Requests (client -> engine, one JSON object per line on the engine's stdin)::

    {"id": "r1", "type": "find", "params": {...}}

Events (engine -> client, one JSON object per line on the engine's stdout)::

    {"event": "hello", "protocol": 1, "version": "0.1.0", "pid": 123, ...}     # once, at start
    {"id": "r1", "event": "progress", "stage": "scanning tiles", "done": 3, "total": 40}
    {"id": "r1", "event": "result", "result": {...}}                           # ends r1
    {"id": "r1", "event": "error", "message": "one line", "kind": "input", "code": null}  # ends r1
    {"id": "r1", "event": "cancelled"}                                         # ends r1
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_BATCH_SIZE, DEFAULT_MIN_SCORE, DEFAULT_MODEL, MAX_PHRASES
from ..params import TASKS, request_types

PROTOCOL_VERSION = 2  # 2: scene indexes (index, similar, index_info; raster or index)

#: requests answered at once by the reader (never wait behind a running job)
CONTROL_TYPES = ("hello", "cancel", "shutdown")
#: quick requests run beside the jobs (they import the model stack but run no model)
SIDE_TYPES = ("list_models", "check", "index_info")
#: model work: one at a time, in arrival order, cancellable
JOB_TYPES = ("tile_classify", "find", "match_regions", "heatmap", "similar", "index", "finetune")
REQUEST_TYPES = CONTROL_TYPES + SIDE_TYPES + JOB_TYPES

#: events that end a request
TERMINAL_EVENTS = ("result", "error", "cancelled")

#: error kinds: input (the user can fix it), model (a model cannot be loaded or used),
#: internal (a bug: the event carries a traceback in ``detail``)
ERROR_KINDS = ("input", "model", "internal")

#: parameter -> (accepted JSON types, required), per request type; a task's from its parameter set
#: (:mod:`geoalign_core.params`)
PARAMS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {},
    "shutdown": {},
    "cancel": {"target": ((str, int), True)},
    "list_models": {"folders": ((list, type(None)), False)},  # folders of the user's own (fine-tuned) models
    "check": {"modules": ((list, type(None)), False)},
    "index_info": {"index": ((str,), True)},
    **{task: request_types(task) for task in TASKS},
    # geoalign finetune in a child process (geoalign_core/engine/finetune_job.py)
    "finetune": {
        "rasters": ((list,), True),
        "labels": ((list,), True),
        "class_field": ((str,), True),
        "out": ((str,), True),  # the new model's folder
        "model": ((str, type(None)), False),  # the model to start from
        "name": ((str, type(None)), False),
        "steps": ((int, type(None)), False),
        "batch_size": ((int, type(None)), False),
        "device": ((str,), False),
        "val_fraction": ((int, float), False),
        "bounds": ((list, type(None)), False),
        "layer": ((str, type(None)), False),
        "overwrite": ((bool,), False),
        "log": ((str, type(None)), False),
        "threads": ((int, type(None)), False),
    },
}


#: parameters that name a file the engine writes: absolute paths only (a relative one would land
#: in whatever folder the engine process happened to start in)
ABSOLUTE_PATHS = ("out",)


class BadRequest(ValueError):
    """A request the engine cannot read; the message is one line for the client."""

    #: the id of the request, when it could be read (the error event names it)
    request_id: str | int | None = None


def _type_names(types: tuple[type, ...]) -> str:
    names = {"str": "text", "int": "integer", "float": "number", "bool": "true/false", "list": "list",
             "dict": "object", "NoneType": "null"}
    return " or ".join(dict.fromkeys(names.get(t.__name__, t.__name__) for t in types))


def parse_request(line: str) -> tuple[str | int, str, dict[str, Any]]:
    """``(id, type, params)`` of one request line, or :class:`BadRequest`.

    A BadRequest raised after the id was read carries it in ``.request_id`` so the error
    can be addressed to the request.
    """
    try:
        msg = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"bad request: not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(msg, dict):
        raise BadRequest("bad request: a request is a JSON object with id, type and params")
    rid = msg.get("id")
    try:
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
            raise BadRequest("bad request: every request needs an id (text or integer)")
        rtype = msg.get("type")
        if rtype not in REQUEST_TYPES:
            raise BadRequest(f"bad request: unknown type {rtype!r}; expected one of {', '.join(REQUEST_TYPES)}")
        params = msg.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadRequest("bad request: params must be a JSON object")
        check_params(rtype, params)
    except BadRequest as exc:
        exc.request_id = rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None
        raise
    return rid, rtype, params


def check_params(rtype: str, params: Mapping[str, Any]) -> None:
    """Unknown, missing and mistyped parameters of a request, as one :class:`BadRequest`."""
    spec = PARAMS[rtype]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise BadRequest(f"bad request: {rtype} does not take {', '.join(unknown)}")
    if "index" in spec and "raster" in spec and params.get("raster") is None and params.get("index") is None:
        raise BadRequest(f"bad request: {rtype} needs raster or index")
    for name, (types, required) in spec.items():
        if name not in params:
            if required:
                raise BadRequest(f"bad request: {rtype} needs {name}")
            continue
        value = params[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            raise BadRequest(f"bad request: {rtype} {name} must be {_type_names(types)}, not {json.dumps(value)[:40]}")
        if _has_nul(value):  # no path or text can hold one (the OS refuses it in a path)
            raise BadRequest(f"bad request: {rtype} {name} contains a NUL character (\\u0000)")
        if name in ABSOLUTE_PATHS and not os.path.isabs(value):
            raise BadRequest(f"bad request: {rtype} {name} must be an absolute path (the engine never resolves "
                             f"a path against its own working folder); got {json.dumps(value)[:80]}")


def remove_outputs(paths: Iterable[str | os.PathLike]) -> None:
    """Delete outputs of a cancelled request (and the GDAL side-cars next to them): what the engine
    does after a cancel, and what the plugin does with its own temporary files."""
    for path in paths:
        for p in (str(path), *(str(path) + s for s in ("-journal", "-wal", "-shm", ".aux.xml", ".ovr"))):
            with contextlib.suppress(OSError):
                Path(p).unlink()


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def encode(message: Mapping[str, Any]) -> str:
    """One protocol line (no newline inside: JSON escapes them); NaN and infinities become null."""
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_finite(message), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)


__all__ = [
    "ABSOLUTE_PATHS",
    "BadRequest",
    "CONTROL_TYPES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MIN_SCORE",
    "DEFAULT_MODEL",
    "ERROR_KINDS",
    "JOB_TYPES",
    "MAX_PHRASES",
    "PARAMS",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "SIDE_TYPES",
    "TERMINAL_EVENTS",
    "check_params",
    "encode",
    "parse_request",
    "remove_outputs",
]
