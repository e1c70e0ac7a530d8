"""Tests of geoalign_core.geo raster reading, band selection, validity, statistics and tiling.

Every raster is a small real GeoTIFF written with rasterio into tmp_path; the real scenes in
../shared/real_data are used when present.
"""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from generate import RGB, array_raster, random_rgb, real_data
from rasterio.enums import ColorInterp
from rasterio.windows import Window

import geoalign_core.geo.raster as raster_mod
from geoalign_core.errors import InputError
from geoalign_core.geo import RasterSource, SceneStats, count_tiles, iter_tiles, parse_bands, tile_windows

UTM = "EPSG:32616"
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 3700000.0)


def make_raster(path: Path, data: np.ndarray, **kw) -> Path:
    """``data [C, H, W]`` as a GeoTIFF in UTM 16N (tiled 64 px so windowed reads span blocks)."""
    return array_raster(path, data, **({"crs": UTM, "transform": TRANSFORM} | kw))




# ---------------------------------------------------------------------------- tile grid
@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"),
    [(500, 300, 224, 0.25), (224, 224, 224, 0.0), (225, 100, 224, 0.5), (1000, 17, 64, 0.0), (10, 10, 224, 0.3)],
)
def test_tile_windows_cover_whole_raster(width: int, height: int, tile: int, overlap: float) -> None:
    windows = tile_windows(width, height, tile, overlap)
    assert len(windows) == count_tiles(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=bool)
    stride = round(tile * (1 - overlap))
    for w in windows:
        assert (w.width, w.height) == (tile, tile)
        assert w.col_off % stride == 0 and w.row_off % stride == 0
        assert w.col_off < width and w.row_off < height  # no window wholly outside
        covered[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] = True
    assert covered.all()
    # row-major order
    assert windows == sorted(windows, key=lambda w: (w.row_off, w.col_off))


def test_tile_windows_values() -> None:
    windows = tile_windows(500, 300, 224, 0.25)  # stride 168
    assert sorted({w.col_off for w in windows}) == [0, 168, 336]
    assert sorted({w.row_off for w in windows}) == [0, 168]
    assert tile_windows(10, 10, 224) == [Window(0, 0, 224, 224)]


@pytest.mark.parametrize("overlap", [-0.1, 0.9, 1.0])
def test_tile_windows_bad_overlap(overlap: float) -> None:
    with pytest.raises(InputError, match="overlap"):
        tile_windows(100, 100, 32, overlap)


def test_tile_windows_bad_size() -> None:
    with pytest.raises(InputError, match="tile size"):
        tile_windows(100, 100, 0)


# ---------------------------------------------------------------------------- opening
def test_missing_and_not_a_raster(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        RasterSource(tmp_path / "nope.tif")
    bad = tmp_path / "notes.tif"
    bad.write_text("not a raster at all")
    with pytest.raises(InputError, match="not a readable raster"):
        RasterSource(bad)
    with pytest.raises(InputError, match="directory"):
        RasterSource(tmp_path)


def test_corrupt_raster_raises_input_error(tmp_path: Path) -> None:
    good = make_raster(tmp_path / "good.tif", random_rgb(128, 128), colorinterp=RGB)
    data = good.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError):
        with RasterSource(cut) as src:
            src.read_tile(Window(0, 0, 128, 128))


def test_no_crs_error_and_allow(tmp_path: Path) -> None:
    path = make_raster(tmp_path / "plain.tif", random_rgb(40, 60), crs=None, transform=None, colorinterp=RGB)
    with pytest.raises(InputError, match="has no CRS") as err:
        RasterSource(path)
    assert err.value.param == "allow_no_crs" and "--" not in str(err.value)  # the CLI adds its flag
    with RasterSource(path, allow_no_crs=True) as src:
        assert src.crs is None and src.georeferencing == "none"
        assert src.transform == Affine(1, 0, 0, 0, -1, 0)  # x = column, y = -row: where QGIS shows it
        assert tuple(src.bounds) == (0, -40, 60, 0)
        tile = src.read_tile(Window(10, 5, 20, 20))
        assert tile.bounds.left == 10 and tile.bounds.right == 30
        assert {tile.bounds.top, tile.bounds.bottom} == {-5, -25}
        assert tile.transform * (0, 0) == (10, -5)


