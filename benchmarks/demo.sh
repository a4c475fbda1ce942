#!/usr/bin/env bash
# End-to-end demo on built-in synthetic data: synth -> inspect -> convert -> verify -> labels ->
# windows -> stats -> preview -> train -> evaluate -> predict. Called by `make demo` with the
# venv's bin/ first on PATH; about four minutes on 2 CPU cores.
set -euo pipefail
out=${1:-demo-out}
rm -rf "$out"; mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "1. synthetic recordings in the users' two layouts"
# V1: four MATLAB v7.3 files of small 32x32 frames with dense anomalies (quick to learn from);
# V2: the reference code's folder layout at the benchmark's 64x64, for conversion and pictures.
fmdata synth "$out/raw/v1" --layout v1 --recordings 4 --frames 1500 --size 32 --events dense --seed 1
fmdata synth "$out/raw/pixel-level" --layout v2 --recordings 2 --frames 2000 --seed 2 --preview "$out/synth.png"
fmdata inspect "$out/raw/v1/batch_01.mat"
fmdata inspect "$out/raw/pixel-level"

step "2. convert to Zarr, then verify every element against the sources"
fmdata convert "$out"/raw/v1/batch_0*.mat "$out/v1.zarr" --workers 2
fmdata verify "$out/v1.zarr" $(printf -- '--source %s ' "$out"/raw/v1/batch_0*.mat)
fmdata convert "$out/raw/pixel-level" "$out/v2.zarr" --workers 2
fmdata verify "$out/v2.zarr" --source "$out/raw/pixel-level"

step "3. derived arrays: labels, window tables, statistics, a preview picture"
fmdata labels "$out/v2.zarr"
fmdata windows "$out/v2.zarr" --name ref --policy reference
fmdata stats "$out/v2.zarr" --windows ref
fmdata preview "$out/v2.zarr" --windows ref --frame 1950 --out "$out/preview.png"
fmdata labels "$out/v1.zarr"
fmdata windows "$out/v1.zarr" --name demo --policy strict --frames 10 --frame-step 6 \
  --current-seconds 30 --current-rows 60
fmdata stats "$out/v1.zarr" --windows demo

step "4. train a small cross-modal classifier, evaluate it, write predictions"
fmmodel train --store "$out/v1.zarr" --out "$out/run" --device cpu --workers 1 --threads 1 \
  --model-size tiny --model-opt width=32 --model-opt heads=2 --model-opt head_dim=16 \
  --model-opt mlp_dim=64 --model-opt depth=1 --epochs 8 --lr-step 6 --lr 1e-3 --batch-size 32 \
  --frames 10 --frame-step 6 --current-seconds 30 --current-rows 60 --preprocessing normalized --no-progress
fmmodel evaluate --store "$out/v1.zarr" --checkpoint "$out/run/best.pt" --device cpu --workers 1 \
  --out "$out/eval" --no-progress
fmmodel predict --store "$out/v1.zarr" --checkpoint "$out/run/best.pt" --device cpu \
  --out "$out/predictions.zarr" --no-progress

step "done"
echo "synthetic data picture: $out/synth.png"
echo "window preview:         $out/preview.png"
echo "training run:           $out/run (config.json, best.pt, last.pt, metrics.csv, tb/)"
echo "evaluation report:      $out/eval/report.json and $out/eval/*.png"
echo "predictions:            $out/predictions.zarr"
