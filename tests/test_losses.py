"""The five losses against direct computations of the paper's formulas (Eq. 1-5)."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from generate import free_port
from open_clip.loss import ClipLoss
from timeouts import scaled

from geoalign_core import losses
from geoalign_core.losses import GeoAlignLoss


def unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


SCALE = torch.tensor(1 / 0.07)


def eq1_direct(v: torch.Tensor, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Eq. 1 written term by term: -1/2N sum_i [log softmax_i2t + log softmax_t2i]."""
    n = v.shape[0]
    total = 0.0
    for i in range(n):
        num = torch.exp(v[i] @ t[i] * scale)
        den_v = sum(torch.exp(v[i] @ t[j] * scale) for j in range(n))
        den_t = sum(torch.exp(t[i] @ v[j] * scale) for j in range(n))
        total = total + torch.log(num / den_v) + torch.log(num / den_t)
    return -total / (2 * n)


def test_eq1_matches_formula_and_open_clip():
    v, t = unit(6, 16, seed=1), unit(6, 16, seed=2)
    ours = losses.global_contrastive(v, t, SCALE)
    assert torch.allclose(ours, eq1_direct(v, t, SCALE), atol=1e-5)
    ref = ClipLoss()(v, t, SCALE)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_eq2_region_phrase_matches_formula():
    r, p = unit(5, 8, seed=3), unit(5, 8, seed=4)
    assert torch.allclose(losses.region_phrase(r, p, SCALE), eq1_direct(r, p, SCALE), atol=1e-5)


def test_eq3_hard_negative_matches_formula():
    k, q = 4, 5
    r, c = unit(k, 8, seed=5), unit(k, q, 8, seed=6)
    direct = 0.0
    for i in range(k):
        num = math.exp(float(r[i] @ c[i, 0] * SCALE))
        den = sum(math.exp(float(r[i] @ c[i, j] * SCALE)) for j in range(q))
        direct -= math.log(num / den)
    direct /= k
    assert float(losses.hard_negative(r, c, SCALE)) == pytest.approx(direct, rel=1e-5)
    # the positive far above its negatives -> loss near 0
    c2 = c.clone()
    c2[:, 0] = r
    c2[:, 1:] = -r.unsqueeze(1)
    assert float(losses.hard_negative(r, c2, SCALE)) < 1e-6


def test_eq4_visual_intra_consistency():
    r, c = unit(7, 8, seed=7), unit(7, 8, seed=8)
    direct = sum(1 - float(F.cosine_similarity(r[i], c[i], dim=0)) for i in range(7)) / 7
    assert float(losses.visual_intra_consistency(r, c)) == pytest.approx(direct, rel=1e-5)
    assert float(losses.visual_intra_consistency(r, r)) == pytest.approx(0.0, abs=1e-6)


def test_htc_is_two_eq1_terms():
    v, b, d = unit(4, 8, seed=9), unit(4, 8, seed=10), unit(4, 8, seed=11)
    want = eq1_direct(v, b, SCALE) + eq1_direct(v, d, SCALE)
    assert torch.allclose(losses.hierarchical_text(v, b, d, SCALE), want, atol=1e-5)


def test_eq5_weighted_sum_and_stage1():
    n, k, q, d = 4, 6, 3, 8
    img, brief, detail = unit(n, d, seed=1), unit(n, d, seed=2), unit(n, d, seed=3)
    reg, phr, crop = unit(k, d, seed=4), unit(k, d, seed=5), unit(k, d, seed=6)
    cands = unit(k, q, d, seed=7)
    lam = (1.0, 0.5, 2.0, 0.25, 3.0)
    total, parts = GeoAlignLoss(lam)(SCALE, img, brief, detail, reg, phr, cands, crop)
    want = (
        lam[0] * losses.global_contrastive(img, brief, SCALE)
        + lam[1] * losses.region_phrase(reg, phr, SCALE)
        + lam[2] * losses.hard_negative(reg, cands, SCALE)
        + lam[3] * losses.visual_intra_consistency(reg, crop)
        + lam[4] * losses.hierarchical_text(img, brief, detail, SCALE)
    )
    assert torch.allclose(total, want, atol=1e-5)
    assert set(parts) == {"global", "rpa", "hna", "vic", "htc"}
    stage1, parts1 = GeoAlignLoss(losses.STAGE1_LAMBDAS)(SCALE, img, brief)
    assert set(parts1) == {"global"}
    assert torch.allclose(stage1, losses.global_contrastive(img, brief, SCALE))
    with pytest.raises(ValueError, match="inputs are missing"):
        GeoAlignLoss(lam)(SCALE, img, brief)


def test_empty_regions_give_zero_with_graph():
    reg = torch.zeros(0, 8, requires_grad=True)
    for v in (
        losses.region_phrase(reg, torch.zeros(0, 8), SCALE),
        losses.hard_negative(reg, torch.zeros(0, 3, 8), SCALE),
        losses.visual_intra_consistency(reg, torch.zeros(0, 8)),
    ):
        assert float(v) == 0.0 and v.requires_grad


def test_gradients_flow_to_both_towers():
    """Through a real model: every loss term sends gradient to the image and the text tower."""
    from geoalign_core import load_model

    torch.manual_seed(0)
    m = load_model("GeoAlign-Tiny", device="cpu").train()
    imgs = m.preprocess(torch.rand(2, 3, m.image_size, m.image_size))
    boxes = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [50.0, 50.0, 100.0, 90.0]]), torch.tensor([[10.0, 10, 60, 60]])]
    g, reg = m.encode_image_and_regions(imgs, boxes)
    crop = m.encode_crops(imgs, boxes)
    brief = m.encode_text(["a red car", "a pool"])
    detail = m.encode_text(["a red car on a road", "a blue pool next to a house"])
    phr = m.encode_text(["car", "tree", "pool"])
    cands = m.encode_text(["car", "truck", "tree", "grass", "pool", "pond"]).view(3, 2, -1)
    total, _ = GeoAlignLoss()(m.logit_scale, g, brief, detail, reg, phr, cands, crop)
    total.backward()
    assert m.visual.conv1.weight.grad.abs().sum() > 0
    assert m.clip.token_embedding.weight.grad.abs().sum() > 0
    assert m.clip.logit_scale.grad is not None


