"""How fast can MATLAB's compressed chunks be copied at all? The copy core of ``--layout source`` (issue 20).

``fmdata convert --layout source`` copies every deflate chunk of a MAT file's video and mask into
the store with its CRC-32C. This benchmark times that core alone, outside the converter (no plan,
no store, no workers, no index): every chunk of the file's large chunked variables is read and
appended, followed by its 4-byte CRC-32C, to one file in ``--store-dir``, in two ways:

* ``lookup``: the converter's own code, :meth:`fmdata.sources.readers.RecordingReader.copied_chunks`
  over ranges of about a shard (``read_direct_chunk`` per chunk, HDF5 looking each one up in its
  B-tree, into one reused buffer; the mask's chunks inflated and checked as a conversion does),
  each chunk's CRC-32C put after it by :func:`fmdata.store.shards.with_crcs` (as a shard gets
  it), each range written as one piece;
* ``mapped``: every chunk's offset and size listed once with ``chunk_iter``, the file mapped
  with ``mmap`` and the chunks written straight from the mapping
  (:func:`fmdata.store.atomic.write_pieces`: no copy into a buffer of ours, no lookup per chunk).

Each way runs in a fresh process (``bench_convert.run_measured``), alternating, ``--repeat``
rounds; wall and CPU seconds (user + system) per round and the median. The floor of ``bench_convert.py`` (every element read and
decoded) is the yardstick the converter is measured against; this figure says how much of the
converter's time the copy itself must take.

    .venv/bin/python benchmarks/bench_chunk_copy.py --sizes-gb 1 --out bench-out/convert --store-dir /dev/shm
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

import google_crc32c
import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import make_source, run_measured

from fmdata.sources import open_reader, open_sources
from fmdata.sources.layouts import V1_VARIABLES
from fmdata.store import schema
from fmdata.store.atomic import write_pieces
from fmdata.store.layout import SOURCE_SHARD_FRAMES
from fmdata.store.shards import CRC_BYTES, with_crcs

WAYS = ("lookup", "mapped")


def copy_lookup(src: str, out: str) -> int:
    """Copy every chunk (and its CRC-32C) through the converter's reader; return the bytes copied."""
    (rec,) = open_sources([src])
    copied = 0
    with open_reader(rec) as reader, open(out, "wb") as sink:
        for array, spec in ((schema.VIDEO, rec.video), (schema.MASK, rec.mask)):
            assert spec.h5_chunks is not None, f"{spec.name}: {spec.copy_note}"
            rows = int(spec.h5_chunks[0])  # frames per chunk: every range starts on the file's grid
            step = rows * -(-SOURCE_SHARD_FRAMES // rows)  # as the converter rounds its shards
            for start in range(0, rec.n_frames, step):
                run = reader.copied_chunks(array, start, min(start + step, rec.n_frames), gap=CRC_BYTES)
                sink.write(with_crcs(run))  # before the next call reuses the buffer
                copied += int(run.sizes.sum())
    return copied


def copy_mapped(src: str, out: str) -> int:
    """Copy every chunk (and its CRC-32C) from a mapping of the file at the offsets ``chunk_iter`` lists."""
    with h5py.File(src, "r") as f, open(src, "rb") as raw:
        spans: list[tuple[int, int]] = []
        for variable in (V1_VARIABLES["video"], V1_VARIABLES["mask"]):  # what the source layout copies
            f[variable].id.chunk_iter(lambda info: spans.append((info.byte_offset, info.size)))
        with mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            # the views of the mapping live only inside this call: the mapping can close after it
            return _write_spans(out, np.frombuffer(mapped, np.uint8), spans)


def _write_spans(out: str, data: np.ndarray, spans: list[tuple[int, int]]) -> int:
    """Write ``data[offset:offset + size]`` and its CRC-32C for every span to ``out``; return the bytes copied."""
    def pieces() -> Any:
        for offset, size in spans:
            chunk = data[offset:offset + size]
            yield chunk
            yield int(google_crc32c.value(chunk)).to_bytes(4, "little")

    write_pieces(out, pieces())
    return sum(size for _, size in spans)


def _child(way: str, src: str, out: str) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    copied = (copy_lookup if way == "lookup" else copy_mapped)(src, out)
    os.unlink(out)
    print(json.dumps({"copied": copied, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}))


def measure(way: str, src: Path, out: Path) -> dict[str, Any]:
    """Run one way in a fresh process; its own timing, and the process's wall and CPU seconds."""
    run = run_measured([sys.executable, __file__, "_child", way, str(src), str(out)])
    return {**json.loads(run["stdout"]), "process_seconds": run["seconds"], "process_cpu_seconds": run["cpu_seconds"]}


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
