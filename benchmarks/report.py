"""What every benchmark shares: the machine it ran on, Markdown tables, its section of docs/benchmarks.md,
and the peak memory of a ``geoalign`` command."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform's architecture name)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_summary() -> str:
    return f"{cpu_name()}, {os.cpu_count()} CPU cores visible"


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table, columns padded so the source reads well too."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join([line, sep, *body])


def write_section(text: str, heading: str | None = None, doc: Path = DOC) -> None:
    """Replace the ``## heading`` section of ``doc`` with ``text`` (which starts with that heading),
    or append it; written atomically. ``heading`` defaults to the first line of ``text``."""
    heading = heading or text.splitlines()[0]
    doc.parent.mkdir(parents=True, exist_ok=True)
    old = doc.read_text(encoding="utf-8") if doc.is_file() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    section = text.rstrip() + "\n\n"
    new = pattern.sub(lambda _: section, old) if pattern.search(old) else old.rstrip() + "\n\n" + section
    tmp = doc.with_name(f".{doc.name}.tmp")
    tmp.write_text(new.rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, doc)


_CHILD = """
import sys
from geoalign_core.cli import main
try:
    rc = main(sys.argv[2:])
finally:
    status = open("/proc/self/status").read()
    hwm = [ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")]
    open(sys.argv[1], "w").write(hwm[0] if hwm else "nan")
sys.exit(rc)
"""


def peak_rss_cli(args: list[str], workdir: Path) -> tuple[float, float, int]:
    """Run ``geoalign ARGS`` in a fresh interpreter; returns (peak RSS in MB, seconds, exit status).

    The child reports its own ``VmHWM`` (peak resident set of its address space) at exit:
    ``ru_maxrss`` of a forked child would include the parent's memory at fork time.
    """
    report = workdir / "vmhwm.txt"
    report.unlink(missing_ok=True)
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(report), *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, cwd=ROOT)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        print(proc.stderr.decode(errors="replace"), file=sys.stderr)
    kb = float(report.read_text()) if report.is_file() else float("nan")
    return kb / 1024.0, secs, proc.returncode


def publish(text: str, heading: str | None = None, write: bool = True, doc: Path = DOC) -> None:
    """Print a measured section (after a blank line) and, when ``write``, put it into ``doc``
    (:func:`write_section`)."""
    print()
    print(text, flush=True)
    if write:
        write_section(text, heading, doc)


def git_commit() -> str:
    """The checkout's short commit (what a benchmark's numbers were measured at)."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
