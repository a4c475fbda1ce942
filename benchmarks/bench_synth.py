"""Benchmark `fmdata synth` (issue 2): frames/s and peak RSS of writing synthetic recordings.

Every variant runs in its own child process (so each peak RSS is its own), all in ONE invocation
(the machine is noisy: compare the rows of one run, not runs of different days):

* write V1 ``--storage matlab`` (deflate 3, MATLAB-like chunks) at the full size, and at a quarter
  of it: peak RSS must not grow with the number of frames (the writer streams);
* write V1 ``--storage contiguous`` at the full size (no compression);
* write V2 ``--storage matlab`` at the full size (video file plus CSV/JSON);
* baselines on the same frames: rendering only (the simulation, nothing written), and zlib level
  3 of already rendered chunks on one thread (what MATLAB-like storage costs per core).

    .venv/bin/python benchmarks/bench_synth.py --frames 100000 --out bench-out/synth   # the issue's target
    .venv/bin/python benchmarks/bench_synth.py --frames 4000 --out /tmp/bs             # smoke test

Prints one row per variant and writes OUT/bench_synth.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
import zlib
from typing import Any

import numpy as np


def _child(variant: str, frames: int, size: int, out: str) -> dict[str, Any]:
    from fmdata import synth
    from fmdata.synth import matwriter

    t0 = time.perf_counter()
    c0 = time.process_time()
    if variant.startswith("write-"):
        _, layout, storage = variant.split("-")
        target = os.path.join(out, f"{variant}-{frames}" + (".mat" if layout == "v1" else ""))
        synth.synthesize(target, layout=layout, storage=storage, frames=frames, size=size, seed=0,
                               overwrite=True)
        nbytes = sum(f.stat().st_size for f in _files(target))
        shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    elif variant == "render-only":
        rec = synth.simulate(frames, synth.SynthConfig(height=size, width=size), seed=0)
        for s in range(0, frames, 512):
            rec.render(s, min(frames, s + 512))
            rec.current(s, min(frames, s + 512))
        nbytes = 0
    elif variant == "zlib-1-thread":
        rec = synth.simulate(2048, synth.SynthConfig(height=size, width=size), seed=0)
        video, _ = rec.render(0, 2048)
        h5 = np.ascontiguousarray(video.transpose(0, 3, 2, 1))
        c = matwriter.matlab_chunks(h5.shape, 1)[0]
        chunks = [h5[i:i + c].tobytes() for i in range(0, 2048, c)]
        t0, c0 = time.perf_counter(), time.process_time()
        done = nbytes = 0
        while done < frames:
            for chunk in chunks:
                nbytes += len(zlib.compress(chunk, 3))
            done += 2048
        frames = done
    else:
        raise SystemExit(f"unknown variant {variant}")
    wall = time.perf_counter() - t0
    return {"variant": variant, "frames": frames, "size": size, "wall_s": round(wall, 3),
            "cpu_s": round(time.process_time() - c0, 3), "frames_per_s": round(frames / wall, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "bytes": nbytes}


def _files(path: str) -> list[Any]:
    from pathlib import Path

    p = Path(path)
    return [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default="bench-out/synth")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.child:
        print(json.dumps(_child(args.child, args.frames, args.size, args.out)))
        return
    plan = [("write-v1-matlab", args.frames), ("write-v1-matlab", max(1, args.frames // 4)),
            ("write-v1-contiguous", args.frames), ("write-v2-matlab", args.frames),
            ("render-only", args.frames), ("zlib-1-thread", max(2048, args.frames // 10))]
    rows = []
    print(f"{'variant':22s} {'frames':>8s} {'wall s':>8s} {'cpu s':>8s} {'frames/s':>10s} {'peak RSS MiB':>13s}")
    for variant, frames in plan:
        cmd = [sys.executable, __file__, "--child", variant, "--frames", str(frames), "--size", str(args.size),
               "--out", args.out]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{variant:22s} {row['frames']:8d} {row['wall_s']:8.1f} {row['cpu_s']:8.1f} {row['frames_per_s']:10.0f} "
              f"{row['peak_rss_mib']:13.1f}", flush=True)
    result = {"command": " ".join([os.path.relpath(sys.executable), *sys.argv]), "cpus": os.cpu_count(),
              "load_avg_at_end": os.getloadavg(), "rows": rows}
    with open(os.path.join(args.out, "bench_synth.json"), "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
