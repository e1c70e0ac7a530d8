#!/usr/bin/env bash
# GPU smoke test of the training pipeline (not part of the test suite: it needs a CUDA GPU).
#   bash geoalign_core/training/gpu_smoke.sh [WORK_DIR]          (repository root, environment with torch + CUDA)
# On generated chips (geoalign_core.training.synthetic, 224 px, 256 chips) with ViT-B/16 from random weights and
# the shipped ViT-B/16 configs (bf16 autocast, gradient checkpointing, 248-token text tower):
#  1. stage I, 60 steps, interrupted after 30 (--stop-after) and continued with --resume;
#  2. stage II (Eq. 5, all five losses) from the stage I export, 40 steps, launched through
#     torchrun (one process, so WORLD_SIZE 1: the launcher and its environment, no NCCL group;
#     several GPUs need several processes, see geoalign_core/training/launch.md);
#  3. the stage II export is loaded with load_model on the GPU and matches 32 of its training
#     chips to their captions (a sanity check, not a metric).
# Prints the loss at the first and last logged steps of each run and fails when a run fails, a
# loss is not finite, or the stage I loss does not go down.
# A dry run of the script itself on CPU (tiny model, minutes): ARCH=GeoAlign-Tiny DEVICE=cpu bash ...
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
ARCH=${ARCH:-ViT-B-16}
DEVICE=${DEVICE:-cuda}
W=${1:-runs/gpu_smoke}
rm -rf "$W" && mkdir -p "$W"
export PYTHONUNBUFFERED=1

$PY - "$W" "$DEVICE" <<'EOF'
import sys, torch
from geoalign_core.training.synthetic import make_squares_dataset
if sys.argv[2] == "cuda":
    assert torch.cuda.is_available(), "no CUDA GPU"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}")
make_squares_dataset(f"{sys.argv[1]}/data", n=256, size=224, seed=0, min_squares=1, max_squares=6,
                     empty_every=8, unique_captions=True)
EOF

common=(--set "model=$ARCH" --set "device=$DEVICE" --set "data=[$W/data]" --set warmup_steps=5 --set log_every=5
        --set num_workers=4 --quiet)
t0=$(date +%s)
$PY -m geoalign_core.training.train geoalign_core/training/configs/vit-b-16_stage1.yaml "${common[@]}" --out-dir "$W/stage1" \
    --max-steps 60 --set ckpt_every=30 --stop-after 30
$PY -m geoalign_core.training.train geoalign_core/training/configs/vit-b-16_stage1.yaml "${common[@]}" --out-dir "$W/stage1" \
    --max-steps 60 --set ckpt_every=30 --resume
t1=$(date +%s)
$PY -m torch.distributed.run --standalone --nproc_per_node 1 -m geoalign_core.training.train \
    geoalign_core/training/configs/vit-b-16_stage2.yaml "${common[@]}" --out-dir "$W/stage2" \
    --set "model=$W/stage1/geoalign-vit-b-16-stage1.safetensors" --max-steps 40 --set lr=1e-5
t2=$(date +%s)
echo "wall time: stage I $((t1 - t0)) s (two launches), stage II $((t2 - t1)) s"

$PY - "$W" "$DEVICE" <<'EOF'
import csv, json, math, sys
import torch
from geoalign_core import load_model
from geoalign_core.data import read_image, read_samples

w, dev = sys.argv[1], sys.argv[2]
summary = {}
for run in ("stage1", "stage2"):
    rows = [r for r in csv.DictReader(open(f"{w}/{run}/log.csv")) if r.get("loss")]
    loss = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(x) for x in loss), f"{run}: non-finite loss"
    first, last = rows[0], rows[-1]
    print(f"{run}: steps {first['step']}..{last['step']}, loss {loss[0]:.4f} -> {loss[-1]:.4f}; "
          f"last row {json.dumps(last)}")
    summary[run] = {"first": loss[0], "last": loss[-1], "steps": int(last["step"])}
assert summary["stage1"]["steps"] == 60 and summary["stage2"]["steps"] == 40, summary
assert summary["stage1"]["last"] < summary["stage1"]["first"], "stage I loss did not decrease"

model = load_model(f"{w}/stage2/geoalign-vit-b-16.safetensors", device=dev).eval()
samples = read_samples(f"{w}/data")[:32]
x = torch.stack([torch.from_numpy(read_image(s["image"])) for s in samples]).to(dev)
x = torch.nn.functional.interpolate(x, size=model.image_size, mode="bilinear", antialias=True)
with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
    img = model.encode_image(model.preprocess(x)).float()
    txt = model.encode_text([s["caption"] for s in samples]).float()
acc = ((img @ txt.T).argmax(1) == torch.arange(len(samples), device=dev)).float().mean().item()
print(f"stage II export loads on {dev}; image -> caption top-1 among 32 training chips: {acc:.2f} (chance 0.03)")
if dev == "cuda":
    print(f"peak GPU memory allocated in this process: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
print(f"SMOKE OK ({dev})")
EOF
