"""Geospatial I/O: raster reading and tiling, vector I/O and CRS, GeoPackage/GeoTIFF writers.

Data flow: ``RasterSource`` (validated raster, band selection, validity, scene statistics)
-> ``iter_tiles`` / ``read_region`` (normalised float32 tiles) -> model -> inference ->
``write_geopackage`` / ``HeatmapAccumulator`` + ``write_float_geotiff``.

Every name is imported when it is first used (rasterio with the raster side, the vector stack:
pyogrio, shapely, pyproj with :mod:`~geoalign_core.geo.vectors` and
:mod:`~geoalign_core.geo.writers`), so that code that reads rasters only (training, the chip
reader) does not need the vector libraries, and ``geoalign --help`` or a refused path
(:mod:`~geoalign_core.geo.paths`) needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from geoalign_core.geo.bands import BandSelection, parse_bands, select_bands
    from geoalign_core.geo.heatmap import HeatmapAccumulator
    from geoalign_core.geo.raster import RasterSource
    from geoalign_core.geo.stats import SceneStats, compute_scene_stats
    from geoalign_core.geo.tiling import Tile, count_tiles, iter_tiles, tile_windows
    from geoalign_core.geo.vectors import (
        boxes_to_pixels,
        clip_to_raster,
        drop_unprojectable,
        mark_unprojectable,
        pixel_boxes_to_polygons,
        read_vectors,
    )
    from geoalign_core.geo.writers import (
        RASTER_FORMATS,
        VECTOR_FORMATS,
        atomic_output,
        check_not_an_input,
        check_output,
        output_format,
        read_geopackage_metadata,
        read_metadata,
        write_float_geotiff,
        write_geopackage,
        write_vector,
    )

_LAZY = {  # submodule: the names it serves
    "bands": ("BandSelection", "parse_bands", "select_bands"),
    "heatmap": ("HeatmapAccumulator",),
    "raster": ("RasterSource",),
    "stats": ("SceneStats", "compute_scene_stats"),
    "tiling": ("Tile", "count_tiles", "iter_tiles", "tile_windows"),
    "vectors": ("boxes_to_pixels", "clip_to_raster", "pixel_boxes_to_polygons", "read_vectors", "drop_unprojectable",
                "mark_unprojectable"),
    "writers": ("atomic_output", "check_output", "read_geopackage_metadata", "write_float_geotiff", "write_geopackage",
                "write_vector", "check_not_an_input", "read_metadata", "output_format", "VECTOR_FORMATS",
                "RASTER_FORMATS"),
}

__getattr__ = lazy_names(__name__, _LAZY)

__all__ = [
    "BandSelection",
    "HeatmapAccumulator",
    "RasterSource",
    "SceneStats",
    "Tile",
    "atomic_output",
    "boxes_to_pixels",
    "check_output",
    "clip_to_raster",
    "compute_scene_stats",
    "count_tiles",
    "iter_tiles",
    "parse_bands",
    "pixel_boxes_to_polygons",
    "read_geopackage_metadata",
    "read_vectors",
    "drop_unprojectable",
    "mark_unprojectable",
    "select_bands",
    "tile_windows",
    "write_float_geotiff",
    "write_geopackage",
    "write_vector",
    "check_not_an_input",
    "read_metadata",
    "output_format",
    "VECTOR_FORMATS",
    "RASTER_FORMATS",
]
