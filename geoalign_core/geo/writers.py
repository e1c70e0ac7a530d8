"""Outputs: atomic vector (GeoPackage, GeoJSON, FlatGeobuf, Shapefile, GeoParquet, CSV) and
Cloud-Optimised GeoTIFF writers.

Every writer checks its output first (:func:`check_output`: a format the extension names,
exists without overwrite, missing or unwritable directory -> InputError before any work),
then writes to a hidden temporary file beside the target and renames it into place
(:func:`atomic_output`), so an interrupted or failed run never leaves a partial file and never
touches an existing one. A full disk is an InputError ("no space left ...") like any other
bad output, with nothing left behind.

Formats by extension (:data:`VECTOR_FORMATS`): ``.gpkg`` GeoPackage (the run's metadata in the
layer; ``overwrite`` replaces that layer only, other layers stay), ``.geojson`` / ``.json``,
``.fgb``, ``.shp`` (field names cut to 10 characters by GDAL), ``.parquet`` GeoParquet (the
metadata under the ``geoalign`` key of the file's metadata), ``.csv`` (geometry as WKT, no
CRS). Rasters: ``.tif`` / ``.tiff`` only.

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
import errno
import json
import os
import secrets
import shutil
import sys
import tempfile
import warnings
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
from geoalign_core.outputs import (  # noqa: F401  (the output checks: re-exported, light, in outputs)
    RASTER_FORMATS,
    VECTOR_FORMATS,
    check_not_an_input,
    check_output,
    exists_error,
    output_format,
    output_lock,
    publish,
)

if TYPE_CHECKING:  # the vector stack is imported by the GeoPackage functions only
    import geopandas as gpd

__all__ = [
    "METADATA_KEY",
    "atomic_output",
    "check_output",
    "RASTER_FORMATS",
    "VECTOR_FORMATS",
    "check_not_an_input",
    "c_library_stderr_held",
    "disk_full_error",
    "disk_full_is_input_error",
    "output_format",
    "read_geopackage_metadata",
    "read_metadata",
    "write_float_geotiff",
    "write_geopackage",
    "write_vector",
]

METADATA_KEY = "GEOALIGN_METADATA"
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx")
GPKG_VERSION = "1.2"  # QGIS 3.22's GDAL warns about the user_version of newer GeoPackages
_SIDECARS = ("-journal", "-wal", "-shm", ".aux.xml", ".ovr", ".msk")


def _remove(path: Path) -> None:
    for p in (path, *(Path(str(path) + s) for s in _SIDECARS)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


WRITE_WAIT_S = 300.0  #: how long a writer waits for another run writing the same output (writes are short)


@contextlib.contextmanager
def atomic_output(path: str | PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path`` (same suffix); move it onto ``path`` on success.

    The move is :func:`geoalign_core.outputs.publish`. ``overwrite=False`` (what every writer of
    a run's output passes unless ``--overwrite`` was given): the file is created only if ``path``
    does not exist, in one atomic step, so of two runs writing the same new
    output one succeeds and the other gets an InputError ("output already exists"), never two
    successes with one result lost. The block runs under the output's lock
    (:func:`~geoalign_core.outputs.output_lock`; another run writing the same path is waited
    for), so steps such as copying an existing GeoPackage to add a layer see no other writer.

    On any exception, KeyboardInterrupt included, the temporary file (and GDAL side-car
    files) are deleted and an existing file at ``path`` is left untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        with output_lock(path, wait=WRITE_WAIT_S), disk_full_is_input_error(path), c_library_stderr_held():
            if not overwrite and path.exists():
                raise exists_error(path)
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"the writer produced no file for {path}")
            publish(tmp, path, overwrite)
    finally:
        _remove(tmp)


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_FULL_TEXTS = ("no space left on device", "disk quota exceeded", "file too large", "not enough space")


def _why_full(exc: BaseException) -> str | None:
    """The reason when ``exc`` (or what caused it) says the disk is full, else None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL_ERRNOS:
            return os.strerror(seen.errno).lower()
        text = str(seen).lower()
        for needle in _FULL_TEXTS:
            if needle in text:
                return needle
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def c_library_stderr_held() -> Iterator[None]:
    """Hold what C libraries write straight to file descriptor 2 while a GDAL write runs.

    libtiff reports a full disk with its own line on stderr besides GDAL's error: on failure
    that text is dropped (the exception carries the reason, which becomes one ``error:`` line);
    on success it is passed on unchanged, except that a write libtiff reports as lost to a full
    disk or a file size limit (which GDAL does not always raise) becomes that OSError.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured, embedded)
        yield
        return
    with tempfile.TemporaryFile() as held:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        saved = os.dup(fd)
        os.dup2(held.fileno(), fd)
        failed = True
        try:
            yield
            failed = False
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            if not failed:
                held.seek(0)
                text = held.read()
                if b"No space left on device" in text or b"File too large" in text:
                    # libtiff lost a write that GDAL did not report: the file is not whole
                    err = errno.EFBIG if b"File too large" in text else errno.ENOSPC
                    raise OSError(err, os.strerror(err))
                if text:
                    os.write(fd, text)


FULL_BELOW_BYTES = 4 << 20  # a write that failed with less free space than this failed for lack of space


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < FULL_BELOW_BYTES
    except OSError:
        return False


def _size_limited() -> bool:
    """A file size limit (``ulimit -f``) is in force: GDAL then reports EFBIG only as a write error."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):
        return False
    return soft != resource.RLIM_INFINITY


