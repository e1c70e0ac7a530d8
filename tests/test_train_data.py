"""Training data: samples.jsonl reading, chips, augmentation, candidates, collate, sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from generate import array_raster
from timeouts import scaled

from geoalign_core.data.schema import read_image
from geoalign_core.errors import InputError
from geoalign_core.training.dataset import (
    CLASS_PROMPTS,
    Collate,
    GeoAlignDataset,
    ResumableSampler,
    dihedral_boxes,
    dihedral_image,
    read_samples,
)
from geoalign_core.training.synthetic import COLOURS, make_squares_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    return make_squares_dataset(tmp_path_factory.mktemp("sq"), n=8, size=64, seed=3)


def test_read_samples_and_items(squares):
    samples = read_samples(squares)
    assert len(samples) == 8
    assert any(not s.regions for s in samples)  # images without regions are kept
    assert any(len(s.regions) == 1 for s in samples)
    ds = GeoAlignDataset(squares, 112, regions_per_image=2, num_candidates=3, augment=False)
    for i in range(len(ds)):
        it = ds[(0, i)]
        assert it["image"].shape == (3, 112, 112) and 0 <= it["image"].min() and it["image"].max() <= 1
        k = min(len(samples[i].regions), 2)
        assert it["boxes"].shape == (k, 4)
        assert len(it["region_texts"]) == k and len(it["candidates"]) == k
        for b, cands in zip(it["boxes"], it["candidates"]):
            assert len(cands) == 3 and cands[0].endswith("square")
            assert cands[0] not in cands[1:]
            x0, y0, x1, y1 = b.round().int().tolist()  # the box holds a square of colour cands[0]
            patch = it["image"][:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].mean(dim=(1, 2)) * 255
            want = torch.tensor(COLOURS[cands[0].split()[0]], dtype=torch.float32)
            if len(samples[i].regions) == 1:  # (squares of one chip may overlap)
                assert torch.allclose(patch, want, atol=40)


def test_dihedral_boxes_follow_image():
    img = torch.zeros(3, 32, 32)
    img[0, 4:10, 20:30] = 1.0  # x 20..30, y 4..10
    box = np.array([[20 / 32, 4 / 32, 30 / 32, 10 / 32]])
    for k in range(8):
        out = dihedral_image(img, k)
        b = dihedral_boxes(box, k)[0] * 32
        ys, xs = torch.nonzero(out[0] > 0, as_tuple=True)
        assert [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1] == pytest.approx(
            b.tolist()
        ), k


def test_augmentation_applied_only_without_position_words(tmp_path):
    make_squares_dataset(tmp_path, n=4, size=48, seed=0, empty_every=0, positional_every=2)
    ds = GeoAlignDataset(tmp_path, 48, augment=True, seed=0)
    plain = GeoAlignDataset(tmp_path, 48, augment=False)
    assert [s.positional for s in ds.samples] == [True, False, True, False]
    for i, s in enumerate(ds.samples):
        changed = [not torch.equal(ds[(e, i)]["image"], plain[(0, i)]["image"]) for e in range(6)]
        assert any(changed) != s.positional


def test_candidates_padding_never_positive(tmp_path):
    make_squares_dataset(tmp_path, n=4, size=32, seed=1, empty_every=0)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        for reg in r["regions"]:
            reg["hard_negatives"] = [reg["phrase"].upper(), " " + reg["phrase"]]  # only copies of the positive
    _jsonl(tmp_path / "samples.jsonl", rows)
    ds = GeoAlignDataset(tmp_path, 32, num_candidates=8)
    for i in range(len(ds)):
        for cands in ds[(0, i)]["candidates"]:
            assert len(cands) == 8
            pos = cands[0].lower().strip()
            assert all(c.lower().strip() != pos for c in cands[1:])


def test_background_negatives_are_finds_competitors(tmp_path):
    """background_negatives: a labelled region's HNA candidates hold find's background phrases
    (all of them with Q = 12), minus its own noun up to a plural; a background box gets none."""
    from geoalign_core.inference.vocabulary import BACKGROUND_PHRASES, background_for

    make_squares_dataset(tmp_path, n=4, size=32, seed=1, empty_every=0)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        for reg in r["regions"]:
            reg["phrase"], reg["class"], reg["hard_negatives"] = "tree", "tree", ["building"]
        r["background_regions"] = [{"bbox": [0.0, 0.0, 0.2, 0.2], "phrase": "background", "description": "background",
                                    "hard_negatives": ["tree"]}]
    _jsonl(tmp_path / "samples.jsonl", rows)
    ds = GeoAlignDataset(tmp_path, 32, num_candidates=12, augment=False, background_negatives=True)
    plain = GeoAlignDataset(tmp_path, 32, num_candidates=12, augment=False)
    assert background_for(["tree"]) == [b for b in BACKGROUND_PHRASES if b != "trees"]
    rng = np.random.default_rng(0)
    region = ds.samples[0].regions[0]
    cands = ds.candidates(region, rng)
    assert cands[0] == "tree" and set(cands[1:]) >= {"building", *background_for(["tree"])}
    assert "trees" not in cands  # the same thing is not a negative
    assert not set(plain.candidates(region, rng)[1:]) >= set(background_for(["tree"]))
    back = next(r for s in ds.samples for r in s.regions if r.phrase == "background")
    assert "grass" not in ds.candidates(back, rng)[:2] and ds.candidates(back, rng)[1] == "tree"


def test_class_prompts_replace_region_texts(tmp_path):
    make_squares_dataset(tmp_path, n=6, size=32, seed=2, empty_every=0)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for r in rows:
        for reg in r["regions"]:
            reg["class"] = "square"
    rows[0]["regions"][0].pop("class")  # a region without a class keeps its phrase
    _jsonl(tmp_path / "samples.jsonl", rows)
    plain = GeoAlignDataset(tmp_path, 32, augment=False)
    always = GeoAlignDataset(tmp_path, 32, augment=False, class_prompt_prob=1.0)
    half = GeoAlignDataset(tmp_path, 32, augment=False, class_prompt_prob=0.5)
    assert always.samples[0].regions[0].name is None and always.samples[1].regions[0].name == "square"
    prompts = {t.format("square", a="a square", p="squares") for t in CLASS_PROMPTS}
    seen_prompts, seen_phrases = set(), 0
    for e in range(4):
        for i in range(len(plain)):
            p, a, h = plain[(e, i)], always[(e, i)], half[(e, i)]
            assert a["candidates"] == p["candidates"]  # HNA keeps the phrase and its negatives
            assert torch.equal(a["image"], p["image"])
            for j, (pt, at, ht) in enumerate(zip(p["region_texts"], a["region_texts"], h["region_texts"])):
                if i == 0 and j == 0:
                    assert at == pt
                    continue
                assert at in prompts and pt.endswith("square") and pt not in prompts
                seen_prompts.add(at)
                seen_phrases += ht == pt
                assert ht == pt or ht in prompts
    assert len(seen_prompts) >= 4 and seen_phrases > 0
    with pytest.raises(InputError, match="class_prompt_prob"):
        GeoAlignDataset(tmp_path, 32, class_prompt_prob=1.5)


def test_caption_prompts_name_the_dominant_class(tmp_path):
    make_squares_dataset(tmp_path, n=4, size=32, seed=2, empty_every=0)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for n, r in enumerate(rows):
        r["regions"] = [dict(r["regions"][0], bbox=[0, 0, 1, 1], **{"class": "field"}),
                        dict(r["regions"][0], bbox=[0, 0, 0.3, 0.3], cover=0.6, **{"class": "pond"})]
        if n == 3:  # nothing covers a quarter of the chip: no dominant class
            for reg in r["regions"]:
                reg["cover"] = 0.1
    _jsonl(tmp_path / "samples.jsonl", rows)
    ds = GeoAlignDataset(tmp_path, 32, augment=False, caption_prompt_prob=1.0)
    # `cover` wins over the box area; without `cover` the box area counts
    assert [s.dominant for s in ds.samples] == ["field", "field", "field", None]
    rows[0]["regions"][0]["cover"] = 0.5
    _jsonl(tmp_path / "samples.jsonl", rows)
    ds = GeoAlignDataset(tmp_path, 32, augment=False, caption_prompt_prob=1.0)
    assert ds.samples[0].dominant == "pond"
    prompts = {t.format("pond", a="a pond", p="ponds") for t in CLASS_PROMPTS}
    assert {ds[(e, 0)]["caption"] for e in range(20)} <= prompts
    assert ds[(0, 3)]["caption"] == ds.samples[3].caption  # no dominant class: the caption stays
    assert GeoAlignDataset(tmp_path, 32, augment=False)[(0, 0)]["caption"] == ds.samples[0].caption
    with pytest.raises(InputError, match="caption_prompt_prob"):
        GeoAlignDataset(tmp_path, 32, caption_prompt_prob=-0.1)


def test_collate_variable_regions(squares):
    import open_clip

    from geoalign_core.archs import TINY  # noqa: F401 (registers the arch for the tokenizer)

    ds = GeoAlignDataset(squares, 64, regions_per_image=3, num_candidates=4, augment=False)
    items = [ds[(0, i)] for i in range(len(ds))]
    counts = [len(it["boxes"]) for it in items]
    assert 0 in counts and max(counts) > 1
    batch = Collate(open_clip.get_tokenizer("GeoAlign-Tiny"))(items)
    k = sum(counts)
    assert batch["images"].shape == (8, 3, 64, 64)
    assert [len(b) for b in batch["boxes"]] == counts
    assert batch["n_regions"].tolist() == counts
    assert batch["region_image"].tolist() == [i for i, c in enumerate(counts) for _ in range(c)]
    assert batch["region_idx"].shape == (k,) and batch["cand_idx"].shape == (k, 4)
    assert len(set(batch["texts"])) == len(batch["texts"]) == batch["tokens"].shape[0]
    texts = batch["texts"]
    assert [texts[j] for j in batch["brief_idx"]] == [it["caption"] for it in items]
    assert [texts[j] for j in batch["cand_idx"][:, 0]] == [t for it in items for t in it["region_texts"]]
    empty = Collate()([items[counts.index(0)]])
    assert empty["cand_idx"].shape == (0, 0) and empty["boxes"][0].shape == (0, 4)


def test_chip_kinds(tmp_path):
    """Chips are read by the schema's reader (the one `geoalign eval` uses)."""
    rng = np.random.default_rng(0)
    array_raster(tmp_path / "u16.tif", rng.integers(100, 4000, size=(1, 20, 30)).astype("uint16"), nodata=0)
    one = read_image(tmp_path / "u16.tif")
    assert one.shape == (3, 20, 30) and one.dtype == np.float32
    assert np.array_equal(one[0], one[2]) and one.min() == 0.0 and one.max() == 1.0
    array_raster(tmp_path / "u8.tif", np.full((4, 8, 8), 51, dtype="uint8"))
    assert np.allclose(read_image(tmp_path / "u8.tif"), 0.2)
    pytest.importorskip("PIL")
    from PIL import Image

    Image.fromarray(np.full((10, 12, 3), 255, dtype=np.uint8)).save(tmp_path / "c.png")
    png = read_image(tmp_path / "c.png")
    assert png.shape == (3, 10, 12) and np.allclose(png, 1.0)


