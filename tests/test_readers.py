"""Feeding the model: parallel tile readers (one dataset handle per thread), the batch size and
reader count chosen for the device, and index chunks written in the background.

Real rasters (a JPEG-compressed tiled GeoTIFF made from the sample scene, and a crop of it), real
threads; the GPU-only parts (pinned memory) run where a GPU is present.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from cli_helpers import assert_bad
from generate import sample_crop
from rasterio.windows import Window

from geoalign_core.errors import InputError
from geoalign_core.geo import RasterSource
from geoalign_core.geo.grid import tile_windows
from geoalign_core.geo.readers import check_workers, default_workers, read_parallel
from geoalign_core.index.part_writer import PartWriter
from geoalign_core.inference._reader import iter_batches
from geoalign_core.inference.feed import MAX_GPU_BATCH, device_batch_size, resolve_workers, tile_bytes


@pytest.fixture(scope="module")
def jpeg_tif(tmp_path_factory) -> Path:
    """A 1024 px crop of the sample scene as a tiled, JPEG-compressed GeoTIFF (YCbCr)."""
    crop = sample_crop(tmp_path_factory.mktemp("readers") / "crop.tif", size=1024, col=256, row=256)
    out = crop.with_name("crop_jpeg.tif")
    with rasterio.open(crop) as src:
        profile = src.profile | {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "jpeg",
                                 "photometric": "ycbcr", "jpeg_quality": 90}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read())
    return out


def _windows(path: Path, size: int = 112) -> list[Window]:
    with rasterio.open(path) as ds:
        return tile_windows(ds.width, ds.height, size, 0.25)


def _read(src: RasterSource, i: int, w: Window):
    return i, src.read_tile(w, index=i)


def _reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("geoalign-tile-reader")]


def test_parallel_reads_are_the_sequential_ones_in_order(jpeg_tif):
    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        seq = [src.read_tile(w, index=i) for i, w in enumerate(windows)]
        par = list(read_parallel(src, windows, _read, workers=3, ahead=5))
    assert [i for i, _ in par] == list(range(len(windows)))
    for a, (_, b) in zip(seq, par):
        assert a.window == b.window and np.array_equal(a.image, b.image) and np.array_equal(a.valid, b.valid)
    assert not _reader_threads()


def test_each_reader_thread_has_its_own_handle_and_all_are_closed(jpeg_tif):
    windows = _windows(jpeg_tif)
    seen: dict[str, int] = {}
    handles: list[RasterSource] = []

    def read(src: RasterSource, i: int, w: Window) -> int:
        name = threading.current_thread().name
        assert seen.setdefault(name, id(src)) == id(src)  # one handle per thread, kept
        if src not in handles:
            handles.append(src)
        src.read_tile(w)
        return i

    with RasterSource(jpeg_tif) as src:
        assert list(read_parallel(src, windows, read, workers=2)) == list(range(len(windows)))
        assert src not in handles and not src.dataset.closed
    assert 1 <= len(handles) <= 2 and all(h.dataset.closed for h in handles)


def test_stopping_early_joins_the_readers(jpeg_tif):
    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        gen = read_parallel(src, windows, _read, workers=3)
        assert next(gen)[0] == 0
        gen.close()
    assert not _reader_threads()


def test_a_read_error_reaches_the_consumer_at_its_window(jpeg_tif):
    windows = _windows(jpeg_tif)

    def read(src: RasterSource, i: int, w: Window) -> int:
        if i == 7:
            raise ValueError("bad tile 7")
        return i

    got = []
    with RasterSource(jpeg_tif) as src, pytest.raises(ValueError, match="bad tile 7"):
        for i in read_parallel(src, windows, read, workers=3):
            got.append(i)
    assert got == list(range(7)) and not _reader_threads()


@pytest.mark.parametrize("size", [112, 96])  # native reads, and windows resampled to the model input
def test_batches_from_several_workers_equal_one_worker(jpeg_tif, size):
    windows = _windows(jpeg_tif, size)
    with RasterSource(jpeg_tif) as src:
        one = list(iter_batches(src, windows, 112, 8, prefetch=0, workers=1))
        many = list(iter_batches(src, windows, 112, 8, prefetch=0, workers=3))
    assert [b.done for b in one] == [b.done for b in many]
    for a, b in zip(one, many):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.valid, b.valid)
        assert [t.index for t in a.tiles] == [t.index for t in b.tiles] and b.pinned is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs a GPU")
def test_pinned_batches_hold_the_same_images(jpeg_tif):
    windows = _windows(jpeg_tif)[:20]
    with RasterSource(jpeg_tif) as src:
        plain = list(iter_batches(src, windows, 112, 8, workers=2))
        pinned = list(iter_batches(src, windows, 112, 8, workers=2, pin=True))
    for a, b in zip(plain, pinned):
        assert b.pinned is not None and b.pinned.is_pinned()
        assert np.array_equal(a.images, b.pinned.numpy())


def test_live_find_with_two_workers_is_the_one_worker_find(tiny_model, tmp_path):
    from geoalign_core.inference import Predictor

    crop = sample_crop(tmp_path / "c.tif", size=336)
    one = Predictor(tiny_model, batch_size=4, workers=1).find(crop, ["a car"], min_score=0.0, refine=False)
    two = Predictor(tiny_model, batch_size=4, workers=2).find(crop, ["a car"], min_score=0.0, refine=False)
    assert len(one) > 0 and one.geometry.equals(two.geometry)
    assert np.array_equal(one.iloc[:, 1].to_numpy(), two.iloc[:, 1].to_numpy())


def test_worker_counts_and_their_refusals(monkeypatch):
    assert default_workers(gpu=False, cores=16) == 1
    assert [default_workers(gpu=True, cores=c) for c in (1, 2, 3, 4, 16)] == [1, 2, 2, 3, 8]
    assert check_workers(None) is None and check_workers(4) == 4
    for bad in (0, -1, 65, 2.5):
        with pytest.raises(InputError, match="workers must be a whole number from 1 to 64"):
            check_workers(bad)
    monkeypatch.setenv("GEOALIGN_READERS", "3")
    assert resolve_workers(None, torch.device("cpu")) == 3 and resolve_workers(2, torch.device("cpu")) == 2
    monkeypatch.setenv("GEOALIGN_READERS", "many")
    assert resolve_workers(None, torch.device("cpu")) == 1


def test_batch_size_is_chosen_for_the_device(tiny_model):
    assert device_batch_size(tiny_model) == 16  # a CPU: the default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from geoalign_core import load_model

        vit = load_model("ViT-B-16", "cpu")
    big, small = device_batch_size(vit, free_bytes=80 << 30), device_batch_size(vit, free_bytes=1 << 30)
    assert tile_bytes(vit) > tile_bytes(tiny_model)
    assert 16 <= small < big <= MAX_GPU_BATCH and big & (big - 1) == 0 and small & (small - 1) == 0
    assert device_batch_size(vit, free_bytes=0) == 16  # never below the CPU default


def test_cli_refuses_bad_workers_in_one_line(capsys, tmp_path, monkeypatch):
    crop = sample_crop(tmp_path / "c.tif", size=128)
    monkeypatch.chdir(tmp_path)
    for bad in ("0", "65"):
        assert_bad(capsys, ["find", crop, "car", "--workers", bad], tmp_path, "--workers must be from 1 to 64")
        assert_bad(capsys, ["index", crop, "--out", tmp_path / "i.parquet", "--workers", bad], tmp_path,
                   "--workers must be from 1 to 64")


def test_part_writer_saves_in_order_and_raises_a_failed_save(tmp_path):
    done: list[int] = []
    with PartWriter() as w:
        for k in range(3):
            w.submit(done.append, k)
    assert done == [0, 1, 2] and w.written == 3

    def fail(_: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), PartWriter() as w:
        w.submit(fail, 0)
        w.submit(done.append, 9)  # the first save's error surfaces here, before the next one starts
    assert 9 not in done
