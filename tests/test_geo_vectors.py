"""Tests of geoalign_core.geo.vectors: reading, reprojection, clipping and pixel boxes."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from generate import real_data
from pyproj import Transformer
from rasterio.coords import BoundingBox

from geoalign_core.errors import InputError
from geoalign_core.geo import boxes_to_pixels, clip_to_raster, pixel_boxes_to_polygons, read_vectors

UTM = "EPSG:32616"
# a 200 x 100 px raster at 0.5 m: x 500000..500100, y 3699950..3700000
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3700000.0)
BOUNDS = BoundingBox(500000.0, 3699950.0, 500100.0, 3700000.0)


def _utm_boxes() -> list[shapely.Polygon]:
    return [
        shapely.box(500010, 3699960, 500020, 3699970),  # inside
        shapely.box(500090, 3699990, 500110, 3700010),  # straddles the corner
        shapely.box(501000, 3699000, 501010, 3699010),  # outside
    ]


def _write(gdf: gpd.GeoDataFrame, path: Path, **kwargs) -> Path:
    pyogrio.write_dataframe(gdf, path, **kwargs)
    return path


def test_reproject_from_wgs84(tmp_path: Path) -> None:
    utm = gpd.GeoDataFrame({"name": ["a", "b", "c"]}, geometry=_utm_boxes(), crs=UTM)
    path = _write(utm.to_crs("EPSG:4326"), tmp_path / "labels.geojson", driver="GeoJSON")
    gdf = read_vectors(path, UTM)
    assert gdf.crs.to_epsg() == 32616 and list(gdf["name"]) == ["a", "b", "c"]
    np.testing.assert_allclose(gdf.total_bounds, utm.total_bounds, atol=1e-3)  # mm after the round trip
    inside, n_out = clip_to_raster(gdf, BOUNDS)
    assert n_out == 1 and list(inside["name"]) == ["a", "b"]


@pytest.mark.filterwarnings("ignore:More than one layer found")
def test_reproject_with_rasterio_crs_and_gpkg_layer(tmp_path: Path) -> None:
    utm = gpd.GeoDataFrame({"k": [1, 2, 3]}, geometry=_utm_boxes(), crs=UTM)
    path = tmp_path / "multi.gpkg"
    _write(utm.to_crs("EPSG:3857"), path, layer="first")
    _write(utm.iloc[:1], path, layer="second", append=True)
    gdf = read_vectors(path, rasterio.crs.CRS.from_epsg(32616), layer="second")
    assert len(gdf) == 1 and gdf.crs.to_epsg() == 32616
    assert len(read_vectors(path, UTM)) == 3  # first layer by default


def test_no_overlap_raises(tmp_path: Path) -> None:
    gdf = gpd.GeoDataFrame(geometry=[_utm_boxes()[2]], crs=UTM)
    with pytest.raises(InputError, match="none of the 1 features overlap"):
        clip_to_raster(gdf, BOUNDS)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_vectors(tmp_path / "missing.gpkg", UTM)
    junk = tmp_path / "junk.geojson"
    junk.write_text("{ this is not json")
    with pytest.raises(InputError, match="cannot read"):
        read_vectors(junk, UTM)
    empty = _write(gpd.GeoDataFrame({"a": []}, geometry=[], crs=UTM), tmp_path / "empty.gpkg", geometry_type="Polygon")
    with pytest.raises(InputError, match="no features"):
        read_vectors(empty, UTM)
    with pytest.raises(InputError, match="has no layer 'nope'; its layers: l"):
        read_vectors(_write(gpd.GeoDataFrame(geometry=_utm_boxes(), crs=UTM), tmp_path / "l.gpkg"), UTM, layer="nope")


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_missing_crs_assumes_target(tmp_path: Path) -> None:
    path = _write(gpd.GeoDataFrame({"a": [1]}, geometry=_utm_boxes()[:1]), tmp_path / "nocrs.shp")
    assert not (tmp_path / "nocrs.prj").exists()
    with pytest.warns(UserWarning, match="no CRS"):
        gdf = read_vectors(path, UTM)
    assert gdf.crs.to_epsg() == 32616
    np.testing.assert_allclose(gdf.total_bounds, _utm_boxes()[0].bounds)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_target_none_keeps_coordinates(tmp_path: Path) -> None:
    path = _write(gpd.GeoDataFrame(geometry=[shapely.box(1, 2, 3, 4)]), tmp_path / "px.shp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gdf = read_vectors(path, None)
    assert tuple(gdf.total_bounds) == (1, 2, 3, 4)


def test_boxes_to_pixels_and_back() -> None:
    gdf = gpd.GeoDataFrame(geometry=_utm_boxes()[:2], crs=UTM)
    boxes = boxes_to_pixels(gdf, TRANSFORM)
    np.testing.assert_allclose(boxes[0], [20, 60, 40, 80])  # x0 y0 x1 y1 in pixels
    np.testing.assert_allclose(boxes[1], [180, -20, 220, 20])
    polys = pixel_boxes_to_polygons(boxes, TRANSFORM)
    for p, q in zip(polys, gdf.geometry):
        assert p.equals(q)
    np.testing.assert_allclose(boxes_to_pixels(gpd.GeoSeries(polys), TRANSFORM), boxes)
    assert boxes_to_pixels(gdf.iloc[:0], TRANSFORM).shape == (0, 4)


def test_boxes_on_pixel_grid_y_down() -> None:
    ident = Affine.identity()
    boxes = np.array([[1.0, 2.0, 5.0, 9.0]])
    [poly] = pixel_boxes_to_polygons(boxes, ident)
    assert poly.bounds == (1, 2, 5, 9)
    np.testing.assert_allclose(boxes_to_pixels(gpd.GeoSeries([poly]), ident), boxes)
    inside, n_out = clip_to_raster(gpd.GeoDataFrame(geometry=[poly]), (0, 100, 100, 0))  # y-down bounds
    assert len(inside) == 1 and n_out == 0


# ---------------------------------------------------------------------------- real data
def test_real_spacenet_buildings() -> None:
    raster = real_data("spacenet_atlanta_pan.tif")
    with rasterio.open(raster) as ds:
        crs, transform, bounds, width, height = ds.crs, ds.transform, ds.bounds, ds.width, ds.height
    gdf = read_vectors(real_data("spacenet_atlanta_buildings.geojson"), crs)
    assert len(gdf) == 43 and (gdf["building"] == "yes").all()
    inside, n_out = clip_to_raster(gdf, bounds)
    assert len(inside) == 43 and n_out == 0
    px = boxes_to_pixels(inside, transform)
    assert px.shape == (43, 4) and (px[:, 2] > px[:, 0]).all() and (px[:, 3] > px[:, 1]).all()
    assert px[:, [0, 1]].min() > -1 and px[:, 2].max() < width + 1 and px[:, 3].max() < height + 1
    # the same buildings read into WGS 84 land in Atlanta
    geo = read_vectors(real_data("spacenet_atlanta_buildings.geojson"), "EPSG:4326")
    lon, lat = shapely.union_all(geo.geometry.values).centroid.coords[0]
    assert -84.6 < lon < -84.2 and 33.6 < lat < 34.0
    back = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    assert bounds.left <= back[0] <= bounds.right and bounds.bottom <= back[1] <= bounds.top


def test_real_neon_pixel_boxes_round_trip() -> None:
    raster = real_data("neon_osbs029_rgb.tif")
    with open(real_data("neon_osbs029_trees_pixel_boxes.csv"), newline="") as f:
        boxes = np.array([[float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")] for r in csv.DictReader(f)])
    assert len(boxes) == 61
    with rasterio.open(raster) as ds:
        polys = pixel_boxes_to_polygons(boxes, ds.transform)
        gdf = gpd.GeoDataFrame(geometry=polys, crs=ds.crs)
        inside, n_out = clip_to_raster(gdf, ds.bounds)
        assert n_out == 0 and len(inside) == 61
        np.testing.assert_allclose(boxes_to_pixels(gdf, ds.transform), boxes, atol=1e-6)
