"""The training loop: stage I / stage II of GeoAlignCLIP on ``samples.jsonl`` data.

* AdamW (no weight decay on biases, norms, 1-D embeddings and the temperature), per-step
  linear warm-up then cosine decay to ``lr * min_lr_ratio``.
* bf16 autocast on CUDA (``precision: auto``), fp16 + GradScaler on request, fp32 on CPU;
  gradient checkpointing; gradient accumulation (``no_sync`` between micro-batches).
* ``torchrun`` DDP from the environment (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``):
  NCCL on CUDA, gloo on CPU. The module DDP wraps is the objective's
  :class:`~geoalign_core.training.objective.EmbedStep`.
* The objective comes from the registry of :mod:`geoalign_core.training.objectives` (``objective:``
  in the config); the loop does not know which one it runs.
* Checkpoints every ``ckpt_every`` steps in ``OUT/checkpoints/step_XXXXXXXX.pt``, written
  atomically: model, optimiser, scheduler, scaler, step, data position (epoch + batches
  consumed in it) and every rank's RNG states (python, numpy, torch, cuda). ``resume``
  continues exactly: the data order is a function of (seed, epoch), so the consumed batches
  are skipped and the same batches follow. SIGTERM / SIGUSR1 (cluster pre-emption) finish
  the current step, write a checkpoint and stop.
* Logs: tqdm bar (the step's loss and images/s, every step) on rank 0, ``OUT/log.csv`` (every
  ``log_every`` steps), TensorBoard when installed.
* Set-up and parts: :mod:`geoalign_core.training.distributed` (torchrun, RNG state), :mod:`geoalign_core.training.optim`
  (AdamW groups, schedule, frozen towers), :mod:`geoalign_core.training.checkpoints`,
  :mod:`geoalign_core.training.runlog`.
* At the end: ``OUT/<export>`` (``.safetensors`` via :func:`geoalign_core.zoo.save_model`,
  which ``load_model`` reads back alone).

The out dir must be on a file system every rank sees (checkpoints are written by rank 0
and read by all on resume).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from geoalign_core.errors import InputError
from geoalign_core.losses import LOGGED_TERMS
from geoalign_core.model import GeoAlignCLIP, ModelSpec
from geoalign_core.zoo import build_model, load_model, save_model

from .checkpoints import CKPT_DIR, CKPT_FORMAT, atomic_save, checkpoint_path, list_checkpoints, read_checkpoint
from .config import TrainConfig
from .dataset import Collate, GeoAlignDataset, ResumableSampler
from .distill import Distiller
from .distributed import DistEnv, rng_state, seed_everything, set_rng_state, setup_distributed
from .objectives import Objective, create_objective
from .optim import WarmupCosine, lock_towers, param_groups
from .runlog import RunLog

log = logging.getLogger("geoalign.train")


# ---------------------------------------------------------------------- distributed
def load_start_model(cfg: TrainConfig) -> GeoAlignCLIP:
    """The model to train: a zoo name, an open_clip arch (random), an export or a training checkpoint."""
    src = cfg.model
    path = Path(src)
    model: GeoAlignCLIP | None = None
    if path.suffix in (".pt", ".pth", ".ckpt") and path.is_file():
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:  # not ours: zoo.load_model reports it properly
            obj = None
        if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
            model = build_model(ModelSpec.from_dict(json.loads(obj["spec"])), obj["model"], str(path))
            model.spec.dense_mode = cfg.dense_mode
            if cfg.long_text and not model.spec.long_text:
                model.enable_long_text()
    if model is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*RANDOM initialisation.*")
            model = load_model(src, device="cpu", dense_mode=cfg.dense_mode, long_text=cfg.long_text)
    model.spec.name = Path(cfg.export).stem
    return model


@dataclass
class TrainResult:
    step: int
    total_steps: int
    epoch: int
    stopped: bool  # stopped early (stop_after / signal): resume with --resume
    export: Path | None
    checkpoint: Path | None
    history: list[dict] = field(default_factory=list)  # one dict per optimiser step of this run


class _StopFlag:
    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except (ValueError, OSError):
                pass

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True

    def restore(self) -> None:
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)


def _precision(cfg: TrainConfig, device: torch.device) -> str:
    p = cfg.precision
    if p == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if p in ("bf16", "fp16") and device.type != "cuda":
        if p == "fp16":
            raise InputError("precision: fp16 needs a CUDA GPU (use fp32 or auto on CPU)")
        log.warning("precision bf16 runs as fp32 on CPU")
        return "fp32"
    return p


def _prepare_out_dir(cfg: TrainConfig, resume: bool | str, overwrite: bool, env: DistEnv) -> Path | None:
    """Decide where to start from; refuse to clobber an earlier run. Returns the checkpoint to resume."""
    out = cfg.out_path
    existing = list_checkpoints(out)
    ckpt: Path | None = None
    if resume:
        if isinstance(resume, str) and resume != "latest":
            ckpt = Path(resume)
            if not ckpt.is_file():
                raise InputError(f"checkpoint to resume not found: {ckpt}")
        elif existing:
            ckpt = existing[-1]
        elif env.main:
            log.warning("--resume: no checkpoint in %s, starting from step 0", out / CKPT_DIR)
    elif (existing or cfg.export_path.exists()) and not overwrite:
        raise InputError(
            f"{out} already holds a training run; pass --resume to continue it or --overwrite to start over"
        )
    env.barrier()
    if env.main:
        out.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for p in existing:
                p.unlink(missing_ok=True)
            if cfg.export_path.exists():
                cfg.export_path.unlink()
        (out / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    env.barrier()
    return ckpt


# ---------------------------------------------------------------------- train
def train(
    cfg: TrainConfig,
    *,
    resume: bool | str = False,
    stop_after: int | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> TrainResult:
    """Run one training stage as configured.

    ``resume``: True / "latest" continues from the newest checkpoint in ``OUT/checkpoints``
    (starting fresh when there is none); a path resumes from that file. ``stop_after``: stop
    (with a checkpoint, without export) once this many optimiser steps are done overall,
    keeping the schedule of the full run -- what an interrupted job looks like.
    """
    from tqdm.auto import tqdm

    env = setup_distributed(cfg.device)
    try:
        return _train(cfg, env, resume, stop_after, overwrite, quiet, tqdm)
    finally:
        if env.owns_group and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """One training run's parts and position, shared by the steps of :func:`_train`."""

    cfg: TrainConfig
    env: DistEnv
    model: GeoAlignCLIP
    objective: Objective
    runner: torch.nn.Module
    make_loader: Callable[[int, int], DataLoader]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    autocast: Any
    distiller: Any
    total: int
    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches consumed in the epoch
    history: list[dict] = field(default_factory=list)
    acc: torch.Tensor = field(default_factory=lambda: torch.zeros(len(LOGGED_TERMS) + 1, dtype=torch.float64))


