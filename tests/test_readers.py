"""Feeding the model: reader processes handing tiles back through shared memory, parallel reader
threads (one dataset handle per thread, where processes cannot start), the batch size and reader
count chosen for the device, and index chunks written in the background.

Real rasters (a JPEG-compressed tiled GeoTIFF made from the sample scene, a crop of it, one with a
nodata corner and one with a damaged block), real processes and threads; the GPU-only parts
(pinned memory) run where a GPU is present.
"""

from __future__ import annotations

import threading
import time
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
from geoalign_core.geo import RasterSource, tile_workers
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


@pytest.fixture(scope="module")
def holed_tif(jpeg_tif) -> Path:
    """The JPEG crop as a deflate GeoTIFF whose top-left 400 px are nodata (0): empty tiles to skip,
    and tiles partly valid (filled with their mean colour)."""
    out = jpeg_tif.with_name("holed.tif")
    with rasterio.open(jpeg_tif) as src:
        data = src.read()
        profile = src.profile | {"compress": "deflate", "photometric": "rgb", "nodata": 0}
    data[:, :400, :400] = 0
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def _tiles_equal(a, b) -> bool:
    return (a.index == b.index and a.window == b.window and a.transform == b.transform and a.bounds == b.bounds
            and np.array_equal(a.image, b.image) and np.array_equal(a.valid, b.valid))


def _shm_files() -> set[str]:
    folder = Path(tile_workers._SHM_DIR)
    return {p.name for p in folder.glob("geoalign-tiles-*")} if folder.is_dir() else set()


