"""Outputs: atomic GeoPackage and Cloud-Optimised GeoTIFF writers.

Every writer checks its output first (:func:`check_output`: exists without overwrite,
missing or unwritable directory -> InputError before any work), then writes to a hidden
temporary file beside the target and renames it into place (:func:`atomic_output`), so an
interrupted or failed run never leaves a partial file and never touches an existing one.

GeoPackage metadata: :func:`write_geopackage` stores the ``metadata`` dict as GDAL metadata
of the layer (GDAL keeps it in the ``gpkg_metadata`` table, referenced from
``gpkg_metadata_reference`` with scope ``table`` and the layer's name; QGIS shows it in the
layer properties). Dataset-level metadata is deliberately not written: with GDAL 3.10,
merely reading such a file with geopandas leaves a ``.aux.xml`` beside it. Each key is written
as a readable item (strings as is, other values JSON-encoded) plus one item
``GEOALIGN_METADATA`` holding the whole dict as JSON, which
:func:`read_geopackage_metadata` decodes for an exact round trip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling

from geoalign_core.errors import InputError

# the accumulator lives in its own module; re-exported for callers of the writers
from geoalign_core.geo.heatmap import HeatmapAccumulator

if TYPE_CHECKING:  # the vector stack is imported by the GeoPackage functions only
    import geopandas as gpd

__all__ = [
    "METADATA_KEY",
    "HeatmapAccumulator",
    "atomic_output",
    "check_output",
    "read_geopackage_metadata",
    "write_float_geotiff",
    "write_geopackage",
]

METADATA_KEY = "GEOALIGN_METADATA"
GPKG_VERSION = "1.2"  # QGIS 3.22's GDAL warns about the user_version of newer GeoPackages
_SIDECARS = ("-journal", "-wal", "-shm", ".aux.xml", ".ovr", ".msk")


def check_output(path: str | PathLike, overwrite: bool = False) -> Path:
    """Validate an output path before any work is done; returns it as a Path.

    Raises:
        InputError: the path exists and ``overwrite`` is False, the path is a directory,
            or its directory does not exist or cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output is a directory: {path}")
    if path.exists() and not overwrite:
        raise InputError(f"output already exists: {path} (use --overwrite to replace it)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}")
    try:  # os.access lies for root and on read-only mounts: really try
        fd, probe = tempfile.mkstemp(prefix=".geoalign-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write to output directory {parent}: {exc.strerror or exc}") from None
    return path