def test_bad_jsonl_reports_line(tmp_path):
    array_raster(tmp_path / "a.tif", np.zeros((3, 8, 8), dtype="uint8"))
    ok = {"image": "a.tif", "caption": "x"}
    _jsonl(tmp_path / "samples.jsonl", [ok, {"image": "a.tif"}])
    with pytest.raises(InputError, match=r"samples.jsonl:2: 'caption' must be a non-empty string"):
        read_samples(tmp_path)
    _jsonl(tmp_path / "samples.jsonl", [ok, {**ok, "regions": [{"bbox": [0, 0, 2], "phrase": "p"}]}])
    with pytest.raises(InputError, match=r":2 region 0: 'bbox'"):
        read_samples(tmp_path)
    _jsonl(tmp_path / "samples.jsonl", [{**ok, "image": "missing.tif"}])
    with pytest.raises(InputError, match="image not found"):
        read_samples(tmp_path)
    # boxes outside [0, 1] break the schema (as in `geoalign eval`); the rounding tolerance
    # is clipped, and what is left of a sliver dropped
    _jsonl(tmp_path / "samples.jsonl", [{**ok, "regions": [{"bbox": [1.2, 0, 1.5, 1], "phrase": "p"}]}])
    with pytest.raises(InputError, match=r":1 region 0: 'bbox' .* must satisfy 0 <= x0 < x1 <= 1"):
        read_samples(tmp_path)
    _jsonl(tmp_path / "samples.jsonl", [{**ok, "regions": [
        {"bbox": [-1e-7, 0, 0.5, 1 + 1e-7], "phrase": "p"}, {"bbox": [1 - 1e-7, 0, 1 + 5e-7, 1], "phrase": "q"}]}])
    (r,) = read_samples(tmp_path)[0].regions
    assert r.bbox == (0.0, 0.0, 0.5, 1.0) and r.description == "p"


