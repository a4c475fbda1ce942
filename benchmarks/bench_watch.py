"""Benchmark ``fmmodel watch`` (issue 19): decision latency, decisions per second, ingest cost, and a
long real-time replay. Figures in docs/performance.md ("Watching live").

* ``latency``: the reference-size cross-modal FmFormer (64x64 frames, 10-frame clips, 240 current
  rows; fresh weights: the cost does not depend on them) on ONE core (``torch.set_num_threads(1)``),
  eager fp32: a ``--speed max`` replay of a synthetic store; the watch's own latency figures (cut
  the window, run the model, update the alarm), the process's CPU time per decision, the model
  alone (50 calls: wall and CPU time) and its FLOPs per decision (torch's FlopCounterMode: a
  multiply-add counts 2); then the same model exported (``fmmodel export``: TorchScript, ONNX,
  torch.export; AOTInductor with ``--aoti``, which compiles C++ for minutes) and watched the same
  way: eager against exported latency. On a shared machine wall times grow with the load; CPU
  times much less.
* ``rate``: ``--speed max`` decisions per second per core of the reference-size model and of the
  demo's tiny one (wall time of the whole replay: store reads, cutting, model, alarms).
* ``ingest``: what one arriving camera frame costs watch (resize to the model's 64x64 with
  INTER_AREA, BGR to RGB, push into the ring), for a 640x480 and a 1280x720 camera; the share of a core
  at 25 fps.
* ``realtime``: a ``--speed 1`` replay of ``--seconds`` (default 600) of a 64x64 store with the
  reference-size model on one core: input age p50/p95/p99 and RSS every 10 s (flat?).

    .venv/bin/python benchmarks/bench_watch.py --out bench-out/watch                    # all, 10 min replay
    .venv/bin/python benchmarks/bench_watch.py --out /tmp/bw --seconds 20 --decisions 60  # proof run
    .venv/bin/python benchmarks/bench_watch.py --out /tmp/bw --seconds 0 --decisions 100 --only latency

Prints a table and writes OUT/bench_watch.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fmdata import synth
from fmdata.store import Chunking, RecordingArrays, schema, write_store_from_arrays
from fmdata.store.window_table import WindowParams
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.export import EXPORT_FORMATS, SUFFIXES, export_model
from fmmodel.model.registry import build_model
from fmmodel.online import Sources, WatchSettings, watch
from fmmodel.online.rings import FrameRing, fit_frame

TINY: dict[str, Any] = dict(width=32, heads=2, head_dim=16, mlp_dim=64, depth=1)


def make_store(path: str, seconds: float, size: int) -> str:
    """One simulated V1-like recording (dense events) of ``seconds`` at 25 fps."""
    if os.path.exists(os.path.join(path, "zarr.json")):
        return path
    frames = int(seconds * 25)
    cfg = synth.SynthConfig(height=size, width=size, **synth.EVENT_PROFILES["dense"])
    rec = synth.simulate(frames, cfg, seed=11)
    video, mask = rec.render(0, frames)
    t = np.arange(frames) / cfg.fps
    arrays = RecordingArrays(video=video, mask=mask, split=rec.split(0, frames), frame_time=t,
                             current=rec.current(0, frames), current_time=t.copy(),
                             frame_current_end=np.arange(1, frames + 1, dtype=np.int64),
                             info=schema.RecordingInfo(name="bench", source_path="memory", source_bytes=0, layout="v1",
                                                       n_frames=frames, n_current=frames))
    write_store_from_arrays(path, [arrays], fps=cfg.fps, chunking=Chunking(4, 512))
    return path


def make_checkpoint(path: str, size: str, repeats: int = 50) -> tuple[str, float, dict[str, float]]:
    """A fresh cross-modal FmFormer (``size`` "reference" or "tiny", the demo's) at 64x64; its GFLOP per
    decision and the model's own time per decision (wall and this thread's CPU, ms, over ``repeats`` calls)."""
    torch.manual_seed(0)
    if size == "reference":
        model, window = build_model("vicu_cls"), WindowParams()
    else:
        model = build_model("vicu_cls", size="tiny", image_size=(64, 64), current_rows=60, **TINY)
        window = WindowParams(frame_step=6, current_seconds=30.0, current_rows=60)
    save_checkpoint(path, model, orientation="reference", preprocessing="reference",
                    info={"window": window.to_dict(), "fps": 25.0})
    cfg: Any = getattr(model, "config")  # noqa: B009  (an FmFormer: its sizes)
    inputs = {"video": torch.zeros(1, 3, int(cfg.frames), 64, 64), "current": torch.zeros(1, int(cfg.current_rows), 3)}
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(**inputs)
    wall, cpu = [], []
    with torch.no_grad():
        for i in range(repeats + 5):
            w0, c0 = time.perf_counter(), time.thread_time()
            model(**inputs)
            if i >= 5:  # after a warm-up
                wall.append(time.perf_counter() - w0)
                cpu.append(time.thread_time() - c0)
    times = {f"{kind}_{q}": round(float(np.percentile(np.asarray(x) * 1e3, q)), 1)
             for kind, x in (("wall_ms", wall), ("cpu_ms", cpu)) for q in (50, 99)}
    return path, counter.get_total_flops() / 1e9, times


def replay(ckpt: str, store: str, *, speed: float | None, every: float, duration: float | None = None,
           metrics_every: float = 0.0, trusted: tuple[str, ...] = ()
           ) -> tuple[dict[str, Any], float, list[dict[str, Any]], float]:
    """Replay ``store``; return (final metrics, wall seconds, metrics lines, CPU seconds of the process)."""
    lines: list[dict[str, Any]] = []
    t0, c0 = time.perf_counter(), time.process_time()
    report = watch(ckpt, Sources(replay=store, speed=speed),
                   WatchSettings(every=every, duration=duration, threads=1, metrics_every=metrics_every),
                   trusted=trusted, on_metrics=lambda kind, snap: lines.append(snap))
    return report.metrics, time.perf_counter() - t0, lines, time.process_time() - c0


def bench_ingest(frames: int = 2000) -> dict[str, Any]:
    import cv2
    out = {}
    for w, h in ((640, 480), (1280, 720)):
        rng = np.random.default_rng(0)
        bank = rng.integers(0, 256, (8, h, w, 3), dtype=np.uint8)
        ring = FrameRing(300, (64, 64))
        t0, c0 = time.perf_counter(), time.thread_time()
        for i in range(frames):
            ring.push(i, i / 25, i / 25, cv2.cvtColor(fit_frame(bank[i % 8], (64, 64)), cv2.COLOR_BGR2RGB))
        per, cpu = (time.perf_counter() - t0) / frames, (time.thread_time() - c0) / frames
        out[f"{w}x{h}"] = {"ms_per_frame": round(per * 1e3, 3), "cpu_ms_per_frame": round(cpu * 1e3, 3),
                           "core_share_at_25fps": round(per * 25, 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the real-time replay (0: skip it)")
    ap.add_argument("--decisions", type=int, default=600, help="decisions of the latency and rate replays")
    ap.add_argument("--aoti", action="store_true", help="also export with AOTInductor (compiles C++: minutes)")
    ap.add_argument("--only", choices=("all", "latency"), default="all",
                    help="latency: the reference-size model eager and exported only")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    # a shared machine slows every wall-clock figure: the load average, and CPU times beside wall times, say how much
    result: dict[str, Any] = {"torch": torch.__version__, "threads": 1, "cpu": os.cpu_count(),
                              "load_before": os.getloadavg()}
    short = make_store(os.path.join(args.out, "short.zarr"), args.decisions * 0.5 + 1, 64)
    for size in ("reference", "tiny") if args.only == "all" else ("reference",):
        ckpt, gflop, alone = make_checkpoint(os.path.join(args.out, f"{size}.pt"), size)
        m, wall, _, cpu = replay(ckpt, short, speed=None, every=0.5)
        result[size] = {"gflop_per_decision": round(gflop, 3), "decisions": m["decisions"], "latency_ms": m["latency_ms"],
                        "decisions_per_second": round(m["decisions"] / wall, 1), "wall_s": round(wall, 1),
                        "cpu_ms_per_decision": round(1e3 * cpu / m["decisions"], 1), "model_alone": alone}
        print(f"{size:9s}: {gflop:.2f} GFLOP/decision; latency p50 {m['latency_ms']['p50']:.1f} ms p95 "
              f"{m['latency_ms']['p95']:.1f} ms p99 {m['latency_ms']['p99']:.1f} ms; --speed max "
              f"{m['decisions'] / wall:.1f} decisions/s on one core; CPU {1e3 * cpu / m['decisions']:.1f} ms/decision; "
              f"the model alone {alone}", flush=True)
    result["exported"] = bench_exports(os.path.join(args.out, "reference.pt"), short, args.out, aoti=args.aoti)
    if args.only == "latency":
        _write(args.out, result)
        return
    result["ingest"] = bench_ingest()
    for k, v in result["ingest"].items():
        print(f"ingest {k}: {v['ms_per_frame']:.3f} ms/frame (CPU {v['cpu_ms_per_frame']:.3f} ms), "
              f"{100 * v['core_share_at_25fps']:.1f}% of a core at 25 fps", flush=True)
    if args.seconds > 0:
        long = make_store(os.path.join(args.out, "long.zarr"), args.seconds + 2, 64)
        ckpt = os.path.join(args.out, "reference.pt")
        m, wall, lines, _ = replay(ckpt, long, speed=1.0, every=0.5, duration=args.seconds, metrics_every=10.0)
        rss = [x["rss_mib"] for x in lines]
        result["realtime"] = {"seconds": args.seconds, "wall_s": round(wall, 1), "decisions": m["decisions"],
                              "skipped": m["skipped"], "input_age_s": m["input_age_s"], "latency_ms": m["latency_ms"],
                              "rss_mib": rss, "rss_growth_after_first_minute_mib":
                                  round(max(rss[6:] or rss) - min(rss[6:] or rss), 1), "cpu_share": m["cpu_share"]}
        print(f"real time {args.seconds:g} s: input age p50 {m['input_age_s']['p50']} s p99 {m['input_age_s']['p99']} s; "
              f"RSS {min(rss):.0f}..{max(rss):.0f} MiB; {m['skipped']} skipped", flush=True)
    _write(args.out, result)


def bench_exports(ckpt: str, store: str, out: str, *, aoti: bool) -> dict[str, Any]:
    """The reference-size model of ``ckpt`` exported in each format and watched as the eager one:
    the export's seconds and size, and the watch's latency and CPU time per decision."""
    result = {}
    for fmt in EXPORT_FORMATS:
        if fmt == "aoti" and not aoti:
            continue
        path = os.path.join(out, f"reference-{fmt}{SUFFIXES[fmt]}")
        rep = export_model(ckpt, path, format=fmt, overwrite=True)
        m, wall, _, cpu = replay(path, store, speed=None, every=0.5, trusted=(path,) if fmt == "aoti" else ())
        result[fmt] = {"export_s": round(rep.seconds, 1), "mib": round(rep.bytes / 2**20, 1),
                       "max_prob_diff": rep.max_prob_diff, "decisions": m["decisions"], "latency_ms": m["latency_ms"],
                       "decisions_per_second": round(m["decisions"] / wall, 1),
                       "cpu_ms_per_decision": round(1e3 * cpu / m["decisions"], 1)}
        print(f"{fmt:11s}: exported in {rep.seconds:.0f} s ({rep.bytes / 2**20:.1f} MiB, probabilities within "
              f"{rep.max_prob_diff:.0e}); latency p50 {m['latency_ms']['p50']:.1f} ms p95 {m['latency_ms']['p95']:.1f} ms "
              f"p99 {m['latency_ms']['p99']:.1f} ms; CPU {1e3 * cpu / m['decisions']:.1f} ms/decision", flush=True)
    return result


def _write(out: str, result: dict[str, Any]) -> None:
    """OUT/bench_watch.json, with the load average at the end (the figures' context)."""
    result["load_after"] = os.getloadavg()
    with open(os.path.join(out, "bench_watch.json"), "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
