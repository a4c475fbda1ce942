"""Benchmark for docs/scaling.md: convert, derive and load with 1 and 2 workers, on disk and on S3.

Every figure comes out of ONE run on the same machine, so the ratios (2 workers / 1 worker,
S3 / local disk, size 2N / size N) are measured side by side; absolute rates on a shared machine
are noisy. For each data size (``--frames`` per recording times each of ``--scales``):

* sources: ``--recordings`` synthetic V1 MAT files (MATLAB-like chunking, deflate 3), 64x64;
* convert: ``fmdata.convert`` with a local process pool of 1 and 2 workers (disk store), and
  ``fmdata.convert_cluster`` on a ``distributed.LocalCluster`` of 1 and 2 single-threaded worker
  processes, into a disk store and into an ``s3://`` store on a loopback S3 server (moto);
* derive: labels, a reference window table (10 frames step 18, 240 current rows) and stats, with
  ``force``, on the same LocalClusters (through ``--scheduler``), on the disk and the S3 store;
* load: ``FmfWindowDataset`` + ``make_loader`` (batch 64, reference preprocessing) over a seeded
  random sample of ``--windows`` windows, with 1 and 2 loader worker processes: disk store with
  the fast local reader, disk store through zarr, S3 store (zarr over s3fs). Rate = windows of
  the second pass / its time (the first pass starts the workers; timed and reported apart).

Cluster start-up is timed separately and excluded. The S3 server runs on this machine and
takes CPU from the workers, and its per-request latency is that of a Python dev server: the S3
figures bound what remote storage costs from above (docs/scaling.md discusses real S3).

    # smoke test (what docs/scaling.md shows for this shared machine):
    .venv/bin/python benchmarks/bench_scaling.py --frames 2000 --scales 1,2 --windows 512 --s3-windows 128 --out bench-out/scaling
    # the full measurement for a quiet machine (about 1 GB of raw frames at scale 2):
    .venv/bin/python benchmarks/bench_scaling.py --frames 20000 --scales 1,2 --windows 4096 --s3-windows 512 --out bench-out/scaling

Results: OUT/bench_scaling.json and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Any, Callable

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the loopback S3 server of the test suite

SIZE = 64
FRAMES, STEP, CURRENT_ROWS = 10, 18, 240
BATCH = 64


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def make_sources(folder: str, recordings: int, frames: int) -> list[str]:
    """Write (once) ``recordings`` V1 files of ``frames`` frames each; return their paths."""
    from fmdata.synth_write import write_v1

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(recordings):
        p = os.path.join(folder, f"rec{i}_{frames}.mat")
        if not os.path.exists(p):
            write_v1(p, frames=frames, size=SIZE, seed=7, index=i)
        paths.append(p)
    return paths


def _fresh(location: str) -> str:
    from fmdata import remote

    remote.remove_store(location)
    return location


def bench_convert_pool(sources: list[str], folder: str) -> dict[str, float]:
    """Seconds of a local process-pool conversion with 1 and 2 workers (disk store)."""
    from fmdata.convert import convert

    out = {}
    for w in (1, 2):
        path = _fresh(os.path.join(folder, f"pool{w}.zarr"))
        out[f"pool_{w}"], _ = _timed(lambda: convert(sources, path, workers=w, progress=False))
        shutil.rmtree(path)
    return out


def _derive(location: str, address: str) -> dict[str, float]:
    from fmdata.cluster import DaskOptions
    from fmdata.labels import compute_labels
    from fmdata.stats import compute_stats
    from fmdata.windows import WindowParams, make_windows

    opts = DaskOptions(scheduler=address, progress=False)
    params = WindowParams(frames=FRAMES, frame_step=STEP, current_rows=CURRENT_ROWS)
    t_labels, _ = _timed(lambda: compute_labels(location, force=True, options=opts))
    t_windows, _ = _timed(lambda: make_windows(location, "bench", params, force=True, options=opts))
    t_stats, _ = _timed(lambda: compute_stats(location, force=True, options=opts))
    return {"labels": t_labels, "windows": t_windows, "stats": t_stats}


def bench_cluster(sources: list[str], folder: str, s3_url: str | None, workers: int) -> dict[str, Any]:
    """Convert (disk, S3) and derive (disk, S3) on a LocalCluster of ``workers`` processes."""
    from distributed import Client, LocalCluster

    from fmdata.convert_cluster import convert_on_cluster

    t_start = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    res: dict[str, Any] = {"cluster_start": time.perf_counter() - t_start}
    try:
        disk = _fresh(os.path.join(folder, f"cluster{workers}.zarr"))
        res["convert_disk"], _ = _timed(lambda: convert_on_cluster(sources, disk, client, progress=False))
        res["derive_disk"] = _derive(disk, cluster.scheduler_address)
        if s3_url:
            url = _fresh(f"{s3_url}/cluster{workers}.zarr")
            res["convert_s3"], _ = _timed(lambda: convert_on_cluster(sources, url, client, progress=False))
            res["derive_s3"] = _derive(url, cluster.scheduler_address)
    finally:
        client.close()
        cluster.close()
    return res


def bench_load(location: str, rows: np.ndarray, workers: int, reader: str) -> dict[str, float]:
    """Windows/s of the torch dataset over ``location`` with ``workers`` loader processes.

    Two passes over the same windows with persistent workers: the first (timed as start-up)
    starts the workers and opens the store, the second is the measurement.
    """
    from fmmodel.dataset import FmfWindowDataset
    from fmmodel.sampling import make_loader

    ds = FmfWindowDataset(location, "bench", preprocessing="reference", rows=rows, reader=reader)
    loader = make_loader(ds, BATCH, workers, persistent_workers=True)
    t_first, _ = _timed(lambda: sum(len(b["label"]) for b in loader))
    t_second, n = _timed(lambda: sum(len(b["label"]) for b in loader))
    del loader
    return {"first_pass_s": t_first, "windows_per_s": n / t_second}


def sample_rows(location: str, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of ``n`` window-table rows of table ``bench``."""
    from fmdata.store import open_store
    from fmdata.window_table import read_window_table

    m = len(read_window_table(open_store(location), "bench"))
    return np.sort(np.random.default_rng(seed).choice(m, size=min(n, m), replace=False))[
        np.random.default_rng(seed + 1).permutation(min(n, m))]


