"""Write docs/demo_model.md from the eval JSON files of geoalign_core/training/demo/eval_demo.sh."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [
    ("stage1", "stage I only (Eq. 1)"),
    ("rpa", "+ RPA (Eq. 1 + 2) = geoalign-demo"),
    ("vic", "+ VIC (Eq. 1 + 2 + 4)"),
    ("hna", "+ HNA (Eq. 1 + 2 + 3 + 4)"),
    ("full", "full (Eq. 5: + HTC)"),
    ("v1", "previous demo model: full, 200 steps, no class/caption prompts"),
]


def load(d: Path, name: str, kind: str) -> dict | None:
    p = d / f"{name}_{kind}.json"
    return json.loads(p.read_text())["metrics"] if p.is_file() else None


def tiles(d: Path, name: str) -> tuple[float, int] | None:
    files = sorted(d.glob(f"{name}_tiles_*.json"))
    if not files:
        return None
    n = correct = 0.0
    for f in files:
        j = json.loads(f.read_text())
        n += j["n"]
        correct += j["metrics"]["top1"] * j["n"]
    return correct / n, int(n)


def main(eval_dir: str = "runs/demo/eval") -> str:
    d = Path(eval_dir)
    lines = [
        "| model | region top-1 | region top-5 | HN colour | HN category | HN all | tile top-1 | I->T R@1 | T->I R@1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, label in ROWS:
        reg, hn, ret, til = load(d, name, "regions"), load(d, name, "hn"), load(d, name, "retrieval"), tiles(d, name)
        if reg is None:
            continue
        ph = hn["phrase"]
        lines.append(
            f"| {label} | {reg['top1']:.3f} | {reg['top5']:.3f} | {ph['colour']:.3f} | {ph['category']:.3f} | "
            f"{ph['all']:.3f} | {til[0]:.3f} | {ret['i2t_R@1']:.3f} | {ret['t2i_R@1']:.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(*sys.argv[1:]))
