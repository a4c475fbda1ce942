#!/usr/bin/env bash
# Run the CPU benchmarks whose figures docs/performance.md (and docs/synthetic-data.md) record,
# with the commands written there; results land in OUT/<benchmark>/. Called by `make bench`
# with the venv's bin/ first on PATH. The full sizes take hours on 2 cores; QUICK=1 runs each at
# the small "proof run" size its section names (minutes), to check that everything still runs.
# benchmarks/gpu_check.py needs a GPU and is run by hand (docs/performance.md, "Training on GPU").
set -euo pipefail
out=${1:-bench-out}
mkdir -p "$out"
run() { printf '\n== %s\n' "$*"; "$@"; }

if [ -n "${QUICK:-}" ]; then
  run python benchmarks/bench_synth.py --frames 3000 --out "$out/synth"
  run python benchmarks/bench_convert.py --sizes-gb 0.05 --out "$out/convert" --repeat 1
  run python benchmarks/bench_chunk_copy.py --sizes-gb 0.05 --out "$out/convert" --repeat 1
  run python benchmarks/bench_layouts.py --sizes-gb 0.05 --windows 500 --repeat 1 --out "$out/layouts"
  run python benchmarks/bench_derive.py --frames 6000 --out "$out/derive"
  run python benchmarks/bench_dataset.py --frames 3000 --windows 600 --scales 0.7,1 --out "$out/dataset"
  run python benchmarks/gpu_check.py --frames 3000 --size 32 --steps 5 --warmup 2 --workers 1 --device cpu \
    --model-size tiny --batch-size 16 --eval-batches 5 --eval-batch-size 64 --matrix --no-matrix-compile \
    --store "$out/gpu-check-proof.zarr"
  run python benchmarks/bench_watch.py --seconds 20 --decisions 60 --out "$out/watch"
else
  run python benchmarks/bench_synth.py --frames 100000 --out "$out/synth"
  run python benchmarks/bench_convert.py --sizes-gb 1 4 --out "$out/convert" --repeat 3
  run python benchmarks/bench_convert.py --sizes-gb 1 --out "$out/convert" --repeat 3 \
    --baselines-up-to-gb 0 --store-dir /dev/shm --json-name bench_convert_tmpfs.json
  run python benchmarks/bench_convert.py --layout --out "$out/convert"
  run python benchmarks/bench_chunk_copy.py --sizes-gb 1 --out "$out/convert" --store-dir /dev/shm
  run python benchmarks/bench_layouts.py --demo --sizes-gb 1 --repeat 3 --windows 4000 --out "$out/layouts"
  run python benchmarks/bench_layouts.py --sizes-gb 4 --repeat 1 --windows 4000 --out "$out/layouts-4gb"
  run python benchmarks/bench_derive.py --frames 120000 --repeat 3 --out "$out/derive"
  run python benchmarks/bench_dataset.py --frames 40000 --windows 4000 --scales 0.25,1 --out "$out/dataset"
  run python benchmarks/bench_dataset.py --suite paths --frames 270000 --scales 0.148,1 --windows 4000 \
    --out "$out/dataset-paths"
  run python benchmarks/bench_watch.py --seconds 600 --decisions 600 --out "$out/watch"
fi
printf '\nresults: %s\n' "$out"
