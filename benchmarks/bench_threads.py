"""1 vs 2 torch threads for a live ``find``, and the default (the thread policy's choice, as the
command's status line reports it), on a quiet machine and with a second CPU-busy process beside
it; one run, fresh processes, CPU and wall time of each::

    PYTHONPATH=. python benchmarks/bench_threads.py --write
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, cpu_summary, git_commit, table, write_section  # noqa: E402

HEADING = "## Threads: a live `find` with 1 and 2 torch threads"
BUSY = "while True: pass"


def _find(threads: int | None, out: Path, env: dict) -> tuple[float, float, int]:
    """Wall and CPU seconds of one fresh ``find``, and the thread count it ran with."""
    cmd = [sys.executable, "-m", "geoalign_core.cli", "find", str(ROOT / "sample_data" / "scene.tif"), "red car",
           "--no-refine", "--device", "cpu", "--out", str(out), "--overwrite"]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = re.search(r"\(cpu, (\d+) threads?\)", proc.stdout)
    if used is None:
        raise SystemExit(f"no thread count in the status line: {proc.stdout!r}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), int(used.group(1))


def _conclusion(res: dict) -> str:
    quiet, busy = res["quiet", 2][0] / res["quiet", 1][0], res["busy", 2][0] / res["busy", 1][0]
    faster = "faster" if quiet < 1 else "slower"
    chose = {load: res[load, None][2] for load in ("quiet", "busy")}
    return (f"With this model (the demo's GeoAlign-Tiny) two threads were {faster} than one on the "
            f"quiet machine (wall x{quiet:.2f}) and x{busy:.2f} the wall beside a busy process. The default chose "
            f"{chose['quiet']} thread(s) on the quiet machine and {chose['busy']} beside the busy process: it takes "
            "the cores this process may use, less those other programs kept busy while the command started "
            "(`geoalign_core/threads.py`); `--threads N` or `OMP_NUM_THREADS` override it.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    rows, res = [], {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for load in ("quiet", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
            try:
                for n in (1, 2, None):
                    res[load, n] = _find(n, Path(tmp) / f"m{n}.gpkg", env)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    for load in ("quiet", "busy"):
        w1, c1, _ = res[load, 1]
        for n in (1, 2, None):
            w, c, used = res[load, n]
            rows.append([load if load == "quiet" else "1 busy process beside it",
                         n if n is not None else f"default ({used})", f"{w:.1f}", f"{c:.1f}", f"{w / w1:.2f}x",
                         f"{c / c1:.2f}x"])
    tab = table(["machine", "threads", "wall (s)", "CPU (s)", "wall vs 1 thread", "CPU vs 1 thread"], rows)
    commit = git_commit()
    text = "\n".join([
        HEADING, "",
        f"Measured {datetime.date.today().isoformat()} at commit {commit} on {cpu_summary()} "
        "(default: no `--threads`; the count it chose is the one the command's status line reports). "
        "`geoalign find sample_data/scene.tif \"red car\" --no-refine --threads N`, one fresh process each "
        f"(model loading included), one run each; load average {load_before:.1f} when it started (the one-minute "
        "average still carries jobs that ran before). \"busy\" adds our own `python -c 'while True: pass'` "
        "beside it. Regenerate: `PYTHONPATH=. python benchmarks/bench_threads.py --write`.", "",
        tab, "",
        _conclusion(res),
    ])
    print(tab)
    if args.write:
        write_section(text, HEADING)


if __name__ == "__main__":
    main()
