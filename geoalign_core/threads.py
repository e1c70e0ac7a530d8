"""How many threads torch computes with: the cores this process may use, shared among the ranks
of this machine.

torch's default is one intra-op thread per CPU it sees (``os.cpu_count()``-like), which ignores a
container's CPU quota and the other ranks of a torchrun job: oversubscribed threads spin and wait
(a live ``find`` took 3x the CPU with 2 threads as with 1 on a busy 2-core machine).

:func:`default_threads`, in order:

1. ``OMP_NUM_THREADS`` when set to a positive integer: the user's choice, as is;
2. the cores available: the CPUs this process may run on (``os.sched_getaffinity``, else
   ``os.cpu_count()``), capped by the cgroup v2 CPU quota (``/sys/fs/cgroup/cpu.max``:
   ``quota period`` -> ``floor(quota / period)``, at least 1; ``max`` = no limit);
3. divided among the ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``, else ``WORLD_SIZE``),
   at least 1 each.

``geoalign ... --threads N`` overrides it (:func:`apply`). Nothing here imports torch except
:func:`apply`; the arithmetic takes the environment, CPU count, affinity and quota text as
arguments so that it can be tested with any machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["CPU_MAX", "apply", "available_cores", "cgroup_cpu_limit", "default_threads", "local_ranks"]

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  #: cgroup v2: "<quota> <period>" or "max <period>"


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


def _affinity() -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def available_cores(cpu_count: int | None = None, affinity: int | None = None, cpu_max: str | None = None) -> int:
    """The cores this process may use: its CPU affinity (else the CPU count), capped by the cgroup quota."""
    cores = affinity or cpu_count or 1
    limit = cgroup_cpu_limit(cpu_max)
    return max(1, min(cores, limit) if limit is not None else cores)


def local_ranks(env: Mapping[str, str]) -> int:
    """Processes of this job on this machine: torchrun's ``LOCAL_WORLD_SIZE``, else ``WORLD_SIZE``, else 1."""
    return _positive_int(env.get("LOCAL_WORLD_SIZE")) or _positive_int(env.get("WORLD_SIZE")) or 1


def default_threads(env: Mapping[str, str] | None = None, cpu_count: int | None = None,
                    affinity: int | None = None, cpu_max: str | None = None) -> int:
    """The intra-op thread count for this process (see the module docstring). Arguments left out are
    read from this machine (``os.environ``, ``os.cpu_count()``, ``os.sched_getaffinity``, ``cpu.max``)."""
    if env is None:
        env = os.environ
        cpu_count = os.cpu_count() if cpu_count is None else cpu_count
        affinity = _affinity() if affinity is None else affinity
        cpu_max = _read_cpu_max() if cpu_max is None else cpu_max
    omp = _positive_int(env.get("OMP_NUM_THREADS"))
    if omp is not None:
        return omp
    return max(1, available_cores(cpu_count, affinity, cpu_max) // local_ranks(env))


def apply(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the count.

    Raises:
        InputError: ``threads`` below 1.
    """
    from .errors import InputError

    if threads is not None and int(threads) < 1:
        raise InputError(f"--threads must be at least 1; got {threads}", param="threads")
    n = int(threads) if threads is not None else default_threads()
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
