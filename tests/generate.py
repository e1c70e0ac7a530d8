"""Generators of the tests' data: every raster and scene the tests use is made here, at test time.

Nothing generated is committed (the sample scene is, with its own generator
``sample_data/make_sample.py``). ``tests/conftest.py`` turns these into fixtures; tests that
need a variant call the functions directly. To look at the data in QGIS or ``gdalinfo``::

    .venv/bin/python tests/generate.py /tmp/geoalign-test-data

writes one file of each kind into that folder.
"""

from __future__ import annotations

import socket
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine, from_origin
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "sample_data" / "scene.tif"
SAMPLE_LABELS = ROOT / "sample_data" / "labels.gpkg"
REAL_DATA = ROOT.parent / "shared" / "real_data"

UTM = "EPSG:32633"
ORIGIN = (500000.0, 4100000.0)
RES = 0.5
RGB = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]


def array_raster(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM,
    transform: Affine | None = None,
    nodata: float | None = None,
    colorinterp: list[ColorInterp] | None = None,
    mask: np.ndarray | None = None,
    block: int = 64,
) -> Path:
    """Write ``data [C, H, W]`` as a GeoTIFF exactly as given (tiled ``block`` px when it fits).

    ``transform`` defaults to ``RES`` metre pixels at ``ORIGIN``; ``crs=None`` with
    ``transform=None`` gives a raster with no georeferencing at all.
    """
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name}
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform if transform is not None else from_origin(*ORIGIN, RES, RES)
    elif transform is not None:
        profile["transform"] = transform
    if nodata is not None:
        profile["nodata"] = nodata
    if width >= block and height >= block:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if count == 4 and colorinterp and ColorInterp.alpha in colorinterp:
        profile.update(photometric="RGB", alpha="YES")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dst = rasterio.open(path, "w", **profile)
    with dst:
        dst.write(data)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        if mask is not None:
            dst.write_mask(mask.astype(np.uint8) * 255)
    return path


def random_rgb(height: int = 100, width: int = 130, seed: int = 0) -> np.ndarray:
    """Uniform random RGB uint8 pixels in 1..255 (never 0, so no pixel looks like nodata)."""
    return np.random.default_rng(seed).integers(1, 256, size=(3, height, width), dtype=np.uint8)


