"""Writing a synthetic scene to disk: a GeoTIFF and its labels GeoPackage, both atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from shapely import affinity

from .scene import render_scene
from .spec import DEFAULT_EPSG, DEFAULT_RES, DEFAULT_SIZE, LAYER


def scene_paths(out_dir: str | os.PathLike[str], name: str = "scene") -> tuple[Path, Path]:
    """File names for a scene: "scene" -> scene.tif + labels.gpkg, NAME -> NAME.tif + NAME_labels.gpkg."""
    out = Path(out_dir)
    if name == "scene":
        return out / "scene.tif", out / "labels.gpkg"
    return out / f"{name}.tif", out / f"{name}_labels.gpkg"


def scene_origin(seed: int) -> tuple[float, float]:
    """Map coordinates (x0, y0) of the top-left corner: a plausible UTM zone 33N origin."""
    return 500000.0 + 960.0 * (seed % 97), 5000000.0 + 960.0 * (seed % 89)


def write_scene(
    out_dir: str | os.PathLike[str],
    seed: int,
    size: int = DEFAULT_SIZE,
    res: float = DEFAULT_RES,
    epsg: int = DEFAULT_EPSG,
    name: str = "scene",
) -> tuple[Path, Path]:
    """Render a scene and write ``<name>.tif`` (GeoTIFF) and its labels GeoPackage into out_dir.

    The GeoTIFF is RGB uint8, tiled 256x256, DEFLATE with horizontal predictor, north up, with
    ``res`` metre pixels and a UTM-like origin from ``scene_origin(seed)``; the GeoPackage
    (GPKG 1.2) has one layer "labels" with the object footprints in the same CRS.
    Files are written atomically (temporary file, then rename). Returns (tif_path, gpkg_path).
    """
    import geopandas as gpd
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    image, labels = render_scene(seed, size, res)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tif_path, gpkg_path = scene_paths(out, name)
    x0, y0 = scene_origin(seed)
    crs = f"EPSG:{int(epsg)}"
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": from_origin(x0, y0, res, res),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "predictor": 2,
        "zlevel": 9,
        "photometric": "RGB",
        "interleave": "pixel",
    }
    tmp_tif = tif_path.with_name(f".{tif_path.name}.tmp")
    try:
        with rasterio.open(tmp_tif, "w", **profile) as dst:
            dst.write(np.moveaxis(image, -1, 0))
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
            dst.update_tags(
                # the committed sample scene carries this tag; kept so it stays byte-identical
                GENERATOR="GeoAlign sample_data/make_sample.py",
                SEED=str(seed),
                RESOLUTION_M=str(res),
                N_OBJECTS=str(len(labels)),
            )
            dst.update_tags(TIFFTAG_IMAGEDESCRIPTION=f"GeoAlign synthetic aerial scene, seed {seed}")
        os.replace(tmp_tif, tif_path)
    finally:
        if tmp_tif.exists():
            tmp_tif.unlink()

    mat = [res, 0.0, 0.0, -res, x0, y0]
    gdf = gpd.GeoDataFrame(
        {
            "class": [lb["class"] for lb in labels],
            "color": [lb["color"] for lb in labels],
            "size": [lb["size"] for lb in labels],
            "orientation": [lb["orientation"] for lb in labels],
            "description": [lb["description"] for lb in labels],
        },
        geometry=[affinity.affine_transform(lb["geometry"], mat) for lb in labels],
        crs=crs,
    )
    for col in ("class", "color", "size", "orientation", "description"):
        gdf[col] = gdf[col].astype(object)
    tmp_gpkg = gpkg_path.with_name(f".{gpkg_path.stem}.tmp.gpkg")
    try:
        if tmp_gpkg.exists():
            tmp_gpkg.unlink()
        gdf.to_file(
            tmp_gpkg,
            layer=LAYER,
            driver="GPKG",
            engine="pyogrio",
            geometry_type="Polygon",
            dataset_options={"VERSION": "1.2"},
        )
        os.replace(tmp_gpkg, gpkg_path)
    finally:
        for p in (tmp_gpkg, Path(f"{tmp_gpkg}-wal"), Path(f"{tmp_gpkg}-shm")):
            if p.exists():
                p.unlink()
    return tif_path, gpkg_path
