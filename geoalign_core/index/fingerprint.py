"""A raster's fingerprint: enough of its bytes and pixels to tell that it changed since it was indexed.

Hashing a whole scene would read every byte (minutes for a large one) each time an index is
opened. The fingerprint instead hashes, in a few milliseconds:

* for a local file: its size, the first and last MiB and 64 chunks of 64 KiB spread evenly
  through it (any re-encoding, added overview or rewritten header changes these);
* for every raster (also GDAL paths such as ``/vsicurl/``): its size, CRS, transform, band
  types and the raw values of 16 windows of 32 x 32 pixels of every band, spread over it.

A change that keeps the file's size and touches none of the sampled bytes or pixels is not
seen; ``geoalign index --overwrite`` rebuilds an index from scratch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from ..geo import RasterSource

__all__ = ["raster_fingerprint"]

_HEAD = 1 << 20
_CHUNK = 1 << 16
_CHUNKS = 64
_PIXEL_WINDOWS = 4  # per axis: 4 x 4 windows
_PIXEL_SIDE = 32


def _file_bytes(h: hashlib._Hash, path: Path) -> int:
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(_HEAD))
        if size > _HEAD:
            f.seek(max(_HEAD, size - _HEAD))
            h.update(f.read(_HEAD))
        for i in range(_CHUNKS):
            f.seek(int(size * (i + 0.5) / _CHUNKS))
            h.update(f.read(_CHUNK))
    return size


def raster_fingerprint(src: RasterSource) -> str:
    """A 32-hex-digit hash of ``src``'s sampled bytes and pixels (see the module docstring)."""
    h = hashlib.sha256()
    if isinstance(src.path, Path) and src.path.is_file():
        _file_bytes(h, src.path)
    ds = src.dataset
    h.update(f"{ds.width}x{ds.height}|{ds.count}|{ds.dtypes}|{ds.crs}|{tuple(ds.transform)}".encode())
    for r in range(_PIXEL_WINDOWS):
        for c in range(_PIXEL_WINDOWS):
            side_w, side_h = min(_PIXEL_SIDE, ds.width), min(_PIXEL_SIDE, ds.height)
            col = int((ds.width - side_w) * (c + 0.5) / _PIXEL_WINDOWS)
            row = int((ds.height - side_h) * (r + 0.5) / _PIXEL_WINDOWS)
            h.update(np.ascontiguousarray(src.read_all_bands(Window(col, row, side_w, side_h))).tobytes())
    return h.hexdigest()[:32]
