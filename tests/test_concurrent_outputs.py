"""Several runs writing the same output at once: never two successes with
one result lost; the losers exit 2 with one ``error:`` line and leave nothing behind.

The runs are real ``geoalign`` CLI runs in forked processes (the model stack is imported once, in
this process, so each run costs its work only), released together by a barrier: they all pass
the early "output exists?" check before any of them writes, so the race is on the final step.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest
import rasterio
from timeouts import scaled

from geoalign_core.geo import read_metadata
from geoalign_core.outputs import OutputBusy, lock_path, output_lock, publish

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork")


def _child(args: list[str], barrier, log: Path, sync: bool) -> None:  # pragma: no cover - forked process
    code = 3
    try:
        if sync:  # every run waits for the others after each output check: all pass it before any writes
            from geoalign_core import outputs
            from geoalign_core.geo import writers

            check = outputs.check_output

            def check_then_wait(*a, **k):
                result = check(*a, **k)
                barrier.wait(timeout=scaled(60))
                return result

            # the commands' early check (outputs.check_output) and the writers' own one (writers.check_output)
            outputs.check_output = writers.check_output = check_then_wait
        import torch

        torch.set_num_threads(1)
        out = open(log.with_suffix(".out"), "w")
        err = open(log.with_suffix(".err"), "w")
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout, sys.stderr = out, err
        from geoalign_core.cli import main

        barrier.wait(timeout=scaled(60))
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # a bug: its traceback is what the test shows
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def race(jobs: list[list[str]], logs: Path, sync: bool = False) -> list[tuple[int, str, str]]:
    """Run the CLI argument lists ``jobs`` at the same moment; ``(rc, stdout, stderr)`` of each.

    ``sync``: the runs also wait for each other right after each of their output checks
    (:func:`geoalign_core.geo.writers.check_output`, the "exists?" step before the write), so that
    every run has seen the output missing before any of them writes it: the race that lost a result.
    """
    logs.mkdir(exist_ok=True)
    # spawned, not forked: a fork of a process whose torch has run OpenMP threads can hang in the child's
    # first parallel op (the suite's earlier tests run torch in this process)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    procs = [ctx.Process(target=_child, args=(args, barrier, logs / f"run{i}", sync))
             for i, args in enumerate(jobs)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=scaled(300))
    results = []
    for i, p in enumerate(procs):
        assert p.exitcode is not None, "a run did not finish"
        results.append((p.exitcode, (logs / f"run{i}.out").read_text(), (logs / f"run{i}.err").read_text()))
    return results


def one_winner(results: list[tuple[int, str, str]]) -> int:
    """Exactly one run succeeded; every other one said why in one line with exit 2. The winner's index."""
    winners = [i for i, (rc, _, _) in enumerate(results) if rc == 0]
    assert len(winners) == 1, results
    for i, (rc, out, err) in enumerate(results):
        if i == winners[0]:
            continue
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (rc, out, err)
        assert "already exists" in lines[0] or "another GeoAlign run" in lines[0], lines[0]
        assert "Traceback" not in err
    return winners[0]


def no_leftovers(folder: Path, expected: set[str]) -> None:
    """Only the outputs: no temporary file, lock file or unfinished build."""
    assert {p.name for p in folder.iterdir()} == expected


# ------------------------------------------------------------------ the primitives
def test_publish_creates_only_when_missing(tmp_path):
    a, b, target = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    a.write_text("first")
    b.write_text("second")
    publish(a, target)
    assert target.read_text() == "first" and not a.exists()
    with pytest.raises(Exception, match="already exists"):
        publish(b, target)
    assert target.read_text() == "first" and b.read_text() == "second"
    publish(b, target, overwrite=True)
    assert target.read_text() == "second"


def test_output_lock_is_exclusive_and_removed(tmp_path):
    target = tmp_path / "x.gpkg"
    with output_lock(target):
        assert lock_path(target).exists()
        with output_lock(target):  # re-entrant in this thread
            pass
        errors = []

        def other():
            try:
                with output_lock(target):
                    pass
            except OutputBusy as exc:
                errors.append(str(exc))

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and "another GeoAlign run is writing" in errors[0] and str(os.getpid()) in errors[0]
    assert not lock_path(target).exists()
    with output_lock(target):  # free again
        pass


# ------------------------------------------------------------------ the commands
def _whole_find(out, phrase: str) -> None:
    assert read_metadata(out, "matches")["phrases"] == [phrase]  # the winner's result, whole


def _whole_heatmap(out, phrase: str) -> None:
    with rasterio.open(out) as ds:
        assert ds.descriptions[0] == phrase
        assert np.isfinite(ds.read(1)).any()


@pytest.mark.parametrize(("command", "name", "whole"), [("find", "same.gpkg", _whole_find),
                                                        ("heatmap", "same.tif", _whole_heatmap)])
def test_runs_racing_for_one_output(tiny_ckpt, textured, tmp_path, command, name, whole):
    """Three runs of one command with three phrases write the same new output at once: one wins, whole."""
    out = tmp_path / "out" / name
    out.parent.mkdir()
    phrases = ["red car", "swimming pool", "green tree"]
    results = race([[command, textured, p, "--model", tiny_ckpt, "--out", out, "--quiet"] for p in phrases],
                   tmp_path / "logs", sync=True)
    won = one_winner(results)
    whole(out, phrases[won])
    no_leftovers(out.parent, {name})


def test_index_builds_racing_for_one_output(tiny_ckpt, textured, tmp_path):
    from geoalign_core.index.store import check_patches
    from geoalign_core.index.store import read_metadata as index_metadata

    out = tmp_path / "out" / "same.parquet"
    out.parent.mkdir()
    results = race([["index", textured, "--model", tiny_ckpt, "--out", out, "--tile-size", ts, "--quiet"]
                    for ts in ("64", "96", "128")], tmp_path / "logs")
    won = one_winner(results)
    emb, meta = index_metadata(out)
    check_patches(out, emb)  # the index and its patch file belong together
    assert meta["tiling"]["tile_size"] == (64, 96, 128)[won]
    no_leftovers(out.parent, {"same.parquet", "same.parquet.patches.npy", "same.parquet.patches.background.npz",
                              "same.parquet.stac"})


def test_prepare_runs_racing_for_one_folder(scene_1002, tmp_path):
    tif, gpkg = scene_1002
    out = tmp_path / "ds"
    results = race([["prepare", tif, gpkg, "--class-field", "class", "--out", out, "--chip-size", cs, "--quiet"]
                    for cs in ("128", "160", "192")], tmp_path / "logs")
    won = one_winner(results)
    import json

    meta = json.loads((out / "dataset.json").read_text())
    assert meta["parameters"]["chip_size"] == (128, 160, 192)[won]
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == meta["summary"]["chips_written"]
    assert {p.name for p in (out / "chips").iterdir()} == {Path(json.loads(s)["image"]).name for s in lines}
    no_leftovers(out, {"dataset.json", "samples.jsonl", "chips"})
    no_leftovers(tmp_path, {"ds", "logs"})
