"""Time limits that scale with the machine's load, for the subprocesses the tests start.

A fixed limit measured on an idle machine fails on a loaded one (another test run, a build, a
benchmark beside it): :func:`scaled` stretches it by the load per available core at the moment
the subprocess starts (at least 1x, at most 20x); ``conftest.py`` stretches pytest-timeout's
per-test limit the same way.
"""

from __future__ import annotations

import os

MAX_FACTOR = 20.0


def load_factor() -> float:
    """The 1-minute load per core available to this process (at least 1, at most :data:`MAX_FACTOR`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this platform
        return 1.0
    return min(MAX_FACTOR, max(1.0, load / max(cores, 1)))


def scaled(seconds: float) -> float:
    """``seconds`` on an idle machine, stretched by the current load."""
    return seconds * load_factor()
