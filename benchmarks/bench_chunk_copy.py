"""How fast can MATLAB's compressed chunks be copied at all? The copy core of ``--layout source`` (issue 20).

``fmdata convert --layout source`` copies every deflate chunk of a MAT file's video and mask into
the store with its CRC-32C. This benchmark times that core alone, outside the converter (no plan,
no store, no workers, no index): every chunk of the file's large chunked variables is read and
appended, followed by its 4-byte CRC-32C, to one file in ``--store-dir``, in two ways:

* ``lookup``: the converter's way, ``read_direct_chunk`` per chunk (HDF5 looks each one up in its
  B-tree) into one reused buffer, written with ``os.writev`` in groups of 512 pieces;
* ``mapped``: every chunk's offset and size listed once with ``chunk_iter``, the file mapped
  with ``mmap`` and the chunks written straight from the mapping with ``os.writev`` (no copy into
  a buffer of ours, no lookup per chunk).

Each way runs in a fresh process, alternating, ``--repeat`` rounds; wall and CPU seconds (user +
system) per round and the median. The floor of ``bench_convert.py`` (every element read and
decoded) is the yardstick the converter is measured against; this figure says how much of the
converter's time the copy itself must take.

    .venv/bin/python benchmarks/bench_chunk_copy.py --sizes-gb 1 --out bench-out/convert --store-dir /dev/shm
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import google_crc32c
import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import make_source

WAYS = ("lookup", "mapped")
IOV = 512  # pieces per writev call, as fmdata.store.atomic writes them
BUFFER = 1 << 20  # larger than any chunk MATLAB writes (at most 64 KiB)


def _chunked(f: h5py.File) -> list[h5py.Dataset]:
    """The file's chunked variables of more than a MiB (video and mask in a V1 file)."""
    return [d for d in f.values() if isinstance(d, h5py.Dataset) and d.chunks and d.nbytes > 1 << 20]


def _flush(fd: int, pieces: list[Any]) -> None:
    if pieces:
        os.writev(fd, pieces)
        pieces.clear()


def copy_lookup(src: str, out: str) -> int:
    """Copy every chunk (and its CRC-32C) with one ``read_direct_chunk`` per chunk; return the bytes copied."""
    copied, buf = 0, np.empty(BUFFER, np.uint8)
    with h5py.File(src, "r") as f, open(out, "wb") as sink:
        for ds in _chunked(f):
            grid = np.indices([-(-s // c) for s, c in zip(ds.shape, ds.chunks)]).reshape(ds.ndim, -1).T * ds.chunks
            item = int(np.prod(ds.chunks)) * ds.dtype.itemsize
            room = item + item // 64 + 64  # deflate's worst case for one chunk
            pos, pieces = 0, []
            for key in map(tuple, grid.tolist()):
                if pos + room > BUFFER or len(pieces) >= IOV:  # the buffer or the group is full: write it out
                    _flush(sink.fileno(), pieces)
                    pos = 0
                _, view = ds.id.read_direct_chunk(key, out=buf[pos:pos + room])
                chunk = buf[pos:pos + len(view)]
                pieces += [chunk, int(google_crc32c.value(chunk)).to_bytes(4, "little")]
                pos, copied = pos + len(view), copied + len(view)
            _flush(sink.fileno(), pieces)
    return copied


def copy_mapped(src: str, out: str) -> int:
    """Copy every chunk (and its CRC-32C) from a mapping of the file at the offsets ``chunk_iter`` lists."""
    with h5py.File(src, "r") as f, open(src, "rb") as raw, open(out, "wb") as sink:
        spans: list[tuple[int, int]] = []
        for ds in _chunked(f):
            ds.id.chunk_iter(lambda info: spans.append((info.byte_offset, info.size)))
        with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            # the views of the mapping live only inside this call: the mapping can close after it
            return _write_spans(sink.fileno(), np.frombuffer(mapped, np.uint8), spans)


def _write_spans(fd: int, data: np.ndarray, spans: list[tuple[int, int]]) -> int:
    """Write ``data[offset:offset + size]`` and its CRC-32C for every span to ``fd``; return the bytes copied."""
    pieces: list[Any] = []
    for offset, size in spans:
        chunk = data[offset:offset + size]
        pieces += [chunk, int(google_crc32c.value(chunk)).to_bytes(4, "little")]
        if len(pieces) >= IOV:
            _flush(fd, pieces)
    _flush(fd, pieces)
    return sum(size for _, size in spans)


def _child(way: str, src: str, out: str) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    copied = (copy_lookup if way == "lookup" else copy_mapped)(src, out)
    os.unlink(out)
    print(json.dumps({"copied": copied, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}))


def measure(way: str, src: Path, out: Path) -> dict[str, Any]:
    """Run one way in a fresh process; its own timing, and the process's wall and CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "_child", way, str(src), str(out)],
                          capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {**json.loads(done.stdout), "process_seconds": time.perf_counter() - t0,
            "process_cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child(*sys.argv[2:5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0], help="synthetic V1 sources to copy (GB)")
    ap.add_argument("--out", type=Path, required=True, help="folder of the sources (kept for reruns) and results")
    ap.add_argument("--store-dir", type=Path, default=None, help="where the copies go (default OUT; /dev/shm: no disk)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds, each way once per round")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sink_dir = args.store_dir or args.out
    results = []
    for size in args.sizes_gb:
        src = args.out / f"source-{size:g}GB.mat"
        make_source(src, int(size * 1e9))
        rounds = [{way: measure(way, src, sink_dir / f"copy-{way}.bin") for way in WAYS} for _ in range(args.repeat)]
        results.append({"source": str(src), "source_bytes": src.stat().st_size, "rounds": rounds})
        print(f"\n{src.stat().st_size / 1e9:.2f} GB source, copies in {sink_dir}, {args.repeat} rounds (median; every round)")
        print("| way | chunk bytes | copy wall s | copy CPU s | process wall s | process CPU s |")
        print("|---|---|---|---|---|---|")
        for way in WAYS:
            runs = [r[way] for r in rounds]
            cells = [f"{median(r[k] for r in runs):.2f} ({', '.join(f'{r[k]:.2f}' for r in runs)})"
                     for k in ("seconds", "cpu_seconds", "process_seconds", "process_cpu_seconds")]
            print(f"| {way} | {runs[0]['copied']:,} | " + " | ".join(cells) + " |")
    (args.out / "bench_chunk_copy.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