class _Meter:
    """Images per second: of the last optimiser step (the bar) and since the last log line (the log)."""

    def __init__(self) -> None:
        self.t_start = self.t_last = self.t_step = time.perf_counter()
        self.since_log = self.since_step = 0

    def add(self, images: int) -> None:
        self.since_log += images
        self.since_step += images

    def step_rate(self) -> float:
        now = time.perf_counter()
        rate, self.since_step, self.t_step = self.since_step / max(now - self.t_step, 1e-9), 0, now
        return rate

    def log_rate(self, rec: dict) -> None:
        now = time.perf_counter()
        rec["images_per_s"] = self.since_log / max(now - self.t_last, 1e-9)
        rec["elapsed_s"] = now - self.t_start
        self.since_log, self.t_last = 0, now


def _resume_state(ckpt_file: Path | None, cfg: TrainConfig, env: DistEnv) -> dict | None:
    """The checkpoint to resume from, refused when it cannot continue this run exactly."""
    state = read_checkpoint(ckpt_file) if ckpt_file is not None else None
    if state is not None:
        for key in ("world_size", "batch_size", "grad_accum", "seed"):
            now = env.world if key == "world_size" else getattr(cfg, key)
            if state[key] != now:
                raise InputError(f"cannot resume {ckpt_file} exactly: it was written with {key}={state[key]}, "
                                 f"this run has {key}={now}")
    return state


