"""The text-only path of a query from an index: torchvision's kernels without the torchvision package
(geoalign_core/box_ops.py) and the text tower without open_clip (geoalign_core/text_model.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from geoalign_core import box_ops
from geoalign_core.text_model import TextModel, load_text_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def crop_256(tmp_path_factory) -> Path:
    from generate import sample_crop

    return sample_crop(tmp_path_factory.mktemp("crop256") / "crop.tif", size=256, col=640, row=640)
HEAVY = ("open_clip", "torchvision", "torch._dynamo", "geoalign_core.model", "geoalign_core.zoo")


def _random_boxes(n: int, extent: float, size: float, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * extent - size / 4
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g, dtype=dtype) * size], dim=1)


def test_box_kernels_are_torchvisions_own():
    from torchvision.ops import batched_nms, box_iou, roi_align

    g = torch.Generator().manual_seed(3)
    feature = torch.randn(2, 8, 14, 12, generator=g)
    boxes = [_random_boxes(40, 100, 50, g, torch.float32), torch.zeros(0, 4)]
    boxes[0][0] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # an empty box
    for ratio in (-1, 2):
        assert torch.equal(box_ops.roi_align(feature, boxes, (4, 4), 1 / 8, ratio, True),
                           roi_align(feature, boxes, (4, 4), 1 / 8, ratio, True))
    for n, thr in ((1, 0.5), (300, 0.0), (3000, 0.5), (3000, 0.3)):
        b, s = _random_boxes(n, 400, 60, g), torch.rand(n, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 3, (n,), generator=g)
        assert torch.equal(box_ops.batched_nms(b, s, labels, thr), batched_nms(b, s, labels, thr))
    assert torch.allclose(box_ops.box_iou(b[:30], b[:50]), box_iou(b[:30], b[:50]))
    grad = feature.clone().requires_grad_()
    box_ops.pool_regions(grad, boxes, patch_size=8).sum().backward()  # training pools regions through it
    assert grad.grad is not None and float(grad.grad.abs().sum()) > 0


def _run(code: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_kernels_load_without_importing_torchvision():
    got = _run("import json, sys, torch; from geoalign_core import box_ops; "
               "b = torch.tensor([[0., 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]]); "
               "keep = box_ops.nms(b, torch.tensor([.9, .8, .7]), 0.5).tolist(); "
               f"print(json.dumps({{'keep': keep, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))")
    assert got == {"keep": [0, 2], "loaded": []}


def test_the_text_tower_alone_embeds_as_the_whole_model(tiny_model, tiny_ckpt, tmp_path, monkeypatch):
    from geoalign_core.zoo import load_model

    monkeypatch.setenv("GEOALIGN_CACHE", str(tmp_path / "cache"))
    text = load_text_model(tiny_ckpt, "cpu")
    assert isinstance(text, TextModel) and text._full is None
    texts = ["red car", "a large swimming pool next to a house", "tree", "word " * 100]  # the last one truncated
    with torch.no_grad():
        assert torch.equal(text.encode_text(texts), tiny_model.encode_text(texts))
    assert float(text.logit_scale) == float(tiny_model.logit_scale.detach())
    assert (text.embed_dim, text.context_length, text.image_size, text.patch_size, text.name) == (
        tiny_model.embed_dim, tiny_model.context_length, tiny_model.image_size, tiny_model.patch_size, tiny_model.name)
    assert text.card is not None and text.card.name == tiny_model.card.name
    # the fingerprint: nothing recorded yet, so the whole model is loaded to compute it ...
    assert text.fingerprint() == tiny_model.fingerprint() and text._full is not None
    # ... and loading the whole model records it for the next process
    load_model(tiny_ckpt, "cpu")
    again = load_text_model(tiny_ckpt, "cpu")
    assert again is not None and again.fingerprint() == tiny_model.fingerprint() and again._full is None
    # anything of the image side loads the whole model once
    images = torch.zeros(1, 3, text.image_size, text.image_size)
    assert again.encode_image(images).shape == (1, tiny_model.embed_dim) and again._full is not None


def test_sources_the_text_path_does_not_cover_load_whole(tiny_model, tmp_path):
    from geoalign_core.zoo import save_model

    pt = tmp_path / "plain.pt"
    torch.save(tiny_model.clip.state_dict(), pt)  # an open_clip state dict: no spec in it
    assert load_text_model(pt, "cpu") is None
    assert load_text_model("ViT-B-16", "cpu") is None  # an architecture name: random weights
    assert load_text_model(tmp_path / "missing.safetensors", "cpu") is None
    assert load_text_model(save_model(tiny_model, tmp_path / "t.safetensors"), "cuda") is None


def test_a_fresh_query_from_an_index_imports_neither_open_clip_nor_torchvision(tiny_ckpt, crop_256, tmp_path):
    env = {"GEOALIGN_CACHE": str(tmp_path / "cache")}
    index = tmp_path / "c.parquet"
    subprocess.run([sys.executable, "-m", "geoalign_core.cli", "index", str(crop_256), "--model", tiny_ckpt,
                    "--out", str(index), "--quiet"], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
                   check=True, capture_output=True)
    got = _run("import json, sys; from geoalign_core.cli import main; "
               f"rc = main(['find', '--index', {str(index)!r}, 'red car', '--min-score', '0', '--out', "
               f"{str(tmp_path / 'hits.gpkg')!r}, '--quiet']); "
               f"print(json.dumps({{'rc': rc, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))", env)
    assert got == {"rc": 0, "loaded": []}
    assert (tmp_path / "hits.gpkg").is_file()


@pytest.mark.parametrize("name", ["geoalign-demo"])
def test_the_bundled_model_has_a_text_only_path(name):
    text = load_text_model(name, "cpu")
    assert text is not None and text.name == name and text.card is not None
