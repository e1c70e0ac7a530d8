"""Each task's one parameter set (geoalign_core.params) against the places that take it: the Python
API, the ``geoalign`` command, the engine protocol and the QGIS plugin. A parameter one of them
gains or loses, and the others lack, fails here."""

from __future__ import annotations

import inspect
import sys

import pytest

from geoalign_core import params as P
from geoalign_core.cli import build_parser
from geoalign_core.engine import protocol
from geoalign_core.index.build import build_index
from geoalign_core.inference import classify, find, heatmap, regions, runs, similar
from geoalign_core.inference.predictor import Predictor

TASK_FUNCTIONS = {"tile_classify": classify.tile_classify, "find": find.find, "match_regions": regions.match_regions,
                  "heatmap": heatmap.heatmap, "similar": similar.similar, "index": build_index}
#: what every task function takes besides its parameters: the encoder, the source and the callbacks
NOT_PARAMETERS = {"enc", "raster", "progress", "cancel", "stage"}
#: run-level parameters that a task function takes too, under its own name
RUN_LEVEL_IN_TASK = {"heatmap": {"out_path", "overwrite", "metadata"}, "index": {"out", "overwrite"}}
#: build_index's own: a collection build names each scene's files (not a parameter of the task)
INTERNAL = {"index": {"patches", "work", "scene"}}
#: what the command line takes besides a task's parameters: presentation, and the forms of a custom parameter
CLI_ONLY = {"help", "quiet", "func", "classes_file", "box"}
#: ``geoalign index`` builds collections too: its scenes' sources, sharding and the ANN index (no engine request)
INDEX_CLI_ONLY = {"rasters", "from_list", "stac", "asset", "collection", "bbox", "datetime", "max_items", "shard",
                  "ann", "info"}
#: the command-line dests of a custom parameter
CUSTOM_DESTS = {"classes": {"classes", "classes_file"}, "examples": {"box", "examples"}, "raster": {"rasters"}}


def _default(sig: inspect.Signature, name: str) -> object:
    return sig.parameters[name].default


@pytest.mark.parametrize("task", sorted(P.TASKS))
def test_the_api_takes_each_parameter_with_the_same_default(task):
    fn = inspect.signature(TASK_FUNCTIONS[task])
    for name, f in P.fields_of(task, api="task").items():
        assert name in fn.parameters, f"{TASK_FUNCTIONS[task].__name__} lacks {name}"
        d = _default(fn, name)
        assert d == f.default or (d is inspect.Parameter.empty and f.metadata["required"]), (task, name, d)
    extra = set(fn.parameters) - NOT_PARAMETERS - set(P.fields_of(task, api="task")) \
        - RUN_LEVEL_IN_TASK.get(task, set()) - INTERNAL.get(task, set())
    assert not extra, f"{TASK_FUNCTIONS[task].__name__} takes {extra}, which {P.TASKS[task].__name__} lacks"
    run = inspect.signature(getattr(runs, task))
    for name, f in P.fields_of(task, api="run").items():
        assert name in run.parameters, f"runs.{task} lacks {name}"
        assert _default(run, name) in (f.default, inspect.Parameter.empty), (task, name)
    predictor = inspect.signature(Predictor.__init__)
    for name, f in P.fields_of(task, api="predictor").items():
        # model None: the index's model, else the default the Predictor itself has
        assert name in predictor.parameters and (f.default is None or _default(predictor, name) == f.default)


def _subparser(task: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[task.replace("_", "-")]


@pytest.mark.parametrize("task", sorted(P.TASKS))
def test_the_command_line_takes_each_parameter(task):
    parser = _subparser(task)
    dests = {a.dest for a in parser._actions} | {"func"}
    fields = P.fields_of(task)
    for name, f in fields.items():
        form = f.metadata["cli"]
        if form in ("option", "positional"):
            assert name in dests, f"geoalign {task} lacks {name}"
        elif form == "custom":
            assert CUSTOM_DESTS.get(name, {name}) & dests, f"geoalign {task} lacks {name}"
        else:
            assert name not in dests, f"geoalign {task} takes {name}, which its parameter set keeps off the CLI"
    custom = {d for n in fields for d in CUSTOM_DESTS.get(n, ())}
    extra = dests - set(fields) - CLI_ONLY - custom - (INDEX_CLI_ONLY if task == "index" else set())
    assert not extra, f"geoalign {task} takes {extra}, which {P.TASKS[task].__name__} lacks"
    # the defaults the command line shows are the parameter set's
    for action in parser._actions:
        if action.dest in fields and fields[action.dest].metadata["cli"] == "option":
            assert action.default == fields[action.dest].default, (task, action.dest)


@pytest.mark.parametrize("task", sorted(P.TASKS))
def test_the_protocol_takes_each_parameter(task):
    assert set(protocol.PARAMS[task]) == set(P.fields_of(task, protocol=True))
    for name, (types, required) in protocol.PARAMS[task].items():
        f = P.fields_of(task)[name]
        assert required == f.metadata["required"]
        assert f.default is None or isinstance(f.default, types), (task, name)  # the default is a valid value


def test_find_takes_object_size_and_a_layer_everywhere():
    """The drifts this set replaced: object_size refused by the protocol, regions_layer / within_layer
    in the engine against --layer on the command line."""
    assert protocol.PARAMS["find"]["object_size"][0] == (int, float, list, type(None))
    protocol.check_params("find", {"raster": "/a.tif", "phrases": ["car"], "out": "/o.gpkg", "object_size": [3, 2],
                                   "layer": 0, "crs": "EPSG:4326"})
    assert {"object_size", "layer"} <= {a.dest for a in _subparser("find")._actions}
    assert {"object_size", "layer"} <= set(inspect.signature(find.find).parameters)


def test_the_plugin_takes_the_same_module_and_refuses_what_the_engine_would(tmp_path):
    """The plugin imports geoalign_core's protocol module (its zip ships the same files), and its client
    refuses a request with a parameter outside the task's set before any engine starts."""
    from geoalign_qgis import protocol as plugin
    from geoalign_qgis.engine import EngineClient, EngineError

    assert plugin.protocol is protocol and plugin.PARAMS is protocol.PARAMS
    client = EngineClient(sys.executable, tmp_path / "engine.log")
    with pytest.raises(EngineError, match="find does not take regions_layer"):
        client.request("find", {"raster": "/a.tif", "phrases": ["car"], "out": "/o.gpkg", "regions_layer": 0})
    with pytest.raises(EngineError, match="heatmap needs phrase"):
        client.request("heatmap", {"raster": "/a.tif", "out": "/h.tif"})
    assert client.pid is None  # nothing was started