def _start_model(cfg: TrainConfig, env: DistEnv, state: dict | None) -> tuple[GeoAlignCLIP, int]:
    """The model on its device in training mode (the checkpoint's weights when resuming) and the crop size."""
    seed_everything(cfg.seed)
    model = load_start_model(cfg)
    if state is not None:
        model.clip.load_state_dict(state["model"])
    lock_towers(model, cfg.lock_image, cfg.lock_text)
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    model.to(env.device).train()
    crop_size = cfg.crop_size
    if crop_size is None:
        crop_size = max(model.patch_size, (model.image_size // 2) // model.patch_size * model.patch_size)
    if crop_size % model.patch_size:
        raise InputError(f"crop_size {crop_size} must be a multiple of the patch size {model.patch_size}")
    return model, crop_size


def _set_up(cfg: TrainConfig, env: DistEnv, state: dict | None) -> _Run:
    """Model, objective, data, DDP, optimiser, schedule and scaler, at the checkpoint's position when resuming."""
    model, crop_size = _start_model(cfg, env, state)
    dataset = GeoAlignDataset(
        cfg.data, model.image_size, regions_per_image=cfg.regions_per_image,
        num_candidates=cfg.num_candidates, augment=cfg.augment, seed=cfg.seed, region_text=cfg.region_text,
        class_prompt_prob=cfg.class_prompt_prob, caption_prompt_prob=cfg.caption_prompt_prob,
        background_negatives=cfg.background_negatives,
    )
    objective = create_objective(cfg, model)
    collate = Collate(model.tokenizer, **objective.batch_needs)
    sampler = ResumableSampler(len(dataset), env.world, env.rank, seed=cfg.seed, shuffle=True)
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * math.ceil(sampler.samples_per_epoch / cfg.batch_size)
                                              / cfg.grad_accum))
    step_module = objective.embed_step(crop_size)
    distiller = Distiller(model, cfg.distill, step_module.need_regions) if cfg.distill > 0 else None
    runner: torch.nn.Module = step_module
    if env.distributed:
        runner = DDP(step_module, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    def make_loader(ep: int, skip_batches: int) -> DataLoader:
        sampler.set_position(ep, skip_batches * cfg.batch_size)
        gen = torch.Generator()
        gen.manual_seed(cfg.seed * 1_000_003 + ep)
        return DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate,
                          num_workers=cfg.num_workers, generator=gen, pin_memory=env.device.type == "cuda",
                          drop_last=False)

    precision = _precision(cfg, env.device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.resolved("weight_decay")), lr=cfg.resolved("lr"),
                                  betas=tuple(cfg.betas), eps=cfg.eps, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(cfg.resolved("warmup_steps"), total,
                                                                          cfg.min_lr_ratio))
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                if precision in ("bf16", "fp16") else contextlib.nullcontext())
    run = _Run(cfg, env, model, objective, runner, make_loader, optimizer, scheduler,
               torch.amp.GradScaler("cuda") if precision == "fp16" else None, autocast, distiller, total)
    if state is not None:
        _restore(run, state)
    return run


def _restore(run: _Run, state: dict) -> None:
    """Optimiser, schedule, scaler, position and this rank's RNG states from a checkpoint."""
    cfg, env = run.cfg, run.env
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scheduler.lr_lambdas[0] = WarmupCosine(cfg.resolved("warmup_steps"), run.total, cfg.min_lr_ratio)
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.step, run.epoch, run.pos = int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"])
    rngs = state["rng"]
    set_rng_state(rngs[env.rank] if env.rank < len(rngs) else rngs[0])
    if env.main and state.get("total_steps") != run.total:
        log.warning("resuming with %d total steps (checkpoint: %s): the LR schedule changes",
                    run.total, state.get("total_steps"))


