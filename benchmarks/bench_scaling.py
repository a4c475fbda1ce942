"""Benchmark for docs/scaling.md: convert, derive and load with 1 and 2 workers, on disk and on S3.

Every figure comes out of ONE run on the same machine, so the ratios (2 workers / 1 worker,
S3 / local disk, size 2N / size N) are measured side by side. Each measurement records wall
time AND the CPU seconds spent by every process involved (driver, cluster workers or pool
processes or loader workers, and the S3 server apart): on a shared machine wall-clock ratios
are noisy, while CPU seconds per frame are what the capacity plan multiplies.

For each data size (``--frames`` per recording times each of ``--scales``):

* sources: ``--recordings`` synthetic V1 MAT files (MATLAB-like chunking, deflate 3), 64x64;
* convert: ``fmdata.convert`` with a local process pool of 1 and 2 workers (disk store; one
  worker runs in-process, two are spawned, start-up included), and ``fmdata.convert.convert_on_cluster``
  on a ``distributed.LocalCluster`` of 1 and 2 single-threaded worker processes (started
  beforehand, start-up excluded), into a disk store and into an ``s3://`` store on a loopback
  S3 server (moto);
* derive: labels, a reference window table (10 frames step 18, 240 current rows) and stats, with
  ``force``, on the same LocalClusters (``--scheduler``), on the disk and the S3 store;
* load: ``FmfWindowDataset`` + ``make_loader`` (batch 64, reference preprocessing) over a seeded
  random sample of windows, with 1 and 2 loader worker processes: the disk store with the fast
  local reader, the disk store through zarr, the S3 store (zarr over s3fs). Two passes with
  persistent workers; the second is measured.

The S3 server runs on this machine, takes CPU from the workers and answers each request in
tens of milliseconds (a Python dev server): its figures bound the cost of remote storage from
above; docs/scaling.md discusses real object stores. Run it from a snapshot of the code when
others edit the working tree (spawned workers re-import modules from disk):

    git archive HEAD | (mkdir -p /tmp/fmf-snap && tar -x -C /tmp/fmf-snap)
    PYTHONPATH=/tmp/fmf-snap .venv/bin/python /tmp/fmf-snap/benchmarks/bench_scaling.py \\
        --frames 2000 --scales 1,2 --windows 512 --s3-windows 128 --out bench-out/scaling   # smoke size
    # the full measurement for a quiet machine (1.4 GB of raw frames at scale 2):
    .venv/bin/python benchmarks/bench_scaling.py --frames 30000 --scales 1,2 --windows 4096 \\
        --s3-windows 512 --out bench-out/scaling

Results: OUT/bench_scaling.json (written after each size) and markdown tables on stdout.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # the loopback S3 server of the test suite

SIZE = 64
FRAMES, STEP, CURRENT_ROWS = 10, 18, 240
BATCH = 64
SERVER_PID = 0  # the S3 server's process, whose CPU is reported apart


# ---- CPU accounting ---------------------------------------------------------------------------
def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _pid_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc); 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(fn: Callable[[], Any], worker_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """Run ``fn``; return wall seconds, CPU seconds of this process (+ reaped children), of the
    workers (``worker_cpu`` reads their total), of the S3 server, and ``fn``'s result."""
    w0 = worker_cpu() if worker_cpu else 0.0
    c0, s0 = _own_cpu() + _children_cpu(), _pid_cpu(SERVER_PID) if SERVER_PID else 0.0
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    res = {"wall_s": wall, "cpu_driver_s": _own_cpu() + _children_cpu() - c0,
           "cpu_workers_s": (worker_cpu() - w0) if worker_cpu else 0.0,
           "cpu_server_s": (_pid_cpu(SERVER_PID) - s0) if SERVER_PID else 0.0}
    res["cpu_s"] = res["cpu_driver_s"] + res["cpu_workers_s"]
    res["result"] = out
    return res


def _clean(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "result"}


# ---- data -------------------------------------------------------------------------------------
def make_sources(folder: str, recordings: int, frames: int) -> list[str]:
    """Write (once) ``recordings`` V1 files of ``frames`` frames each; return their paths."""
    from fmdata.synth import write_v1

    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(recordings):
        p = os.path.join(folder, f"rec{i}_{frames}.mat")
        if not os.path.exists(p):
            write_v1(p, frames=frames, size=SIZE, seed=7, index=i)
        paths.append(p)
    return paths


def _fresh(location: str) -> str:
    from fmdata.store import Location

    Location.parse(location).remove()
    return location


def _store_bytes(location: str) -> int:
    from fmdata.store import Location

    fs, path = Location.parse(location).filesystem()
    return int(fs.du(path))


# ---- stages -----------------------------------------------------------------------------------
def bench_convert_pool(sources: list[str], folder: str) -> dict[str, Any]:
    """Local process-pool conversion with 1 and 2 workers (disk store)."""
    from fmdata.convert import convert

    out = {}
    for w in (1, 2):
        path = _fresh(os.path.join(folder, f"pool{w}.zarr"))
        out[f"pool_{w}"] = _clean(measure(lambda p=path, n=w: convert(sources, p, workers=n, progress=False)))
        shutil.rmtree(path)
    return out