def test_sampler_order_and_skip():
    a = ResumableSampler(10, seed=4)
    a.set_position(3)
    full = list(a)
    assert sorted(i for _, i in full) == list(range(10)) and {e for e, _ in full} == {3}
    a.set_position(3, skip=4)
    assert list(a) == full[4:] and len(a) == 6
    a.set_position(4)
    assert list(a) != [(4, i) for _, i in full]  # a new epoch, a new order
    shards = []
    for r in range(2):
        s = ResumableSampler(10, num_replicas=2, rank=r, seed=4)
        s.set_position(3)
        shards.append([i for _, i in s])
    assert shards[0] == [i for _, i in full][0::2] and shards[1] == [i for _, i in full][1::2]


_NO_VECTOR_STACK = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"geopandas", "pyogrio", "shapely", "pyproj"}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
import geoalign_core.training.engine, geoalign_core.training.objective, geoalign_core.training.train
from geoalign_core import load_model
from geoalign_core.data import read_image, read_samples
from geoalign_core.training.dataset import Collate, GeoAlignDataset
model = load_model("GeoAlign-Tiny")
ds = GeoAlignDataset([sys.argv[1]], model.image_size, regions_per_image=2, num_candidates=2)
collate = Collate(model.tokenizer, need_detail=True, need_region_text=True, need_candidates=True)
batch = collate([ds[(0, 0)], ds[(0, 1)]])
assert batch["images"].shape[0] == 2
assert read_image(read_samples(sys.argv[1])[0]["image"]).shape[0] == 3
print("trained without", sorted({m.split(".")[0] for m in sys.modules} & {"geopandas", "pyogrio", "shapely"}))
"""


@pytest.mark.slow
def test_training_needs_no_vector_stack(tmp_path):
    """Training reads chips and samples.jsonl only: it must import and build batches without
    geopandas / pyogrio / shapely / pyproj (a GPU box may have rasterio and torch alone)."""
    import subprocess
    import sys
    from pathlib import Path

    make_squares_dataset(tmp_path / "data", n=2, size=64)
    proc = subprocess.run([sys.executable, "-c", _NO_VECTOR_STACK, str(tmp_path / "data")], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], timeout=scaled(300))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained without []" in proc.stdout
