"""Start-up: the parser, --help and refused inputs load none of the heavy stacks;
``models list`` / ``models info`` load no torch; the thread policy's arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from timeouts import scaled

from geoalign_core import threads

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("rasterio", "torch", "open_clip", "geopandas", "yaml")

_PROBE = """
import json, sys
argv = json.loads(sys.argv[1])
from geoalign_core.cli import main
try:
    rc = main(argv)
except SystemExit as exc:
    rc = exc.code
sys.stdout.flush()
sys.stderr.write("\\nMODULES " + json.dumps([m for m in {heavy} if m in sys.modules]) + " RC " + str(rc) + "\\n")
"""


def _run(argv: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """Run the CLI in a fresh interpreter (this checkout first on the path); (exit code, heavy
    modules loaded, stderr without the probe's line)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(heavy=repr(HEAVY)), json.dumps(argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=scaled(120))
    head, _, tail = proc.stderr.rpartition("\nMODULES ")
    assert tail, proc.stderr
    mods, _, rc = tail.strip().partition(" RC ")
    return int(rc), json.loads(mods), head.strip()


@pytest.mark.parametrize("argv", [
    ["--help"], ["find", "--help"], ["tile-classify", "--help"], ["match-regions", "--help"],
    ["heatmap", "--help"], ["similar", "--help"], ["index", "--help"], ["prepare", "--help"],
    ["train", "--help"], ["finetune", "--help"], ["eval", "--help"], ["models", "--help"],
])
def test_help_imports_no_heavy_stack(argv, tmp_path):
    rc, mods, _ = _run(argv, tmp_path)
    assert rc == 0
    assert mods == [], f"geoalign {' '.join(argv)} imported {mods}"


@pytest.mark.parametrize("argv", [
    ["find", "/nonexistent.tif", "car"],
    ["tile-classify", "/nonexistent.tif"],
    ["heatmap", "/nonexistent.tif", "car"],
    ["similar", "/nonexistent.tif", "--box", "0,0,1,1"],
    ["index", "/nonexistent.tif"],
    ["prepare", "/nonexistent.tif", "labels.gpkg", "--class-field", "c", "--out", "d"],
])
def test_bad_path_is_refused_without_heavy_stack(argv, tmp_path):
    rc, mods, err = _run(argv, tmp_path)
    assert rc == 2
    assert err == "error: raster not found: /nonexistent.tif"
    assert mods == [], f"geoalign {' '.join(argv)} imported {mods}"
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_zoo_table_imports_no_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = ("import sys; from geoalign_core import zoo_table as z; assert 'geoalign-demo' in z.ZOO; "
            "print(z.weights_path(z.ZOO['geoalign-demo']).name, z.cache_dir()); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=scaled(60)).stdout.splitlines()
    assert out[0].startswith("geoalign-demo.safetensors") and out[1] == "[]"


def test_zoo_reexports_the_table():
    from geoalign_core import zoo, zoo_table

    assert zoo.ZOO is zoo_table.ZOO and zoo.ZooEntry is zoo_table.ZooEntry
    assert zoo.weights_path is zoo_table.weights_path and zoo.cache_dir is zoo_table.cache_dir
    assert zoo.ZOO["geoalign-demo"].spec().arch == "GeoAlign-Tiny"


# ---------------------------------------------------------------------------- thread policy
def test_threads_follow_affinity_and_cpu_count():
    assert threads.default_threads(env={}, cpu_count=8, affinity=None, cpu_max=None) == 8
    assert threads.default_threads(env={}, cpu_count=8, affinity=3, cpu_max=None) == 3  # taskset
    assert threads.default_threads(env={}, cpu_count=None, affinity=None, cpu_max=None) == 1


def test_threads_respect_the_cgroup_quota():
    assert threads.cgroup_cpu_limit("max 100000") is None
    assert threads.cgroup_cpu_limit("200000 100000\n") == 2
    assert threads.cgroup_cpu_limit("150000 100000") == 1  # 1.5 CPUs: one whole core
    assert threads.cgroup_cpu_limit("50000 100000") == 1  # half a CPU: still one thread
    assert threads.cgroup_cpu_limit("") is None and threads.cgroup_cpu_limit("garbage x") is None
    assert threads.default_threads(env={}, cpu_count=64, affinity=64, cpu_max="400000 100000") == 4
    assert threads.default_threads(env={}, cpu_count=2, affinity=2, cpu_max="800000 100000") == 2


def test_threads_are_divided_among_local_ranks():
    assert threads.default_threads(env={"LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "8"}, cpu_count=16,
                                   affinity=16, cpu_max=None) == 4
    assert threads.default_threads(env={"WORLD_SIZE": "2"}, cpu_count=2, affinity=2, cpu_max=None) == 1
    assert threads.default_threads(env={"LOCAL_WORLD_SIZE": "8"}, cpu_count=2, affinity=2, cpu_max=None) == 1
    assert threads.default_threads(env={"LOCAL_WORLD_SIZE": "2"}, cpu_count=64, affinity=64,
                                   cpu_max="600000 100000") == 3
    assert threads.default_threads(env={"LOCAL_WORLD_SIZE": "0"}, cpu_count=4, affinity=4, cpu_max=None) == 4


def test_omp_num_threads_is_the_users_choice():
    assert threads.default_threads(env={"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, cpu_count=2,
                                   affinity=2, cpu_max="100000 100000") == 3
    assert threads.default_threads(env={"OMP_NUM_THREADS": "0"}, cpu_count=4, affinity=4, cpu_max=None) == 4
    assert threads.default_threads(env={"OMP_NUM_THREADS": "x"}, cpu_count=4, affinity=4, cpu_max=None) == 4


def test_threads_leave_the_cores_other_programs_keep_busy():
    two = {"env": {}, "cpu_count": 2, "affinity": 2, "cpu_max": None}
    assert threads.default_threads(**two, busy=None) == 2  # not measured: nothing taken off
    assert threads.default_threads(**two, busy=0.3) == 2  # a light load: rounded away
    assert threads.default_threads(**two, busy=1.0) == 1  # one busy process beside it
    assert threads.default_threads(**two, busy=7.5) == 1  # never below one
    assert threads.default_threads(env={}, cpu_count=16, affinity=16, cpu_max=None, busy=5.6) == 10
    # under torchrun the other ranks are the load; under a quota the others do not take our share
    assert threads.default_threads(env={"LOCAL_WORLD_SIZE": "2"}, cpu_count=8, affinity=8, cpu_max=None,
                                   busy=4.0) == 4
    assert threads.default_threads(env={}, cpu_count=64, affinity=64, cpu_max="400000 100000", busy=60) == 4
    assert threads.default_threads(env={"OMP_NUM_THREADS": "2"}, cpu_count=2, affinity=2, cpu_max=None,
                                   busy=2.0) == 2


def test_busy_cores_are_read_from_proc_stat_less_our_own_time():
    text = ("cpu  900 0 300 5000 10 0 0 0 0 0\n"
            "cpu0 400 0 100 2500 5 0 0 0 0 0\n"
            "cpu1 500 0 200 2500 5 20 10 30 0 0\n"
            "intr 12345 0 0\nctxt 999\n")
    assert threads.cpu_busy_seconds(text) == pytest.approx((500 + 760) / 100)
    assert threads.cpu_busy_seconds(text, cpus={1}, ticks=200) == pytest.approx(760 / 200)
    assert threads.cpu_busy_seconds(text, cpus={5}) is None
    first = threads.CpuSample(busy=100.0, wall=10.0, own=3.0)
    assert threads.busy_elsewhere(first, threads.CpuSample(103.0, 12.0, 4.0)) == pytest.approx(1.0)
    assert threads.busy_elsewhere(first, threads.CpuSample(101.0, 12.0, 4.0)) == 0.0  # only our own work
    assert threads.busy_elsewhere(first, threads.CpuSample(103.0, 10.1, 4.0)) is None  # too short to tell
    assert threads.busy_elsewhere(None, first) is None


@pytest.mark.skipif(not threads.PROC_STAT.is_file(), reason="needs Linux /proc/stat")
def test_a_busy_process_beside_us_is_measured():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)  # started
        first = threads.sample()
        time.sleep(0.8)
        busy = threads.busy_elsewhere(first, threads.sample())
    finally:
        hog.kill()
        hog.wait()
    assert busy is not None and busy >= 0.6


def test_apply_sets_torch_threads_and_refuses_zero():
    import torch

    from geoalign_core.errors import InputError

    before = torch.get_num_threads()
    try:
        assert threads.apply(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(InputError, match="--threads"):
            threads.apply(0)
    finally:
        torch.set_num_threads(before)


def test_threads_flag_is_checked_before_work(tmp_path):
    rc, mods, err = _run(["find", "/nonexistent.tif", "car", "--threads", "0"], tmp_path)
    assert rc == 2 and err == "error: --threads must be at least 1; got 0" and mods == []
