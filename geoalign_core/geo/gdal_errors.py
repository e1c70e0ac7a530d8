"""GDAL's read errors, and their one-line messages (what :class:`~geoalign_core.errors.InputError` says)."""

from __future__ import annotations

import rasterio.errors

__all__ = ["READ_ERRORS", "gdal_message"]

try:  # GDAL's error classes: public in some rasterio releases, private in others
    from rasterio.errors import CPLE_BaseError as _CPLError
except ImportError:
    from rasterio._err import CPLE_BaseError as _CPLError

#: what opening or reading a raster raises when GDAL fails
READ_ERRORS = (rasterio.errors.RasterioError, _CPLError)


def gdal_message(exc: BaseException) -> str:
    """One-line message of a GDAL error, with the underlying cause when GDAL chains one."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and "previous exception" in msg:
        msg = " ".join(str(cause).split()) or msg
    return msg
