"""Benchmark the two store layouts end to end (issue 20): which one should a plain `fmdata convert` write?

For each source, in one run on the same machine, the plain layout (one-frame blosc chunks,
decoded and re-encoded) against the source layout (MATLAB's deflate chunks copied):

* conversion: ``fmdata convert --workers 2 --layout L`` beside the floor (one h5py process reading
  every element, chunk-aligned), alternating ``--repeat`` rounds; median; wall and CPU seconds
  (user + system of every process) and both as x floor; store bytes against the source;
* ``labels + stats``: ``fmdata labels --force`` then ``fmdata stats --force`` (the default local
  threads), wall and CPU of both processes;
* lazy loader: :func:`fmmodel.data.throughput.measure_data_path` (what ``fmmodel bench-data`` runs) over
  ``--windows`` reference windows (10 frames step 18, 240 current rows, mask), a seeded random
  sample in random order, batches of 64, no loader workers and one torch thread: windows per
  CPU-second, the rate one loader worker reaches on a core of its own; uint8 clips (the GPU path)
  and float32 reference clips;
* resident load: :class:`fmmodel.data.resident.ResidentWindows` loading the frames, masks and current of
  every reference window onto the CPU: wall and CPU seconds.

Every measurement runs in its own process; read measurements alternate the layouts ``--repeat``
times and report the median. Sources: ``--demo`` (the demo's six V1 recordings of 6,000 frames of
32x32, written by ``fmdata synth`` as `make demo` writes them) and ``--sizes-gb`` synthetic V1
files written the way MATLAB writes them (``bench_convert.make_source``: 64x64, deflate 3,
chunks near 64 KiB); files are kept in OUT for reruns.

    .venv/bin/python benchmarks/bench_layouts.py --demo --sizes-gb 1 --out bench-out/layouts
    .venv/bin/python benchmarks/bench_layouts.py --sizes-gb 0.05 --windows 500 --repeat 1 --out /tmp/bl  # smoke
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import FMDATA, make_source, run_measured, tree_bytes

LAYOUTS = ("plain", "source")
BATCH = 64


# ---- child measurements (run as: bench_layouts.py _child JSON) ------------------------------------
def _child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    store, kind = spec["store"], spec["kind"]
    if kind == "lazy":
        from fmmodel.data.throughput import measure_data_path

        rows = np.load(spec["rows"])
        report = measure_data_path(store, "bench", data="lazy", workers=0, batch_size=BATCH, split=None, rows=rows,
                                   video_dtype=spec["dtype"], device="cpu", threads=1)
        return {"windows": int(len(rows)), "seconds": report.seconds, "cpu_seconds": report.cpu_seconds,
                "windows_per_cpu_s": report.windows_per_cpu_s, "windows_per_s": report.windows_per_s}
    if kind == "resident":
        from fmmodel.data.dataset import FmfWindowDataset
        from fmmodel.data.resident import ResidentWindows

        ds = FmfWindowDataset(store, "bench", preprocessing="reference", video_dtype="uint8")
        t0, c0 = time.perf_counter(), time.process_time()
        info = ResidentWindows.load(ds, "cpu").describe()
        return {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, "windows": len(ds),
                "frames": info["frames"], "resident_mib": info["total_bytes"] / 2**20}
    raise SystemExit(f"unknown measurement {kind}")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one read measurement in a fresh process; return its figures."""
    res = subprocess.run([sys.executable, __file__, "_child", json.dumps(spec)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{spec} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ---- sources -------------------------------------------------------------------------------------
def demo_sources(out: Path) -> list[Path]:
    """The demo's V1 recordings (benchmarks/demo.sh), written once."""
    folder = out / "demo-v1"
    files = sorted(folder.glob("batch_*.mat"))
    if len(files) != 6:
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run([FMDATA, "synth", str(folder), "--layout", "v1", "--recordings", "6", "--frames", "6000",
                        "--size", "32", "--events", "dense", "--seed", "1", "--no-progress"], check=True,
                       capture_output=True)
        files = sorted(folder.glob("batch_*.mat"))
    return files


def measure_source(out: Path, name: str, sources: list[Path], windows: int, repeat: int) -> dict[str, Any]:
    """Convert ``sources`` in both layouts beside the floor, then measure the reads of both stores."""
    src_bytes = sum(p.stat().st_size for p in sources)
    for p in sources:  # page cache warm for every variant
        with open(p, "rb") as fh:
            while fh.read(64 << 20):
                pass
    stores = {lay: out / f"{name}-{lay}.zarr" for lay in LAYOUTS}
    me = str(Path(__file__).resolve().parent / "bench_convert.py")
    rounds: list[dict[str, Any]] = []
    for _ in range(repeat):
        got = {"floor": run_measured([sys.executable, me, "_variant", "floor", *map(str, sources)])}
        for lay in LAYOUTS:
            shutil.rmtree(stores[lay], ignore_errors=True)
            got[lay] = run_measured([FMDATA, "convert", *map(str, sources), str(stores[lay]), "--workers", "2",
                                     "--layout", lay, "--no-progress", "--json"])
        rounds.append(got)
    res: dict[str, Any] = {"name": name, "sources": [str(p) for p in sources], "source_bytes": src_bytes,
                           "rounds": [{k: {"seconds": v["seconds"], "cpu_seconds": v["cpu_seconds"]} for k, v in r.items()}
                                      for r in rounds]}
    for key in ("floor", *LAYOUTS):
        res[f"{key}_s"] = median(r[key]["seconds"] for r in rounds)
        res[f"{key}_cpu_s"] = median(r[key]["cpu_seconds"] for r in rounds)
    for lay in LAYOUTS:
        report = json.loads(rounds[-1][lay]["stdout"])
        res[f"{lay}_paths"] = report.get("paths", {})
        res[f"{lay}_store_bytes"] = tree_bytes(stores[lay])
        windows_cmd = [FMDATA, "windows", str(stores[lay]), "--name", "bench", "--no-progress"]
        subprocess.run(windows_cmd, check=True, capture_output=True)
    # one sample of reference windows for both stores (the same frames and current rows in each)
    from fmdata.store import open_store

    table = open_store(stores["plain"]).window_table("bench")
    full = np.flatnonzero(np.all(np.diff(table.clip, axis=1) == 18, axis=1))
    rows = np.random.default_rng(0).choice(full, size=min(windows, len(full)), replace=False)
    rows_file = out / f"{name}-rows.npy"
    np.save(rows_file, rows)
    reads: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeat):
        for lay in LAYOUTS:
            s = str(stores[lay])
            labels = run_measured([FMDATA, "labels", s, "--force", "--no-progress"])
            stats = run_measured([FMDATA, "stats", s, "--force", "--no-progress"])
            reads.setdefault(f"{lay}_derive", []).append(
                {"seconds": labels["seconds"] + stats["seconds"], "cpu_seconds": labels["cpu_seconds"] + stats["cpu_seconds"],
                 "labels_s": labels["seconds"], "stats_s": stats["seconds"]})
            for dtype in ("uint8", "float32"):
                reads.setdefault(f"{lay}_lazy_{dtype}", []).append(
                    child({"kind": "lazy", "store": s, "rows": str(rows_file), "dtype": dtype}))
            reads.setdefault(f"{lay}_resident", []).append(child({"kind": "resident", "store": s}))
    res["reads"] = reads
    for key, runs in reads.items():
        for field in ("seconds", "cpu_seconds", "windows_per_cpu_s"):
            if field in runs[0]:
                res[f"{key}_{field}"] = median(r[field] for r in runs)
    res["windows"] = int(len(rows))
    res["load_average"] = os.getloadavg()
    return res


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table of one run: per source and layout, conversion and the reads."""
    lines = ["| source | layout | convert wall s (x floor) | convert CPU s (x floor) | store / source | "
             "labels + stats s (CPU s) | lazy windows per CPU-s, uint8 / float32 | resident load s (CPU s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = f"{r['name']} ({r['source_bytes'] / 1e9:.2f} GB)"
        lines.append(f"| {label} | floor: h5py read, 1 process | {r['floor_s']:.1f} (1.00) | {r['floor_cpu_s']:.1f} "
                     f"(1.00) | | | | |")
        for lay in LAYOUTS:
            lines.append(
                f"| {label} | {lay} | {r[f'{lay}_s']:.1f} ({r[f'{lay}_s'] / r['floor_s']:.2f}) | "
                f"{r[f'{lay}_cpu_s']:.1f} ({r[f'{lay}_cpu_s'] / r['floor_cpu_s']:.2f}) | "
                f"{r[f'{lay}_store_bytes'] / r['source_bytes']:.4f} | "
                f"{r[f'{lay}_derive_seconds']:.1f} ({r[f'{lay}_derive_cpu_seconds']:.1f}) | "
                f"{r[f'{lay}_lazy_uint8_windows_per_cpu_s']:,.0f} / {r[f'{lay}_lazy_float32_windows_per_cpu_s']:,.0f} | "
                f"{r[f'{lay}_resident_seconds']:.1f} ({r[f'{lay}_resident_cpu_seconds']:.1f}) |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", action="store_true", help="measure the demo's six recordings (6 x 6,000 frames, 32x32)")
    ap.add_argument("--sizes-gb", type=float, nargs="*", default=[], help="synthetic V1 sources of these sizes")
    ap.add_argument("--windows", type=int, default=4000, help="windows of the lazy loader's timed pass")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of every measurement; medians are reported")
    ap.add_argument("--out", default="bench-out/layouts")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs: list[tuple[str, list[Path]]] = [("demo", demo_sources(out))] if args.demo else []
    for gb in args.sizes_gb:
        src = out / f"source-{gb:g}GB.mat"
        make_source(src, int(gb * 1e9))
        jobs.append((f"{gb:g} GB", [src]))
    results = []
    for name, sources in jobs:
        t0 = time.perf_counter()
        r = measure_source(out, name.replace(" ", ""), sources, args.windows, args.repeat)
        r["name"] = name
        r["bench_seconds"] = time.perf_counter() - t0
        results.append(r)
        (out / "bench_layouts.json").write_text(json.dumps(results, indent=1))
        print(table([r]), flush=True)
        for lay in LAYOUTS:
            for var, path in r[f"{lay}_paths"].items():
                print(f"  {lay} {var}: {path}")
    print("\n" + table(results))


if __name__ == "__main__":
    main()