def _remove(path: Path) -> None:
    for p in (path, *(Path(str(path) + s) for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_output(path: str | PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same suffix); rename it onto ``path`` on success.

    On any exception, KeyboardInterrupt included, the temporary file (and GDAL side-car
    files) are deleted and an existing file at ``path`` is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"the writer produced no file for {path}")
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _metadata_items(metadata: Mapping[str, object]) -> dict[str, str]:
    items = {str(k): v if isinstance(v, str) else json.dumps(v, default=str) for k, v in metadata.items()}
    items[METADATA_KEY] = json.dumps(dict(metadata), default=str)
    return items


def _geoalign_version() -> str:
    try:
        from importlib.metadata import version

        return version("geoalign")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


def write_geopackage(
    gdf: gpd.GeoDataFrame,
    path: str | PathLike,
    layer: str,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = False,
    geometry_type: str = "Polygon",
) -> Path:
    """Write ``gdf`` as layer ``layer`` of a new GeoPackage (version 1.2), atomically.

    Args:
        gdf: features with a CRS (may be empty: the layer is still created, with its fields).
        path: output ``.gpkg``; an existing file is replaced whole when ``overwrite``.
        layer: layer name (e.g. ``"tiles"``, ``"matches"``).
        metadata: model, phrases/classes, parameters...; ``geoalign_version`` and
            ``created`` (UTC ISO time) are added when absent.
        overwrite: replace an existing file.
        geometry_type: layer geometry type used for an empty ``gdf`` (non-empty ones are
            inferred from the geometries).

    Raises:
        InputError: see :func:`check_output`.
    """
    import pyogrio

    path = check_output(path, overwrite)
    meta: dict[str, object] = dict(metadata or {})
    meta.setdefault("geoalign_version", _geoalign_version())
    meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    items = _metadata_items(meta)
    with atomic_output(path) as tmp:
        pyogrio.write_dataframe(
            gdf,
            tmp,
            layer=layer,
            driver="GPKG",
            geometry_type=geometry_type if len(gdf) == 0 else None,
            layer_metadata=items,
            dataset_options={"VERSION": GPKG_VERSION},
        )
    return path


def read_geopackage_metadata(path: str | PathLike, layer: str | None = None) -> dict:
    """Metadata written by :func:`write_geopackage` (layer metadata, else dataset metadata).

    Files written by other tools give their GDAL metadata items as a dict of strings.
    """
    import pyogrio

    try:
        info = pyogrio.read_info(Path(path), layer=layer)
    except Exception as exc:
        raise InputError(f"cannot read GeoPackage {path}: {' '.join(str(exc).split())}") from None
    for items in (info.get("layer_metadata"), info.get("dataset_metadata")):
        if items and METADATA_KEY in items:
            return json.loads(items[METADATA_KEY])
    return dict(info.get("layer_metadata") or info.get("dataset_metadata") or {})


def _has_cog_driver() -> bool:
    with rasterio.Env() as env:
        return "COG" in env.drivers()


def write_float_geotiff(
    array: np.ndarray,
    path: str | PathLike,
    transform: Affine,
    crs: object | None,
    nodata: float = float("nan"),
    overwrite: bool = False,
    *,
    band_descriptions: list[str] | None = None,
    tags: Mapping[str, object] | None = None,
) -> Path:
    """Write a float32 ``[H, W]`` (or ``[B, H, W]``) array as a Cloud-Optimised GeoTIFF, atomically.

    Layout: 512 x 512 tiles, DEFLATE with the floating point predictor, internal overviews
    (average resampling, nodata-aware). Uses GDAL's COG driver when available, else a tiled
    GTiff with overviews copied in with ``COPY_SRC_OVERVIEWS``.

    Args:
        array: values; NaN (or ``nodata``) cells are nodata.
        path: output ``.tif``.
        transform: pixel -> map transform of the array's grid.
        crs: CRS (None for pixel coordinates).
        nodata: nodata value, NaN by default (-9999 for tools that dislike NaN).
        overwrite: replace an existing file.
        band_descriptions: optional description per band (e.g. the phrase).
        tags: optional dataset tags (values JSON-encoded unless strings).

    Raises:
        InputError: see :func:`check_output`.
    """
    path = check_output(path, overwrite)
    data = np.asarray(array, dtype=np.float32)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ValueError(f"expected an [H, W] or [B, H, W] array, got shape {array.shape}")
    if not np.isnan(nodata):
        data = np.where(np.isnan(data), np.float32(nodata), data)
    count, height, width = data.shape
    profile = {
        "count": count,
        "height": height,
        "width": width,
        "dtype": "float32",
        "transform": transform,
        "crs": crs,
        "nodata": nodata,
    }
    str_tags = {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in (tags or {}).items()}

    def fill(dst: rasterio.io.DatasetWriter) -> None:
        dst.write(data)
        if str_tags:
            dst.update_tags(**str_tags)
        for i, desc in enumerate(band_descriptions or [], start=1):
            dst.set_band_description(i, desc)

    with atomic_output(path) as tmp:
        if _has_cog_driver():
            with rasterio.open(
                tmp,
                "w",
                driver="COG",
                blocksize=512,
                compress="DEFLATE",
                predictor="YES",
                overview_resampling="AVERAGE",
                bigtiff="IF_SAFER",
                **profile,
            ) as dst:
                fill(dst)
        else:  # pragma: no cover - GDAL < 3.1
            plain = tmp.with_name(tmp.name + ".plain.tif")
            try:
                with rasterio.open(
                    plain, "w", driver="GTiff", tiled=True, blockxsize=512, blockysize=512, **profile
                ) as dst:
                    fill(dst)
                    factors = [f for f in (2, 4, 8, 16, 32, 64) if max(height, width) / f >= 256]
                    if factors:
                        dst.build_overviews(factors, Resampling.average)
                rasterio.shutil.copy(
                    plain,
                    tmp,
                    driver="GTiff",
                    tiled=True,
                    blockxsize=512,
                    blockysize=512,
                    compress="DEFLATE",
                    predictor=3,
                    copy_src_overviews=True,
                )
            finally:
                _remove(plain)
    return path
