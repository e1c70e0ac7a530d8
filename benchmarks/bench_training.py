"""Training throughput and memory: stage I vs stage II, with and without gradient checkpointing.

Measures one optimiser step of the real training module (``geoalign_core.training.objective.EmbedStep``
+ Eq. 5 + backward + AdamW) on batches built by the real dataset/collate code from
generated chips (data loading excluded from the timings). Each configuration runs in its
own subprocess so that its peak memory (peak RSS on CPU, ``torch.cuda.max_memory_allocated``
on GPU) is its own.

Reports images/s for stage I and stage II, the stage II / stage I step-time ratio
(measured in the same run; target <= 3.0, the paper's FLOPs ratio is 2.5) and the peak
memory with and without gradient checkpointing. Prints a table and writes the
"## Training" section of docs/benchmarks.md ("## Training on GPU" on CUDA; other sections are left untouched).

    python benchmarks/bench_training.py                   # ViT-B-16, batch 32, CPU or GPU
    python benchmarks/bench_training.py --arch GeoAlign-Tiny --batch 8 --steps 3 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import DOC, ROOT, cpu_summary, write_section

SECTION = "## Training"              # CPU runs; GPU runs write their own section
GPU_SECTION = "## Training on GPU"


# ---------------------------------------------------------------------- worker (one config)
def worker(args: argparse.Namespace) -> None:
    import resource
    import warnings

    import torch

    sys.path.insert(0, str(ROOT))
    from geoalign_core import load_model
    from geoalign_core.training.dataset import Collate, GeoAlignDataset
    from geoalign_core.training.engine import param_groups
    from geoalign_core.training.objective import EmbedStep, geoalign_objective

    dev = torch.device(args.device)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.arch, device="cpu")
    model.set_grad_checkpointing(args.gc)
    model.to(dev).train()
    stage = args.stage
    lambdas = (1.0, 0.0, 0.0, 0.0, 0.0) if stage == 1 else (1.0, 1.0, 1.0, 1.0, 1.0)
    crop = args.crop_size or max(model.patch_size, (model.image_size // 2) // model.patch_size * model.patch_size)
    ds = GeoAlignDataset(args.data, model.image_size, regions_per_image=args.regions, num_candidates=args.q,
                         augment=False)
    collate = Collate(model.tokenizer, need_detail=stage == 2, need_region_text=stage == 2,
                      need_candidates=stage == 2)
    batch = collate([ds[(0, i % len(ds))] for i in range(args.batch)])
    step_module = EmbedStep(model, lambdas, crop_size=crop, vic_regions_per_image=args.vic)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-5, fused=True)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else None

    def one_step() -> tuple[float, float]:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), time.process_time()
        if amp is not None:
            with amp:
                emb = step_module(batch)
        else:
            emb = step_module(batch)
        loss, _ = geoalign_objective(emb, batch, model.logit_scale, lambdas)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, time.process_time() - c

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    warm = one_step()[0] if args.warmup else None
    steps = [one_step() for _ in range(args.steps)]
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps({
        "times": [w for w, _ in steps], "cpu_times": [c for _, c in steps], "warmup": warm,
        "threads": torch.get_num_threads(), "peak_mb": peak, "rss_before_mb": rss_before,
        "regions": int(batch["n_regions"].sum()), "texts": len(batch["texts"]),
        "crops": int(sum(min(int(n), args.vic) for n in batch["n_regions"])),
    }))


# ---------------------------------------------------------------------- driver
def run_config(args, data: Path, stage: int, gc: bool, steps: int, warmup: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--data", str(data), "--stage", str(stage),
           "--arch", args.arch, "--batch", str(args.batch), "--steps", str(steps), "--device", args.device,
           "--regions", str(args.regions), "--q", str(args.q), "--vic", str(args.vic),
           "--crop-size", str(args.crop_size or 0)]
    if gc:
        cmd.append("--gc")
    if warmup:
        cmd.append("--warmup")
    # passive OpenMP waiting: idle threads sleep instead of spinning, so CPU time counts work only
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        sys.stderr.write(out.stderr[-3000:])
        raise SystemExit(f"worker failed: {' '.join(cmd)}")
    res = json.loads(line[7:])
    res["step_s"] = sorted(res["times"])[len(res["times"]) // 2]
    res["cpu_s"] = sorted(res["cpu_times"])[len(res["cpu_times"]) // 2]
    return res


def device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"CPU ({cpu_summary()})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1, help="timed steps per configuration")
    p.add_argument("--warmup", action="store_true", help="run one untimed step first (use on GPUs)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--regions", type=int, default=8, help="R: regions per image (every chip has R)")
    p.add_argument("--q", type=int, default=8, help="Q: HNA candidates per region")
    p.add_argument("--vic", type=int, default=4, help="regions per image re-encoded as crops")
    p.add_argument("--crop-size", type=int, default=0, help="0: half the input size")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    p.add_argument("--note", default="", help="a line added under the table")
    # worker mode
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--stage", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(ROOT))
    from geoalign_core.training.synthetic import make_squares_dataset

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_squares_dataset(Path(tmp) / "data", n=min(args.batch, 32), size=224, seed=0,
                                    min_squares=args.regions, max_squares=args.regions, empty_every=0,
                                    unique_captions=True)
        runs = {}
        for gc in (False, True):
            for stage in (1, 2):
                print(f"stage {stage}, grad checkpointing {'on' if gc else 'off'}: {args.steps} step(s) ...",
                      file=sys.stderr, flush=True)
                runs[stage, gc] = run_config(args, data, stage, gc, args.steps, args.warmup)
    wall = time.perf_counter() - t0

    mem_unit = "peak GPU memory allocated" if args.device == "cuda" else "peak RSS"
    cpu = args.device == "cpu"
    # on a CPU shared with other jobs wall time is noise; CPU time of the process is not
    key = "cpu_s" if cpu else "step_s"
    cpu_col = "CPU time (s) | " if cpu else ""
    timing = (f"median of {args.steps} timed step(s) after one warm-up step" if args.warmup
              else f"median of {args.steps} step(s), no warm-up (first steps included)")
    section = SECTION if cpu else GPU_SECTION
    lines = [
        section,
        "",
        f"`python benchmarks/bench_training.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` — "
        f"{args.arch}, random weights, batch {args.batch} per step, {device_name(args.device)}. "
        "One optimiser step of the real training module (forward, Eq. 5, backward, AdamW); data loading "
        f"excluded. Stage II: R={args.regions} regions per image, Q={args.q} candidates per region, "
        f"{args.vic} crops per image re-encoded for VIC at "
        f"{f'{args.crop_size} px' if args.crop_size else 'half the input size'}; "
        f"texts de-duplicated and trimmed to the longest text. Step time: {timing}. Memory: {mem_unit} of "
        f"a fresh process per configuration. All in one run on {time.strftime('%Y-%m-%d')} "
        f"({wall / 60:.1f} min).",
        "",
        f"| | grad checkpointing | step time (s) | images/s | {cpu_col}stage II / stage I | {mem_unit} (MB) |",
        "|---|---|---:|---:|---:|" + ("---:|" if cpu else "") + "---:|",
    ]
    for gc in (False, True):
        s1 = runs[1, gc]
        for stage, name in ((1, "stage I (Eq. 1)"), (2, "stage II (Eq. 5)")):
            r = runs[stage, gc]
            ratio = f"**{r[key] / s1[key]:.2f}**" if stage == 2 else ""
            cpu_cell = f"{r['cpu_s']:.2f} | " if cpu else ""
            lines.append(f"| {name} | {'on' if gc else 'off'} | {r['step_s']:.2f} | {args.batch / r['step_s']:.1f} "
                         f"| {cpu_cell}{ratio} | {r['peak_mb']:.0f} |")
    saved = [1 - runs[st, True]["peak_mb"] / runs[st, False]["peak_mb"] for st in (1, 2)]
    r2 = runs[2, False]
    lines += [
        "",
        f"Stage II / stage I step {'CPU ' if cpu else ''}time: **{runs[2, False][key] / runs[1, False][key]:.2f}** "
        f"without, **{runs[2, True][key] / runs[1, True][key]:.2f}** with gradient checkpointing (target <= 3.0; "
        f"the paper's FLOPs ratio is 2.5). A stage II step here had {r2['regions']} regions, "
        f"{r2['texts']} distinct texts and {r2['crops']} crops. Gradient checkpointing saves "
        f"{saved[0]:.0%} (stage I) and {saved[1]:.0%} (stage II) of the {mem_unit}.",
    ]
    if args.device == "cpu":
        lines.append(f"No GPU was lent for this measurement (CPU only). Peak RSS includes the process's model "
                     f"and libraries (about {runs[1, False]['rss_before_mb']:.0f} MB before the first step); "
                     "the 2 cores were shared with other jobs, so wall times (and images/s) are only indicative; "
                     "the ratio uses the process CPU time (all threads, OpenMP waiting passively), "
                     "which other jobs barely affect.")
    if args.note:
        lines.append(args.note)
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(text, section)
        print(f"wrote the {section!r} section of {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
