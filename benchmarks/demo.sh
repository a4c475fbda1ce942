#!/usr/bin/env bash
# End-to-end demo on built-in synthetic data: synth -> inspect -> convert -> verify -> labels ->
# windows -> stats -> preview -> train -> evaluate -> predict -> benchmark -> alarms. Called by `make demo`
# with the venv's bin/ first on PATH; about three minutes on 2 CPU cores. The recipe (and why it
# looks the way it does) is in docs/training.md, "The demo recipe".
set -euo pipefail
out=${1:-demo-out}
rm -rf "$out"; mkdir -p "$out"
step() { printf '\n== %s\n' "$*"; }

step "1. synthetic recordings in the users' two layouts"
# V1: six MATLAB v7.3 files of 6,000 small 32x32 frames (4 minutes each) with dense anomalies:
# about 15 anomalies per recording to learn from and four or five in each test block; V2: the
# reference code's folder layout at the benchmark's 64x64, for conversion and pictures.
fmdata synth "$out/raw/v1" --layout v1 --recordings 6 --frames 6000 --size 32 --events dense --seed 1
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
# --preset cpu (fmmodel/runs/presets.py; docs/training.md, "Presets"): a one-layer FmFormer of width 32,
# clips of 10 frames 6 apart and 30 s of current, every sixth training window, no validation hold-out
# (its one-window-span gap would cost 30 s of each recording), six epochs with the learning rate x0.1
# for the last one; predictions of the test split only (the training split's 29,000 windows would
# double the demo's time)
fmmodel train "$out/v1.zarr" --out "$out/run" --preset cpu --seed 0 --no-progress
fmmodel evaluate "$out/v1.zarr" --checkpoint "$out/run/best.pt" --device cpu --workers 1 \
  --out "$out/eval" --no-progress
fmmodel predict "$out/v1.zarr" --checkpoint "$out/run/best.pt" --device cpu \
  --split test --out "$out/predictions.zarr" --no-progress

step "5. the benchmark table: cross-modal against current-only, one short run each"
fmmodel benchmark "$out/v1.zarr" --out "$out/bench" --variants vicu_cls,current_cls --seeds 0 \
  --preset cpu --epochs 2 --lr-step 2 --stride 12 --no-progress

step "6. the demo model's alarms as an operator judges them (its test predictions, fmmodel watch's default policy)"
# event recall, alarm delay after onset, false alarms per hour of normal time with the 95% Poisson bound,
# chatter and the NAB score; timeline.png draws scores, thresholds, alarms and labelled events
fmmodel alarms "$out/v1.zarr" --predictions "$out/predictions.zarr" --out "$out/alarms"

step "done"
echo "synthetic data picture: $out/synth.png"
echo "window preview:         $out/preview.png"
echo "training run:           $out/run (README.md: the model card, curves.png, config.json, best.pt, last.pt, metrics.csv, tb/)"
echo "evaluation report:      $out/eval/report.json and $out/eval/*.png"
echo "predictions:            $out/predictions.zarr"
echo "benchmark table:        $out/bench/table.md, table.json, table.png"
echo "alarms as events:       $out/alarms/report.json, timeline.png"