def run_scale(args: argparse.Namespace, frames: int, s3_url: str | None) -> dict[str, Any]:
    """All measurements for one data size."""
    folder = os.path.join(args.out, f"n{frames}")
    os.makedirs(folder, exist_ok=True)
    t_synth, sources = _timed(lambda: make_sources(os.path.join(args.out, "sources"), args.recordings, frames))
    n_frames = frames * args.recordings
    res: dict[str, Any] = {"frames": n_frames, "raw_bytes": n_frames * SIZE * SIZE * 4,
                           "source_bytes": sum(os.path.getsize(s) for s in sources), "synth_s": t_synth}
    print(f"[{n_frames} frames] convert (process pool)", flush=True)
    res["convert_pool"] = bench_convert_pool(sources, folder)
    for w in (1, 2):
        print(f"[{n_frames} frames] cluster of {w}: convert + derive", flush=True)
        res[f"cluster_{w}"] = bench_cluster(sources, folder, s3_url, w)
    disk = os.path.join(folder, "cluster2.zarr")
    rows = sample_rows(disk, args.windows)
    targets = [("disk_fast", disk, "auto", rows), ("disk_zarr", disk, "zarr", rows)]
    if s3_url:
        targets.append(("s3", f"{s3_url}/cluster2.zarr", "zarr", rows[:args.s3_windows]))
    for name, loc, reader, sample in targets:
        for w in (1, 2):
            print(f"[{n_frames} frames] load {name} with {w} worker(s)", flush=True)
            res[f"load_{name}_{w}"] = {**bench_load(loc, sample, w, reader), "windows": len(sample)}
    return res


def _rate(frames: int, seconds: float) -> str:
    return f"{frames / seconds:,.0f}" if seconds > 0 else "-"


