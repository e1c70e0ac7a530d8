"""Raster paths, checked without GDAL: which names only GDAL resolves, and a local file that is
missing or a folder. Light on purpose (no rasterio): the commands refuse a bad path with it
before the raster stack loads (``geoalign find /nonexistent.tif car`` imports no rasterio).
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

from geoalign_core.errors import InputError

__all__ = ["RASTER_FOLDER_SUFFIXES", "check_raster_path", "check_vector_path", "is_gdal_path"]

#: folders GDAL opens as one raster (Zarr stores, file geodatabases, Sentinel SAFE products);
#: any other folder given as a raster is a mistake
RASTER_FOLDER_SUFFIXES = frozenset({".zarr", ".gdb", ".safe"})

_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")  # HDF5:..., NETCDF:..., GTIFF_DIR:... (not C:\\)


def is_gdal_path(path: str | PathLike) -> bool:
    """A name only GDAL resolves: ``/vsizip/...``, ``/vsicurl/...``, a URL, ``DRIVER:...`` subdatasets."""
    s = str(path)
    return s.startswith("/vsi") or "://" in s or bool(_DRIVER_PREFIX.match(s))


def check_vector_path(path: str | PathLike) -> None:
    """InputError for a local vector file that does not exist (checked before the vector stack loads; a
    GDAL-only name is left to GDAL)."""
    if not is_gdal_path(path) and not Path(path).exists():
        raise InputError(f"vector file not found: {Path(path)}")


def check_raster_path(path: str | PathLike) -> None:
    """InputError for a local raster path that does not exist or is a plain folder (a GDAL-only
    name is left to GDAL)."""
    if is_gdal_path(path):
        return
    p = Path(path)
    if not p.exists():
        raise InputError(f"raster not found: {p}")
    if p.is_dir() and p.suffix.lower() not in RASTER_FOLDER_SUFFIXES:
        raise InputError(f"not a raster: {p} is a directory")