@contextlib.contextmanager
def disk_full_is_input_error(path: str | PathLike) -> Iterator[None]:
    """Turn a failed write for lack of space into one InputError line.

    Recognised by the errno (ENOSPC, EDQUOT, EFBIG), by the message, or -- GDAL often reports
    only "Write error at scanline N" or "Unknown GDAL Error" -- by a write error on a file system
    that is now nearly full, or while a file size limit is in force.
    """
    try:
        yield
    except Exception as exc:
        full = disk_full_error(path, exc)
        if full is None:
            raise
        raise full from None


def disk_full_error(path: str | PathLike, exc: BaseException) -> InputError | None:
    """The one-line InputError for a write of ``path`` that failed for lack of space, else None."""
    if isinstance(exc, InputError) or not isinstance(exc, Exception):
        return None
    why = _why_full(exc)
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    if why is None and _nearly_full(folder if str(folder) else Path(".")):
        why = "no space left on device"
    if why is None and _size_limited():
        why = "file too large (the file size limit of this process, ulimit -f)"
    if why is None:
        return None
    return InputError(f"cannot write {path}: {why} (nothing was written; free some space or choose another "
                      "output)")


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
    """Write ``gdf`` as layer ``layer`` of a GeoPackage (version 1.2), atomically.

    Args:
        gdf: features with a CRS (may be empty: the layer is still created, with its fields).
        path: output ``.gpkg``; with ``overwrite``, an existing file keeps its other layers and
            only ``layer`` is replaced (see :func:`write_vector`).
        layer: layer name (e.g. ``"tiles"``, ``"matches"``).
        metadata: model, phrases/classes, parameters...; ``geoalign_version`` and
            ``created`` (UTC ISO time) are added when absent.
        overwrite: replace the layer of an existing file.
        geometry_type: layer geometry type used for an empty ``gdf`` (non-empty ones are
            inferred from the geometries).

    Raises:
        InputError: see :func:`check_output`.
    """
    if Path(path).suffix.lower() != ".gpkg":
        raise InputError(f"not a GeoPackage name: {path} (use write_vector for other formats)")
    return write_vector(gdf, path, layer, metadata, overwrite, geometry_type)