def report(results: dict[str, Any]) -> str:
    """Return markdown tables of the results (frames/s, windows/s, ratios)."""
    lines = ["| frames | stage | where | 1 worker | 2 workers | 2w / 1w |", "|---:|---|---|---:|---:|---:|"]
    for scale in results["scales"]:
        n = scale["frames"]
        rows: list[tuple[str, str, float, float]] = [
            ("convert", "process pool, disk", scale["convert_pool"]["pool_1"], scale["convert_pool"]["pool_2"]),
            ("convert", "cluster, disk", scale["cluster_1"]["convert_disk"], scale["cluster_2"]["convert_disk"])]
        if "convert_s3" in scale["cluster_1"]:
            rows.append(("convert", "cluster, S3", scale["cluster_1"]["convert_s3"], scale["cluster_2"]["convert_s3"]))
        for where in ("disk", "s3"):
            if f"derive_{where}" not in scale["cluster_1"]:
                continue
            for stage in ("labels", "windows", "stats"):
                rows.append((stage, f"cluster, {where}", scale["cluster_1"][f"derive_{where}"][stage],
                             scale["cluster_2"][f"derive_{where}"][stage]))
        for stage, where, t1, t2 in rows:
            lines.append(f"| {n:,} | {stage} | {where} | {_rate(n, t1)} fr/s ({t1:.1f} s) | "
                         f"{_rate(n, t2)} fr/s ({t2:.1f} s) | {t1 / t2:.2f}x |")
        for name in ("disk_fast", "disk_zarr", "s3"):
            a, b = scale.get(f"load_{name}_1"), scale.get(f"load_{name}_2")
            if a and b:
                ratio = b["windows_per_s"] / a["windows_per_s"] if a["windows_per_s"] else float("nan")
                lines.append(f"| {n:,} | load | {name} | {a['windows_per_s']:,.0f} win/s | "
                             f"{b['windows_per_s']:,.0f} win/s | {ratio:.2f}x |")
    if len(results["scales"]) > 1:
        a, b = results["scales"][0], results["scales"][-1]
        k = b["frames"] / a["frames"]
        lines += ["", f"Growth from {a['frames']:,} to {b['frames']:,} frames ({k:.1f}x the data): time ratio",
                  "", "| stage | where | time ratio |", "|---|---|---:|"]
        pairs = [("convert", "pool, 2 workers", a["convert_pool"]["pool_2"], b["convert_pool"]["pool_2"]),
                 ("convert", "cluster 2, disk", a["cluster_2"]["convert_disk"], b["cluster_2"]["convert_disk"])]
        if "convert_s3" in a["cluster_2"]:
            pairs.append(("convert", "cluster 2, S3", a["cluster_2"]["convert_s3"], b["cluster_2"]["convert_s3"]))
        for stage in ("labels", "windows", "stats"):
            pairs.append((stage, "cluster 2, disk", a["cluster_2"]["derive_disk"][stage],
                          b["cluster_2"]["derive_disk"][stage]))
        for stage, where, ta, tb in pairs:
            lines.append(f"| {stage} | {where} | {tb / ta:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000, help="frames per recording at scale 1")
    ap.add_argument("--recordings", type=int, default=3)
    ap.add_argument("--scales", default="1,2", help="comma-separated multiples of --frames")
    ap.add_argument("--windows", type=int, default=256, help="windows per load measurement (disk)")
    ap.add_argument("--s3-windows", type=int, default=128, help="windows per load measurement on S3 (slow)")
    ap.add_argument("--no-s3", action="store_true", help="skip the loopback S3 server")
    ap.add_argument("--out", default="bench-out/scaling")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    scales = [int(s) for s in args.scales.split(",")]
    results: dict[str, Any] = {"command": " ".join(sys.argv), "cpus": os.cpu_count(), "scales": []}

    def body(s3_url: str | None) -> None:
        for s in scales:
            results["scales"].append(run_scale(args, args.frames * s, s3_url))
            with open(os.path.join(args.out, "bench_scaling.json"), "w") as f:  # partial results survive
                json.dump(results, f, indent=2)

    if args.no_s3:
        body(None)
    else:
        from s3_server import running_s3_server

        with running_s3_server() as server:
            os.environ.update(server.env)  # workers and loader processes inherit the endpoint
            body(f"s3://{server.make_bucket('fmf-bench')}")
    print(report(results))


if __name__ == "__main__":
    main()