def _texture(row0: int, col0: int, height: int, width: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth stripes plus a little noise, in [0, 1.1): cheap to compress, not flat."""
    yy, xx = np.mgrid[row0 : row0 + height, col0 : col0 + width]
    base = np.stack([np.sin(xx / (7 + 3 * b)) + np.cos(yy / (5 + 2 * b)) for b in range(count)])
    return (base + 2.0) / 4.0 + 0.1 * rng.random(base.shape)


def _scale(unit: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return unit.astype(dtype)
    top = 255 if dtype == "uint8" else 2000
    return (1 + unit / 1.1 * (top - 1)).astype(dtype)


def textured_raster(
    path: Path,
    width: int = 300,
    height: int = 200,
    count: int = 3,
    dtype: str = "uint8",
    *,
    nodata: float | None = None,
    crs: str | None = UTM,
    transform: Affine | None = None,
    fill: Callable[[np.ndarray], None] | None = None,
    seed: int = 0,
    block: int = 128,
) -> Path:
    """A smooth textured raster, ``RES`` m pixels at ``ORIGIN``, tiled ``block`` px, DEFLATE.

    Written block by block (a 4000 x 4000 raster needs little memory); ``fill(array)`` may edit
    the whole [C, H, W] array in place before it is written (then it is built in one piece).
    ``transform`` defaults to ``RES`` m pixels at ``ORIGIN``; ``crs=None`` keeps it but leaves
    the CRS out (with ``transform=Affine.identity()``: no georeferencing at all). Values are >= 1
    for integer types, so 0 can serve as nodata.
    """
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, nodata=nodata,
                   tiled=True, blockxsize=block, blockysize=block, compress="deflate")
    profile["transform"] = transform if transform is not None else from_origin(*ORIGIN, RES, RES)
    if crs is not None:
        profile["crs"] = crs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as dst:
            if fill is not None:
                arr = _scale(_texture(0, 0, height, width, count, np.random.default_rng(seed)), dtype)
                fill(arr)
                dst.write(arr)
                return path
            for i, (_, win) in enumerate(dst.block_windows(1)):
                rng = np.random.default_rng([seed, i])
                unit = _texture(win.row_off, win.col_off, win.height, win.width, count, rng)
                dst.write(_scale(unit, dtype), window=win)
    return path


def regions_geojson(out: Path, raster: Path) -> Path:
    """Two rectangles ("kind" a and b) inside ``raster``, written as GeoJSON in EPSG:4326."""
    import geopandas as gpd
    import shapely

    with rasterio.open(raster) as ds:
        left, bottom, _, top = ds.bounds
        crs = ds.crs
    gdf = gpd.GeoDataFrame(
        {"kind": ["a", "b"]},
        geometry=[shapely.box(left + 5, top - 30, left + 25, top - 10),
                  shapely.box(left + 60, bottom + 5, left + 90, bottom + 40)],
        crs=crs,
    ).to_crs("EPSG:4326")
    gdf.to_file(out, driver="GeoJSON")
    return out


def sample_crop(out: Path, size: int = 256, col: int = 640, row: int = 640) -> Path:
    """A ``size`` x ``size`` crop of the committed sample scene, same CRS and pixel grid."""
    with rasterio.open(SAMPLE_SCENE) as src:
        win = Window(col, row, size, size)
        data = src.read(window=win)
        tags = src.tags()  # a crop of a generated scene is still one (the model cards' domain check reads it)
        profile = src.profile | {
            "width": size, "height": size, "transform": src.window_transform(win), "tiled": False,
            "compress": "deflate",
        }
    profile.pop("blockxsize", None)
    profile.pop("blockysize", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.update_tags(**tags)
    return out


def synthetic_scene(out_dir: Path, seed: int = 1002, size: int = 512) -> tuple[Path, Path]:
    """A generated aerial scene with labels (``geoalign_core.training.scenes``): (GeoTIFF, GeoPackage)."""
    from geoalign_core.training.scenes import write_scene

    return write_scene(out_dir, seed, size=size)


def sample_cog(out: Path, size: int = 256, col: int = 640, row: int = 640) -> Path:
    """A Cloud-Optimized GeoTIFF (GDAL's COG driver: 128 px tiles, an overview) of a crop of the sample scene."""
    from rasterio.shutil import copy as rio_copy

    tmp = sample_crop(out.with_name(f".{out.stem}.crop.tif"), size=size, col=col, row=row)
    try:
        rio_copy(tmp, out, driver="COG", blocksize=128, overview_resampling="average", compress="deflate")
    finally:
        tmp.unlink()
    return out


def free_port() -> int:
    """A TCP port nobody listens on now (for torch.distributed rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python tests/generate.py OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    print(array_raster(out / "random_rgb.tif", random_rgb(), colorinterp=RGB))
    print(textured := textured_raster(out / "textured.tif"))
    print(regions_geojson(out / "regions.geojson", textured))
    print(textured_raster(out / "textured_uint16_nocrs.tif", count=5, dtype="uint16", crs=None))
    print(textured_raster(out / "pixels_only.tif", crs=None, transform=Affine.identity()))
    print(sample_crop(out / "sample_crop.tif"))
    print(*synthetic_scene(out), sep="\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))


def geostationary_raster(folder: Path, source: Path | None = None) -> Path:
    """``source`` (default: a 200 px textured raster) placed in a geostationary view of Europe: a CRS
    defined on one disk of the earth, where far-away features cannot be projected."""
    import rasterio
    import rasterio.transform

    path = source if source is not None else textured_raster(folder / "plain.tif", width=200, height=200)
    geos = folder / "geos.tif"
    with rasterio.open(path) as ds:
        profile = ds.profile | {"crs": "+proj=geos +h=35785831 +lon_0=0 +sweep=y",
                                "transform": rasterio.transform.from_origin(1100000, 4900000, 20, 20)}
        with rasterio.open(geos, "w", **profile) as dst:
            dst.write(ds.read())
    return geos


def real_data(name: str) -> Path:
    """A file of ``../shared/real_data``; the test is skipped when it is absent (``CI=true``: the run
    fails at start instead, see conftest.py)."""
    import pytest

    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"real data not present: {path}")
    return path
