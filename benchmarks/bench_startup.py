"""``geoalign --help`` start-up against a bare ``python -c pass`` (within 0.15 s of it).

Both run as fresh interpreters of this Python, alternately, best of N each (wall time, the
machine's other load shows least in the best), with the modules' compiled bytecode present as
after ``pip install`` (``PYTHONDONTWRITEBYTECODE`` is dropped for them, and an untimed first
round writes the ``.pyc`` files); prints a table and, with ``--write``, replaces its section of
docs/benchmarks.md::

    PYTHONPATH=. python benchmarks/bench_startup.py --repeat 15 --write
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import ROOT, cpu_summary, git_commit, table, write_section  # noqa: E402

HEADING = "## Start-up: `geoalign --help` against `python -c pass`"
CASES = {
    "python -c pass": ["-c", "pass"],
    "geoalign --help": ["-m", "geoalign_core.cli", "--help"],
    "geoalign find --help": ["-m", "geoalign_core.cli", "find", "--help"],
    "geoalign find /nonexistent.tif car": ["-m", "geoalign_core.cli", "find", "/nonexistent.tif", "car"],
}


def _once(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   cwd="/tmp")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(ROOT)}
    for cmd in CASES.values():  # untimed: writes the bytecode caches, as an installed package has them
        _once(cmd, env)
    best = {name: float("inf") for name in CASES}
    for _ in range(args.repeat):  # interleaved: a burst of other load hits every case alike
        for name, cmd in CASES.items():
            best[name] = min(best[name], _once(cmd, env))
    base = best["python -c pass"]
    rows = [[name, f"{t * 1000:.0f}", f"{(t - base) * 1000:+.0f}", f"{t / base:.2f}x",
             "yes" if t - base <= 0.15 or name == "python -c pass" else "no"] for name, t in best.items()]
    tab = table(["command (fresh process)", "best wall (ms)", "minus bare python (ms)", "ratio",
                 "within 0.15 s"], rows)
    commit = git_commit()
    text = "\n".join([
        HEADING, "",
        f"Measured {datetime.date.today().isoformat()} at commit {commit} on {cpu_summary()}, best of "
        f"{args.repeat} runs each, interleaved, after an untimed round that wrote the modules' bytecode caches "
        f"(as `pip install` does); load average {os.getloadavg()[0]:.1f} at the end (the best-of-N hides most "
        "of the machine's other load). Regenerate: "
        f"`PYTHONPATH=. python benchmarks/bench_startup.py --repeat {args.repeat} --write`.", "",
        tab, "",
        "None of these loads rasterio, torch, open_clip, geopandas or yaml (`tests/test_startup.py` checks "
        "`sys.modules`). `python -m geoalign_core.cli` is the `geoalign` console script's code without the "
        "script's own wrapper.",
    ])
    print(tab)
    if args.write:
        write_section(text, HEADING)


if __name__ == "__main__":
    main()
