"""Detect the Python packages GeoAlign needs in QGIS's own Python, without importing them.

QGIS must never crash at start-up because torch is missing: the plugin calls
:func:`check` (cheap, ``importlib.util.find_spec`` only), keeps loading, and shows
:func:`message` -- which contains the exact pip command for *this* QGIS's interpreter --
in the message bar, the dock and every Processing algorithm.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

# module to import -> pip requirement that provides it (the pairs of pyproject.toml)
REQUIREMENTS: dict[str, str] = {
    "geoalign_core": "geoalign",
    "torch": "torch>=2.14,<2.15",
    "torchvision": "torchvision>=0.29,<0.30",
    "open_clip": "open_clip_torch>=3.0,<4",
    "rasterio": "rasterio>=1.3,<2",
    "geopandas": "geopandas>=0.14",
    "pyogrio": "pyogrio>=0.7",
    "shapely": "shapely>=2.0",
    "pyproj": "pyproj>=3.5",
    "safetensors": "safetensors>=0.4",
}


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):
        # ValueError: sys.modules[module] is None (an import blocker) or has no __spec__
        return False


def python_executable() -> str:
    """The Python interpreter QGIS runs (``sys.executable`` is ``qgis-bin.exe`` on Windows)."""
    exe = Path(sys.executable)
    if exe.name.lower().startswith("python"):
        return str(exe)
    names = ("python.exe", "python3.exe") if os.name == "nt" else ("python3", "python")
    for folder in (Path(sys.exec_prefix), Path(sys.exec_prefix) / "bin", exe.parent, exe.parent / "bin"):
        for name in names:
            if (folder / name).is_file():
                return str(folder / name)
    return str(exe)


def _externally_managed() -> bool:
    """PEP 668 marker (Debian/Ubuntu system Python): pip refuses plain installs there."""
    try:
        return Path(sysconfig.get_paths()["stdlib"], "EXTERNALLY-MANAGED").is_file()
    except (KeyError, OSError):
        return False


def _in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def _quote(arg: str) -> str:
    if os.name == "nt":
        return f'"{arg}"' if any(c in arg for c in ' <>&|^') else arg
    return shlex.quote(arg)


@dataclass
class DepsStatus:
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def requirements(self) -> list[str]:
        if "geoalign_core" in self.missing:
            return [REQUIREMENTS["geoalign_core"]]  # pulls torch, open_clip, rasterio, ...
        return [REQUIREMENTS[m] for m in self.missing]

    @property
    def pip_args(self) -> list[str]:
        args = [python_executable(), "-m", "pip", "install"]
        if not _in_venv():
            args.append("--user")
            if _externally_managed():
                args.append("--break-system-packages")
        return args + self.requirements

    @property
    def pip_command(self) -> str:
        return " ".join(_quote(a) for a in self.pip_args)

    def message(self) -> str:
        if self.ok:
            return ""
        return (
            f"GeoAlign needs Python packages that QGIS's Python ({python_executable()}) cannot import: "
            f"{', '.join(self.missing)}. Install them with:\n{self.pip_command}\n"
            "then restart QGIS."
        )


def check(modules: list[str] | None = None) -> DepsStatus:
    """Which of the required modules cannot be imported (nothing is imported)."""
    return DepsStatus([m for m in (modules or list(REQUIREMENTS)) if not _importable(m)])


def message() -> str:
    """The user-facing install message, or "" when everything is importable."""
    return check().message()
