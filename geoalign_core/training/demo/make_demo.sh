#!/usr/bin/env bash
# Recipe of the bundled demo model `geoalign-demo` (GeoAlign-Tiny, both stages, CPU friendly).
#   bash geoalign_core/training/demo/make_demo.sh            (from the repository root, in the project venv)
# 1. generate training scenes (seeds 1000-1029) and held-out evaluation scenes (2000-2002),
# 2. `geoalign prepare` each into chips + samples.jsonl,
# 3. stage I, then stage II (+ the ablation runs), 4. copy the weights into the package,
# 5. evaluate on the held-out scenes (docs/demo_model.md reports the numbers).
# Never trains on sample_data/scene.tif (seed 0) nor on the evaluation seeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
GA=${GA:-geoalign}
PY=${PY:-python}
mkdir -p runs/demo/scenes runs/demo/data
for s in $(seq 1000 1029) 2000 2001 2002; do
  [ -f "runs/demo/data/scene_$s/samples.jsonl" ] && continue
  $PY sample_data/make_sample.py --seed "$s" --size 1024 --out runs/demo/scenes --name "scene_$s" >/dev/null
  # stride 56: overlapping chips (more data, objects seen at several positions);
  # max-cover 0.9: keeps chips of ships on the river (0.75 would drop nearly all of them)
  $GA prepare "runs/demo/scenes/scene_$s.tif" "runs/demo/scenes/scene_${s}_labels.gpkg" --class-field class \
      --out "runs/demo/data/scene_$s" --stride 56 --max-cover 0.9 --seed "$s" --quiet >/dev/null
done
# held-out evaluation chips: no overlap (each object counted about once)
for s in 2000 2001 2002; do
  [ -f "runs/demo/eval_data/scene_$s/samples.jsonl" ] && continue
  mkdir -p runs/demo/eval_data
  $GA prepare "runs/demo/scenes/scene_$s.tif" "runs/demo/scenes/scene_${s}_labels.gpkg" --class-field class \
      --out "runs/demo/eval_data/scene_$s" --max-cover 0.9 --seed "$s" --quiet >/dev/null
done

$GA train geoalign_core/training/configs/demo_stage1.yaml --quiet
$GA train geoalign_core/training/configs/demo_stage2.yaml --quiet
# the previous demo model (v1: full Eq. 5, 200 stage II steps, no class / caption prompts)
$GA train geoalign_core/training/configs/demo_stage2.yaml --quiet --out-dir runs/demo/stage2_v1 --set "lambdas=[1,1,1,1,1]" \
    --set class_prompt_prob=0 --set caption_prompt_prob=0 --set max_steps=200
# ablation (docs/demo_model.md): same stage II schedule, other loss weights (l1..l5 = G, RPA, HNA, VIC, HTC);
# the shipped model (demo_stage2.yaml) is the "+ RPA" row, lambdas (1, 1, 0, 0, 0)
$GA train geoalign_core/training/configs/demo_stage2.yaml --quiet --out-dir runs/demo/abl_vic --set "lambdas=[1,1,0,1,0]"
$GA train geoalign_core/training/configs/demo_stage2.yaml --quiet --out-dir runs/demo/abl_hna --set "lambdas=[1,1,1,1,0]"
$GA train geoalign_core/training/configs/demo_stage2.yaml --quiet --out-dir runs/demo/abl_full --set "lambdas=[1,1,1,1,1]"

cp runs/demo/stage2/geoalign-demo.safetensors geoalign_core/weights/geoalign-demo.safetensors
bash geoalign_core/training/demo/eval_demo.sh