def _derive(location: str, address: str, worker_cpu: Callable[[], float]) -> dict[str, Any]:
    from fmdata.compute import DaskOptions
    from fmdata.derive import compute_labels, compute_stats, make_windows
    from fmdata.store import WindowParams

    opts = DaskOptions(scheduler=address, progress=False)
    params = WindowParams(frames=FRAMES, frame_step=STEP, current_rows=CURRENT_ROWS)
    return {
        "labels": _clean(measure(lambda: compute_labels(location, force=True, options=opts), worker_cpu)),
        "windows": _clean(measure(lambda: make_windows(location, "bench", params, force=True, options=opts),
                                  worker_cpu)),
        "stats": _clean(measure(lambda: compute_stats(location, force=True, options=opts), worker_cpu)),
    }


def bench_cluster(sources: list[str], folder: str, s3_url: str | None, workers: int) -> dict[str, Any]:
    """Convert (disk, S3) and derive (disk, S3) on a LocalCluster of ``workers`` processes."""
    import dask
    from distributed import Client, LocalCluster

    from fmdata.convert import convert_on_cluster

    t_start = time.perf_counter()
    # as fmdata.cluster does (and docs/scaling.md advises for real clusters): keep glibc's adaptive
    # mmap threshold in workers; distributed's MALLOC_TRIM_THRESHOLD_ makes block buffers page-fault anew
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
    client = Client(cluster)
    res: dict[str, Any] = {"cluster_start_s": time.perf_counter() - t_start}

    def worker_cpu() -> float:
        return float(sum(client.run(_own_cpu).values()))

    try:
        disk = _fresh(os.path.join(folder, f"cluster{workers}.zarr"))
        res["convert_disk"] = _clean(measure(lambda: convert_on_cluster(sources, disk, client, progress=False),
                                             worker_cpu))
        res["store_bytes"] = _store_bytes(disk)
        res["derive_disk"] = _derive(disk, cluster.scheduler_address, worker_cpu)
        if s3_url:
            url = _fresh(f"{s3_url}/cluster{workers}.zarr")
            res["convert_s3"] = _clean(measure(lambda: convert_on_cluster(sources, url, client, progress=False),
                                               worker_cpu))
            res["derive_s3"] = _derive(url, cluster.scheduler_address, worker_cpu)
    finally:
        client.close()
        cluster.close()
    return res


