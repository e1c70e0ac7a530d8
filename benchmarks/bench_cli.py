#!/usr/bin/env python3
"""CLI start-up benchmark: how fast ``geoalign`` answers before any model work.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 7] [--no-doc]

Each case runs the installed ``geoalign`` command in a fresh process (best and median wall time
of ``--repeat`` runs, peak RSS); the baselines run in the same session: a bare ``python -c pass``
and ``python -c "import torch, open_clip"`` (what every command cost before the imports became
lazy). Targets (issue "A CLI that answers at once"): ``--help`` <= 0.5 s, a bad input refused
<= 1 s. Writes the table to docs/benchmarks.md ("CLI start-up").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import ROOT, cpu_summary, write_section

TARGETS = {"help": 0.5, "bad input": 1.0}


_RSS = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_once(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """(wall seconds, exit status) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, proc.returncode


def peak_rss_mb(cmd: list[str], cwd: Path) -> float:
    """Peak RSS of ``cmd`` alone: measured by a wrapper process whose only child it is."""
    out = subprocess.run([sys.executable, "-c", _RSS, *cmd], cwd=cwd, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024.0


def measure(cmd: list[str], cwd: Path, repeat: int) -> dict:
    runs = [run_once(cmd, cwd) for _ in range(repeat)]
    walls = [r[0] for r in runs]
    return {"best": min(walls), "median": statistics.median(walls), "rss": peak_rss_mb(cmd, cwd), "rc": runs[-1][1]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    exe = shutil.which("geoalign") or str(Path(sys.executable).with_name("geoalign"))
    py = sys.executable
    scene = ROOT / "sample_data" / "scene.tif"
    with tempfile.TemporaryDirectory(prefix="geoalign-bench-cli-") as tmp:
        cwd = Path(tmp)
        cases = [
            ("baseline: python -c pass", "baseline", [py, "-c", "pass"]),
            ("baseline: import torch, open_clip", "baseline", [py, "-c", "import torch, open_clip"]),
            ("geoalign --help", "help", [exe, "--help"]),
            ("geoalign --version", "help", [exe, "--version"]),
            ("geoalign find --help", "help", [exe, "find", "--help"]),
            ("find: raster not found", "bad input", [exe, "find", str(cwd / "missing.tif"), "car"]),
            ("find: empty phrase", "bad input", [exe, "find", str(scene), ""]),
            ("find: --out x.png", "bad input", [exe, "find", str(scene), "car", "--out", "x.png"]),
            ("heatmap: bad --bands", "bad input", [exe, "heatmap", str(scene), "car", "--bands", "7"]),
            ("prepare: labels not found", "bad input",
             [exe, "prepare", str(scene), str(cwd / "no.gpkg"), "--class-field", "c", "--out", "d"]),
        ]
        rows = []
        for name, kind, cmd in cases:
            r = measure(cmd, cwd, args.repeat)
            rows.append((name, kind, r))
            print(f"{name:38s} best {r['best']:.3f} s  median {r['median']:.3f} s  {r['rss']:.0f} MB  rc {r['rc']}",
                  flush=True)
    base = rows[0][2]["best"]
    heavy = rows[1][2]["best"]
    lines = ["## CLI start-up", "",
             f"`python benchmarks/bench_cli.py` on {cpu_summary()}, {time.strftime('%Y-%m-%d')}: "
             "each case a fresh process, best and median "
             f"of {args.repeat} runs; *x python* is the best time over a bare `python -c pass`, *x torch* over "
             "`python -c \"import torch, open_clip\"` (what every command paid before its imports became lazy).",
             "", "| case | best (s) | median (s) | peak RSS (MB) | exit | x python | x torch | target |",
             "|---|---|---|---|---|---|---|---|"]
    ok = True
    for name, kind, r in rows:
        target = TARGETS.get(kind)
        verdict = "" if target is None else (f"<= {target} s: " + ("met" if r["best"] <= target else "NOT met"))
        ok &= target is None or r["best"] <= target
        lines.append(f"| {name} | {r['best']:.3f} | {r['median']:.3f} | {r['rss']:.0f} | {r['rc']} | "
                     f"{r['best'] / base:.1f} | {r['best'] / heavy:.2f} | {verdict} |")
    lines += ["", "A bad input is refused before the model stack is imported: the raster, the output (format "
              "by extension, an input, existing), the phrases and the options are checked first. "
              "`geoalign models list` still imports the model stack (the zoo module needs open_clip)."]
    section = "\n".join(lines) + "\n"
    print()
    print(section)
    if not args.no_doc:
        write_section(section)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
