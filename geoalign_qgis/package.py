#!/usr/bin/env python3
"""Build the installable plugin zip (QGIS: Plugins > Install from ZIP).

    python3 geoalign_qgis/package.py --out dist/geoalign_qgis.zip

The zip holds one folder, ``geoalign_qgis/``, with ``metadata.txt`` (copied from the
repository's top-level ``metadata.txt``), ``__init__.py`` (classFactory), ``icon.svg`` and
the plugin code. The core library (``geoalign``, with torch) is a separate pip package
installed into QGIS's Python; the plugin tells the user the command when it is missing.
Standard library only: runs with the system Python that QGIS uses.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FOLDER = "geoalign_qgis"
REQUIRED_KEYS = (
    "name", "description", "about", "version", "author", "email", "repository", "tracker",
    "qgisMinimumVersion", "qgisMaximumVersion", "hasProcessingProvider", "icon",
)
INCLUDE_SUFFIXES = {".py", ".svg", ".png", ".qml", ".ui", ".txt", ".md"}
EXCLUDE_NAMES = {"package.py"}
EXCLUDE_DIRS = {"__pycache__", "tests", ".pytest_cache"}


def read_metadata(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # keep key case (qgisMinimumVersion)
    cp.read(path, encoding="utf-8")
    if not cp.has_section("general"):
        raise SystemExit(f"error: {path} has no [general] section")
    missing = [k for k in REQUIRED_KEYS if not cp.get("general", k, fallback="").strip()]
    if missing:
        raise SystemExit(f"error: {path} lacks {', '.join(missing)}")
    icon = cp.get("general", "icon")
    if not (HERE / icon).is_file():
        raise SystemExit(f"error: metadata icon {icon} is not in {HERE}")
    return cp


def plugin_files() -> list[Path]:
    files = []
    for p in sorted(HERE.rglob("*")):
        rel = p.relative_to(HERE)
        if not p.is_file() or any(part in EXCLUDE_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.name in EXCLUDE_NAMES or p.suffix not in INCLUDE_SUFFIXES or p.name == "metadata.txt":
            continue
        files.append(p)
    return files


def build(out: Path, metadata: Path) -> list[str]:
    read_metadata(metadata)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    names = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(metadata, f"{FOLDER}/metadata.txt")
        names.append(f"{FOLDER}/metadata.txt")
        for p in plugin_files():
            arc = f"{FOLDER}/{p.relative_to(HERE).as_posix()}"
            zf.write(p, arc)
            names.append(arc)
    for needed in ("__init__.py", "icon.svg"):
        if f"{FOLDER}/{needed}" not in names:
            tmp.unlink()
            raise SystemExit(f"error: {needed} missing from the plugin folder")
    tmp.replace(out)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist" / "geoalign_qgis.zip")
    ap.add_argument("--metadata", type=Path, default=ROOT / "metadata.txt")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    names = build(args.out, args.metadata)
    if not args.quiet:
        print(f"{args.out}: {len(names)} files")
        for n in names:
            print(f"  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
