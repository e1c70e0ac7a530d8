"""Issue 27 (reliability, round three), except the concurrent writers (test_concurrent_outputs.py)
and the engine (test_engine.py): a raster placed by GCPs beside an identity geotransform and a
CRS, a full disk during ``index``, hand-edited or foreign index files, and misleading messages.
Each through the real CLI or library on small generated data.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import shapely
from cli_helpers import assert_bad, cli

from geoalign_core.geo import RasterSource, read_metadata


def _identity_vrt(folder: Path, tif: Path, gcps: bool) -> Path:
    """A VRT over ``tif`` whose GeoTransform is the identity and which declares an SRS, with or
    without a GCPList placing it where ``tif`` lies (the layout of rasterio's GCP test data)."""
    with rasterio.open(tif) as ds:
        w, h, t = ds.width, ds.height, ds.transform
    points = "".join(f'<GCP Id="{i}" Pixel="{c}" Line="{r}" X="{(t * (c, r))[0]}" Y="{(t * (c, r))[1]}"/>'
                     for i, (c, r) in enumerate(((0, 0), (w, 0), (0, h), (w, h))))
    gcp_list = f'<GCPList Projection="EPSG:32633">{points}</GCPList>' if gcps else ""
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{ci}</ColorInterp><SimpleSource>'
                    f'<SourceFilename relativeToVRT="0">{tif}</SourceFilename><SourceBand>{b}</SourceBand>'
                    f'</SimpleSource></VRTRasterBand>' for b, ci in ((1, "Red"), (2, "Green"), (3, "Blue")))
    vrt = folder / ("identity_gcps.vrt" if gcps else "identity.vrt")
    vrt.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>EPSG:32633</SRS>'
                   f'<GeoTransform>0, 1, 0, 0, 0, 1</GeoTransform>{gcp_list}{bands}</VRTDataset>')
    return vrt


# ------------------------------------------------------------------ bug 2: identity geotransform
def test_identity_transform_with_crs_and_gcps_is_placed_by_its_gcps(capsys, tiny_ckpt, textured, tmp_path):
    vrt = _identity_vrt(tmp_path, textured, gcps=True)
    with rasterio.open(vrt) as ds:
        assert ds.crs is not None and ds.transform.is_identity and ds.gcps[0]  # what the file says
    with rasterio.open(textured) as ds:
        ground = shapely.box(*ds.bounds)
    with RasterSource(vrt) as src:
        assert src.georeferencing == "gcps"
        assert tuple(src.bounds) == pytest.approx(tuple(ground.bounds), abs=0.01)
    rc, _, err = cli(capsys, "tile-classify", vrt, "--classes", "a,b", "--model", tiny_ckpt, "--out",
                     tmp_path / "t.gpkg", "--quiet")
    assert rc == 0, err
    tiles = gpd.read_file(tmp_path / "t.gpkg")
    assert tiles.crs.to_epsg() == 32633
    assert tiles.union_all().area == pytest.approx(ground.area, rel=1e-3)
    assert tiles.union_all().difference(ground.buffer(0.01)).area < 1e-6  # on the ground, not at x 0..300
    assert read_metadata(tmp_path / "t.gpkg", "tiles")["georeferencing"] == "gcps"


def test_identity_transform_with_crs_and_nothing_else_is_no_georeferencing(capsys, textured, tmp_path):
    vrt = _identity_vrt(tmp_path, textured, gcps=False)
    line = assert_bad(capsys, ["find", vrt, "car", "--out", tmp_path / "f.gpkg"], tmp_path,
                      "has a CRS but no georeferencing")
    assert "--allow-no-crs" in line
    with RasterSource(vrt, allow_no_crs=True) as src:  # allowed: pixel coordinates, no CRS claimed
        assert src.georeferencing == "none" and src.crs is None