# ---------------------------------------------------------------------------- bands
def test_uint8_rgb_default_and_scale255(tmp_path: Path) -> None:
    data = random_rgb()
    path = make_raster(
        tmp_path / "rgb.tif", data[::-1].copy(), colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    )
    with RasterSource(path) as src:
        assert src.bands == (3, 2, 1)  # R, G, B by colour interpretation
        assert src.alpha_band is None and src.dtype == "uint8" and src.count == 3
        assert (src.width, src.height) == (130, 100)
        assert src.res == (0.5, 0.5)
        assert src.stats.method == "scale255"
        tile = src.read_tile(Window(0, 0, 130, 100))
        np.testing.assert_allclose(tile.image, data / 255.0, atol=1e-6)
        assert tile.valid.all()
        assert tile.image.dtype == np.float32 and tile.image.shape == (3, 100, 130)


def test_uint8_dark_scene_is_stretched(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(10, 60, size=(3, 64, 64), dtype=np.uint8)
    with RasterSource(make_raster(tmp_path / "dark.tif", data, colorinterp=RGB)) as src:
        assert src.stats.method == "percentile"
        assert all(10 <= lo < hi <= 59 for lo, hi in zip(src.stats.lo, src.stats.hi))
        img = src.read_tile(Window(0, 0, 64, 64)).image
        assert img.min() == 0.0 and img.max() == 1.0


def test_uint16_single_band_nodata_stretch(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(100, 2048, size=(1, 90, 90), dtype=np.uint16)  # 11-bit sensor
    data[0, :30, :30] = 0  # nodata block
    with RasterSource(make_raster(tmp_path / "pan.tif", data, nodata=0)) as src:
        assert src.bands == (1, 1, 1) and src.nodata == 0
        st = src.stats
        assert st.method == "percentile"
        assert 100 <= st.lo[0] < st.hi[0] <= 2047  # from valid pixels only (nodata 0 excluded)
        assert st.lo[0] > 100  # 2nd percentile, not the minimum
        tile = src.read_tile(Window(0, 0, 90, 90))
        assert not tile.valid[:30, :30].any() and tile.valid[30:, :].all() and tile.valid[:, 30:].all()
        assert np.all(tile.image[:, :30, :30] == 0)
        assert tile.image.min() >= 0 and tile.image.max() <= 1
        np.testing.assert_array_equal(tile.image[0], tile.image[1])  # replicated to RGB
        assert (tile.image[0][tile.valid] == 1.0).mean() > 0.01  # clipped top 2 %


def test_int16_stretch(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(-500, 3000, size=(3, 50, 50), dtype=np.int16)
    with RasterSource(make_raster(tmp_path / "i16.tif", data)) as src:
        assert src.dtype == "int16" and src.bands == (1, 2, 3)
        img = src.read_tile(Window(0, 0, 50, 50)).image
        assert img.dtype == np.float32 and img.min() == 0.0 and img.max() == 1.0


def test_float32_nan_is_invalid(tmp_path: Path) -> None:
    data = np.random.default_rng(4).random((3, 40, 40)).astype(np.float32) * 0.3
    data[1, 5:10, 5:10] = np.nan  # NaN in ONE band makes the pixel invalid
    with RasterSource(make_raster(tmp_path / "f32.tif", data)) as src:
        tile = src.read_tile(Window(0, 0, 40, 40))
        assert not tile.valid[5:10, 5:10].any()
        assert tile.valid.sum() == 40 * 40 - 25
        assert np.isfinite(tile.image).all() and np.all(tile.image[:, 5:10, 5:10] == 0)
        assert all(np.isfinite(v) for v in (*src.stats.lo, *src.stats.hi))


def test_rgba_alpha_is_mask(tmp_path: Path) -> None:
    data = np.concatenate([random_rgb(64, 64), np.full((1, 64, 64), 255, np.uint8)])
    data[3, :, :16] = 0
    path = make_raster(tmp_path / "rgba.tif", data, colorinterp=[*RGB, ColorInterp.alpha])
    with RasterSource(path) as src:
        assert src.bands == (1, 2, 3) and src.alpha_band == 4
        tile = src.read_tile(Window(0, 0, 64, 64))
        assert not tile.valid[:, :16].any() and tile.valid[:, 16:].all()
    with RasterSource(path, bands="1") as src:  # explicit bands keep the alpha mask
        assert src.bands == (1, 1, 1)
        assert not src.read_tile(Window(0, 0, 64, 64)).valid[:, :16].any()


def test_internal_mask_band(tmp_path: Path) -> None:
    mask = np.ones((64, 64), dtype=bool)
    mask[40:, 40:] = False
    path = make_raster(tmp_path / "masked.tif", random_rgb(64, 64), colorinterp=RGB, mask=mask)
    with RasterSource(path) as src:
        np.testing.assert_array_equal(src.read_tile(Window(0, 0, 64, 64)).valid, mask)


def test_per_band_nodata_union(tmp_path: Path) -> None:
    data = random_rgb(32, 32)
    data[0, :8, :] = 0  # only band 1 at nodata: still valid
    data[:, 20:, :] = 0  # all bands at nodata: invalid
    with RasterSource(make_raster(tmp_path / "nd.tif", data, nodata=0, colorinterp=RGB)) as src:
        valid = src.read_tile(Window(0, 0, 32, 32)).valid
        assert valid[:20].all() and not valid[20:].any()


def test_five_bands_selection(tmp_path: Path) -> None:
    data = np.stack([np.full((32, 32), 10 * (b + 1), np.uint16) for b in range(5)])
    data += np.random.default_rng(5).integers(0, 5, size=data.shape, dtype=np.uint16)
    path = make_raster(tmp_path / "ms.tif", data)
    with RasterSource(path) as src:
        assert src.bands == (1, 2, 3)  # no R/G/B colour interpretation: first three
    with RasterSource(path, bands="5,4,3") as src:
        raw, valid = src.read_raw(Window(0, 0, 32, 32))
        np.testing.assert_array_equal(raw, data[[4, 3, 2]])
        assert valid.all()
    with RasterSource(path, bands=[2]) as src:
        assert src.bands == (2, 2, 2)
    for bad in ("0,1,2", "6", "1,2", "a,b", ""):
        with pytest.raises(InputError, match="bands"):
            RasterSource(path, bands=bad)


def test_parse_bands() -> None:
    assert parse_bands("4, 3,2") == [4, 3, 2]
    assert parse_bands(None) is None
    assert parse_bands([1]) == [1]
    with pytest.raises(InputError):
        parse_bands("x")


# ---------------------------------------------------------------------------- black border
def _black_corner_rgb(h: int = 120, w: int = 120) -> np.ndarray:
    data = random_rgb(h, w, seed=6)
    yy, xx = np.mgrid[:h, :w]
    data[:, yy + xx < 50] = 0  # black triangle in the top-left corner (~9 %)
    return data


def test_black_corner_auto_nodata_epsg3395(tmp_path: Path) -> None:
    path = make_raster(
        tmp_path / "oam.tif",
        _black_corner_rgb(),
        crs="EPSG:3395",
        transform=Affine(0.1, 0, 13460000.0, 0, -0.1, 1640000.0),
        colorinterp=RGB,
    )
    with RasterSource(path) as src:
        assert src.nodata is None and src.black_is_nodata
        tile = src.read_tile(Window(0, 0, 120, 120))
        yy, xx = np.mgrid[:120, :120]
        np.testing.assert_array_equal(tile.valid, ~(yy + xx < 50))
    with RasterSource(path, treat_black_as_nodata=False) as src:
        assert src.read_tile(Window(0, 0, 120, 120)).valid.all()
    with RasterSource(path, nodata=0) as src:
        assert not src.black_is_nodata and src.nodata == 0
        assert src.read_tile(Window(0, 0, 120, 120)).valid.sum() == (~(yy + xx < 50)).sum()


def test_black_inside_scene_is_not_nodata(tmp_path: Path) -> None:
    data = random_rgb(100, 100)
    data[:, 40:60, 40:60] = 0  # a 4 % black blob (shadow) not touching the border
    with RasterSource(make_raster(tmp_path / "shadow.tif", data, colorinterp=RGB)) as src:
        assert not src.black_is_nodata
        assert src.read_tile(Window(0, 0, 100, 100)).valid.all()


# ---------------------------------------------------------------------------- reads
def test_boundless_read_matches_direct_read(tmp_path: Path) -> None:
    data = np.random.default_rng(7).integers(1, 4000, size=(1, 100, 150), dtype=np.uint16)
    path = make_raster(tmp_path / "b.tif", data, nodata=0)
    window = Window(120, 70, 64, 64)  # extends 34 px right and 34 px below
    with RasterSource(path) as src:
        tile = src.read_tile(window)
        raw, valid = src.read_raw(window)
        with rasterio.open(path) as ds:
            direct = ds.read(1, window=Window(120, 70, 30, 30))
            expected_transform = ds.window_transform(window)
        np.testing.assert_array_equal(raw[0, :30, :30], direct)
        assert valid[:30, :30].all() and not valid[30:, :].any() and not valid[:, 30:].any()
        assert np.all(tile.image[:, 30:, :] == 0) and np.all(tile.image[:, :, 30:] == 0)
        np.testing.assert_allclose(tile.image[0, :30, :30], src.normalize(direct[None].repeat(3, 0))[0])
        assert tile.transform == expected_transform
        assert tile.bounds.left == 500000.0 + 120 * 0.5 and tile.bounds.top == 3700000.0 - 70 * 0.5
        # a window wholly outside the raster reads as all padding
        assert not src.read_tile(Window(500, 500, 16, 16)).valid.any()
        # negative offsets too
        neg = src.read_tile(Window(-10, -5, 20, 20))
        assert not neg.valid[:5].any() and not neg.valid[:, :10].any() and neg.valid[5:, 10:].all()


def test_stats_computed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = raster_mod.compute_scene_stats

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(raster_mod, "compute_scene_stats", counting)
    data = np.random.default_rng(8).integers(0, 2048, size=(1, 200, 200), dtype=np.uint16)
    with RasterSource(make_raster(tmp_path / "s.tif", data)) as src:
        tiles = list(iter_tiles(src, 64, 0.25))
        src.read_tile(Window(0, 0, 50, 50))
        _ = src.stats
    assert len(calls) == 1
    assert all(0.0 <= t.image.min() and t.image.max() <= 1.0 for t in tiles)


def test_stats_roundtrip_and_injection(tmp_path: Path) -> None:
    st = SceneStats((0.0, 1.0, 2.0), (10.0, 11.0, 12.0))
    assert SceneStats.from_dict(st.to_dict()) == st
    data = np.full((3, 16, 16), 5, dtype=np.uint16)
    with RasterSource(make_raster(tmp_path / "c.tif", data), stats=st) as src:
        img = src.read_tile(Window(0, 0, 16, 16)).image
        np.testing.assert_allclose(img[:, 0, 0], [0.5, 0.4, 0.3], atol=1e-6)


# ---------------------------------------------------------------------------- iter_tiles
def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "geoalign-tile-reader" and t.is_alive()]


def test_iter_tiles_skips_empty_and_pads(tmp_path: Path) -> None:
    data = np.random.default_rng(9).integers(1, 255, size=(1, 150, 150), dtype=np.uint8)
    data[0, :64, :64] = 0  # exactly the first tile is nodata
    path = make_raster(tmp_path / "t.tif", data, nodata=0)
    with RasterSource(path) as src:
        n = count_tiles(src.width, src.height, 64)
        assert n == 9
        tiles = list(iter_tiles(src, 64))
        assert [t.index for t in tiles] == list(range(1, 9))  # tile 0 skipped
        everything = list(iter_tiles(src, 64, skip_empty=False, prefetch=0))
        assert len(everything) == 9 and not everything[0].valid.any()
        last = tiles[-1]  # window (128, 128, 64, 64): 22 valid px each way
        assert last.valid[:22, :22].all() and not last.valid[22:].any() and not last.valid[:, 22:].any()
        # threaded and in-thread reads give identical tiles
        for a, b in zip(tiles, everything[1:]):
            np.testing.assert_array_equal(a.image, b.image)
            np.testing.assert_array_equal(a.valid, b.valid)
            assert a.window == b.window and a.transform == b.transform
    assert not _reader_threads()


def test_iter_tiles_early_close_stops_thread(tmp_path: Path) -> None:
    data = np.random.default_rng(10).integers(1, 255, size=(3, 256, 256), dtype=np.uint8)
    path = make_raster(tmp_path / "big.tif", data, colorinterp=RGB)
    with RasterSource(path) as src:
        gen = iter_tiles(src, 32, prefetch=2)
        next(gen)
        assert _reader_threads()
        gen.close()
        assert not _reader_threads()

        for _ in iter_tiles(src, 32):  # break out of a for loop
            break
        gc.collect()
        assert not _reader_threads()

        def consume() -> None:
            for i, _tile in enumerate(iter_tiles(src, 32, prefetch=1)):
                if i == 3:
                    raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            consume()
        gc.collect()
        assert not _reader_threads()


def test_iter_tiles_reader_error_propagates(tmp_path: Path) -> None:
    good = make_raster(tmp_path / "g.tif", random_rgb(256, 256), colorinterp=RGB)
    data = good.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 3 // 4])
    with RasterSource(cut, stats=SceneStats((0.0,) * 3, (255.0,) * 3), treat_black_as_nodata=False) as src:
        with pytest.raises(InputError, match="cannot read"):
            list(iter_tiles(src, 64))
    assert not _reader_threads()


# ---------------------------------------------------------------------------- real data
def test_real_spacenet_uint16_pan() -> None:
    with RasterSource(real_data("spacenet_atlanta_pan.tif")) as src:
        assert (src.width, src.height, src.dtype, src.nodata) == (900, 900, "uint16", 0)
        assert src.bands == (1, 1, 1) and src.crs.to_epsg() == 32616
        assert src.stats.method == "percentile" and 50 <= src.stats.lo[0] < src.stats.hi[0] <= 6600
        tiles = list(iter_tiles(src, 224))
        assert count_tiles(src.width, src.height, 224) == 25 and len(tiles) == 25
        assert sum(t.valid.all() for t in tiles) == 16  # the 5th row/column are 4 px slivers
        assert all(t.image.shape == (3, 224, 224) for t in tiles)


def test_real_neon_uint8_nodata_255() -> None:
    with RasterSource(real_data("neon_osbs029_rgb.tif")) as src:
        assert src.nodata == 255 and src.stats.method == "scale255" and not src.black_is_nodata
        tiles = list(iter_tiles(src, 224))
        assert len(tiles) == 4 and tiles[0].valid.mean() > 0.95


def test_real_oam_black_corner_epsg3395() -> None:
    with RasterSource(real_data("oam_manila_bridge_rgb.tif")) as src:
        assert src.crs.to_epsg() == 3395 and src.nodata is None
        assert src.black_is_nodata  # auto-detected
        tiles = list(iter_tiles(src, 224))
        n = count_tiles(src.width, src.height, 224)
        assert n == 100
        assert 0 < len(tiles) < n  # fully black tiles skipped
        partial = [t for t in tiles if 0 < t.valid.mean() < 1]
        assert partial  # tiles across the black edge are partially valid
        assert all(np.all(t.image[:, ~t.valid] == 0) for t in partial)


def test_real_landsat() -> None:
    with RasterSource(real_data("landsat_rgb_byte.tif")) as src:
        assert (src.width, src.height) == (791, 718) and src.nodata == 0
        tiles = list(iter_tiles(src, 224))
        assert 0 < len(tiles) <= count_tiles(src.width, src.height, 224) == 16
        assert any(t.valid.mean() < 1 for t in tiles)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def _gcps(w: int, h: int, transform: Affine = TRANSFORM):
    from rasterio.control import GroundControlPoint

    return [GroundControlPoint(row=r, col=c, x=(transform * (c, r))[0], y=(transform * (c, r))[1])
            for r, c in ((0, 0), (0, w), (h, 0), (h, w))]


def test_gcp_raster_is_placed_on_the_ground(tmp_path: Path) -> None:
    """GCPs only (identity geotransform): read through a warped VRT, so windows map to the ground."""
    data = random_rgb(60, 80)
    path = make_raster(tmp_path / "gcp.tif", data, crs=None, transform=None, colorinterp=RGB)
    with rasterio.open(path, "r+") as ds:
        ds.gcps = (_gcps(80, 60), UTM)
    with RasterSource(path) as src:
        assert src.georeferencing == "gcps" and src.crs == rasterio.crs.CRS.from_string(UTM)
        assert src.transform.almost_equals(TRANSFORM) and (src.width, src.height) == (80, 60)
        assert src.bounds == pytest.approx((500000.0, 3699970.0, 500040.0, 3700000.0))
        raw, valid = src.read_raw(Window(0, 0, 80, 60))
        assert valid.all() and np.array_equal(raw, data)  # black inside the footprint would stay valid too


def test_gcp_vrt_without_crs_for_its_gcps_is_refused_or_pixels(tmp_path: Path) -> None:
    tif = make_raster(tmp_path / "g.tif", random_rgb(32, 32), crs=None, transform=None, colorinterp=RGB)
    gcps = "".join(f'<GCP Id="{i}" Pixel="{g.col}" Line="{g.row}" X="{g.x}" Y="{g.y}"/>'
                   for i, g in enumerate(_gcps(32, 32)))
    bands = "".join(f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename relativeToVRT="1">'
                    f'g.tif</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource></VRTRasterBand>'
                    for b in (1, 2, 3))
    path = tmp_path / "g.vrt"  # a GCPList with no Projection
    path.write_text(f'<VRTDataset rasterXSize="32" rasterYSize="32"><GCPList>{gcps}</GCPList>{bands}</VRTDataset>')
    assert tif.is_file()
    with pytest.raises(InputError, match="ground control points but no CRS") as err:
        RasterSource(path)
    assert err.value.code == "no_crs"
    with RasterSource(path, allow_no_crs=True) as src:
        assert src.georeferencing == "none" and src.crs is None


def test_too_few_gcps_say_why(tmp_path: Path) -> None:
    from rasterio.control import GroundControlPoint

    path = make_raster(tmp_path / "g2.tif", random_rgb(32, 32), crs=None, transform=None, colorinterp=RGB)
    with rasterio.open(path, "r+") as ds:
        ds.gcps = ([GroundControlPoint(0, 0, 500000, 3700000)], UTM)
    with pytest.raises(InputError, match="cannot place .* from its 1 ground control point: .*Not enough points"):
        RasterSource(path)


def test_rpc_raster_is_placed_in_utm(tmp_path: Path) -> None:
    from rasterio.rpc import RPC

    h, w = 60, 80
    rpc = RPC(height_off=0, height_scale=100, lat_off=45.0, lat_scale=h / 2 * 1e-5, line_den_coeff=[1] + [0] * 19,
              line_num_coeff=[0, 0, -1] + [0] * 17, line_off=h / 2, line_scale=h / 2, long_off=14.0,
              long_scale=w / 2 * 1e-5, samp_den_coeff=[1] + [0] * 19, samp_num_coeff=[0, 1, 0] + [0] * 17,
              samp_off=w / 2, samp_scale=w / 2)
    path = tmp_path / "rpc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", rpcs=rpc) as dst:
        dst.write(random_rgb(h, w))
    with RasterSource(path) as src:
        assert src.georeferencing == "rpcs" and src.crs.to_epsg() == 32633  # lon 14 E: UTM 33 N
        lon, lat = rasterio.warp.transform(src.crs, "EPSG:4326", [(src.bounds.left + src.bounds.right) / 2],
                                           [(src.bounds.bottom + src.bounds.top) / 2])
        assert lon[0] == pytest.approx(14.0, abs=1e-4) and lat[0] == pytest.approx(45.0, abs=1e-4)
        assert src.read_valid_mask().mean() > 0.9


def test_rotated_geotransform_with_crs_is_read_as_it_is(tmp_path: Path) -> None:
    rotated = TRANSFORM * Affine.rotation(20)
    path = make_raster(tmp_path / "rot.tif", random_rgb(40, 40), transform=rotated, colorinterp=RGB)
    with RasterSource(path) as src:
        assert src.georeferencing == "transform" and src.transform.almost_equals(rotated)
        tile = src.read_tile(Window(0, 0, 20, 20))
        assert tile.transform.almost_equals(rotated)  # tiles keep the rotation: outputs are rotated too


def test_paletted_raster_is_expanded_to_rgb(tmp_path: Path) -> None:
    idx = np.zeros((1, 40, 40), dtype=np.uint8)
    idx[0, :20] = 1
    idx[0, 20:, :10] = 3  # the nodata index: invalid (GeoTIFF palettes carry no alpha)
    idx[0, 20:, 10:] = 2
    path = make_raster(tmp_path / "pal.tif", idx, nodata=3)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {1: (255, 0, 0, 255), 2: (0, 0, 255, 255), 3: (0, 0, 0, 0)})
        ds.colorinterp = [ColorInterp.palette]
    with RasterSource(path) as src:
        raw, valid = src.read_raw(Window(0, 0, 40, 40))
        assert src.dtype == "uint8" and raw.shape == (3, 40, 40)
        assert tuple(raw[:, 0, 0]) == (255, 0, 0) and tuple(raw[:, 30, 30]) == (0, 0, 255)
        assert not valid[30, 5] and valid[30, 30] and valid[0, 0]
        assert src.normalize(raw)[2, 30, 30] > src.normalize(raw)[0, 30, 30]  # blue, not grey indexes
    with RasterSource(path, bands="1,1,1") as src:  # explicit bands: no palette for an RGB selection either
        assert src.read_raw(Window(0, 0, 4, 4))[0].shape == (3, 4, 4)


