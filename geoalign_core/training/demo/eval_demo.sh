#!/usr/bin/env bash
# Evaluate the demo model and its ablation variants on the held-out scenes (seeds 2000-2002).
set -euo pipefail
cd "$(dirname "$0")/../.."
GA=${GA:-geoalign}
EVAL=(runs/demo/eval_data/scene_2000 runs/demo/eval_data/scene_2001 runs/demo/eval_data/scene_2002)
mkdir -p runs/demo/eval
declare -A MODELS=(
  [stage1]=runs/demo/stage1/geoalign-demo-stage1.safetensors
  [rpa]=runs/demo/stage2/geoalign-demo.safetensors
  [vic]=runs/demo/abl_vic/geoalign-demo.safetensors
  [hna]=runs/demo/abl_hna/geoalign-demo.safetensors
  [full]=runs/demo/abl_full/geoalign-demo.safetensors
  [v1]=runs/demo/stage2_v1/geoalign-demo.safetensors
)
for name in ${ONLY:-stage1 rpa vic hna full v1}; do
  m=${MODELS[$name]}
  [ -f "$m" ] || { echo "skip $name: $m missing"; continue; }
  jsonl=()
  for d in "${EVAL[@]}"; do jsonl+=("$d/samples.jsonl"); done
  $GA eval regions --data "${jsonl[@]}" --model "$m" --quiet --json "runs/demo/eval/${name}_regions.json" --overwrite
  $GA eval hard-negatives --data "${jsonl[@]}" --model "$m" --quiet --json "runs/demo/eval/${name}_hn.json" --overwrite
  $GA eval retrieval --data "${jsonl[@]}" --model "$m" --quiet --json "runs/demo/eval/${name}_retrieval.json" --overwrite
  for s in 2000 2001 2002; do
    $GA eval tiles --raster "runs/demo/scenes/scene_$s.tif" --labels "runs/demo/scenes/scene_${s}_labels.gpkg" \
        --class-field class --model "$m" --quiet --json "runs/demo/eval/${name}_tiles_$s.json" --overwrite
  done
done
