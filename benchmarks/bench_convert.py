"""Benchmark `fmdata convert` (issue 3): wall time against the read floor and two baselines, peak RSS, size.

One invocation measures everything side by side on the same synthetic V1 file (MATLAB-like
storage: deflate 3, chunks near 64 KiB, written by fmdata.synth), because the machine is
noisy and only ratios taken in one run mean anything. Every variant runs in its own child
process; the harness polls the RSS of that child and all its descendants (summed) every 20 ms.

* ``floor``: read every source element once with h5py in chunk-aligned blocks, one process;
* ``convert-1`` / ``convert-2``: ``fmdata convert --workers 1`` / ``--workers 2``, for each of
  ``--layouts`` (plain: decode and re-encode; source: MATLAB's chunks copied); the floor and each
  layout's ``convert-2`` alternate ``--repeat`` times and the median round is reported (all are
  kept), with CPU seconds (user + system of every process) beside wall and both as x floor;
* ``naive``: frame-by-frame h5py reads, each frame written with ``zarr_array[i] = frame`` into the
  same store layout made by zarr-python (one-frame chunks, no shards); run on the first
  ``--naive-frames`` frames and extrapolated linearly (it is linear and slow);
* ``mat73``: ``mat73.loadmat`` of the whole file, then zarr-python writes of the whole arrays
  with the converter's layout (one-frame chunks in shards); 1 GB only (it needs RAM for all).

For each ``--sizes-gb`` value a file of at least that size is generated once (kept for reruns
unless ``--clean``). The converted store is checked with ``fmdata verify`` (the plain store's
checksums; the copied store against its source, chunk by chunk) and its size compared with the
source. Results: OUT/bench_convert.json and a Markdown table on stdout.

``--layout`` instead measures the store layout choices (codecs, chunk and shard lengths) on a
sample of the same data: compressed size against the source, encode and decode CPU cost, and
random 10-frame-window reads (step 18) through stock zarr-python.

    .venv/bin/python benchmarks/bench_convert.py --sizes-gb 1 4 --out bench-out/convert   # the full run
    .venv/bin/python benchmarks/bench_convert.py --sizes-gb 0.05 --out /tmp/bc             # smoke test
    .venv/bin/python benchmarks/bench_convert.py --layout --out bench-out/convert          # layout table
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
FMDATA = str(Path(sys.executable).with_name("fmdata"))


# ---- child-process variants (run as: bench_convert.py _variant NAME SRC OUT [N]) ------------------
def _floor(*srcs: str) -> dict[str, Any]:
    """Read every element of every file once, in blocks aligned to each variable's chunk grid, in this process."""
    import h5py

    total = 0
    for src in srcs:
        with h5py.File(src, "r", rdcc_nbytes=64 << 20, rdcc_nslots=100_003) as f:
            for name in ("video", "label", "current", "train_test_index"):
                ds = f[name]
                step = ds.chunks[0] * max(1, (4 << 20) // max(1, ds.chunks[0] * ds[0:1].nbytes)) if ds.chunks else 4096
                for a in range(0, ds.shape[0], step):
                    total += ds[a:a + step].nbytes
    return {"bytes_read": total}


def _naive(src: str, out: str, limit: int) -> dict[str, Any]:
    """Frame by frame: h5py (default chunk cache) -> zarr-python, one frame per write."""
    import h5py
    import zarr

    from fmdata.store import schema
    from fmdata.store.layout import codecs_for

    with h5py.File(src, "r") as f:
        v, m = f["video"], f["label"]
        n, _, w, h = v.shape
        root = zarr.open_group(out, mode="w", zarr_format=3)
        video = root.create_array(schema.VIDEO, shape=(n, h, w, 3), chunks=(1, h, w, 3), dtype="uint8",
                                  dimension_names=schema.DIMS[schema.VIDEO], **codecs_for(schema.VIDEO))
        mask = root.create_array(schema.MASK, shape=(n, h, w), chunks=(1, h, w), dtype="uint8",
                                 dimension_names=schema.DIMS[schema.MASK], **codecs_for(schema.MASK))
        k = min(n, limit)
        for i in range(k):
            video[i] = v[i].transpose(2, 1, 0)
            mask[i] = m[i].T
    return {"frames_done": k, "frames_total": n}


def _mat73(src: str, out: str) -> dict[str, Any]:
    """Whole-file load with mat73, then zarr-python writes of whole arrays in the converter's layout."""
    import mat73
    import zarr

    from fmdata import store
    from fmdata.store import schema

    t0 = time.perf_counter()
    d = mat73.loadmat(src)
    t_load = time.perf_counter() - t0
    video = np.moveaxis(d["video"], 3, 0)  # MATLAB (H, W, 3, N) -> (N, H, W, 3)
    mask = np.moveaxis(np.asarray(d["label"], dtype=np.uint8), 2, 0)
    n, h, w, _ = video.shape
    root = zarr.open_group(out, mode="w", zarr_format=3)
    store.create_arrays(root, n, n, h, w, 1, store.Chunking(1, 256))
    root[schema.VIDEO][:] = video
    root[schema.MASK][:] = mask
    root[schema.CURRENT][:] = np.asarray(d["current"]).T
    root[schema.SPLIT][:] = np.asarray(d["train_test_index"]).reshape(-1).astype(np.int8)
    return {"load_seconds": t_load}


def _child_main(argv: list[str]) -> None:
    name, src = argv[0], argv[1]
    if name == "floor":
        res = _floor(*argv[1:])
    elif name == "naive":
        res = _naive(src, argv[2], int(argv[3]))
    elif name == "mat73":
        res = _mat73(src, argv[2])
    else:
        raise SystemExit(f"unknown variant {name}")
    print(json.dumps(res))


# ---- harness --------------------------------------------------------------------------------------
def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, peak summed RSS of the process tree (MiB) and its stdout."""
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not stop.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        total += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        pass
            except psutil.NoSuchProcess:
                break
            peak = max(peak, total)
            time.sleep(0.02)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    stop.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and every descendant it waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak / 2**20, "stdout": out.strip()}


def tree_bytes(path: Path) -> int:
    """Apparent size of all files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make_source(path: Path, target_bytes: int, seed: int = 0) -> dict[str, Any]:
    """Write a synthetic V1 file of at least ``target_bytes`` (MATLAB-like storage) unless it exists."""
    from fmdata import synth

    if path.exists() and path.stat().st_size >= target_bytes:
        return {"frames": None, "seconds": 0.0, "reused": True}
    probe = path.with_suffix(".probe.mat")
    synth.write_v1(probe, frames=2000, size=64, seed=seed, overwrite=True)
    per_frame = probe.stat().st_size / 2000
    probe.unlink()
    frames = int(math.ceil(target_bytes / per_frame * 1.01))
    t0 = time.perf_counter()
    synth.write_v1(path, frames=frames, size=64, seed=seed, overwrite=True, progress=True)
    return {"frames": frames, "seconds": time.perf_counter() - t0, "reused": False}


def bench_size(out: Path, size_gb: float, naive_frames: int, baselines: bool, repeat: int,
               store_dir: Path | None = None, layouts: tuple[str, ...] = ("plain", "source")) -> dict[str, Any]:
    src = out / f"source-{size_gb:g}GB.mat"
    gen = make_source(src, int(size_gb * 1e9))
    src_bytes = src.stat().st_size
    py = sys.executable
    me = str(Path(__file__).resolve())
    res: dict[str, Any] = {"size_gb": size_gb, "source": str(src), "source_bytes": src_bytes, "generated": gen,
                           "store_dir": str(store_dir or out), "layouts": list(layouts)}
    import h5py

    with h5py.File(src, "r") as f:
        n = int(f["video"].shape[0])
        res["frames"] = n
        res["source_chunks"] = {k: list(f[k].chunks or ()) for k in ("video", "label", "current")}
    # warm the page cache so that every variant reads from memory alike
    with open(src, "rb") as fh:
        while fh.read(64 << 20):
            pass

    def convert(workers: int, layout: str) -> dict[str, Any]:
        store_path = (store_dir or out) / f"store-{size_gb:g}GB-w{workers}-{layout}.zarr"
        shutil.rmtree(store_path, ignore_errors=True)
        r = run_measured([FMDATA, "convert", str(src), str(store_path), "--workers", str(workers), "--layout", layout,
                          "--no-progress", "--json"])
        r["store_bytes"] = tree_bytes(store_path)
        r["store"] = str(store_path)
        r["paths"] = json.loads(r["stdout"]).get("paths", {})
        return r

    # the floor and each layout's 2-worker conversion alternate `repeat` times: the rounds share the
    # machine's mood; the round with the median plain ratio is reported, all are kept
    rounds = []
    for _ in range(repeat):
        floor = run_measured([py, me, "_variant", "floor", str(src)])
        got = {}
        for layout in layouts:
            got[layout] = convert(2, layout)
            if len(rounds) < repeat - 1:
                shutil.rmtree(got[layout]["store"], ignore_errors=True)
        rounds.append((floor, got))
    ratios = [{lay: c["seconds"] / f["seconds"] for lay, c in got.items()} for f, got in rounds]
    first = layouts[0]
    best = sorted(range(len(rounds)), key=lambda i: ratios[i][first])[len(rounds) // 2]
    res["rounds"] = [{"floor_s": f["seconds"], "floor_cpu_s": f["cpu_seconds"],
                      **{f"{lay}_s": c["seconds"] for lay, c in got.items()},
                      **{f"{lay}_cpu_s": c["cpu_seconds"] for lay, c in got.items()},
                      **{f"{lay}_ratio": r[lay] for lay in got}} for (f, got), r in zip(rounds, ratios)]
    res["floor"] = rounds[best][0]
    for layout in layouts:
        res[f"convert-2-{layout}"] = rounds[best][1][layout]
        res[f"convert-2-{layout}"]["peak_rss_mib"] = max(got[layout]["peak_rss_mib"] for _, got in rounds)
    # verify: the plain store's checksums (as before); the copied store against its source, chunk by chunk
    for layout in layouts:
        store_path = rounds[-1][1][layout]["store"]
        cmd = [FMDATA, "verify", store_path, "--workers", "2", "--no-progress"]
        v = run_measured(cmd + (["--source", str(src)] if layout == "source" else []))
        res[f"verify-{layout}"] = {"seconds": v["seconds"], "cpu_seconds": v["cpu_seconds"], "output": v["stdout"],
                                   "with_source": layout == "source"}
        shutil.rmtree(store_path, ignore_errors=True)
    for layout in layouts:
        res[f"convert-1-{layout}"] = convert(1, layout)
        shutil.rmtree(res[f"convert-1-{layout}"]["store"], ignore_errors=True)
    res["load_average"] = os.getloadavg()
    if baselines:
        naive_out = out / f"naive-{size_gb:g}GB.zarr"
        r = run_measured([py, me, "_variant", "naive", str(src), str(naive_out), str(naive_frames)])
        info = json.loads(r["stdout"])
        r["frames_done"] = info["frames_done"]
        r["seconds_extrapolated"] = r["seconds"] * info["frames_total"] / max(1, info["frames_done"])
        res["naive"] = r
        shutil.rmtree(naive_out, ignore_errors=True)
        m_out = out / f"mat73-{size_gb:g}GB.zarr"
        r = run_measured([py, me, "_variant", "mat73", str(src), str(m_out)])
        r.update(json.loads(r["stdout"]))
        res["mat73"] = r
        shutil.rmtree(m_out, ignore_errors=True)
    return res


def table(results: list[dict[str, Any]]) -> str:
    """Markdown table of one run."""
    lines = ["| source | variant | wall s | x floor | CPU s (all processes) | CPU x floor | peak RSS MiB (tree) | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        floor = r["floor"]
        label = f"{r['source_bytes'] / 1e9:.2f} GB, {r['frames']} frames, store in {r.get('store_dir', '?')}"
        rows = [("floor (h5py, aligned blocks, 1 process)", floor, "")]
        for layout in r["layouts"]:
            for w in (2, 1):
                c = r[f"convert-{w}-{layout}"]
                v = r[f"verify-{layout}"]
                note = (f"store {c['store_bytes'] / 1e9:.3f} GB = {c['store_bytes'] / r['source_bytes']:.4f} x source"
                        + (f"; verify{' --source' if v['with_source'] else ''} {v['seconds']:.1f} s" if w == 2 else ""))
                rows.append((f"fmdata convert --layout {layout} --workers {w}", c, note))
        if "naive" in r:
            nv = r["naive"]
            rows.append(("naive frame-by-frame h5py -> zarr", {**nv, "seconds": nv["seconds_extrapolated"]},
                         f"extrapolated from {nv['frames_done']} frames ({nv['seconds']:.1f} s)"))
        if "mat73" in r:
            rows.append(("mat73.loadmat + zarr-python write", r["mat73"], f"load {r['mat73']['load_seconds']:.1f} s"))
        for name, m, note in rows:
            cpu = f"{m['cpu_seconds']:.1f} | {m['cpu_seconds'] / floor['cpu_seconds']:.2f}" if "cpu_seconds" in m else " | "
            lines.append(f"| {label} | {name} | {m['seconds']:.1f} | {m['seconds'] / floor['seconds']:.2f} | {cpu} | "
                         f"{m['peak_rss_mib']:.0f} | {note} |")
        for layout in r["layouts"]:
            rounds = ", ".join(f"{q[layout + '_s']:.1f}/{q['floor_s']:.1f} = {q[layout + '_ratio']:.2f}"
                               for q in r["rounds"])
            lines.append(f"| {label} | all rounds, --layout {layout} --workers 2 / floor (s) | {rounds} | | | | | load "
                         f"average after {', '.join(f'{x:.1f}' for x in r['load_average'])} |")
    return "\n".join(lines)


# ---- layout measurements ------------------------------------------------------------------------------
def layout(out: Path, frames: int = 3000, windows: int = 300) -> dict[str, Any]:
    """Measure codecs and chunk/shard lengths on synthetic frames (CPU seconds, so load matters less)."""
    import h5py
    import numcodecs
    import zarr
    from numcodecs import Blosc, GZip, Zstd
    from zarr.codecs import BloscCodec

    from fmdata import synth

    numcodecs.blosc.set_nthreads(1)
    src = out / "layout-source.mat"
    if not src.exists():
        synth.write_v1(src, frames=frames, size=64, seed=3)
    with h5py.File(src, "r") as f:
        video = np.ascontiguousarray(f["video"][()].transpose(0, 3, 2, 1))
        src_video = f["video"].id.get_storage_size()
        t = time.process_time()
        f["video"][()]
        inflate = video.nbytes / (time.process_time() - t) / 1e6
    n = len(video)
    codecs = {
        "blosc zstd2 noshuffle": lambda c: Blosc("zstd", 2, Blosc.NOSHUFFLE).encode(c),
        "blosc zstd2 bitshuffle": lambda c: Blosc("zstd", 2, Blosc.BITSHUFFLE).encode(c),
        "blosc zstd1 bitshuffle typesize 3": lambda c: Blosc("zstd", 1, Blosc.BITSHUFFLE, typesize=3).encode(c),
        "blosc zstd2 bitshuffle typesize 3": lambda c: Blosc("zstd", 2, Blosc.BITSHUFFLE, typesize=3).encode(c),
        "blosc zstd3 bitshuffle typesize 3": lambda c: Blosc("zstd", 3, Blosc.BITSHUFFLE, typesize=3).encode(c),
        "blosc zstd2 shuffle typesize 3": lambda c: Blosc("zstd", 2, Blosc.SHUFFLE, typesize=3).encode(c),
        "blosc lz4 bitshuffle typesize 3": lambda c: Blosc("lz4", 5, Blosc.BITSHUFFLE, typesize=3).encode(c),
        "zstd 3": lambda c: Zstd(3).encode(c),
        "gzip 3": lambda c: GZip(3).encode(c),
    }
    decoders = {"zstd 3": Zstd(3).decode, "gzip 3": GZip(3).decode}
    rows = []
    for cf in (1, 2, 4):
        for name, enc in codecs.items():
            t = time.process_time()
            blobs = [bytes(enc(video[a:a + cf])) for a in range(0, n, cf)]
            te = time.process_time() - t
            dec = decoders.get(name, numcodecs.blosc.decompress)
            t = time.process_time()
            for b in blobs:
                dec(b)
            td = time.process_time() - t
            size = sum(len(b) for b in blobs) + 16 * len(blobs)  # + the shard index entry
            rows.append({"chunk_frames": cf, "codec": name, "size_vs_source": size / src_video,
                         "encode_mb_s": video.nbytes / te / 1e6, "decode_us_per_frame": td / n * 1e6})
    # random windows (10 frames, step 18): through stock zarr-python, and through a reader that
    # fetches and decodes exactly the chunks needed (fmmodel.reader, what the training data set uses)
    try:
        from fmdata.store import LocalAxisReader
    except ImportError:  # pragma: no cover - fmmodel absent
        LocalAxisReader = None
    rng = np.random.default_rng(0)
    ends = rng.integers(9 * 18, n, windows)
    reads = []
    for cf, sf in ((1, 64), (1, 256), (1, 1024), (2, 256), (4, 256)):
        path = out / f"layout-{cf}-{sf}.zarr"
        shutil.rmtree(path, ignore_errors=True)
        arr = zarr.create_array(path, shape=video.shape, dtype="uint8", chunks=(cf, 64, 64, 3), shards=(sf, 64, 64, 3),
                                compressors=[BloscCodec(cname="zstd", clevel=2, shuffle="bitshuffle", typesize=3)])
        arr[:] = video
        arr = zarr.open_array(path, mode="r")
        row: dict[str, Any] = {"chunk_frames": cf, "shard_frames": sf,
                               "files": sum(1 for p in path.rglob("*") if p.is_file())}
        t = time.perf_counter()
        for e in ends[:50]:
            arr.get_orthogonal_selection((np.arange(e - 9 * 18, e + 1, 18),))
        row["zarr_windows_per_s"] = 50 / (time.perf_counter() - t)
        if LocalAxisReader is not None:
            rd = LocalAxisReader(str(path))
            t = time.process_time()
            for e in ends:
                rd.take(np.arange(e - 9 * 18, e + 1, 18))
            row["direct_windows_per_cpu_s"] = windows / (time.process_time() - t)
        reads.append(row)
        shutil.rmtree(path, ignore_errors=True)
    return {"frames": n, "source_video_bytes": src_video, "h5py_inflate_mb_s": inflate, "codecs": rows,
            "window_reads": reads}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_variant":
        _child_main(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 4.0])
    ap.add_argument("--out", default="bench-out/convert")
    ap.add_argument("--naive-frames", type=int, default=20000, help="frames the naive baseline converts (extrapolated)")
    ap.add_argument("--baselines-up-to-gb", type=float, default=1.5,
                    help="run the naive and mat73 baselines only for sizes up to this (mat73 holds the file in RAM)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="floor / 2-worker conversion pairs per size; the median pair is reported, all are kept")
    ap.add_argument("--store-dir", default=None,
                    help="write the converted stores here (e.g. /dev/shm, to leave out the disk's write cost)")
    ap.add_argument("--layouts", nargs="+", default=["plain", "source"], choices=["plain", "source"],
                    help="store layouts to convert into, each beside the floor in every round")
    ap.add_argument("--layout", action="store_true", help="measure codecs and chunk/shard lengths instead")
    ap.add_argument("--json-name", default="bench_convert.json", help="results file name inside --out")
    ap.add_argument("--clean", action="store_true", help="delete generated sources and stores afterwards")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.layout:
        res = layout(out)
        (out / "bench_layout.json").write_text(json.dumps(res, indent=2))
        print(f"h5py inflate of the source: {res['h5py_inflate_mb_s']:.0f} MB/s CPU")
        print("| chunk frames | codec | size / source | encode MB/s (CPU) | decode us/frame (CPU) |\n|---|---|---|---|---|")
        for r in res["codecs"]:
            print(f"| {r['chunk_frames']} | {r['codec']} | {r['size_vs_source']:.3f} | {r['encode_mb_s']:.0f} | "
                  f"{r['decode_us_per_frame']:.0f} |")
        print("\n| chunk frames | shard frames | windows/s, zarr-python (wall) | windows per CPU s, direct chunk reader "
              "| files |\n|---|---|---|---|---|")
        for r in res["window_reads"]:
            print(f"| {r['chunk_frames']} | {r['shard_frames']} | {r['zarr_windows_per_s']:.0f} | "
                  f"{r.get('direct_windows_per_cpu_s', float('nan')):.0f} | {r['files']} |")
        return
    results = []
    for gb in args.sizes_gb:
        r = bench_size(out, gb, args.naive_frames, baselines=gb <= args.baselines_up_to_gb, repeat=args.repeat,
                       store_dir=Path(args.store_dir) if args.store_dir else None, layouts=tuple(args.layouts))
        results.append(r)
        (out / args.json_name).write_text(json.dumps(results, indent=2))
        print(table([r]), flush=True)
    print("\n" + table(results))
    if args.clean:
        for p in out.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()


if __name__ == "__main__":
    main()
