#!/usr/bin/env python3
"""Build the installable plugin zip (QGIS: Plugins > Install from ZIP).

    .venv/bin/python geoalign_qgis/package.py --out dist/geoalign_qgis.zip   # or: make plugin

The zip holds one folder, ``geoalign_qgis/``, with ``metadata.txt`` (copied from the
repository's top-level ``metadata.txt``), ``__init__.py`` (classFactory), ``icon.svg``, the
plugin code, and ``wheels/geoalign-<version>-py3-none-any.whl``: the GeoAlign package of the
same version, which the plugin's one-click set-up installs into a separate environment for
the engine process (QGIS's own Python never gets it). Building the wheel needs a Python with
pip and setuptools (the project's .venv); ``--no-wheel`` builds the plugin alone.
"""

from __future__ import annotations

import argparse
import configparser
import shutil
import subprocess
import sys
import tempfile
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
EXCLUDE_DIRS = {"__pycache__", "tests", ".pytest_cache", "wheels"}
# what the wheel is built from (copied to a temporary folder: the build leaves nothing in the checkout)
WHEEL_SOURCES = ("pyproject.toml", "README.md", "geoalign_core", "geoalign_qgis", "training")


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


def build_wheel(folder: Path, python: str = sys.executable) -> Path:
    """``pip wheel`` of this checkout (no dependencies) into ``folder``; returns the wheel."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "wheels", "build", "dist")
    with tempfile.TemporaryDirectory(prefix="geoalign-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in WHEEL_SOURCES:
            p = ROOT / name
            if p.is_dir():
                shutil.copytree(p, src / name, ignore=ignore)
            elif p.is_file():
                shutil.copy2(p, src / name)
        cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
               "-q", "-w", str(folder), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            raise SystemExit(f"error: building the geoalign wheel failed with {python}: {lines[-1] if lines else ''}"
                             " (use the project's .venv: make plugin)")
    wheels = sorted(folder.glob("geoalign-*.whl"))
    if not wheels:
        raise SystemExit("error: pip wheel produced no geoalign wheel")
    return wheels[-1]


def build(out: Path, metadata: Path, wheel: bool = True) -> list[str]:
    read_metadata(metadata)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    names = []
    with tempfile.TemporaryDirectory(prefix="geoalign-plugin-") as wdir, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(metadata, f"{FOLDER}/metadata.txt")
        names.append(f"{FOLDER}/metadata.txt")
        for p in plugin_files():
            arc = f"{FOLDER}/{p.relative_to(HERE).as_posix()}"
            zf.write(p, arc)
            names.append(arc)
        if wheel:
            whl = build_wheel(Path(wdir))
            arc = f"{FOLDER}/wheels/{whl.name}"
            zf.write(whl, arc, compress_type=zipfile.ZIP_STORED)  # a wheel is a zip already
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
    ap.add_argument("--no-wheel", action="store_true", help="leave the GeoAlign wheel out (no one-click set-up)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    names = build(args.out, args.metadata, wheel=not args.no_wheel)
    if not args.quiet:
        print(f"{args.out}: {len(names)} files")
        for n in names:
            print(f"  {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