def test_subdatasets_are_listed(tmp_path: Path) -> None:
    from scipy.io import netcdf_file

    nc = tmp_path / "two.nc"
    f = netcdf_file(str(nc), "w")
    f.createDimension("y", 20)
    f.createDimension("x", 30)
    for name in ("red", "nir"):
        var = f.createVariable(name, "f4", ("y", "x"))
        var[:] = np.random.default_rng(0).random((20, 30)).astype("f4")
    f.close()
    with pytest.raises(InputError, match="holds 2 subdatasets") as err:
        RasterSource(nc)
    assert f"netcdf:{nc}:red" in str(err.value) and "nir" in str(err.value)
    with RasterSource(f"netcdf:{nc}:nir", allow_no_crs=True) as src:
        assert (src.width, src.height) == (30, 20)


def test_gdal_virtual_paths_and_urls(tmp_path: Path) -> None:
    import zipfile

    tif = make_raster(tmp_path / "in.tif", random_rgb(32, 32), colorinterp=RGB)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.write(tif, "sub/in.tif")
    with RasterSource(f"/vsizip/{tmp_path / 'a.zip'}/sub/in.tif") as src:
        assert (src.width, src.height) == (32, 32) and str(src.path).startswith("/vsizip/")
    with pytest.raises(InputError, match="not a readable raster") as err:
        RasterSource(f"/vsizip/{tmp_path / 'a.zip'}/sub/missing.tif")
    url = "http://127.0.0.1:9/scene.tif"  # nothing listens there
    with pytest.raises(InputError) as err:
        RasterSource(url)
    assert url in str(err.value)  # not "http:/127.0.0.1..."


