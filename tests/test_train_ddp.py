"""2-process DDP (gloo, CPU) gives what one process gives on the joined batch."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from generate import free_port
from timeouts import scaled

from geoalign_core.training.objective import geoalign_objective

D = 16
LAMBDAS = (1.0, 1.0, 1.0, 1.0, 1.0)
COUNTS = [2, 0, 1, 3]  # regions per image; rank 0 gets images 0-1 (2 regions), rank 1 images 2-3 (4)
VIC_PER_IMAGE = 2
MODEL_SPLIT = ([0, 1, 2], [3, 4, 5])  # samples of rank 0 / rank 1 (sample 3 has no region)


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def _embeddings() -> tuple[dict, dict]:
    """Fixed embeddings + index tensors for the joined batch of 4 images / 6 regions."""
    g = torch.Generator().manual_seed(0)
    k = sum(COUNTS)
    n_text, q = 12, 4
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    keep = [j for i, c in enumerate(COUNTS) for j in range(sum(COUNTS[:i]), sum(COUNTS[:i]) + min(c, VIC_PER_IMAGE))]
    emb = {"img": unit(4, D), "reg": unit(k, D), "crop": unit(len(keep), D), "text": unit(n_text, D),
           "vic_keep": torch.tensor(keep)}
    batch = {
        "brief_idx": torch.tensor([0, 1, 2, 3]),
        "detail_idx": torch.tensor([4, 5, 6, 7]),
        "region_idx": torch.randint(8, 12, (k,), generator=g),
        "cand_idx": torch.randint(0, n_text, (k, q), generator=g),
        "n_regions": torch.tensor(COUNTS),
    }
    return emb, batch


def _split(emb: dict, batch: dict, rank: int) -> tuple[dict, dict]:
    imgs = [0, 1] if rank == 0 else [2, 3]
    start = sum(COUNTS[: imgs[0]])
    regs = list(range(start, start + sum(COUNTS[i] for i in imgs)))
    keep_all = emb["vic_keep"].tolist()
    crops = [i for i, r in enumerate(keep_all) if r in regs]
    e = {"img": emb["img"][imgs], "reg": emb["reg"][regs], "crop": emb["crop"][crops], "text": emb["text"],
         "vic_keep": torch.tensor([keep_all[i] - start for i in crops], dtype=torch.long)}
    b = {"brief_idx": batch["brief_idx"][imgs], "detail_idx": batch["detail_idx"][imgs],
         "region_idx": batch["region_idx"][regs], "cand_idx": batch["cand_idx"][regs]}
    return e, b


def _leaves(emb: dict) -> dict:
    return {k: (v.clone().requires_grad_(True) if v.is_floating_point() else v) for k, v in emb.items()}


def _model_grads(data_dir: str, indices: list[int], ddp: bool) -> tuple[float, dict]:
    """One forward/backward of EmbedStep (DDP-wrapped when ``ddp``) + Eq. 5 on the given samples."""
    import warnings

    from geoalign_core import load_model
    from geoalign_core.training.dataset import Collate, GeoAlignDataset
    from geoalign_core.training.objective import EmbedStep

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("GeoAlign-Tiny", device="cpu").train()
    ds = GeoAlignDataset(data_dir, model.image_size, regions_per_image=3, num_candidates=4)
    batch = Collate(model.tokenizer)([ds[(0, i)] for i in indices])
    step = EmbedStep(model, LAMBDAS, crop_size=56, vic_regions_per_image=VIC_PER_IMAGE)
    runner = torch.nn.parallel.DistributedDataParallel(step) if ddp else step
    total, _ = geoalign_objective(runner(batch), batch, model.logit_scale, LAMBDAS)
    total.backward()
    return float(total.detach()), {n: p.grad.clone() for n, p in model.clip.named_parameters()}


def _worker(rank: int, world: int, port: int, data_dir: str, q) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        emb, batch = _split(*_embeddings(), rank)
        emb = _leaves(emb)
        total, parts = geoalign_objective(emb, batch, torch.tensor(10.0), LAMBDAS)
        total.backward()
        grads = {k: emb[k].grad.clone() for k in ("img", "reg", "crop", "text")}
        model_loss, model_grads = _model_grads(data_dir, MODEL_SPLIT[rank], ddp=True)
        # numpy arrays travel by value (torch tensors would go through shared memory that
        # disappears with this process)
        q.put((rank, float(total.detach()), {k: float(v) for k, v in parts.items()},
               {k: v.numpy() for k, v in grads.items()}, model_loss, {k: v.numpy() for k, v in model_grads.items()}))
    finally:
        dist.destroy_process_group()


def _spawn(target, args_per_rank, timeout=180) -> list:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, q)) for a in args_per_rank]
    for p in procs:
        p.start()
    import queue
    import time

    results: list = []
    deadline = time.monotonic() + scaled(timeout)
    try:
        while len(results) < len(procs):
            try:
                results.append(q.get(timeout=1.0))
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a worker failed (exit codes {dead})"
                assert time.monotonic() < deadline, "workers timed out"
    finally:
        for p in procs:
            p.join(timeout=scaled(60))
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    return sorted(results, key=lambda r: r[0])


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    from geoalign_core.training.synthetic import make_squares_dataset

    data = make_squares_dataset(tmp_path_factory.mktemp("data"), n=6, size=64, seed=0)
    port = free_port()
    return str(data), _spawn(_worker, [(r, 2, port, str(data)) for r in range(2)])


def test_objective_two_ranks_equals_joined_batch(two_rank_results):
    """Eq. 5 on fixed embeddings, ranks holding 2 and 4 regions (one image without any)."""
    emb, batch = _embeddings()
    leaves = _leaves(emb)
    total, parts = geoalign_objective(leaves, batch, torch.tensor(10.0), LAMBDAS)
    total.backward()
    _, res = two_rank_results
    # the mean over ranks of each rank's (scaled) loss is the joined-batch loss
    assert sum(r[1] for r in res) / 2 == pytest.approx(float(total.detach()), rel=1e-5)
    for name, value in parts.items():
        assert sum(r[2][name] for r in res) / 2 == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    # DDP averages gradients over ranks: rank grads / world are the joined batch's gradients
    g0, g1 = ({k: torch.from_numpy(v) for k, v in r[3].items()} for r in res)
    assert torch.allclose(torch.cat([g0["img"], g1["img"]]) / 2, leaves["img"].grad, atol=1e-6)
    assert torch.allclose(torch.cat([g0["reg"], g1["reg"]]) / 2, leaves["reg"].grad, atol=1e-6)
    assert torch.allclose(torch.cat([g0["crop"], g1["crop"]]) / 2, leaves["crop"].grad, atol=1e-6)
    assert torch.allclose((g0["text"] + g1["text"]) / 2, leaves["text"].grad, atol=1e-6)


def test_ddp_model_step_equals_joined_batch(two_rank_results):
    """One forward/backward of the DDP-wrapped training module: same loss, same gradients."""
    data, res = two_rank_results
    loss, grads = _model_grads(data, MODEL_SPLIT[0] + MODEL_SPLIT[1], ddp=False)
    assert sum(r[4] for r in res) / 2 == pytest.approx(loss, rel=1e-5)
    for name, g in grads.items():
        g0, g1 = torch.from_numpy(res[0][5][name]), torch.from_numpy(res[1][5][name])
        assert torch.equal(g0, g1), name  # DDP all-reduced
        # float32 sums in another order: compare against the tensor's scale
        assert float((g0 - g).abs().max()) <= 1e-5 * float(g.abs().max()) + 1e-8, name


def _train_worker(rank: int, world: int, port: int, cfg: dict, q) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from geoalign_core.training.config import config_from_dict
    from geoalign_core.training.engine import train

    res = train(config_from_dict(cfg), quiet=True)
    q.put((rank, [h["loss"] for h in res.history], str(res.export)))


def test_ddp_training_steps_equal_single_process(tmp_path):
    from geoalign_core import load_model
    from geoalign_core.training.synthetic import make_squares_dataset

    data = make_squares_dataset(tmp_path / "data", n=8, size=64, seed=0)
    base = dict(model="GeoAlign-Tiny", stage=2, data=str(data), max_steps=2, lr=1e-3, warmup_steps=0,
                regions_per_image=3, num_candidates=4, num_workers=0, tensorboard=False, device="cpu")
    port = free_port()
    ddp_cfg = {**base, "batch_size": 2, "out_dir": str(tmp_path / "ddp")}
    res = _spawn(_train_worker, [(r, 2, port, ddp_cfg) for r in range(2)])
    assert res[0][1] == res[1][1]  # every rank logs the global-batch loss

    from geoalign_core.training.config import config_from_dict
    from geoalign_core.training.engine import train

    single = train(config_from_dict({**base, "batch_size": 4, "out_dir": str(tmp_path / "one")}), quiet=True)
    assert res[0][1] == pytest.approx([h["loss"] for h in single.history], rel=1e-5)
    a = load_model(res[0][2], device="cpu").clip.state_dict()
    b = load_model(single.export, device="cpu").clip.state_dict()
    # Adam divides by |grad|: float noise on (mathematically) zero gradients, e.g. the key
    # biases, moves those weights by a few % of lr; real disagreements move them by ~lr
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 0.1 * base["lr"], worst
