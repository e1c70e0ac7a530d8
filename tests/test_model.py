"""GeoAlignCLIP: shapes, normalisation, dense/region/crop embeddings, long text."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geoalign_core import GeoAlignCLIP, load_model
from geoalign_core.errors import ModelError
from geoalign_core.model import LONG_CONTEXT, stretch_positional_embedding


@pytest.fixture(scope="module")
def model(tiny_model) -> GeoAlignCLIP:
    return tiny_model


def test_a_model_without_weights_says_so():
    with pytest.warns(UserWarning, match="RANDOM"):
        load_model("GeoAlign-Tiny", device="cpu")


@pytest.fixture(scope="module")
def images(model: GeoAlignCLIP) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return model.preprocess(torch.rand(2, 3, model.image_size, model.image_size, generator=g))


def _unit(x: torch.Tensor, dim: int = -1) -> bool:
    return torch.allclose(x.norm(dim=dim), torch.ones(()), atol=1e-5)


def test_shapes_and_normalisation(model, images):
    d = model.embed_dim
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(["a red car", "a swimming pool", "a ship on a river"])
        dense = model.encode_dense(images)
    grid = model.image_size // model.patch_size
    assert img.shape == (2, d) and _unit(img)
    assert txt.shape == (3, d) and _unit(txt)
    assert dense.shape == (2, d, grid, grid) and _unit(dense, dim=1)
    assert model.encode_text([]).shape == (0, d)
    assert float(model.logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-4)


def test_encode_image_matches_open_clip(model, images):
    """Our one-pass visual path gives the same global embedding as open_clip itself."""
    with torch.no_grad():
        ours = model.encode_image(images)
        ref = F.normalize(model.clip.encode_image(images), dim=-1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_text_matches_open_clip(model):
    with torch.no_grad():
        ours = model.encode_text(["two white cars next to a road"])
        ref = F.normalize(model.clip.encode_text(model.tokenize(["two white cars next to a road"])), dim=-1)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("mode", ["standard", "value"])
def test_whole_image_region_is_mean_of_patches(model, images, mode):
    s = model.image_size
    with torch.no_grad():
        _, dense = model.forward_visual(images, dense=True, dense_mode=mode)
        reg = model.encode_regions(images, [torch.tensor([[0.0, 0.0, s, s]])] * 2, dense_mode=mode)
    mean = F.normalize(dense.mean(dim=(2, 3)), dim=-1)
    cos = (reg * mean).sum(-1)
    assert reg.shape == (2, model.embed_dim) and _unit(reg)
    assert torch.all(cos > 0.995), cos


def test_boxes_are_pixel_coordinates(model, images):
    """A box covering exactly one patch gives that patch's embedding."""
    p = model.patch_size
    i, j = 3, 5  # row, column of the patch
    box = torch.tensor([[j * p, i * p, (j + 1) * p, (i + 1) * p]], dtype=torch.float32)
    with torch.no_grad():
        _, dense = model.forward_visual(images[:1], dense=True)
        reg = model.encode_regions(images[:1], [box])
    patches = F.normalize(dense[0], dim=0)
    sims = torch.einsum("d,dhw->hw", reg[0], patches)
    # bilinear sampling mixes in a little of the neighbours, but the box's own patch dominates
    assert divmod(int(sims.argmax()), sims.shape[1]) == (i, j)
    assert float(sims[i, j]) > 0.9


def test_regions_one_backbone_pass(model, images):
    """Any number of boxes costs one backbone pass (conv1 called once per batch)."""
    calls = []
    h = model.visual.conv1.register_forward_hook(lambda *a: calls.append(1))
    try:
        few = [torch.tensor([[0.0, 0.0, 20.0, 20.0]])] * 2
        many = [torch.rand(100, 2).mul(50).repeat(1, 2) + torch.tensor([0, 0, 10, 10.0])] * 2
        with torch.no_grad():
            model.encode_regions(images, few)
            assert len(calls) == 1
            out = model.encode_regions(images, many)
            assert len(calls) == 2
    finally:
        h.remove()
    assert out.shape == (200, model.embed_dim)


