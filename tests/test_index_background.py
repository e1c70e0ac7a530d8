"""The stored background of a scene index (geoalign_core.index.background): a query scans its phrases only
and reads the background's share of the softmax from the stored per-patch term; the scores and results are
those of the scan against every background row (up to float rounding). Also: a phrase that leaves a
background phrase out, an index without the file (upgraded by its first whole scan), a file that is not the
index's or not the model's background, a folder it cannot be written to.

GeoAlign-Tiny with random weights (one session model, as tests/test_index.py), and synthetic int8 patches
where a left-out background text must dominate.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from generate import sample_crop

from geoalign_core.index import SceneIndex, build_index, patches_path
from geoalign_core.index.background import background_path, load_background
from geoalign_core.index.patch_scores import best_patch_scores
from geoalign_core.inference import Predictor

PHRASES = (["a car"], ["a car", "tree"], ["trees"], ["road", "buildings"])


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return Predictor(tiny_model, batch_size=8)


@pytest.fixture(scope="module")
def index(tiny, tmp_path_factory) -> Path:
    crop = sample_crop(tmp_path_factory.mktemp("crop") / "crop.tif", size=384, col=640, row=640)
    out = tmp_path_factory.mktemp("index") / "crop.parquet"
    build_index(tiny, crop, out)
    return out


def _full(idx: SceneIndex) -> SceneIndex:
    """The index queried as without a stored background (every background row scanned; nothing stored)."""
    idx._background = None
    idx._keep_background = lambda *args: None  # type: ignore[method-assign]
    return idx


def _scores(idx: SceneIndex, enc: Predictor, phrases: list[str]) -> torch.Tensor:
    texts, _ = enc.query_texts(phrases)
    return idx.patch_scores(np.arange(len(idx)), texts, len(phrases), enc.logit_scale)


def test_the_build_stores_the_background_term_of_every_patch(tiny, index):
    stored = load_background(patches_path(index), *_meta(index))
    assert stored is not None and background_path(patches_path(index)).is_file()
    idx = SceneIndex.open(index, tiny)
    assert stored.lse.shape == idx.scale.shape
    bg = tiny.encode_phrases(list(tiny.background)).float()
    assert torch.allclose(stored.texts, bg)
    x = torch.from_numpy(np.asarray(idx.patches, dtype=np.float32)).double()
    cos = (x @ bg.double().T) * torch.from_numpy(idx.scale / idx.norm).double()[..., None]
    want = torch.logsumexp(tiny.logit_scale * cos, dim=-1)
    assert (torch.from_numpy(stored.lse).double() - want).abs().max() < 0.02  # bfloat16 texts in the int8 product


def _meta(index: Path):
    from geoalign_core.index import read_metadata

    return read_metadata(index)


@pytest.mark.parametrize("phrases", PHRASES)
def test_scores_with_the_stored_background_are_the_full_scans(tiny, index, phrases):
    fast = SceneIndex.open(index, tiny)
    assert fast.stored_background() is not None
    full = _full(SceneIndex.open(index, tiny))
    a, b = _scores(fast, tiny, phrases), _scores(full, tiny, phrases)
    assert a.shape == b.shape == (len(fast), len(phrases))
    assert (a - b).abs().max() < 1e-5


def test_find_from_the_stored_background_returns_the_same_boxes(tiny, index):
    fast = SceneIndex.open(index, tiny).find(["a car", "trees"], min_score=0.0, max_results=50)
    full = _full(SceneIndex.open(index, tiny)).find(["a car", "trees"], min_score=0.0, max_results=50)
    assert len(fast) == len(full) > 0
    assert np.allclose(np.asarray([g.bounds for g in fast.geometry]), np.asarray([g.bounds for g in full.geometry]))
    column = fast.attrs["geoalign"]["score_column"]
    assert np.allclose(fast[column].to_numpy(), full[column].to_numpy(), atol=1e-6)
    assert list(fast["phrase"]) == list(full["phrase"])


def test_an_index_without_it_stores_it_on_its_first_whole_scan(tiny, index, tmp_path):
    copy = tmp_path / "old.parquet"
    shutil.copy(index, copy)
    shutil.copy(patches_path(index), patches_path(copy))
    side = background_path(patches_path(copy))
    assert not side.exists()
    idx = SceneIndex.open(copy, tiny)
    with idx.restricted(np.arange(5)):  # part of the tiles: nothing stored
        idx.find(["a car"], min_score=0.0)
    _scores(idx, tiny, ["trees"])  # a background without "trees": not the model's whole background
    assert not side.exists()
    before = _scores(idx, tiny, ["a car"])
    assert side.exists()
    stored = load_background(patches_path(copy), *_meta(copy))
    assert stored is not None
    built = load_background(patches_path(index), *_meta(index))
    assert built is not None and np.allclose(stored.lse, built.lse, atol=1e-5)
    again = SceneIndex.open(copy, tiny)
    assert again.stored_background() is not None
    again._scores_memo = None
    assert (_scores(again, tiny, ["a car"]) - before).abs().max() < 1e-5


def test_a_background_file_of_another_index_or_other_texts_is_not_used(tiny, tiny_model, index, tmp_path):
    copy = tmp_path / "other.parquet"
    shutil.copy(index, copy)
    shutil.copy(patches_path(index), patches_path(copy))
    import pyarrow.parquet as pq

    table = pq.read_table(copy)
    kv = dict(table.schema.metadata)
    import json

    meta = json.loads(kv[b"geoalign"])
    meta["created"] = "another build"
    kv[b"geoalign"] = json.dumps(meta).encode()
    pq.write_table(table.replace_schema_metadata(kv), copy)
    shutil.copy(background_path(patches_path(index)), background_path(patches_path(copy)))
    assert SceneIndex.open(copy, tiny).stored_background() is None  # another build's
    # a model with other background phrases: the stored file does not stand in for them
    other = Predictor(tiny_model, batch_size=8, background=("grass", "sand", "snow"))
    idx = SceneIndex.open(index, other)
    assert idx.stored_background() is not None
    texts, _ = other.query_texts(["a car"])
    assert idx.stored_background().plan(texts, 1, other.logit_scale) is None
    a = _scores(idx, other, ["a car"])
    b = _scores(_full(SceneIndex.open(index, other)), other, ["a car"])
    assert torch.equal(a, b)


def test_a_folder_it_cannot_be_written_to_is_queried_without_it(tiny, index, tmp_path, monkeypatch):
    import geoalign_core.index.background as background

    copy = tmp_path / "ro.parquet"
    shutil.copy(index, copy)
    shutil.copy(patches_path(index), patches_path(copy))

    def refuse(*args, **kwargs):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(background.np, "savez", refuse)
    res = SceneIndex.open(copy, tiny).find(["a car"], min_score=0.0)
    assert len(res) and not background_path(patches_path(copy)).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_left_out_background_texts_that_dominate_are_scored_exactly():
    """A query's background leaves out a stored text that holds nearly all of some patches' background term:
    those patches are scored against the query's background rows; the others from the stored term."""
    from geoalign_core.index.patch_scores import int8_dot

    rng = np.random.default_rng(0)
    n, hw, d = 6, 16, 32
    x = rng.standard_normal((n, hw, d)).astype(np.float32)
    bg = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((4, d)).astype(np.float32)), dim=-1)
    x[:3, :5] += 6 * bg[0].numpy()  # patches dominated by background text 0
    amax = np.abs(x).max(-1)
    scale = (amax / 127).astype(np.float32)
    q = np.clip(np.round(x / scale[..., None]), -127, 127).astype(np.int8)
    norm = np.linalg.norm(x, axis=-1).astype(np.float32)
    phrase = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((1, d)).astype(np.float32)), dim=-1)
    scale_l = 50.0

    def valid(sel):
        return torch.ones((len(sel), hw), dtype=torch.bool)

    rows = np.arange(n)
    lse = np.empty((n, hw), dtype=np.float32)
    best_patch_scores(q, scale, norm, valid, rows, bg, 0, scale_l, keep_lse=lse)
    dots = int8_dot(bg, torch.from_numpy(q.reshape(-1, d))) * torch.from_numpy((scale / norm).reshape(-1))[None]
    assert np.allclose(lse.reshape(-1), torch.logsumexp(scale_l * dots, dim=0).numpy(), atol=1e-4)
    share = (scale_l * dots[0] - torch.from_numpy(lse.reshape(-1))).exp()
    assert bool((share > 0.99).any()) and bool((share < 0.5).any())  # both ways of taking text 0 out are taken
    kept = torch.cat([phrase, bg[1:]])  # the query's background leaves text 0 out
    full = best_patch_scores(q, scale, norm, valid, rows, kept, 1, scale_l)
    fast = best_patch_scores(q, scale, norm, valid, rows, kept, 1, scale_l, background=(lse, bg[:1]))
    assert (full - fast).abs().max() < 1e-5
    rows = rows[::-1].copy()  # any order of rows
    assert torch.allclose(best_patch_scores(q, scale, norm, valid, rows, kept, 1, scale_l, background=(lse, bg[:1])),
                          fast.flip(0), atol=0)


def test_the_floors_from_the_boxes_above_the_last_floors_are_the_floors_from_all():
    """find's pooling floor after each batch (the max_results-th best box after NMS) is computed from the boxes at
    or above the previous floor where they suffice: the same floors as from every box."""
    from geoalign_core.inference.find import _floors

    gen = torch.Generator().manual_seed(3)
    minimum = torch.tensor([0.05, 0.1])
    for trial in range(20):
        n = 400
        xy = torch.rand(n, 2, generator=gen) * 200
        wh = 5 + torch.rand(n, 2, generator=gen) * 30
        boxes = torch.cat([xy, xy + wh], dim=1).double()
        scores = torch.rand(n, generator=gen) ** 2
        labels = torch.randint(0, 2, (n,), generator=gen)
        for cut in (50, 200, 350):
            k = 10 + trial % 3 * 20
            before = _floors([boxes[:cut]], [scores[:cut]], [labels[:cut]], 2, k, 0.5, minimum)
            all_ = [boxes], [scores], [labels]
            assert torch.equal(_floors(*all_, 2, k, 0.5, minimum, before), _floors(*all_, 2, k, 0.5, minimum))
