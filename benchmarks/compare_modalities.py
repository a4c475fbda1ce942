#!/usr/bin/env python
"""Cross-modal vs video-only vs current-only FmFormer on synthetic data, on all test frames and on
the frames water mist hides.

Builds a synthetic store (fmdata.synth; the generator knows, per frame, the mist density; a frame
is "mist-hidden" when the density is >= 1.0, which hides the whole shell), trains the three
models with identical windows, sizes and schedule through ``fmmodel train``'s library function,
predicts the test split with each model's best-validation checkpoint, and scores with
fmmodel.scoring.metrics:

* all test windows: F1, AUROC, FDR, MDR;
* mist-hidden test windows (labelled frame hidden): accuracy, recall of the hidden anomalies
  (1 - MDR), FDR.

The results table is printed and, with --doc, written into docs/training.md between the markers
``<!-- compare-modalities:begin -->`` and ``<!-- compare-modalities:end -->``.

    python benchmarks/compare_modalities.py --doc docs/training.md --threads 1   # CPU, ~10 min on 2 cores
    python benchmarks/compare_modalities.py --size 64 --frames 60000 --epochs 20 --model-size small --device cuda
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_check import build_store

BEGIN, END = "<!-- compare-modalities:begin -->", "<!-- compare-modalities:end -->"
DENSE = {"anomaly_gap_s": (4.0, 12.0), "anomaly_duration_s": (6.0, 14.0), "mist_gap_s": (4.0, 16.0)}


def _scores(prob: np.ndarray, label: np.ndarray) -> dict:
    import torch

    from fmmodel.scoring.metrics import class_scores

    return class_scores(torch.from_numpy(prob.astype(np.float32)), torch.from_numpy(label.astype(np.int64)))


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=30000, help="Frames in all (split over --recordings).")
    ap.add_argument("--recordings", type=int, default=6)
    ap.add_argument("--events", default="dense", choices=["dense", "default"],
                    help="dense: anomalies and mist episodes about twice as often as the generator's "
                         "defaults (more events, more mist-hidden frames per minute of data).")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--model-size", default="tiny", choices=["reference", "small", "tiny"])
    ap.add_argument("--model-opt", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--frames-per-clip", type=int, default=10)
    ap.add_argument("--frame-step", type=int, default=6)
    ap.add_argument("--current-seconds", type=float, default=30.0)
    ap.add_argument("--current-rows", type=int, default=60)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="Folder for the store and runs (default: a temporary one, removed).")
    ap.add_argument("--doc", help="Markdown file whose results block to replace (docs/training.md).")
    args = ap.parse_args(argv)

    from fmdata import synth
    from fmdata.derive import compute_stats
    from fmdata.store import WindowParams
    from fmmodel.runs.config import TrainConfig
    from fmmodel.runs.train import train
    from fmmodel.scoring.predict import predict, read_predictions

    work = args.work or tempfile.mkdtemp(prefix="fmf-compare-")
    os.makedirs(work, exist_ok=True)
    store = os.path.join(work, "synthetic.zarr")
    knobs = DENSE if args.events == "dense" else {}
    cfg = synth.SynthConfig(height=args.size, width=args.size, **knobs)
    t0 = time.perf_counter()
    if os.path.exists(store):
        shutil.rmtree(store)
    plans = build_store(store, args.frames, args.recordings, args.size, seed=args.seed, cfg=cfg)
    compute_stats(store)
    density = np.concatenate([p.mist_density(0, p.n_frames) for p in plans])
    model = {"size": args.model_size}
    for item in args.model_opt:
        k, _, v = item.partition("=")
        model[k] = json.loads(v)
    rows, timings = [], {}
    for modality in ("both", "video", "current"):
        run = os.path.join(work, f"run-{modality}")
        shutil.rmtree(run, ignore_errors=True)
        window = WindowParams.reference(modality, stride=args.stride, frames=args.frames_per_clip,
                                        frame_step=args.frame_step, current_seconds=args.current_seconds,
                                        current_rows=args.current_rows)
        tc = TrainConfig(
            store, run, task="cls", modality=modality, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            lr_step_epoch=max(1, int(args.epochs * 2 / 3)), workers=args.workers, threads=args.threads,
            device=args.device, seed=args.seed, preprocessing="normalized", model=model, window=window)
        t = time.perf_counter()
        train(tc, progress=False)
        timings[modality] = time.perf_counter() - t
        out = os.path.join(work, f"pred-{modality}.zarr")
        shutil.rmtree(out, ignore_errors=True)
        predict(store, os.path.join(run, "best.pt"), out, split="test", device=args.device, workers=args.workers,
                progress=False)
        pred = read_predictions(out)
        frame, prob, label = pred["frame"][:], pred["prob"][:, 1], pred["label"][:]
        hidden = density[frame] >= 1.0
        allm, hid = _scores(prob, label), _scores(prob[hidden], label[hidden])
        rows.append({"modality": modality, "all": allm, "hidden": hid, "hidden_windows": int(hidden.sum()),
                     "hidden_anomalous": int(label[hidden].sum()), "train_s": timings[modality]})
        print(f"{modality:>8}: all F1 {_fmt(allm.get('f1'))} AUROC {_fmt(allm.get('auroc'))} | mist-hidden: "
              f"acc {_fmt(hid.get('accuracy'))} recall {_fmt(hid.get('recall'))} FDR {_fmt(hid.get('fdr'))} "
              f"({int(hidden.sum())} windows) | train {timings[modality]:.0f} s", flush=True)
    names = {"both": "cross-modal (video + current)", "video": "video only", "current": "current only"}
    from fmmodel.runtime.distributed import resolve_device

    dev = resolve_device(args.device)
    where = (f"{__import__('torch').cuda.get_device_name(dev)}" if dev.type == "cuda"
             else f"the CPU, {os.cpu_count()} cores")
    table = ["| model | F1 (all test) | AUROC (all) | FDR (all) | MDR (all) | accuracy (mist-hidden) | "
             "recall of hidden anomalies | FDR (mist-hidden) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, h = r["all"], r["hidden"]
        table.append(f"| {names[r['modality']]} | {_fmt(a.get('f1'))} | {_fmt(a.get('auroc'))} | {_fmt(a.get('fdr'))} | "
                     f"{_fmt(a.get('mdr'))} | {_fmt(h.get('accuracy'))} | {_fmt(h.get('recall'))} | "
                     f"{_fmt(h.get('fdr'))} |")
    n_test = rows[0]["all"]["n"]
    cmd = "python benchmarks/compare_modalities.py " + " ".join(argv if argv is not None else sys.argv[1:])
    block = "\n".join([
        BEGIN,
        f"Measured {_dt.date.today().isoformat()} with `{cmd.strip()}` "
        f"({args.frames:,} synthetic frames of {args.size}x{args.size} in {args.recordings} recordings; "
        f"{n_test:,} test windows, of which {rows[0]['hidden_windows']:,} have their labelled frame hidden by "
        f"mist ({rows[0]['hidden_anomalous']:,} of them anomalous); events {args.events}; model {model}, "
        f"{args.epochs} epochs, best validation checkpoint; total {time.perf_counter() - t0:.0f} s on {where}):",
        "", *table, "", END])
    print("\n".join(table))
    if args.doc:
        text = open(args.doc, encoding="utf-8").read() if os.path.exists(args.doc) else ""
        if BEGIN in text and END in text:
            text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        with open(args.doc, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"results written to {args.doc}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