def bench_load(location: str, rows: np.ndarray, workers: int, reader: str) -> dict[str, Any]:
    """Windows/s of the torch dataset over ``location`` with ``workers`` loader processes.

    Two passes over the same windows with persistent workers: the first starts the workers and
    opens the store (its wall time is reported as ``first_pass_s``), the second is measured.
    """
    from fmmodel.data.dataset import FmfWindowDataset
    from fmmodel.data.sampling import make_loader

    ds = FmfWindowDataset(location, "bench", preprocessing="reference", rows=rows, reader=reader)
    loader = make_loader(ds, BATCH, workers, persistent_workers=True)
    t0 = time.perf_counter()
    sum(len(b["label"]) for b in loader)
    first = time.perf_counter() - t0
    pids = [w.pid for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
    m = measure(lambda: sum(len(b["label"]) for b in loader), lambda: sum(_pid_cpu(p) for p in pids))
    loader = None  # drop it: its persistent workers shut down
    return {**_clean(m), "first_pass_s": first, "windows": int(m["result"]),
            "windows_per_s": m["result"] / m["wall_s"]}


def sample_rows(location: str, n: int, seed: int = 0) -> np.ndarray:
    """A seeded random sample of ``n`` window-table rows of table ``bench``, in random order."""
    from fmdata.store import open_store

    m = len(open_store(location).window_table("bench"))
    return np.random.default_rng(seed).choice(m, size=min(n, m), replace=False)


def run_scale(args: argparse.Namespace, frames: int, s3_url: str | None) -> dict[str, Any]:
    """All measurements for one data size."""
    folder = os.path.join(args.out, f"n{frames}")
    os.makedirs(folder, exist_ok=True)
    synth = measure(lambda: make_sources(os.path.join(args.out, "sources"), args.recordings, frames))
    sources = synth["result"]
    n_frames = frames * args.recordings
    res: dict[str, Any] = {"frames": n_frames, "raw_bytes": n_frames * SIZE * SIZE * 4,
                           "source_bytes": sum(os.path.getsize(s) for s in sources), "synth": _clean(synth)}
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
            res[f"load_{name}_{w}"] = bench_load(loc, sample, w, reader)
    return res


# ---- report -----------------------------------------------------------------------------------
def _stage_rows(scale: dict[str, Any]) -> list[tuple[str, str, dict[str, Any], dict[str, Any], str]]:
    rows = [("convert", "process pool, disk", scale["convert_pool"]["pool_1"], scale["convert_pool"]["pool_2"], "fr"),
            ("convert", "cluster, disk", scale["cluster_1"]["convert_disk"], scale["cluster_2"]["convert_disk"], "fr")]
    if "convert_s3" in scale["cluster_1"]:
        rows.append(("convert", "cluster, S3", scale["cluster_1"]["convert_s3"], scale["cluster_2"]["convert_s3"],
                     "fr"))
    for where in ("disk", "s3"):
        if f"derive_{where}" in scale["cluster_1"]:
            for stage in ("labels", "windows", "stats"):
                rows.append((stage, f"cluster, {where.replace('s3', 'S3')}", scale["cluster_1"][f"derive_{where}"][stage],
                             scale["cluster_2"][f"derive_{where}"][stage], "fr"))
    for name, label in (("disk_fast", "disk, fast reader"), ("disk_zarr", "disk, zarr"), ("s3", "S3, zarr")):
        if f"load_{name}_1" in scale:
            rows.append(("load", label, scale[f"load_{name}_1"], scale[f"load_{name}_2"], "win"))
    return rows


def report(results: dict[str, Any]) -> str:
    """Return markdown tables: rates with 1 and 2 workers, their ratio, CPU per item, growth."""
    lines = ["| items | stage | where | 1 worker | 2 workers | 2w/1w wall | CPU ms/item (1w, 2w) | "
             "S3 server CPU ms/item |", "|---:|---|---|---:|---:|---:|---:|---:|"]
    for scale in results["scales"]:
        n = scale["frames"]
        for stage, where, a, b, unit in _stage_rows(scale):
            items = a.get("windows", n) if unit == "win" else n
            rate = lambda m, k=items: k / m["wall_s"]
            server = f"{1000 * b['cpu_server_s'] / items:.2f}" if b.get("cpu_server_s") else "-"
            lines.append(f"| {items:,} {unit} | {stage} | {where} | {rate(a):,.0f}/s | {rate(b):,.0f}/s | "
                         f"{a['wall_s'] / b['wall_s']:.2f}x | {1000 * a['cpu_s'] / items:.2f}, "
                         f"{1000 * b['cpu_s'] / items:.2f} | {server} |")
    if len(results["scales"]) > 1:
        a, b = results["scales"][0], results["scales"][-1]
        k = b["frames"] / a["frames"]
        lines += ["", f"Growth from {a['frames']:,} to {b['frames']:,} frames ({k:.1f}x the data), 2 workers:", "",
                  "| stage | where | wall ratio | CPU ratio |", "|---|---|---:|---:|"]
        for (stage, where, _, ma, unit), (_, _, _, mb, _) in zip(_stage_rows(a), _stage_rows(b)):
            if unit == "fr":
                lines.append(f"| {stage} | {where} | {mb['wall_s'] / ma['wall_s']:.2f} | "
                             f"{mb['cpu_s'] / ma['cpu_s']:.2f} |")
    for scale in results["scales"]:
        sb = scale["cluster_2"].get("store_bytes", 0)
        lines.append(f"\n{scale['frames']:,} frames: raw {scale['raw_bytes'] / 1e6:.1f} MB, sources "
                     f"{scale['source_bytes'] / 1e6:.1f} MB, store {sb / 1e6:.1f} MB")
    return "\n".join(lines)


def main() -> None:
    global SERVER_PID
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000, help="frames per recording at scale 1")
    ap.add_argument("--recordings", type=int, default=3)
    ap.add_argument("--scales", default="1,2", help="comma-separated multiples of --frames")
    ap.add_argument("--windows", type=int, default=512, help="windows per load measurement (disk)")
    ap.add_argument("--s3-windows", type=int, default=128, help="windows per load measurement on S3 (slow)")
    ap.add_argument("--no-s3", action="store_true", help="skip the loopback S3 server")
    ap.add_argument("--out", default="bench-out/scaling")
    ap.add_argument("--report", metavar="JSON", help="only print the tables of an earlier run's results")
    args = ap.parse_args()
    if args.report:
        print(report(json.load(open(args.report))))
        return
    os.makedirs(args.out, exist_ok=True)
    scales = [int(s) for s in args.scales.split(",")]
    results: dict[str, Any] = {"command": " ".join(sys.argv), "cpus": os.cpu_count(),
                               "load_average_before": os.getloadavg(), "scales": []}

    def body(s3_url: str | None) -> None:
        for s in scales:
            results["scales"].append(run_scale(args, args.frames * s, s3_url))
            results["load_average_after"] = os.getloadavg()
            with open(os.path.join(args.out, "bench_scaling.json"), "w") as f:  # partial results survive
                json.dump(results, f, indent=2)

    if args.no_s3:
        body(None)
    else:
        from s3_server import running_s3_server

        with running_s3_server() as server:
            SERVER_PID = server.pid
            os.environ.update(server.env)  # workers and loader processes inherit the endpoint
            body(f"s3://{server.make_bucket('fmf-bench')}")
    print(report(results))


if __name__ == "__main__":
    main()
