"""The engine protocol: JSON lines between a client (the QGIS plugin) and the engine process.

Standard library only. The full description, with examples, is ``docs/engine_protocol.md``;
the client side lives in ``geoalign_qgis/engine.py`` (which cannot import this package, so
it repeats :data:`PROTOCOL_VERSION`; a test checks that the two agree).

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

import json
import math
import os
from collections.abc import Mapping
from typing import Any

PROTOCOL_VERSION = 2  # 2: scene indexes (index, similar, index_info; raster or index)

#: requests answered at once by the reader (never wait behind a running job)
CONTROL_TYPES = ("hello", "cancel", "shutdown")
#: quick requests run beside the jobs (they import the model stack but run no model)
SIDE_TYPES = ("list_models", "check", "index_info")
#: model work: one at a time, in arrival order, cancellable
JOB_TYPES = ("tile_classify", "find", "match_regions", "heatmap", "similar", "index")
REQUEST_TYPES = CONTROL_TYPES + SIDE_TYPES + JOB_TYPES

#: events that end a request
TERMINAL_EVENTS = ("result", "error", "cancelled")

#: error kinds: input (the user can fix it), model (a model cannot be loaded or used),
#: internal (a bug: the event carries a traceback in ``detail``)
ERROR_KINDS = ("input", "model", "internal")

NUMBER = (int, float)
_NONE = type(None)

# parameter -> (accepted types, required)
_COMMON: dict[str, tuple[tuple[type, ...], bool]] = {
    "raster": ((str, _NONE), False),  # the raster, or ...
    "index": ((str, _NONE), False),  # ... its scene index (one of the two is needed)
    "out": ((str,), True),
    "overwrite": ((bool,), False),
    "model": ((str,), False),
    "device": ((str,), False),
    "batch_size": ((int,), False),
    "threads": ((int, _NONE), False),
    "bands": ((list, str, _NONE), False),
    "tile_size": ((int, _NONE), False),
    "overlap": (NUMBER, False),
    "bounds": ((list, _NONE), False),
    "allow_no_crs": ((bool,), False),
    "metadata": ((dict,), False),
}
PARAMS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "hello": {},
    "shutdown": {},
    "cancel": {"target": ((str, int), True)},
    "list_models": {},
    "check": {"modules": ((list, _NONE), False)},
    "index_info": {"index": ((str,), True)},
    "tile_classify": _COMMON | {"classes": ((list, _NONE), False), "top_k": ((int,), False)},
    "find": _COMMON | {
        "phrases": ((list,), True),
        "regions": ((str, _NONE), False),
        "layer": ((str, int, _NONE), False),
        "within": ((str, _NONE), False),
        "buffer": ((int, float, _NONE), False),
        "min_score": (NUMBER, False),
        "max_results": ((int,), False),
        "nms_iou": (NUMBER, False),
        "refine": ((bool,), False),
        "write_empty": ((bool,), False),
    },
    "match_regions": _COMMON | {
        "regions": ((str,), True),
        "layer": ((str, int, _NONE), False),
        "buffer": ((int, float, _NONE), False),
        "phrases": ((list,), True),
        "write_empty": ((bool,), False),
    },
    "heatmap": _COMMON | {
        "phrase": ((str,), True),
        "scale": ((int, _NONE), False),
        "values": ((str,), False),
    },
    "similar": _COMMON | {
        "examples": ((list, str), True),  # boxes [[minx, miny, maxx, maxy], ...] in the raster's CRS, or a file
        "layer": ((str, int, _NONE), False),
        "buffer": ((int, float, _NONE), False),
        "phrase": ((str, _NONE), False),
        "text_weight": (NUMBER, False),
        "min_score": (NUMBER, False),
        "max_results": ((int,), False),
        "nms_iou": (NUMBER, False),
        "write_empty": ((bool,), False),
    },
    "index": {k: v for k, v in _COMMON.items() if k != "index"} | {"raster": ((str,), True)},
}


#: parameters that name a file the engine writes: absolute paths only (a relative one would land
#: in whatever folder the engine process happened to start in)
ABSOLUTE_PATHS = ("out",)


class BadRequest(ValueError):
    """A request the engine cannot read; the message is one line for the client."""


def _type_names(types: tuple[type, ...]) -> str:
    names = {"str": "text", "int": "integer", "float": "number", "bool": "true/false", "list": "list",
             "dict": "object", "NoneType": "null"}
    return " or ".join(dict.fromkeys(names.get(t.__name__, t.__name__) for t in types))


def parse_request(line: str) -> tuple[str | int | None, str, dict[str, Any]]:
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
    "ERROR_KINDS",
    "JOB_TYPES",
    "PARAMS",
    "PROTOCOL_VERSION",
    "REQUEST_TYPES",
    "SIDE_TYPES",
    "TERMINAL_EVENTS",
    "check_params",
    "encode",
    "parse_request",
]