def _save(run: _Run, at_step: int) -> Path:
    """A checkpoint of everything a resume needs (every rank's RNG states); the oldest beyond ``keep`` go."""
    cfg, env = run.cfg, run.env
    rngs: list = [None] * env.world
    if env.distributed:
        dist.all_gather_object(rngs, rng_state())
    else:
        rngs = [rng_state()]
    path = checkpoint_path(cfg.out_path, at_step)
    if env.main:
        atomic_save({
            "format": CKPT_FORMAT, "version": 1,
            "model": run.model.clip.state_dict(),
            "spec": json.dumps(run.model.spec.to_dict()),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "step": at_step, "epoch": run.epoch, "batch_in_epoch": run.pos, "total_steps": run.total,
            "world_size": env.world, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
            "seed": cfg.seed, "rng": rngs, "config": cfg.to_dict(),
        }, path)
        for old in list_checkpoints(cfg.out_path)[: -cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
    env.barrier()
    return path


def _micro_step(run: _Run, batch: dict, sync: bool) -> dict:
    """Forward and backward of one micro-batch (gradients summed until ``sync``); its terms go into ``run.acc``."""
    cfg = run.cfg
    no_sync = run.runner.no_sync() if (run.env.distributed and not sync) else contextlib.nullcontext()
    with no_sync:
        with run.autocast:
            emb = run.runner(batch)
        loss, parts = run.objective(emb, batch, run.autocast)
        if run.distiller is not None:
            with run.autocast:
                kd = run.distiller(emb, batch)
            loss = loss + kd
            parts = {**parts, "distill": kd.detach() / cfg.distill}
        scaled = loss / cfg.grad_accum
        (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
    run.acc[0] += float(loss.detach()) / cfg.grad_accum
    for i, name in enumerate(LOGGED_TERMS):
        if name in parts:
            run.acc[i + 1] += float(parts[name]) / cfg.grad_accum
    return parts


def _optimizer_step(run: _Run) -> float:
    """Clip, step, schedule (the objective's own after-step too); returns the learning rate that was used."""
    opt, scaler = run.optimizer, run.scaler
    if scaler is not None:
        scaler.unscale_(opt)
    if run.cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], run.cfg.max_grad_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    run.objective.after_step()
    lr = opt.param_groups[0]["lr"]
    run.scheduler.step()
    run.step += 1
    return lr


def _record(run: _Run, parts: dict, lr: float, stop_requested: bool) -> tuple[dict, bool]:
    """The step's losses averaged over micro-batches and ranks, and whether any rank was asked to stop."""
    env = run.env
    stats = torch.cat([run.acc, torch.tensor([1.0 if stop_requested else 0.0], dtype=torch.float64)])
    if env.distributed:
        stats = stats.to(env.device) if env.device.type == "cuda" else stats
        dist.all_reduce(stats)
        stats = stats.cpu()
        stats[:-1] /= env.world
    run.acc.zero_()
    rec = {"step": run.step, "epoch": run.epoch, "lr": lr, "loss": float(stats[0]),
           "logit_scale": float(run.model.logit_scale.detach())}
    for i, name in enumerate(LOGGED_TERMS):
        if name in parts:
            rec[f"loss_{name}"] = float(stats[i + 1])
    run.history.append(rec)
    return rec, bool(stats[-1] > 0)


def _epochs(run: _Run, stop_flag: _StopFlag, runlog: RunLog | None, bar: Any, stop_after: int | None,
            last_ckpt: Path | None) -> tuple[Path | None, bool]:
    """The training loop: micro-batches, optimiser steps, logs, checkpoints, until done or asked to stop.
    Returns the last checkpoint and whether the run stopped early."""
    cfg, env = run.cfg, run.env
    meter, micro, stopped = _Meter(), 0, False
    run.optimizer.zero_grad(set_to_none=True)
    while run.step < run.total and not stopped:
        done_epoch = True
        for batch in run.make_loader(run.epoch, run.pos):
            run.pos += 1
            micro += 1
            parts = _micro_step(run, batch, sync=micro == cfg.grad_accum)
            meter.add(batch["images"].shape[0] * env.world)
            if micro < cfg.grad_accum:
                continue
            micro = 0
            rec, signal_stop = _record(run, parts, _optimizer_step(run), stop_flag.requested)
            # the bar shows this step's loss and images/s at every step; the log keeps its cadence
            bar.set_postfix(loss=f"{rec['loss']:.4f}", img_s=f"{meter.step_rate():.1f}", refresh=False)
            if run.step % cfg.log_every == 0 or run.step == run.total or run.step == 1:
                meter.log_rate(rec)
                if runlog is not None:
                    runlog.write(rec)
            bar.update(1)
            halt = signal_stop or (stop_after is not None and run.step >= stop_after)
            if run.step % cfg.ckpt_every == 0 or (halt and run.step < run.total) or run.step == run.total:
                last_ckpt = _save(run, run.step)
            stopped = halt and run.step < run.total  # the caller reports it (TrainResult.stopped)
            if run.step >= run.total or stopped:
                done_epoch = False
                break
        if done_epoch:
            run.epoch += 1
            run.pos = 0
    return last_ckpt, stopped


def _train(cfg: TrainConfig, env: DistEnv, resume: bool | str, stop_after: int | None, overwrite: bool,
           quiet: bool, tqdm: Any) -> TrainResult:
    ckpt_file = _prepare_out_dir(cfg, resume, overwrite, env)
    run = _set_up(cfg, env, _resume_state(ckpt_file, cfg, env))
    stop_flag = _StopFlag()
    stop_flag.install()
    runlog = RunLog(cfg.out_path, run.step, cfg.tensorboard) if env.main else None
    bar = tqdm(total=run.total, initial=run.step, disable=quiet or not env.main, unit="step", dynamic_ncols=True,
               desc=f"stage {cfg.stage}")
    try:
        last_ckpt, stopped = _epochs(run, stop_flag, runlog, bar, stop_after, ckpt_file)
    finally:
        bar.close()
        stop_flag.restore()
        if runlog is not None:
            runlog.close()
    export = None
    if not stopped:
        export = cfg.export_path
        if env.main:
            save_model(run.model, export, half=cfg.export_half)
            log.info("exported %s", export)
        env.barrier()
    return TrainResult(run.step, run.total, run.epoch, stopped, export, last_ckpt, run.history)