def test_read_valid_mask_and_tiles_shortcut(tmp_path: Path) -> None:
    data = np.random.default_rng(11).integers(1, 255, size=(1, 80, 80), dtype=np.uint8)
    data[0, :40] = 0
    with RasterSource(make_raster(tmp_path / "v.tif", data, nodata=0)) as src:
        full = src.read_valid_mask()
        assert full.shape == (80, 80) and not full[:40].any() and full[40:].all()
        small = src.read_valid_mask((8, 8))
        assert small.shape == (8, 8) and not small[:4].any() and small[4:].all()
        assert [t.index for t in iter_tiles(src, 40)] == [2, 3]


def test_read_ahead_hands_over_errors_and_uses_its_own_handle(tmp_path: Path) -> None:
    """The shared read-ahead thread (iter_tiles and the inference batch reader use it)."""
    from geoalign_core.geo.prefetch import read_ahead

    data = np.random.default_rng(11).integers(1, 255, size=(3, 32, 32), dtype=np.uint8)
    path = make_raster(tmp_path / "r.tif", data, colorinterp=RGB)
    handles = []

    def produce(src: RasterSource):
        handles.append(src)
        for i in range(5):
            if i == 3:
                raise ValueError("bad block")
            yield src.read_tile(Window(0, 0, 8, 8), index=i).index

    with RasterSource(path) as src:
        got = []
        with pytest.raises(ValueError, match="bad block"):
            for item in read_ahead(src, produce, prefetch=2, name="geoalign-test-reader"):
                got.append(item)
        assert got == [0, 1, 2] and handles[0] is not src  # a clone, not the caller's handle
        assert list(read_ahead(src, lambda s: iter([s]), prefetch=0)) == [src]  # in the caller's thread
    assert not [t for t in threading.enumerate() if t.name == "geoalign-test-reader" and t.is_alive()]