def _stamped(metadata: Mapping[str, object] | None) -> dict[str, object]:
    meta: dict[str, object] = dict(metadata or {})
    meta.setdefault("geoalign_version", _geoalign_version())
    meta.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return meta


def write_vector(
    gdf: gpd.GeoDataFrame,
    path: str | PathLike,
    layer: str,
    metadata: Mapping[str, object] | None = None,
    overwrite: bool = False,
    geometry_type: str = "Polygon",
) -> Path:
    """Write ``gdf`` in the format its extension names (:data:`VECTOR_FORMATS`), atomically.

    A GeoPackage gets ``layer`` and the metadata; with ``overwrite`` an existing GeoPackage
    keeps its other layers (the file is copied, the layer replaced in the copy, the copy renamed
    into place). Other formats are replaced whole; a Shapefile's parts (.shp, .shx, .dbf, .prj,
    .cpg) are written in a hidden folder beside it and moved into place together.

    Raises:
        InputError: see :func:`check_output`; a full disk.
    """
    import pyogrio

    name, driver = output_format(path, VECTOR_FORMATS)
    path = check_output(path, overwrite, VECTOR_FORMATS)
    meta = _stamped(metadata)
    geom_type = geometry_type if len(gdf) == 0 else None
    if driver == "GPKG":
        with atomic_output(path, overwrite) as tmp:
            keep = overwrite and path.exists()
            if keep:
                shutil.copy2(path, tmp)
            pyogrio.write_dataframe(
                gdf, tmp, layer=layer, driver="GPKG", geometry_type=geom_type, layer_metadata=_metadata_items(meta),
                dataset_options=None if keep else {"VERSION": GPKG_VERSION},
                layer_options={"OVERWRITE": "YES"} if keep else None,
            )
        return path
    if driver == "parquet":
        import pyarrow.parquet as pq

        with atomic_output(path, overwrite) as tmp:
            gdf.to_parquet(tmp)
            table = pq.read_table(tmp)
            schema_meta = dict(table.schema.metadata or {})
            schema_meta[b"geoalign"] = json.dumps(meta, default=str).encode()
            pq.write_table(table.replace_schema_metadata(schema_meta), tmp)
        return path
    options = {"GEOMETRY": "AS_WKT"} if driver == "CSV" else None
    if driver != "ESRI Shapefile":
        with atomic_output(path, overwrite) as tmp:
            pyogrio.write_dataframe(gdf, tmp, layer=layer, driver=driver, geometry_type=geom_type,
                                    layer_options=options)
        return path
    folder = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmpdir")
    try:
        with output_lock(path, wait=WRITE_WAIT_S), disk_full_is_input_error(path):
            if not overwrite and path.exists():
                raise exists_error(path)
            folder.mkdir()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # "field names laundered": said in the docs
                pyogrio.write_dataframe(gdf, folder / path.name, layer=path.stem, driver=driver,
                                        geometry_type=geom_type, encoding="UTF-8")
            publish(folder / path.name, path, overwrite)  # the .shp first: it claims the name
            for ext in SHAPEFILE_PARTS[1:]:
                old = path.with_suffix(ext)
                if old.exists() and not (folder / old.name).exists():
                    old.unlink()  # a part the new file does not have (an old index)
            for part in folder.iterdir():
                os.replace(part, path.with_name(part.name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return path


def read_metadata(path: str | PathLike, layer: str | None = None) -> dict:
    """The run metadata stored in an output: GeoPackage layer metadata, GeoParquet's ``geoalign``
    key; {} for formats without a place for it (GeoJSON, FlatGeobuf, Shapefile, CSV)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gpkg":
        return read_geopackage_metadata(path, layer)
    if suffix in (".parquet", ".geoparquet"):
        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[b"geoalign"]) if b"geoalign" in meta else {}
    return {}


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
    path = check_output(path, overwrite, RASTER_FORMATS)
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

    with atomic_output(path, overwrite) as tmp:
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
