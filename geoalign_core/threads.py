"""How many threads torch computes with: the cores this process may use, shared among the ranks
of this machine, less the cores other programs keep busy.

torch's default is one intra-op thread per CPU it sees (``os.cpu_count()``-like), which ignores a
container's CPU quota, the other ranks of a torchrun job and the other programs running: an
intra-op thread that has to share its core makes the others wait for it at every operation (a
live ``find`` took 1.6x the wall time with 2 threads as with 1 beside one busy process on a
2-core machine, ``benchmarks/bench_threads.py``).

:func:`default_threads`, in order:

1. ``OMP_NUM_THREADS`` when set to a positive integer: the user's choice, as is;
2. the cores available: the CPUs this process may run on (``os.sched_getaffinity``, else
   ``os.cpu_count()``), capped by the cgroup v2 CPU quota (``/sys/fs/cgroup/cpu.max``:
   ``quota period`` -> ``floor(quota / period)``, at least 1; ``max`` = no limit);
3. divided among the ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``, else ``WORLD_SIZE``),
   at least 1 each;
4. for a single process without a CPU quota: less the cores that other processes kept busy
   while this one started (rounded; at least 1). :func:`mark` notes the CPUs' busy time when the
   command starts (``/proc/stat``, the CPUs of this process's affinity only) and :func:`apply`
   compares it with the busy time when the model is loaded, less this process's own CPU time
   (:func:`busy_elsewhere`). Under a quota or torchrun it is left out: the machine-wide figures
   then count the other tenants or ranks, who do not take this process's share.

``geoalign ... --threads N`` overrides it (:func:`apply`). Nothing here imports torch except
:func:`apply`; the arithmetic takes the environment, CPU count, affinity, quota text and busy
cores as arguments so that it can be tested with any machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = ["CPU_MAX", "PROC_STAT", "CpuSample", "apply", "available_cores", "busy_elsewhere", "cgroup_cpu_limit",
           "cpu_busy_seconds", "default_threads", "local_ranks", "mark", "sample"]

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  #: cgroup v2: "<quota> <period>" or "max <period>"
PROC_STAT = Path("/proc/stat")  #: Linux: time each CPU spent busy and idle since boot
MIN_SAMPLE_S = 0.2  #: a shorter interval says too little about the load (/proc/stat counts 10 ms ticks)


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def cgroup_cpu_limit(text: str | None) -> int | None:
    """Whole CPUs allowed by a cgroup v2 ``cpu.max`` text (``"150000 100000"`` -> 1), None for no limit."""
    if not text:
        return None
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, int(quota // period))


def _read_cpu_max() -> str | None:
    try:
        return CPU_MAX.read_text()
    except OSError:
        return None


def _cpu_set() -> set[int] | None:
    """The CPUs this process may run on (None where the platform does not say)."""
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def _affinity() -> int | None:
    cpus = _cpu_set()
    return None if cpus is None else len(cpus)


class CpuSample(NamedTuple):
    """The CPUs' busy time (s, since boot), the wall clock (s) and this process's CPU time (s) at one moment."""

    busy: float
    wall: float
    own: float


def cpu_busy_seconds(text: str, cpus: Collection[int] | None = None, ticks: int = 100) -> float | None:
    """Seconds the CPUs ``cpus`` (all when None) spent busy since boot, from a ``/proc/stat`` text
    (``cpuN user nice system idle iowait irq softirq steal ...`` lines, in ``ticks`` per second);
    None when it names none of them."""
    total, found = 0, False
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit():
            continue  # the "cpu" line sums every CPU; "intr", "ctxt", ... are not CPUs
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        vals = [int(v) for v in rest.split()[:8]]
        vals += [0] * (8 - len(vals))
        total += vals[0] + vals[1] + vals[2] + vals[5] + vals[6] + vals[7]  # all but idle and iowait
        found = True
    return total / ticks if found else None


def sample() -> CpuSample | None:
    """The busy time of the CPUs this process may run on, now (None where ``/proc/stat`` is not there)."""
    try:
        text = PROC_STAT.read_text()
    except OSError:
        return None
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        ticks = 100
    busy = cpu_busy_seconds(text, _cpu_set(), ticks)
    return None if busy is None else CpuSample(busy, time.monotonic(), time.process_time())


def busy_elsewhere(first: CpuSample | None, last: CpuSample | None) -> float | None:
    """Cores kept busy by other processes between two samples (this process's own CPU time taken
    out); None when either is missing or they are less than :data:`MIN_SAMPLE_S` apart."""
    if first is None or last is None or last.wall - first.wall < MIN_SAMPLE_S:
        return None
    return max(0.0, (last.busy - first.busy - (last.own - first.own)) / (last.wall - first.wall))


_MARK: CpuSample | None = None


def mark() -> None:
    """Note how busy the CPUs are now; the next :func:`apply` measures the load since then (the
    command line and the engine call it as they start)."""
    global _MARK
    _MARK = sample()


def available_cores(cpu_count: int | None = None, affinity: int | None = None, cpu_max: str | None = None) -> int:
    """The cores this process may use: its CPU affinity (else the CPU count), capped by the cgroup quota."""
    cores = affinity or cpu_count or 1
    limit = cgroup_cpu_limit(cpu_max)
    return max(1, min(cores, limit) if limit is not None else cores)


def local_ranks(env: Mapping[str, str]) -> int:
    """Processes of this job on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else ``WORLD_SIZE``, else 1."""
    return _positive_int(env.get("LOCAL_WORLD_SIZE")) or _positive_int(env.get("WORLD_SIZE")) or 1


def default_threads(env: Mapping[str, str] | None = None, cpu_count: int | None = None,
                    affinity: int | None = None, cpu_max: str | None = None, busy: float | None = None) -> int:
    """The intra-op thread count for this process (see the module docstring). Arguments left out are
    read from this machine (``os.environ``, ``os.cpu_count()``, ``os.sched_getaffinity``, ``cpu.max``);
    ``busy``: cores kept busy by other processes (None: not known, nothing taken off)."""
    if env is None:
        env = os.environ
        cpu_count = os.cpu_count() if cpu_count is None else cpu_count
        affinity = _affinity() if affinity is None else affinity
        cpu_max = _read_cpu_max() if cpu_max is None else cpu_max
    omp = _positive_int(env.get("OMP_NUM_THREADS"))
    if omp is not None:
        return omp
    cores, ranks = available_cores(cpu_count, affinity, cpu_max), local_ranks(env)
    if busy is not None and ranks == 1 and cgroup_cpu_limit(cpu_max) is None:
        cores = min(cores, int(cores - busy + 0.5))
    return max(1, cores // ranks)


def apply(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the count.

    Raises:
        InputError: ``threads`` below 1.
    """
    from .errors import InputError

    global _MARK
    if threads is not None and int(threads) < 1:
        raise InputError(f"--threads must be at least 1; got {threads}", param="threads")
    if threads is not None:
        n = int(threads)
    else:
        now = sample()
        n = default_threads(busy=busy_elsewhere(_MARK, now))
        _MARK = now  # the next call measures from here
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