def test_regions_accept_batch_index_format_and_empty(model, images):
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 40.0]]), torch.zeros(0, 4)]
    flat = torch.tensor([[0, 0.0, 0.0, 40.0, 40.0]])
    with torch.no_grad():
        a = model.encode_regions(images, boxes)
        b = model.encode_regions(images, flat)
        empty = model.encode_regions(images, [torch.zeros(0, 4)] * 2)
    assert a.shape == (1, model.embed_dim) and torch.allclose(a, b)
    assert empty.shape == (0, model.embed_dim)
    with pytest.raises(ModelError):
        model.encode_regions(images, [torch.zeros(3, 3)] * 2)


def test_crops_view(model, images):
    s = model.image_size
    boxes = [torch.tensor([[0.0, 0.0, s, s], [10.0, 20.0, 50.0, 60.0]]), torch.tensor([[0.0, 0.0, s, s]])]
    with torch.no_grad():
        crops = model.crop_boxes(images, boxes)
        emb = model.encode_crops(images, boxes)
        full = model.encode_image(images)
    assert crops.shape == (3, 3, s, s)
    assert torch.allclose(crops[0], images[0], atol=1e-5)  # the whole-image crop is the image
    assert emb.shape == (3, model.embed_dim) and _unit(emb)
    assert torch.allclose(emb[0], full[0], atol=1e-4)


def test_regions_cost_one_backbone_pass_crops_one_per_box(model, images):
    """Why regions are cheap: all boxes share one pass over the image batch, while the crop view
    re-encodes every box. (The time ratio is measured by benchmarks/bench_inference.py, not here:
    a timing assertion on a shared CPU is not a test.)"""
    boxes = [torch.rand(100, 2).mul(60).repeat(1, 2) + torch.tensor([0, 0, 20, 20.0])] * 2
    images_seen = []
    hook = model.visual.conv1.register_forward_hook(lambda _m, inp, _out: images_seen.append(inp[0].shape[0]))
    try:
        with torch.no_grad():
            model.encode_regions(images, boxes)
            regions_images = sum(images_seen)
            images_seen.clear()
            model.encode_crops(images, boxes)
            crops_images = sum(images_seen)
    finally:
        hook.remove()
    assert regions_images == len(images)  # one pass over the 2 images for 200 boxes
    assert crops_images == 200  # one encoded crop per box


def test_other_input_sizes(model):
    x = model.preprocess(torch.rand(1, 3, 224, 160))
    with torch.no_grad():
        dense = model.encode_dense(x)
        img = model.encode_image(x)
    assert dense.shape[-2:] == (224 // model.patch_size, 160 // model.patch_size)
    assert img.shape == (1, model.embed_dim)
    with pytest.raises(ModelError, match="multiple of the patch size"):
        model.encode_image(torch.rand(1, 3, 100, 100))


def test_gradients_reach_both_towers(model, images):
    model.train()
    try:
        img = model.encode_image(images)
        txt = model.encode_text(["a red car", "a blue car"])
        reg = model.encode_regions(images, [torch.tensor([[0.0, 0.0, 30.0, 30.0]])] * 2)
        (img * txt).sum().add(reg.sum()).backward()
        assert model.visual.conv1.weight.grad is not None
        assert model.clip.token_embedding.weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_value_mode_differs_from_standard(model, images):
    with torch.no_grad():
        a = model.encode_dense(images, dense_mode="standard")
        b = model.encode_dense(images, dense_mode="value")
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ModelError):
        model.encode_dense(images, dense_mode="bogus")


def test_long_clip_stretching():
    pos = torch.randn(77, 8)
    new = stretch_positional_embedding(pos)
    assert new.shape == (LONG_CONTEXT, 8)
    assert torch.equal(new[:20], pos[:20])
    # every 4th position after the kept ones is an original position
    assert torch.allclose(new[20::4][:56], pos[20:76])
    # in-between positions interpolate linearly
    assert torch.allclose(new[22], (pos[20] + pos[21]) / 2)


def test_long_text_model_reads_248_tokens():
    m = load_model("GeoAlign-Tiny", device="cpu", long_text=True)
    assert m.context_length == LONG_CONTEXT
    long_caption = " ".join(["a red car next to a white building"] * 20)
    toks = m.tokenize([long_caption])
    assert toks.shape == (1, LONG_CONTEXT)
    assert int((toks != 0).sum()) > 77
    with torch.no_grad():
        out = m.encode_text([long_caption, long_caption + " and a pool"])
    assert out.shape == (2, m.embed_dim)
    assert not torch.allclose(out[0], out[1])  # words after token 77 change the embedding
