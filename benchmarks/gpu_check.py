#!/usr/bin/env python
"""Training and evaluation throughput: the reference FmFormer on a synthetic store of the public set's size.

Builds (or reuses, with --store) a synthetic FMF store, then trains the reference cross-modal
classifier (width 96, depth 6, 10 frames step 18, 240 current rows over 120 s, batch 64, Adam
5e-4, horizontal flip) for a fixed number of steps through the real data path (``--data``: the
lazy dataset with DataLoader workers and pinned memory, or the resident windows gathered on the
device; fmmodel.data.paths), with bf16 autocast on CUDA and optional torch.compile, then scores
test windows (no gradients, ``--eval-batch-size``) and prints:

* samples/s over the measured steps (after --warmup steps), data included;
* the data wait share: time blocked waiting for the next batch / wall time of the measured steps;
* evaluation windows/s (data included) and peak GPU memory (torch.cuda.max_memory_allocated);
* for the resident path, its load time and the device memory it took.

``--matrix`` runs lazy and resident, eager and --compile, each in its own process, and prints one
table. Targets on one H200: >= 20,000 training samples/s with data waits under 5% of the step
time, and evaluation >= 50,000 windows/s.

    python benchmarks/gpu_check.py --matrix                 # 269,921 frames of 64x64 (public-set size)
    python benchmarks/gpu_check.py --frames 3000 --steps 5 --batch-size 8 --model-size tiny --device cpu --matrix
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

PUBLIC_FRAMES = 269_921  # 31,826 + 89,937 + 148,158


def synth_plans(frames: int, recordings: int, cfg, seed: int = 0) -> list:
    """Return the fmdata.synth plans of ``frames`` frames split over ``recordings`` recordings."""
    from fmdata import synth

    per = [frames // recordings + (1 if i < frames % recordings else 0) for i in range(recordings)]
    return [synth.simulate(n, cfg, seed=seed, index=i) for i, n in enumerate(per)]


def build_store(path: str, frames: int, recordings: int, size: int, seed: int = 0, cfg=None) -> list:
    """Stream a synthetic store of ``frames`` frames (split over ``recordings``) into ``path``.

    One current row per frame (V1-like); ``cfg`` is an fmdata.synth.SynthConfig (default: the
    generator's defaults at ``size`` x ``size``). Returns the recordings' plans.
    """
    from tqdm import tqdm

    from fmdata import store, synth
    from fmdata.store import schema

    cfg = cfg or synth.SynthConfig(height=size, width=size)
    plans = synth_plans(frames, recordings, cfg, seed)
    per = [p.n_frames for p in plans]
    import zarr

    tmp = f"{path}.partial"
    root = zarr.open_group(tmp, mode="w", zarr_format=3)
    chunking = store.Chunking()
    store.create_arrays(root, frames, frames, size, size, recordings, chunking)
    block = chunking.write_block * 8
    offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
    bar = tqdm(total=frames, unit="frame", desc="synthetic store")
    # Blocks are aligned to whole shards of the global frame axis; a block may span two recordings.
    for start in range(0, frames, block):
        stop = min(frames, start + block)
        parts = {k: [] for k in ("video", "mask", "split", "rec", "time", "current")}
        for r in range(recordings):
            lo, hi = max(start, offsets[r]), min(stop, offsets[r + 1])
            if lo >= hi:
                continue
            a, b = int(lo - offsets[r]), int(hi - offsets[r])
            v, m = plans[r].render(a, b)
            parts["video"].append(v)
            parts["mask"].append(m)
            parts["split"].append(plans[r].split(a, b))
            parts["rec"].append(np.full(b - a, r, np.int32))
            parts["time"].append(np.arange(a, b) / cfg.fps)
            parts["current"].append(plans[r].current(a, b))
        root[schema.VIDEO][start:stop] = np.concatenate(parts["video"])
        root[schema.MASK][start:stop] = np.concatenate(parts["mask"])
        root[schema.SPLIT][start:stop] = np.concatenate(parts["split"])
        root[schema.RECORDING][start:stop] = np.concatenate(parts["rec"])
        root[schema.FRAME_TIME][start:stop] = np.concatenate(parts["time"])
        root[schema.FRAME_CURRENT_END][start:stop] = np.arange(start + 1, stop + 1)  # one row per frame (V1)
        root[schema.CURRENT][start:stop] = np.concatenate(parts["current"])
        root[schema.CURRENT_TIME][start:stop] = np.concatenate(parts["time"])
        bar.update(stop - start)
    bar.close()
    root[schema.RECORDING_FRAME_OFFSETS][:] = offsets
    root[schema.RECORDING_CURRENT_OFFSETS][:] = offsets
    root.attrs[schema.ATTR_RECORDINGS] = [
        schema.RecordingInfo(name=f"synth-{i}", source_path="gpu_check", source_bytes=0, layout="v1",
                             n_frames=n, n_current=n).to_dict() for i, n in enumerate(per)]
    root.attrs[schema.ATTR_STORE] = schema.StoreMeta(
        n_frames=frames, n_current=frames, n_recordings=recordings, height=size, width=size, fps=cfg.fps,
        complete=True, created_by="benchmarks/gpu_check.py").to_dict()
    os.replace(tmp, path)
    return plans


def _table(rows: list[dict]) -> str:
    """Markdown table of --matrix results."""
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    lines = ["| data | compile | train samples/s | data wait share | eval windows/s | resident load s | "
             "resident GiB | peak GPU GiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data']} | {'yes' if r['compile'] else 'no'} | {f(r['samples_per_s'], ',.0f')} | "
                     f"{f(r['loader_wait_share'], '.1%')} | {f(r['eval_windows_per_s'], ',.0f')} | "
                     f"{f(r['resident_load_s'], '.1f')} | {f(r['resident_gib'], '.2f')} | "
                     f"{f(r['gpu_peak_mem_gib'], '.1f')} |")
    return "\n".join(lines)


def run_matrix(argv: list[str], compile_too: bool) -> int:
    """Run lazy/resident x eager/--compile, each in a fresh process; print their table."""
    import subprocess

    base = [a for a in argv if a not in ("--matrix", "--compile", "--json", "--no-matrix-compile")]
    rows = []
    for data in ("lazy", "resident"):
        for comp in ((False, True) if compile_too else (False,)):
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--data", data, "--json"]
            cmd += ["--compile"] if comp else []
            print("running:", " ".join(cmd[1:]), file=sys.stderr, flush=True)
            res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if res.returncode != 0:
                print(f"failed: data {data}, compile {comp}", file=sys.stderr)
                return res.returncode
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(_table(rows))
    print(json.dumps(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="Use this store (built here if it does not exist).")
    ap.add_argument("--frames", type=int, default=PUBLIC_FRAMES)
    ap.add_argument("--recordings", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300, help="Measured training steps.")
    ap.add_argument("--warmup", type=int, default=30, help="Unmeasured steps first (workers start, compile).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--eval-batches", type=int, default=100, help="Measured evaluation batches (0: no evaluation).")
    ap.add_argument("--eval-batch-size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=min(15, max(1, (os.cpu_count() or 2) - 1)),
                    help="DataLoader workers of the lazy path.")
    ap.add_argument("--data", default="lazy", choices=["lazy", "resident", "auto"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default=None, choices=["bf16", "fp32"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--matrix", action="store_true", help="Run lazy/resident x eager/compile; print a table.")
    ap.add_argument("--no-matrix-compile", action="store_true", help="With --matrix: eager runs only.")
    ap.add_argument("--model-size", default="reference", choices=["reference", "small", "tiny"])
    ap.add_argument("--preprocessing", default="reference", choices=["reference", "normalized"])
    ap.add_argument("--json", action="store_true", help="Print the result as one JSON line.")
    args = ap.parse_args(argv)
    raw = sys.argv[1:] if argv is None else list(argv)

    import torch

    from fmdata.derive import compute_stats
    from fmdata.store import open_store
    from fmmodel.data.paths import BatchRequest, open_batches
    from fmmodel.data.preprocessing import input_format
    from fmmodel.data.sampling import ShuffleSampler, set_loader_epoch
    from fmmodel.data.windows import make_dataset, window_table_for
    from fmmodel.model.registry import build_model
    from fmmodel.runs.config import TrainConfig
    from fmmodel.runs.train import build_optimizer
    from fmmodel.runtime import distributed as dd
    from fmmodel.runtime.precision import autocast, resolve_precision
    from fmmodel.scoring.inference import model_inputs

    path = args.store or f"gpu-check-{args.frames}x{args.size}.zarr"
    t0 = time.perf_counter()
    if not os.path.exists(path):
        build_store(path, args.frames, args.recordings, args.size)
    build_s = time.perf_counter() - t0
    if args.preprocessing == "normalized":
        compute_stats(path)
    if args.matrix:
        return run_matrix(raw, compile_too=not args.no_matrix_compile)
    device = dd.resolve_device(args.device)
    ctx = dd.DistContext(device=device)
    precision = resolve_precision(args.precision, device)
    cfg = TrainConfig(path, "unused", batch_size=args.batch_size, preprocessing=args.preprocessing)
    store = open_store(path)
    t0 = time.perf_counter()
    wt, store = window_table_for(store, None, cfg.window)
    windows_s = time.perf_counter() - t0
    split = wt.column("split")
    fmt = input_format(args.preprocessing, device)
    ds = make_dataset(store, wt.subset(np.flatnonzero(split == 0)), fmt, augment=True, seed=0,
                      modality="both", task="cls")
    test = make_dataset(store, wt.subset(np.flatnonzero(split == 1)), fmt, augment=False, seed=0,
                        modality="both", task="cls")
    requests = [BatchRequest(ds, args.batch_size, ShuffleSampler(len(ds), seed=0), drop_last=True)]
    if args.eval_batches:
        # whole batches only: a shorter last batch would make a compiled model compile again
        requests.append(BatchRequest(test, args.eval_batch_size, evaluation=True, drop_last=True))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sources, choice = open_batches(requests, data=args.data, budget=None, workers=args.workers, ctx=ctx,
                                   progress=not args.json)
    loader = sources[0]
    torch.manual_seed(0)
    model = build_model("vicu_cls", size=args.model_size, frames=cfg.window.frames,
                        image_size=ds.item_frame_shape, current_rows=cfg.window.current_rows).to(device)
    opt, _ = build_optimizer(model, cfg)
    net = torch.compile(model) if args.compile else model
    loss_fn = torch.nn.CrossEntropyLoss()
    need = args.warmup + args.steps
    if len(loader) < need:
        print(f"note: {len(loader)} batches per epoch < {need} steps; the loader restarts (epoch 2)", file=sys.stderr)
    wait = 0.0
    done = 0
    t_start = None
    epoch = 0
    loss = torch.zeros(())
    while done < need:
        set_loader_epoch(loader, epoch)
        it = iter(loader)
        while done < need:
            if done == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_start, wait = time.perf_counter(), 0.0
            tw = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                break
            wait += time.perf_counter() - tw
            inputs = model_inputs(net, batch, device)
            target = batch["label"].to(device, non_blocking=True).long()
            with autocast(device, precision):
                loss = loss_fn(net(**inputs).float(), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
        epoch += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - (t_start or time.perf_counter())
    eval_rate = None
    if args.eval_batches:
        eval_rate = evaluation_rate(net, sources[1], args.eval_batches, device, precision)
    resident = choice.resident
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "frames": args.frames, "size": args.size, "train_windows": len(ds), "test_windows": len(test),
        "batch_size": args.batch_size, "data": choice.path, "data_reason": choice.reason,
        "workers": choice.workers, "precision": precision, "compile": args.compile, "model_size": args.model_size,
        "steps": args.steps, "samples_per_s": args.steps * args.batch_size / total if total > 0 else None,
        "loader_wait_share": wait / total if total > 0 else None, "seconds": total,
        "eval_batch_size": args.eval_batch_size, "eval_windows_per_s": eval_rate,
        "gpu_peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "resident_load_s": sum(r["load_seconds"] for r in resident) if resident else None,
        "resident_gib": sum(r["total_bytes"] for r in resident) / 2**30 if resident else None,
        "resident_device_gib": (sum(r["device_bytes_allocated"] for r in resident) / 2**30
                                if resident and device.type == "cuda" else None),
        "store_build_s": build_s, "windows_s": windows_s, "last_loss": float(loss.detach()),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>20}: {v:,.3f}" if isinstance(v, float) else f"{k:>20}: {v}")
    return 0


def evaluation_rate(net, source, batches: int, device, precision: str) -> float:
    """Windows/s of scoring ``batches`` batches of ``source`` (no gradients, data included), after 3
    unmeasured batches; the source is reread from the start when it runs out."""
    import torch

    from fmmodel.runtime.precision import autocast
    from fmmodel.scoring.inference import model_inputs

    if len(source) == 0:
        return float("nan")
    net.eval()
    warm, n, t0 = 3, 0, None
    done = 0
    with torch.no_grad():
        while done < warm + batches:
            for batch in source:
                if done == warm:
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    t0, n = time.perf_counter(), 0
                with autocast(device, precision):
                    net(**model_inputs(net, batch, device)).float().softmax(-1)
                n += int(batch["label"].shape[0])
                done += 1
                if done >= warm + batches:
                    break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    net.train()
    return n / (time.perf_counter() - t0) if t0 is not None else float("nan")


if __name__ == "__main__":
    sys.exit(main())
