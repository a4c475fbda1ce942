"""Benchmark: windows/s and memory of the lazy dataset against lazy h5py reads and the load-all approach.

One run, same machine, same windows (10 frames step 18, 240 current rows, mask; a seeded random
sample of the reference window table in random order, batches of 64):

* ``dataset``: FmfWindowDataset over a store made by ``fmdata convert`` (reference preprocessing,
  float32 clips), in-process and through ``make_loader`` with 1 and 2 workers; with workers also
  as ``dataset-fresh`` (a new shared-memory buffer per batch, as torch's default collate does)
  and ``dataset-gpu`` (what the trainer asks for on CUDA: uint8 clips, zero-copy buffers);
  ``dataset-zarr`` reads through zarr-python instead of the fast reader; ``dataset-nocheck`` turns
  the per-chunk CRC-32C checks off (``checksums=False``), to measure what they cost.
* ``h5py``: (a) the same windows read lazily with h5py straight from the V1 MAT file that
  ``fmdata synth`` writes with MATLAB-like storage (deflate 3, chunks near 64 KiB), one strided
  hyperslab per clip, the same item layout, the same DataLoader settings.
* ``load-all``: (b) the reference approach: read whole recordings into RAM first (its load time and
  peak RSS), then slice windows from memory.
* ``path-lazy`` / ``path-resident``: the data path alone as ``fmmodel bench-data`` measures it
  (:func:`fmmodel.data.throughput.measure_data_path`, one torch thread, batches as the trainer gets
  them, flips on): the lazy path with 0, 1 and 2 workers against the resident path, each for uint8
  clips (what the GPU path takes) and float32 reference clips. "Per CPU-second" counts every
  process involved (the main process and its workers).
* ``resident-load``: :class:`fmmodel.data.resident.ResidentWindows` loading every window of the table
  (clips, masks, current): load time, resident bytes and the process's peak RSS, at each size.

Each measurement runs in its own process (peak RSS is that process's plus its workers'). Every
loader gets one untimed warm-up pass over the windows (worker start-up, page cache); the timed
pass is the second. Memory is measured at several store sizes (``--scales``): the dataset's peak
RSS should stay flat while load-all grows with the data.

    .venv/bin/python benchmarks/bench_dataset.py --frames 20000 --windows 4000 --out bench-out/dataset
    .venv/bin/python benchmarks/bench_dataset.py --suite paths --frames 270000 --scales 0.148,1 --out bench-out/dataset

``--suite paths`` runs only the data-path comparison, the resident loads and load-all.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

BATCH = 64
FRAMES, STEP, CURRENT_ROWS = 10, 18, 240


# ---- the data ---------------------------------------------------------------------------------
def prepare(folder: str, frames: int, seed: int) -> tuple[str, str]:
    """Write a V1 MAT file of ``frames`` frames and convert it; return (mat_path, store_path)."""
    from fmdata.derive import make_windows
    from fmdata.store import WindowParams
    from fmdata.synth import write_v1

    os.makedirs(folder, exist_ok=True)
    mat, store = os.path.join(folder, f"rec_{frames}.mat"), os.path.join(folder, f"rec_{frames}.zarr")
    if not os.path.exists(mat):
        write_v1(mat, frames=frames, size=64, seed=seed)
    if not os.path.exists(store):
        from fmdata.convert import convert
        convert([mat], store, workers=2, progress=False)
        make_windows(store, "bench", WindowParams(frames=FRAMES, frame_step=STEP, current_rows=CURRENT_ROWS))
    return mat, store


def sample_windows(store: str, n: int, seed: int) -> np.ndarray:
    """Return ``n`` window-table rows (random order, seeded) of windows whose clip is complete."""
    from fmdata.store import open_store

    wt = open_store(store).window_table("bench")
    clip = wt.clip
    full = np.flatnonzero(np.all(np.diff(clip, axis=1) == STEP, axis=1))  # no clamped clips
    rng = np.random.default_rng(seed)
    return rng.choice(full, size=min(n, len(full)), replace=False)


# ---- baselines ----------------------------------------------------------------------------------
class H5Windows:
    """Lazy h5py reads of windows from a V1 MAT file, as a torch-style dataset (opened per process)."""

    def __init__(self, mat: str, table: np.ndarray, columns: tuple[str, ...], frame_of_row: np.ndarray,
                 row_of_current: np.ndarray) -> None:
        self.mat, self.table, self.columns = mat, table, columns
        self.frame_of_row, self.row_of_current = frame_of_row, row_of_current  # store -> file indices
        self._f = None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import h5py
        import torch
        if self._f is None:
            f = h5py.File(self.mat, "r")
            self._f = (f, f["video"], f["label"], f["current"])
        _, video, label, current = self._f
        row = self.table[i]
        frame = self.frame_of_row[row[self.columns.index("frame")]]
        first = frame - (FRAMES - 1) * STEP
        # One read per frame: h5py's strided hyperslab over MATLAB chunks is several times slower.
        clip = np.stack([video[k] for k in range(first, frame + 1, STEP)])  # (T, 3, W, H), reference orientation
        mask = label[frame]  # (W, H)
        a = self.row_of_current[row[self.columns.index("current_start")]]
        b = self.row_of_current[row[self.columns.index("current_stop") ] - 1] + 1
        cur = current[a:b][np.linspace(0, b - a - 1, CURRENT_ROWS).astype(np.int32)]
        return {"clip": torch.from_numpy(np.ascontiguousarray(clip.transpose(1, 0, 2, 3), dtype=np.float32)),
                "current": torch.from_numpy(cur.astype(np.float32)), "mask": torch.from_numpy(mask),
                "label": torch.tensor(int(row[self.columns.index("label")]))}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_f": None}


def _file_maps(mat: str, store: str) -> tuple[np.ndarray, np.ndarray]:
    """Map store frames/current rows to MAT-file rows (a converted V1 file keeps them one to one)."""
    import h5py

    from fmdata.store import open_store
    with h5py.File(mat, "r") as f:
        n, m = f["video"].shape[0], f["current"].shape[0]
    meta = open_store(store).meta
    assert (meta.n_frames, meta.n_current) == (n, m), "expected the store to hold the MAT file's rows"
    return np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)


def _rss_mib() -> float:
    """Peak resident memory of this process (VmHWM). Not ru_maxrss: Linux carries the parent's
    high-water mark into a child across fork and exec, so a child's ru_maxrss starts at its parent's."""
    return _peak_rss_of(os.getpid())


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_of(pid: int) -> float:
    """Peak resident memory (VmHWM, MiB) of process ``pid``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _time_loader(loader: Any, windows: int) -> dict[str, float]:
    """Time the second pass of ``loader`` (the first warms up); wall and CPU seconds of the workers."""
    t0 = time.perf_counter()
    for _ in loader:  # warm-up pass: worker start-up, page cache
        pass
    warm = time.perf_counter() - t0
    workers = [w.pid for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
    cpu0 = [_cpu_seconds(p) for p in workers] or [time.process_time()]
    main0 = time.process_time()
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        n += len(batch["label"])
    dt = time.perf_counter() - t0
    cpu = (sum(_cpu_seconds(p) for p in workers) if workers else time.process_time()) - sum(cpu0)
    worker_rss = max((_peak_rss_of(p) for p in workers), default=0.0)
    assert n == windows, (n, windows)
    # cpu_windows_per_s: windows per CPU-second of the processes that read (the workers, or the
    # main process without workers): the rate a worker reaches on a core of its own.
    return {"warmup_s": warm, "seconds": dt, "windows_per_s": n / dt, "cpu_seconds": cpu,
            "cpu_windows_per_s": n / cpu if cpu > 0 else float("nan"),
            "main_cpu_seconds": time.process_time() - main0, "worker_peak_rss_mib": worker_rss}


def measure(kind: str, mat: str, store: str, rows: list[int], workers: int, variant: str = "") -> dict[str, Any]:
    """Run one measurement in this process; return its figures."""
    import torch

    from fmmodel.data.dataset import FmfWindowDataset, collate_windows
    from fmmodel.data.sampling import make_loader

    torch.set_num_threads(1)  # as in DataLoader workers: intra-op threads only contend on a busy machine
    rss0 = _current_rss_mib()
    if kind == "dataset":
        # variant: "" (make_loader's defaults on a machine without CUDA), "zarr" (zarr-python
        # reader), "gpu" (what the trainer asks for on CUDA: uint8 clips, and the zero-copy buffers
        # make_loader uses when it pins), "fresh" (a new shared buffer per batch, as torch's
        # default collate does), "nocheck" (the defaults without the CRC-32C checks).
        import functools

        from fmmodel.data.sampling import worker_init
        if variant == "zarr":  # some 40x slower: an eighth of the windows tells its rate
            rows = rows[:max(BATCH * 4, len(rows) // 8)]
        ds = FmfWindowDataset(store, "bench", preprocessing="reference", rows=np.asarray(rows),
                              reader="zarr" if variant == "zarr" else "auto",
                              video_dtype="uint8" if variant == "gpu" else "float32", checksums=variant != "nocheck")
        extra = {"worker_init_fn": functools.partial(worker_init, reuse_buffers=0)} if variant == "fresh" else {}
        loader = make_loader(ds, BATCH, workers, prefetch_factor=4, zero_copy=variant == "gpu", **extra)
        out = _time_loader(loader, len(rows))
    elif kind == "h5py":
        from fmdata.store import open_store
        wt = open_store(store).window_table("bench")
        fmap, cmap = _file_maps(mat, store)
        ds = H5Windows(mat, wt.table[np.asarray(rows)], wt.columns, fmap, cmap)
        ctx = {"multiprocessing_context": "forkserver", "persistent_workers": True} if workers else {}
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, **ctx)
        out = _time_loader(loader, len(rows))
    elif kind == "load-all":
        import h5py
        t0 = time.perf_counter()
        with h5py.File(mat, "r") as f:  # the reference loader's way: whole variables into RAM
            video, label, current = np.asarray(f["video"]), np.asarray(f["label"]), np.asarray(f["current"])
        load = time.perf_counter() - t0
        from fmdata.store import open_store
        wt = open_store(store).window_table("bench")
        tab = wt.table[np.asarray(rows)]
        c = wt.columns
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(0, len(tab), BATCH):
            items = []
            for row in tab[k:k + BATCH]:
                f_ = row[c.index("frame")]
                a, b = row[c.index("current_start")], row[c.index("current_stop")]
                items.append({
                    "clip": torch.from_numpy(np.ascontiguousarray(
                        video[f_ - (FRAMES - 1) * STEP:f_ + 1:STEP].transpose(1, 0, 2, 3), dtype=np.float32)),
                    "current": torch.from_numpy(current[a + np.linspace(0, b - a - 1, CURRENT_ROWS).astype(np.int32)]
                                                .astype(np.float32)),
                    "mask": torch.from_numpy(label[f_]), "label": torch.tensor(int(row[c.index("label")]))})
            collate_windows(items)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = {"load_s": load, "seconds": dt, "windows_per_s": len(tab) / dt, "cpu_windows_per_s": len(tab) / cpu,
               "loaded_mib": (video.nbytes + label.nbytes + current.nbytes) / 2**20}
    elif kind == "path":
        from fmmodel.data.throughput import measure_data_path

        # variant: "<lazy|resident>-<uint8|float32>"
        data, dtype = variant.split("-")
        # the resident path is fast: several passes (at least 20,000 windows) steady its CPU time
        passes = max(1, -(-20000 // len(rows))) if data == "resident" else 1
        report = measure_data_path(store, "bench", data=data, workers=workers, batch_size=BATCH, split=None,
                                   rows=np.asarray(rows), video_dtype=dtype, device="cpu", threads=1, passes=passes)
        out = {"seconds": report.seconds, "windows_per_s": report.windows_per_s, "cpu_seconds": report.cpu_seconds,
               "cpu_windows_per_s": report.windows_per_cpu_s, "warmup_s": report.warmup_seconds,
               "load_s": (report.data["resident"][0]["load_seconds"] if report.data["resident"] else None),
               "passes": passes}
        kind = f"path-{data}"
    elif kind == "resident-load":
        from fmmodel.data.dataset import FmfWindowDataset
        from fmmodel.data.resident import ResidentWindows

        ds = FmfWindowDataset(store, "bench", preprocessing="reference", video_dtype="uint8")
        t0, c0 = time.perf_counter(), time.process_time()
        windows = ResidentWindows.load(ds, "cpu")
        info = windows.describe()
        out = {"load_s": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0, "windows": len(ds),
               "frames": info["frames"], "resident_mib": info["total_bytes"] / 2**20,
               "resident_parts_mib": {k: v / 2**20 for k, v in info["bytes"].items()},
               "windows_per_s": float("nan"), "cpu_windows_per_s": float("nan")}
    else:
        raise ValueError(kind)
    if kind.startswith("path-"):
        out.update(kind=kind, video_dtype=variant.split("-")[1], workers=workers, peak_rss_mib=_rss_mib(),
                   start_rss_mib=rss0)
        return out
    out.update(kind=kind + (f"-{variant}" if variant else ""), workers=workers, peak_rss_mib=_rss_mib(),
               start_rss_mib=rss0)
    return out


def checksum_cost(store: str, rows: np.ndarray, reps: int = 5) -> dict[str, Any]:
    """CPU seconds of the reads behind ``rows``' windows (clip frames, labelled masks, current rows) with
    the CRC-32C checks on and off, alternating in this process ``reps`` times; medians and the cost.

    Separate loader processes (``dataset`` against ``dataset-nocheck``) differ by more than the
    checks cost on a busy machine; alternating the same reads in one process measures the reads
    alone, the part the checks can slow (an upper bound of their share of a window).
    """
    from fmdata.store import open_store
    from fmdata.store.row_reader import LocalAxisReader
    from fmdata.store.window_table import current_row_indices

    wt = open_store(store).window_table("bench")
    tab = wt.table[np.asarray(rows)]
    clip = tab[:, len(wt.columns) - FRAMES:].reshape(-1)
    frames = tab[:, wt.columns.index("frame")]
    cur = np.concatenate([current_row_indices(a, b, CURRENT_ROWS) for a, b in
                          tab[:, [wt.columns.index("current_start"), wt.columns.index("current_stop")]]])
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps):
        for check in (True, False):
            readers = [LocalAxisReader(os.path.join(store, name), checksums=check, cache_bytes=64 << 20,
                                       cache_single_rows=name == "current") for name in ("video", "mask", "current")]
            for r, index in zip(readers, (clip[:50], frames[:50], cur[:50])):  # open files, read indexes
                r.take(index)
            t0 = time.process_time()
            for r, index in zip(readers, (clip, frames, cur)):
                r.take(index)
            times[check].append(time.process_time() - t0)
    on, off = float(np.median(times[True])), float(np.median(times[False]))
    return {"windows": int(len(tab)), "reps": reps, "cpu_s_with": on, "cpu_s_without": off,
            "windows_per_cpu_s_with": len(tab) / on, "windows_per_cpu_s_without": len(tab) / off,
            "cost": on / off - 1}
def mask_layouts(frames: int = 40000, size: int = 64, batches: int = 200, seed: int = 0) -> dict[str, float]:
    """Milliseconds per batch of 64 to gather (and flip half of) masks held as bytes or packed bits.

    The measurement behind the resident path's mask layout: ``frames`` random 0/1 masks of
    ``size`` x ``size``, one torch thread, the gather and unpack that fmmodel.data.resident runs.
    """
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    masks = torch.from_numpy((rng.random((frames, size, size)) < 0.1).astype(np.uint8))
    packed = torch.from_numpy(np.packbits(masks.numpy().reshape(frames, -1), axis=1))
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
    picks = [torch.from_numpy(rng.integers(0, frames, BATCH)) for _ in range(batches)]
    flips = [torch.from_numpy(np.flatnonzero(rng.random(BATCH) < 0.5)) for _ in range(batches)]

    def flip(m: torch.Tensor, pos: torch.Tensor) -> None:
        words = m.view(BATCH, -1).view(torch.int64)
        words.index_copy_(0, pos, m.index_select(0, pos).flip(-1).contiguous().view(len(pos), -1).view(torch.int64))

    def as_bytes(i: int) -> None:
        flip(masks.index_select(0, picks[i]), flips[i])

    def as_bits(i: int) -> None:
        p = packed.index_select(0, picks[i])
        flip(((p.unsqueeze(-1) >> shifts) & 1).view(BATCH, size, size), flips[i])

    out = {}
    for name, fn in (("bytes", as_bytes), ("bits", as_bits)):
        fn(0)
        c0 = time.process_time()
        for i in range(batches):
            fn(i)
        out[f"{name}_ms_per_batch"] = (time.process_time() - c0) / batches * 1e3
    out.update(bytes_per_mask=size * size, packed_bytes_per_mask=size * size // 8)
    return out


def run_child(kind: str, mat: str, store: str, rows: np.ndarray, workers: int, folder: str,
              variant: str = "") -> dict[str, Any]:
    """Run :func:`measure` in a fresh interpreter (so peak RSS is that measurement's own)."""
    rows_file = os.path.join(folder, "rows.npy")
    np.save(rows_file, rows)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(
        {"kind": kind, "mat": mat, "store": store, "rows": rows_file, "workers": workers, "variant": variant})]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{kind} w={workers} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=20000, help="frames of the largest recording")
    p.add_argument("--scales", type=str, default="0.25,1", help="store sizes for the memory check, as fractions of --frames")
    p.add_argument("--windows", type=int, default=4000, help="windows per timed pass")
    p.add_argument("--workers", type=str, default="0,1,2")
    p.add_argument("--out", default="bench-out/dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suite", choices=("all", "paths"), default="all",
                   help="paths: only the data-path comparison, the resident loads and load-all")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        spec = json.loads(a.child)
        rows = np.load(spec["rows"]).tolist()
        print(json.dumps(measure(spec["kind"], spec["mat"], spec["store"], rows, spec["workers"], spec["variant"])))
        return

    os.makedirs(a.out, exist_ok=True)
    workers = [int(w) for w in a.workers.split(",")]
    sizes = sorted({max(2000, int(round(a.frames * float(s)))) for s in a.scales.split(",")})
    results: dict[str, Any] = {"command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                               "cpus": os.cpu_count(), "windows": a.windows, "batch": BATCH, "sizes": {}}
    for n in sizes:
        t0 = time.perf_counter()
        mat, store = prepare(a.out, n, a.seed)
        rows = sample_windows(store, a.windows, a.seed)
        print(f"[{n} frames] prepared in {time.perf_counter() - t0:.1f}s; MAT {os.path.getsize(mat) / 2**20:.0f} MiB, "
              f"{len(rows)} windows", flush=True)
        entry: dict[str, Any] = {"mat_mib": os.path.getsize(mat) / 2**20, "windows": int(len(rows)), "runs": []}
        paths = ([("path", w, f"lazy-{d}") for d in ("uint8", "float32") for w in workers]
                 + [("path", 0, f"resident-{d}") for d in ("uint8", "float32")])
        plan = [("resident-load", 0, ""), ("load-all", 0, "")]
        if a.suite == "all":
            plan.insert(0, ("dataset", 0, ""))
        if n == sizes[-1]:  # throughput comparisons on the largest store
            plan = paths + plan
            if a.suite == "all":
                plan = ([("dataset", w, v) for w in workers for v in (("", "nocheck", "fresh", "gpu") if w else ("", "nocheck"))]
                        + [("h5py", w, "") for w in workers] + [("dataset", 0, "zarr")] + plan)
        for kind, w, variant in plan:
            r = run_child(kind, mat, store, rows, w, a.out, variant)
            entry["runs"].append(r)
            extra = f", load {r['load_s']:.2f}s" if r.get("load_s") is not None else ""
            if "resident_mib" in r:
                extra += f", resident {r['resident_mib']:.0f} MiB over {r['frames']:,} frames"
            if r.get("worker_peak_rss_mib"):
                extra += f", worker peak RSS {r['worker_peak_rss_mib']:.0f} MiB"
            label = f"{r['kind']}{'-' + variant.split('-')[1] if kind == 'path' else ''}"
            print(f"  {label:22s} workers={w}: {r['windows_per_s']:7.0f} windows/s wall, "
                  f"{r['cpu_windows_per_s']:7.0f} per CPU-second, peak RSS {r['peak_rss_mib']:.0f} MiB{extra}", flush=True)
        results["sizes"][str(n)] = entry
    c = results["checksum_cost"] = checksum_cost(store, rows)
    print(f"checksums, reads alone (one process, {c['reps']} alternations): {c['windows_per_cpu_s_with']:.0f} windows "
          f"per CPU-second with, {c['windows_per_cpu_s_without']:.0f} without: {100 * c['cost']:+.1f}% CPU", flush=True)
    results["mask_layouts"] = m = mask_layouts()
    print(f"masks, batch of 64 (64x64, one thread, half flipped): bytes {m['bytes_ms_per_batch']:.2f} ms, packed bits "
          f"{m['bits_ms_per_batch']:.2f} ms (8x less memory)")
    report(results, workers)
    with open(os.path.join(a.out, "bench_dataset.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {os.path.join(a.out, 'bench_dataset.json')}")


def report(results: dict[str, Any], workers: list[int]) -> None:
    """Print the ratios the targets are about (from the runs in ``results``)."""
    sizes = sorted(results["sizes"], key=int)
    runs = {(r["kind"], r["workers"]): r for r in results["sizes"][sizes[-1]]["runs"]}
    summary = []
    for w in workers:
        h5 = runs.get(("h5py", w))
        for kind in ("dataset", "dataset-fresh", "dataset-gpu"):
            ds = runs.get((kind, w))
            if ds is None or h5 is None:
                continue
            row = {"workers": w, "kind": kind, "wall": ds["windows_per_s"], "h5py_wall": h5["windows_per_s"],
                   "speedup_wall": ds["windows_per_s"] / h5["windows_per_s"],
                   "per_worker_cpu": ds["cpu_windows_per_s"], "h5py_per_worker_cpu": h5["cpu_windows_per_s"],
                   "speedup_cpu": ds["cpu_windows_per_s"] / h5["cpu_windows_per_s"]}
            summary.append(row)
            print(f"{kind:13s} workers={w}: {row['wall']:.0f}/s wall vs h5py {row['h5py_wall']:.0f}/s "
                  f"({row['speedup_wall']:.1f}x); per worker CPU-second {row['per_worker_cpu']:.0f} vs "
                  f"{row['h5py_per_worker_cpu']:.0f} ({row['speedup_cpu']:.1f}x)")
    for w in workers:  # what the checksum checks cost: the same loader with and without them
        on, off = runs.get(("dataset", w)), runs.get(("dataset-nocheck", w))
        if on and off:
            row = {"workers": w, "kind": "checksum-cost", "wall": 1 - on["windows_per_s"] / off["windows_per_s"],
                   "cpu": 1 - on["cpu_windows_per_s"] / off["cpu_windows_per_s"]}
            summary.append(row)
            print(f"checksums     workers={w}: {on['windows_per_s']:.0f}/s with, {off['windows_per_s']:.0f}/s without "
                  f"({100 * row['wall']:+.1f}% wall); per CPU-second {on['cpu_windows_per_s']:.0f} vs "
                  f"{off['cpu_windows_per_s']:.0f} ({100 * row['cpu']:+.1f}%)")
    paths = {(r["kind"], r["workers"], r.get("video_dtype")): r for r in results["sizes"][sizes[-1]]["runs"]
             if r["kind"].startswith("path-")}
    for dtype in ("uint8", "float32"):
        res, lazy1 = paths.get(("path-resident", 0, dtype)), paths.get(("path-lazy", 1, dtype))
        for w in workers:
            lz = paths.get(("path-lazy", w, dtype))
            if lz is not None:
                print(f"data path, {dtype} clips: lazy workers={w} {lz['windows_per_s']:,.0f}/s wall, "
                      f"{lz['cpu_windows_per_s']:,.0f} per CPU-second")
        if res is not None:
            ratio = res["cpu_windows_per_s"] / lazy1["cpu_windows_per_s"] if lazy1 else float("nan")
            print(f"data path, {dtype} clips: resident {res['windows_per_s']:,.0f}/s wall, {res['cpu_windows_per_s']:,.0f} "
                  f"per CPU-second = {ratio:.1f}x the lazy path per core (1 worker); load {res['load_s']:.1f}s")
            summary.append({"kind": "resident-vs-lazy", "video_dtype": dtype, "per_core_ratio": ratio})
    for n in sizes:
        e = results["sizes"][n]
        ds = [r for r in e["runs"] if r["kind"] == "dataset" and r["workers"] == 0]
        la = [r for r in e["runs"] if r["kind"] == "load-all"][0]
        rl = [r for r in e["runs"] if r["kind"] == "resident-load"][0]
        line = f"{int(n):,} frames ({e['mat_mib']:.0f} MiB MAT): "
        if ds:
            line += (f"dataset peak RSS {ds[0]['peak_rss_mib']:.0f} MiB "
                     f"(+{ds[0]['peak_rss_mib'] - ds[0]['start_rss_mib']:.0f} over start); ")
        print(line + f"load-all peak RSS {la['peak_rss_mib']:.0f} MiB (+{la['peak_rss_mib'] - la['start_rss_mib']:.0f}), "
              f"load {la['load_s']:.1f}s; resident load {rl['load_s']:.1f}s ({rl['load_cpu_s']:.1f} CPU s), "
              f"{rl['resident_mib']:.0f} MiB resident, peak RSS {rl['peak_rss_mib']:.0f} MiB "
              f"(+{rl['peak_rss_mib'] - rl['start_rss_mib']:.0f} over start)")
    results["summary"] = summary


if __name__ == "__main__":
    main()
