"""What every benchmark shares: the machine it ran on, Markdown tables, and its section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
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