def _ddp_worker(rank: int, world: int, port: int, q) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        v, t = unit(6, 8, seed=1), unit(6, 8, seed=2)
        r, p = unit(5, 8, seed=3), unit(5, 8, seed=4)
        # uneven split of regions across ranks (3 + 2) and of images (3 + 3)
        vs, ts = v[rank * 3 : rank * 3 + 3].clone().requires_grad_(), t[rank * 3 : rank * 3 + 3]
        rs, ps = (r[:3], p[:3]) if rank == 0 else (r[3:], p[3:])
        g = losses.global_contrastive(vs, ts, SCALE)
        rp = losses.region_phrase(rs, ps, SCALE)
        labels = torch.tensor([0, 1, 0, 2, 1])  # class ids, uneven across ranks (3 + 2)
        mp = losses.multi_positive_contrastive(rs, ps, labels[:3] if rank == 0 else labels[3:], SCALE)
        g.backward()
        q.put((rank, float(g), float(rp), vs.grad.abs().sum().item() > 0, float(mp)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_gather_matches_joined_batch():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=scaled(120)) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    v, t = unit(6, 8, seed=1), unit(6, 8, seed=2)
    r, p = unit(5, 8, seed=3), unit(5, 8, seed=4)
    want_g = float(losses.global_contrastive(v, t, SCALE))
    want_r = float(losses.region_phrase(r, p, SCALE))
    want_mp = float(losses.multi_positive_contrastive(r, p, torch.tensor([0, 1, 0, 2, 1]), SCALE))
    for _, g, rp, has_grad, mpc in results:
        assert g == pytest.approx(want_g, rel=1e-5)
        assert rp == pytest.approx(want_r, rel=1e-5)
        assert mpc == pytest.approx(want_mp, rel=1e-5)  # FarSLIP's region-category term gathers labels too
        assert has_grad


def test_distillation_term_is_one_minus_cosine_to_a_frozen_start(tiny_model):
    """geoalign_core.training.distill: w x sum over image / region / text embeddings of mean(1 - cos(student, teacher));
    0 for the start itself, positive once the student moves, no gradient into the teacher."""
    import copy

    from geoalign_core.training.distill import Distiller
    from geoalign_core.training.objective import EmbedStep

    model = copy.deepcopy(tiny_model)
    s = model.image_size
    torch.manual_seed(0)
    batch = {"images": torch.rand(2, 3, s, s),
             "boxes": [torch.tensor([[0.0, 0.0, s / 2, s / 2]]), torch.tensor([[4.0, 4.0, s - 4.0, s - 8.0]])],
             "tokens": model.tokenizer(["a red car", "a field of grass", "water"])}
    student = EmbedStep(model, (1.0, 1.0, 0.0, 0.0, 0.0))
    kd = Distiller(model, 2.0, need_regions=True)
    assert float(kd(student(batch), batch).detach()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in model.clip.parameters():
            p.add_(0.05 * torch.randn_like(p))
    emb = student(batch)
    got = kd(emb, batch)
    with torch.no_grad():
        target = kd.step(batch)
    want = 2.0 * sum((1 - (emb[k] * target[k]).sum(-1)).mean() for k in ("img", "reg", "text"))
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5) and float(got.detach()) > 0
    got.backward()
    assert all(p.grad is None for p in kd.step.model.parameters())
    assert any(p.grad is not None for p in model.clip.parameters())


def test_patch_to_patch_matches_formula():
    from geoalign_core.losses import patch_to_patch

    torch.manual_seed(1)
    reg, tgt = torch.randn(5, 8, requires_grad=True), torch.randn(5, 8, requires_grad=True)
    want = (1 - F.cosine_similarity(reg, tgt, dim=-1)).mean()
    got = patch_to_patch(reg, tgt)
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    got.backward()
    assert reg.grad is not None and tgt.grad is None  # the teacher's side is a target
    assert float(patch_to_patch(torch.zeros(0, 8), torch.zeros(0, 8))) == 0.0


def test_multi_positive_contrastive_matches_formula():
    from geoalign_core.losses import global_contrastive, multi_positive_contrastive

    torch.manual_seed(2)
    a, b = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    # all labels distinct: it is Eq. 1's symmetric InfoNCE
    distinct = multi_positive_contrastive(a, b, torch.arange(6), scale)
    assert float(distinct) == pytest.approx(float(global_contrastive(a, b, scale)), rel=1e-6)
    # regions of one class are positives of each other: mean over positives of -log softmax, both ways
    labels = torch.tensor([0, 0, 1, 2, 2, 2])
    logits = scale * a @ b.T
    pos = (labels[:, None] == labels[None, :]).float()

    def way(lg):
        return (-(lg.log_softmax(1) * pos).sum(1) / pos.sum(1)).mean()

    want = 0.5 * (way(logits) + way(logits.T))
    assert float(multi_positive_contrastive(a, b, labels, scale)) == pytest.approx(float(want), rel=1e-6)
    assert float(multi_positive_contrastive(a, b, labels, scale)) != pytest.approx(float(distinct), rel=1e-3)
