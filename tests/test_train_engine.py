"""Training loop on CPU: both stages, overfitting, exact resume, export, trimmed text, CLI."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from geoalign_core import load_model
from geoalign_core.cli import main as cli_main
from geoalign_core.training.config import config_from_dict
from geoalign_core.training.engine import list_checkpoints, train
from geoalign_core.training.objective import encode_text_trimmed
from geoalign_core.training.synthetic import make_squares_dataset

TINY = dict(model="GeoAlign-Tiny", num_workers=0, log_every=1, tensorboard=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 chips of 64 px (two without regions), 0-3 coloured squares each."""
    return make_squares_dataset(tmp_path_factory.mktemp("data"), n=8, size=64, seed=0)


@pytest.fixture(scope="module")
def overfit_data(tmp_path_factory):
    """4 chips with 4 different captions: a set a tiny model can memorise in a few steps."""
    return make_squares_dataset(tmp_path_factory.mktemp("overfit"), n=4, size=64, seed=1, empty_every=0,
                                max_squares=2)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tiny():
    with pytest.warns(UserWarning, match="RANDOM"):
        return load_model("GeoAlign-Tiny", device="cpu")


def cfg(**kw):
    return config_from_dict({**TINY, **kw})


@pytest.mark.parametrize("stage", [1, 2])
def test_stage_runs_logs_and_exports(data, tmp_path, stage):
    c = cfg(stage=stage, data=str(data), out_dir=str(tmp_path / "run"), batch_size=4, max_steps=3,
            regions_per_image=3, num_candidates=4, ckpt_every=2, keep_checkpoints=1)
    res = train(c, quiet=True)
    assert res.step == 3 and not res.stopped and len(res.history) == 3
    parts = {"loss_global"} if stage == 1 else {"loss_global", "loss_rpa", "loss_hna", "loss_vic", "loss_htc"}
    for h in res.history:
        assert parts <= set(h) and all(torch.isfinite(torch.tensor(h[p])) for p in parts)
    rows = _rows(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and float(rows[-1]["images_per_s"]) > 0
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_00000003.pt"]
    assert (tmp_path / "run" / "config.yaml").is_file()

    # the export reloads with load_model and gives the trained model's outputs
    m = load_model(res.export, device="cpu")
    assert m.spec.arch == "GeoAlign-Tiny" and m.dense_mode == "standard"
    state = torch.load(res.checkpoint, weights_only=True)["model"]
    ref = _tiny()
    ref.clip.load_state_dict(state)
    x = m.preprocess(torch.rand(2, 3, 112, 112))
    boxes = [torch.tensor([[0.0, 0.0, 50.0, 60.0]]), torch.zeros(0, 4)]
    with torch.no_grad():
        assert torch.equal(m.encode_image(x), ref.encode_image(x))
        assert torch.equal(m.encode_regions(x, boxes), ref.encode_regions(x, boxes))
        assert torch.equal(m.encode_text(["red square"]), ref.encode_text(["red square"]))


def test_progress_bar_shows_loss_and_rate_every_step(data, tmp_path, monkeypatch):
    """The bar's loss and images/s change at every step, whatever log_every is (the log keeps it)."""
    import tqdm.auto

    shown: list[dict] = []

    class Bar:
        def __init__(self, *a, **k):
            pass

        def set_postfix(self, refresh=True, **kw):
            shown.append(kw)

        def update(self, n=1):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    c = cfg(stage=1, data=str(data), out_dir=str(tmp_path / "run"), batch_size=4, max_steps=3, log_every=10)
    res = train(c)
    assert len(shown) == 3, shown
    assert [float(s["loss"]) for s in shown] == [round(h["loss"], 4) for h in res.history]
    assert all(float(s["img_s"]) > 0 for s in shown)
    assert [int(r["step"]) for r in _rows(tmp_path / "run" / "log.csv")] == [1, 3]  # log: step 1, then every 10, last


@pytest.mark.parametrize("stage", [1, 2])
def test_loss_decreases_on_overfit_set(overfit_data, tmp_path, stage):
    c = cfg(stage=stage, data=str(overfit_data), out_dir=str(tmp_path / "run"), batch_size=4, max_steps=12,
            lr=3e-4, warmup_steps=0, min_lr_ratio=1.0, augment=False, num_candidates=4)
    losses = [h["loss"] for h in train(c, quiet=True).history]
    assert sum(losses[-3:]) / 3 < 0.5 * losses[0], losses


@pytest.mark.slow
def test_resume_reproduces_uninterrupted_run(data, tmp_path):
    # 8 images, micro-batches of 3 (a partial one per epoch), 2 per step: steps straddle epochs
    common = dict(stage=2, data=str(data), batch_size=3, grad_accum=2, max_steps=5, lr=1e-3, warmup_steps=2,
                  regions_per_image=2, num_candidates=3, ckpt_every=100)
    full = train(cfg(out_dir=str(tmp_path / "full"), **common), quiet=True)
    part = train(cfg(out_dir=str(tmp_path / "part"), num_workers=1, **common), stop_after=2, quiet=True)
    assert part.stopped and part.step == 2 and part.export is None
    rest = train(cfg(out_dir=str(tmp_path / "part"), **common), resume=True, quiet=True)
    assert rest.step == 5 and not rest.stopped
    assert [h["loss"] for h in part.history + rest.history] == [h["loss"] for h in full.history]
    a = load_model(full.export, device="cpu").clip.state_dict()
    b = load_model(rest.export, device="cpu").clip.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = _rows(tmp_path / "part" / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]


def test_refuses_to_clobber_and_checks_resume(data, tmp_path):
    from geoalign_core.errors import InputError

    c = cfg(stage=1, data=str(data), out_dir=str(tmp_path / "run"), batch_size=4, max_steps=1)
    train(c, quiet=True)
    with pytest.raises(InputError, match="--resume"):
        train(c, quiet=True)
    with pytest.raises(InputError, match="batch_size=4"):
        train(cfg(stage=1, data=str(data), out_dir=str(tmp_path / "run"), batch_size=2, max_steps=2),
              resume=True, quiet=True)
    assert train(c, overwrite=True, quiet=True).step == 1


def test_trimmed_text_matches_full_context():
    torch.manual_seed(0)
    m = _tiny()
    tok = m.tokenize(["red square", "a much longer caption about several squares on a grey ground", "x"])
    with torch.no_grad():
        assert torch.allclose(encode_text_trimmed(m, tok), m.encode_text_tokens(tok), atol=1e-5)


def test_cli_train_and_bad_configs(data, tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(
        f"model: GeoAlign-Tiny\nstage: 2\ndata: {data}\nout_dir: {tmp_path / 'run'}\nbatch_size: 4\n"
        f"num_workers: 0\nregions_per_image: 2\nnum_candidates: 3\n"
    )
    assert cli_main(["train", str(good), "--max-steps", "1", "--quiet", "--set", "export_half=true"]) == 0
    assert "done: step 1/1" in capsys.readouterr().out
    export = tmp_path / "run" / "model.safetensors"
    assert export.stat().st_size < 20e6  # fp16: the tiny model fits the package limit
    assert load_model(export, device="cpu").encode_text(["red square"]).dtype == torch.float32
    bad = {
        "unknown": "model: GeoAlign-Tiny\ndata: d\nout_dir: o\nlearning_rate: 1\n",
        "type": "model: GeoAlign-Tiny\ndata: d\nout_dir: o\nbatch_size: many\n",
        "stage": "model: GeoAlign-Tiny\ndata: d\nout_dir: o\nstage: 1\nlambdas: [1, 1, 0, 0, 0]\n",
        "missing": "model: GeoAlign-Tiny\nout_dir: o\n",
        "yaml": "model: [unclosed\n",
        "data": f"model: GeoAlign-Tiny\ndata: {tmp_path / 'nowhere'}\nout_dir: {tmp_path / 'o'}\n",
        "prompt": "model: GeoAlign-Tiny\ndata: d\nout_dir: o\nstage: 2\nclass_prompt_prob: 2\n",
    }
    for name, text in bad.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(text)
        assert cli_main(["train", str(p), "--quiet"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, (name, err)
    assert cli_main(["train", str(tmp_path / "absent.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert cli_main(["train", str(good), "--set", "nope=1"]) == 2
    assert "unknown config key(s) nope" in capsys.readouterr().err
    # an existing run is not overwritten without --resume / --overwrite
    assert cli_main(["train", str(good), "--max-steps", "1", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_shipped_configs_validate():
    from pathlib import Path

    from geoalign_core.training.config import load_config

    files = sorted(Path(__file__).parents[1].joinpath("geoalign_core", "training", "configs").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"vit-b-16_stage1", "vit-b-16_stage2", "vit-l-14_stage1", "vit-l-14_stage2", "demo_stage1",
            "demo_stage2"} <= names
    for f in files:
        c = load_config(f)
        assert c.stage == (1 if f.stem.endswith("stage1") else 2)
        if c.stage == 2:
            # the paper's configs train Eq. 5; the demo model ships the "+ RPA" ablation row
            want = (1.0, 1.0, 0.0, 0.0, 0.0) if f.stem.startswith("demo") else (1.0, 1.0, 1.0, 1.0, 1.0)
            assert c.lambdas_resolved == want, f.name


def test_region_embeddings_under_bf16_autocast(data):
    """The autocast path (GPU bf16) keeps RoIAlign in fp32 and matches the fp32 embeddings."""
    from geoalign_core.training.dataset import Collate, GeoAlignDataset
    from geoalign_core.training.objective import EmbedStep

    m = _tiny().train()
    ds = GeoAlignDataset(data, m.image_size, regions_per_image=3, num_candidates=3, augment=False)
    batch = Collate(m.tokenizer)([ds[(0, i)] for i in range(4)])
    step = EmbedStep(m, (1.0, 1.0, 1.0, 1.0, 1.0), crop_size=56)
    with torch.no_grad():
        ref = step(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = step(batch)
    assert got["reg"].dtype == torch.float32 and got["reg"].shape == ref["reg"].shape
    assert float((got["reg"] * ref["reg"]).sum(-1).min()) > 0.98
    assert float((got["img"].float() * ref["img"]).sum(-1).min()) > 0.98


@pytest.mark.parametrize("teacher", ["ema", "frozen", "self"])
def test_farslip_objective_through_the_cli(data, tmp_path, capsys, teacher):
    """``--set objective=farslip`` on a stage II config: global + patch-to-patch distillation + region-category
    alignment are trained and logged; the EMA teacher moves with the student, the frozen one stays the start."""
    import yaml

    conf = tmp_path / "s2.yaml"
    conf.write_text(yaml.safe_dump({"model": "GeoAlign-Tiny", "stage": 2, "data": str(data),
                                    "out_dir": str(tmp_path / "run"), "batch_size": 4, "num_workers": 0,
                                    "regions_per_image": 2, "vic_regions_per_image": 2, "lr": 1e-3}))
    seen = {}
    from geoalign_core.training import farslip

    orig_update = farslip.Teacher.update

    def spy(self, student):
        seen["teacher"], seen["student"] = self.model, student
        seen.setdefault("first", [p.detach().clone() for p in self.model.parameters()])
        return orig_update(self, student)

    farslip.Teacher.update = spy
    try:
        rc = cli_main(["train", str(conf), "--max-steps", "3", "--quiet", "--set", "objective=farslip",
                       "--set", f"farslip_teacher={teacher}"])
    finally:
        farslip.Teacher.update = orig_update
    assert rc == 0, capsys.readouterr().err
    rows = _rows(tmp_path / "run" / "log.csv")
    last = rows[-1]
    for term in ("loss_global", "loss_p2p", "loss_rca"):
        assert last[term] != "" and math.isfinite(float(last[term])), term
    assert last["loss_rpa"] == "" and last["loss_hna"] == ""  # Eq. 5's terms are not trained
    t, s = seen["teacher"], seen["student"]
    diff_ts = max(float((a - b).detach().abs().max()) for a, b in zip(t.parameters(), s.parameters()))
    moved = max(float((a.detach() - b).abs().max()) for a, b in zip(t.parameters(), seen["first"]))
    if teacher == "self":
        assert t is s
    elif teacher == "frozen":  # the start, unchanged through training
        assert moved == 0.0 and diff_ts > 0
    else:  # ema: follows the student, a step behind
        assert moved > 0 and diff_ts > 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(conf.read_text().replace("stage: 2", "stage: 1"))
    assert cli_main(["train", str(bad), "--set", "objective=farslip", "--quiet"]) == 2
    assert "farslip needs regions" in capsys.readouterr().err
    assert cli_main(["train", str(conf), "--set", "farslip_teacher=nobody", "--overwrite", "--quiet"]) == 2
    assert "farslip_teacher" in capsys.readouterr().err