@pytest.mark.parametrize("keep_every", [1, 3])
@pytest.mark.parametrize("workers", [2, 3])
def test_each_row_of_tiles_is_split_into_one_contiguous_part_per_worker(keep_every, workers):
    """The plan behind the reader processes: every window read once, each piece inside one batch, and
    in every row (full rows, and rows with windows left out) worker k reads the k-th contiguous part,
    so that neighbouring rows put the same raster columns on the same worker."""
    windows = [w for i, w in enumerate(tile_windows(30000, 900, 112, 0.25)) if i % keep_every == 0]
    block = 7
    pieces = tile_workers._plan(windows, block, workers)
    assert [i for p in pieces for i in range(p.lo, p.hi)] == list(range(len(windows)))  # each once, in order
    assert all(p.lo < p.hi and p.lo // block == p.batch == (p.hi - 1) // block for p in pieces)
    rows: dict[float, list] = {}
    for p in pieces:
        rows.setdefault(windows[p.lo].row_off, []).append(p)
    assert len(rows) > 3
    for row in rows.values():
        n = sum(p.hi - p.lo for p in row)
        segments = -(-n // tile_workers.ROW_SEGMENT)
        assert segments >= 2  # a row longer than ROW_SEGMENT windows is cut into segments
        owners = [p.worker for p in row for _ in range(p.lo, p.hi)]
        runs = [k for i, k in enumerate(owners) if i == 0 or owners[i - 1] != k]
        assert runs == list(range(workers)) * segments  # per segment: worker 0's part, then 1's, ...
        sizes = [owners.count(k) for k in range(workers)]
        assert max(sizes) - min(sizes) <= segments  # the parts are equal but for rounding


@pytest.mark.parametrize("width", [112, 300, 1000])
def test_short_rows_are_joined_so_that_every_worker_reads(width):
    """A narrow raster (one to a few tiles per row): rows are joined before they are split, so the
    second worker is not left idle, and each worker still reads whole neighbouring rows."""
    windows = tile_windows(width, 20000, 112, 0.25)
    pieces = tile_workers._plan(windows, 8, 2)
    assert [i for p in pieces for i in range(p.lo, p.hi)] == list(range(len(windows)))
    share = [sum(p.hi - p.lo for p in pieces if p.worker == k) for k in range(2)]
    assert min(share) >= 0.4 * len(windows), share
    segments = list(tile_workers._segments(windows))
    assert all(hi - lo <= tile_workers.ROW_SEGMENT for lo, hi in segments)
    assert all(hi - lo >= tile_workers.ROW_SEGMENT // 2 for lo, hi in segments[:-1])  # only the last may be short


@pytest.mark.parametrize("skip_empty", [True, False])
def test_reader_processes_give_the_one_reader_batches(holed_tif, skip_empty):
    windows = _windows(holed_tif, 96)
    before = _shm_files()
    with RasterSource(holed_tif) as src:
        one = list(iter_batches(src, windows, 112, 5, skip_empty=skip_empty, workers=1))
        many = list(iter_batches(src, windows, 112, 5, skip_empty=skip_empty, workers=2))
    assert len(one) > 3 and [b.done for b in one] == [b.done for b in many]
    skipped = len(windows) - sum(len(b.tiles) for b in one)
    assert (skipped > 0) == skip_empty  # the nodata corner holds whole tiles
    for a, b in zip(one, many):  # every batch kept alive at once: none was overwritten by a later one
        assert np.array_equal(a.images, b.images) and np.array_equal(a.valid, b.valid)
        assert all(_tiles_equal(x, y) for x, y in zip(a.tiles, b.tiles))
        assert all(np.shares_memory(t.image, b.images) for t in b.tiles)
    assert any(not b.valid.all() and b.valid.any() for b in many)  # partly valid tiles were filled alike
    assert _shm_files() == before  # the shared file was unlinked as soon as the workers mapped it


def test_reader_processes_are_reused_and_survive_a_consumer_that_stops(jpeg_tif):
    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        gen = iter_batches(src, windows, 112, 4, prefetch=0, workers=2)
        first = next(gen)
        gen.close()  # the answers still owed are collected, the workers go back to the idle pool
        pids = {w.proc.pid for w in tile_workers._IDLE}
        assert len(pids) >= 2 and all(w.alive() for w in tile_workers._IDLE)
        again = list(iter_batches(src, windows, 112, 4, prefetch=0, workers=2))
        assert {w.proc.pid for w in tile_workers._IDLE} == pids  # no new process started
    assert np.array_equal(first.images, again[0].images)


def test_a_damaged_block_fails_at_its_window_as_with_one_reader(holed_tif, tmp_path):
    """A block whose compressed bytes are garbage: both ways stop with the same GDAL error after
    the same batches."""
    bad = tmp_path / "damaged.tif"
    with rasterio.open(holed_tif) as src:
        profile = src.profile | {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
        with rasterio.open(bad, "w", **profile) as dst:
            dst.write(src.read())
    with rasterio.open(bad) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_2_1", "TIFF", bidx=1))  # 3rd block column, 2nd row
    with open(bad, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    windows = _windows(bad, 112)
    with RasterSource(holed_tif) as good:
        stats = good.stats  # the damaged file's own statistics would fail on the damaged block

    def run(workers: int) -> tuple[int, str]:
        got = 0
        with RasterSource(bad, stats=stats) as src, pytest.raises(Exception) as err:  # noqa: PT011 - compared below
            for b in iter_batches(src, windows, 112, 4, skip_empty=False, prefetch=0, workers=workers):
                got += len(b.tiles)
        return got, type(err.value).__name__

    one, many = run(1), run(2)
    assert one == many and 0 < one[0] < len(windows)
    time.sleep(0.5)  # time to fail, had the scene's closing killed them
    workers = list(tile_workers._IDLE)
    assert len(workers) >= 2 and all(w.alive() for w in workers)  # a read error does not cost the workers
    with RasterSource(holed_tif) as src:  # and the same processes read the next scene
        assert list(iter_batches(src, _windows(holed_tif), 112, 4, workers=2))
    assert {w.proc.pid for w in workers} <= {w.proc.pid for w in tile_workers._IDLE}


def test_a_reader_process_that_dies_is_an_error_not_a_hang(jpeg_tif):
    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        gen = iter_batches(src, windows, 112, 2, prefetch=0, workers=2)
        next(gen)
        for w in tile_workers._pool_in_use():
            w.proc.kill()
        with pytest.raises(tile_workers.WorkerError, match="tile reader process .* stopped"):
            list(gen)
        assert list(iter_batches(src, windows[:8], 112, 4, workers=2))  # new workers start


def _read_in_a_fork(path: str, queue) -> None:
    windows = _windows(Path(path))
    with RasterSource(path) as src:
        queue.put(sum(len(b.tiles) for b in iter_batches(src, windows, 112, 8, workers=2)))


def test_a_forked_child_starts_its_own_readers_and_leaves_the_parents_alone(jpeg_tif):
    import multiprocessing

    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        list(iter_batches(src, windows, 112, 8, workers=2))  # the parent's workers, now idle
    parents = [w.proc.pid for w in tile_workers._IDLE]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_a_fork, args=(str(jpeg_tif), queue))
    child.start()
    assert queue.get(timeout=120) == len(windows)
    child.join(60)
    assert child.exitcode == 0
    assert [w.proc.pid for w in tile_workers._IDLE] == parents and all(w.alive() for w in tile_workers._IDLE)
    with RasterSource(jpeg_tif) as src:  # and they still answer
        assert sum(len(b.tiles) for b in iter_batches(src, windows, 112, 8, workers=2)) == len(windows)


def test_reader_threads_when_processes_cannot_start(jpeg_tif, monkeypatch, caplog):
    def cannot(*_a, **_k):
        raise tile_workers.WorkerError("tile reader process could not start (test)")

    monkeypatch.setattr(tile_workers, "_IDLE", [])
    monkeypatch.setattr(tile_workers, "_Worker", cannot)
    monkeypatch.setattr(tile_workers, "_BROKEN", None)
    windows = _windows(jpeg_tif)
    with RasterSource(jpeg_tif) as src:
        one = list(iter_batches(src, windows, 112, 8, workers=1))
        with caplog.at_level("WARNING"):
            two = list(iter_batches(src, windows, 112, 8, workers=2))
        assert "reading with 2 threads" in caplog.text and not tile_workers.processes_available()
    assert all(np.array_equal(a.images, b.images) for a, b in zip(one, two))


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
