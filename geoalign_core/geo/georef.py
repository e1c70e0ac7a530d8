"""Placing a raster on the ground: a geotransform as it is, else its GCPs or RPCs through a warped VRT.

A raster with a geotransform and a CRS (rotated or not) is read as it is. One georeferenced only
by ground control points (raw drone mosaics, L1 products) is read through a GDAL warped VRT
built from its GCPs (in the GCPs' CRS), one with RPCs through a warped VRT built from them
(height 0, no DEM; in the UTM zone of its centre). An identity geotransform (GDAL's default) is
no georeferencing, even beside a declared CRS: GCPs or RPCs place such a raster (as GDAL's tools
and QGIS do); without them it has no georeferencing (InputError unless ``allow_no_crs``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.vrt import WarpedVRT

from geoalign_core.errors import InputError
from geoalign_core.geo.gdal_errors import READ_ERRORS, gdal_message

__all__ = ["Ground", "place_on_ground", "utm_crs"]


@dataclass
class Ground:
    """How a raster is placed on the ground.

    Attributes:
        georeferencing: "transform", "gcps", "rpcs", or "none" (pixel coordinates).
        warped: the warped VRT to read instead of the dataset (GCPs, RPCs), else None.
        crs_ignored: a CRS was declared without any georeferencing (identity transform, no GCPs).
    """

    georeferencing: str = "transform"
    warped: Any = None
    crs_ignored: bool = False


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone of a point."""
    zone = min(60, max(1, int((lon + 180.0) // 6.0) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def place_on_ground(ds: Any, path: str | PathLike, allow_no_crs: bool) -> Ground:
    """How the opened dataset ``ds`` lands on the ground (see the module docstring)."""
    # an identity geotransform is GDAL's default: no georeferencing, whatever CRS is declared
    # (GDAL's tools and QGIS then place the raster by its GCPs or RPCs, as done here)
    if ds.crs is not None and not ds.transform.is_identity:
        return Ground()
    gcps, gcp_crs = ds.gcps
    if ds.crs is not None and not gcps and ds.rpcs is None:
        if allow_no_crs:
            return Ground("none", crs_ignored=True)
        raise InputError(f"raster has a CRS but no georeferencing: {path} (its geotransform is the "
                         "identity and it has no ground control points or RPCs); georeference it (e.g. "
                         "gdal_translate -a_ullr), or allow working in pixel coordinates",
                         code="no_crs", param="allow_no_crs")
    if gcps and gcp_crs is None:
        if allow_no_crs:
            return Ground("none", crs_ignored=ds.crs is not None)  # the CRS belonged to no georeferencing
        raise InputError(f"raster has ground control points but no CRS for them: {path}; assign one "
                         "(gdal_translate -a_srs), or allow working in pixel coordinates",
                         code="no_crs", param="allow_no_crs")
    options: dict = {}
    if gcps:
        n = len(gcps)
        # SRC_METHOD: the GCPs even when the raster also declares an (identity) geotransform
        options = {"src_crs": gcp_crs, "crs": gcp_crs, "SRC_METHOD": "GCP_POLYNOMIAL"}
        how = f"its {n} ground control point{'s' * (n != 1)}"
    elif ds.rpcs is not None:
        options, how = {"crs": "EPSG:4326", "rpcs": True}, "its RPCs"
    else:
        return Ground("none")
    if ds.nodata is None and ColorInterp.alpha not in ds.colorinterp:
        options["add_alpha"] = True  # pixels outside the footprint are invalid, black inside stays valid
    try:
        with rasterio.Env(CPL_LOG=os.devnull):  # the exception says it; no "ERROR 1:" line on stderr
            vrt = WarpedVRT(ds, **options)
            if not gcps:  # RPCs: work in metres, in the UTM zone of the footprint's centre
                b = vrt.bounds
                utm = utm_crs((b.left + b.right) / 2, (b.bottom + b.top) / 2)
                vrt.close()
                vrt = WarpedVRT(ds, **(options | {"crs": utm}))
    except READ_ERRORS as exc:
        raise InputError(f"cannot place {path} on the ground from {how}: {gdal_message(exc)}; warp it "
                         "with gdalwarp, or allow working in pixel coordinates", param="allow_no_crs") from None
    return Ground("gcps" if gcps else "rpcs", warped=vrt)
