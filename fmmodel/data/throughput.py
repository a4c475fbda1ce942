"""``fmmodel bench-data``: how fast the data path alone delivers training batches on this machine.

:func:`measure_data_path` opens the windows of one split of a store as the trainer does (flip
augmentation, a shuffled order, the preprocessing and clip dtype of the device), takes the data
path asked for (:mod:`fmmodel.data.paths`: lazy with N worker processes, resident, or auto), runs
one untimed pass (worker start-up, page cache) and times the next: windows per second of wall
time and per CPU-second of every process involved, with each batch's tensors moved onto the device
as training would. Items carry the clip, the current rows and the labelled frame's mask. Compare
``windows_per_s`` with the model's samples/s (``metrics.csv``) to see which one bounds training.
``benchmarks/bench_dataset.py`` measures through the same function.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil
import torch

from fmdata.store.handle import StoreLike
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.paths import BatchRequest, open_batches
from fmmodel.data.preprocessing import PREPROCESSING_REFERENCE, input_format
from fmmodel.data.sampling import ShuffleSampler, set_loader_epoch
from fmmodel.errors import FmModelError
from fmmodel.runtime import distributed as dd


@dataclass
class DataPathReport:
    """What :func:`measure_data_path` measured (wall and CPU time of the timed pass, the load)."""

    store: str
    windows: str
    split: str | None
    path: str
    device: str
    workers: int
    batch_size: int
    preprocessing: str
    video_dtype: str
    items: int
    passes: int
    batches: int
    seconds: float
    windows_per_s: float  # over every timed pass
    cpu_seconds: float
    windows_per_cpu_s: float | None
    warmup_seconds: float
    threads: int
    peak_rss_mib: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        return asdict(self)

    def summary(self) -> str:
        """Return the human summary: rates first, then what was measured."""
        per_cpu = "n/a" if self.windows_per_cpu_s is None else f"{self.windows_per_cpu_s:,.0f}"
        lines = [f"{self.windows_per_s:,.0f} windows/s ({per_cpu} per CPU-second) on the {self.path} data path, "
                 f"{self.device}: {self.items:,} windows of {self.store} ({self.windows}, split {self.split or 'all'}) "
                 f"x {self.passes} pass(es) in {self.batches} batches of {self.batch_size}, {self.preprocessing} preprocessing, "
                 f"{self.video_dtype} clips, {self.workers} worker(s), {self.threads} thread(s)"]
        lines.append(f"  timed pass {self.seconds:.2f} s, CPU {self.cpu_seconds:.2f} s (this process and its "
                     f"workers); warm-up pass {self.warmup_seconds:.2f} s; peak RSS {self.peak_rss_mib:,.0f} MiB")
        return "\n".join(lines)


def _cpu_seconds(proc: psutil.Process) -> float:
    """CPU seconds (user + system) of ``proc`` and its living children."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _peak_rss_mib() -> float:
    """Peak resident memory of this process (VmHWM where Linux reports it, else the current RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return psutil.Process().memory_info().rss / 2**20


def measure_data_path(store: StoreLike, windows: str, *, data: str = "lazy", workers: int = 0,
                      batch_size: int = 64, split: str | None = "train", rows: np.ndarray | None = None,
                      limit: int | None = None, seed: int = 0, preprocessing: str = PREPROCESSING_REFERENCE,
                      video_dtype: str | None = None, device: str = "auto", resident_budget: int | None = None,
                      threads: int | None = None, passes: int = 1, progress: bool = False) -> DataPathReport:
    """Time the data path alone over the windows of table ``windows`` of ``store``; return the report.

    ``split`` keeps one split's windows (None: all); ``rows`` then picks some of them, or ``limit``
    a seeded random sample of that many. ``data`` ("lazy", "resident", "auto"), ``workers`` and
    ``resident_budget`` choose the path as training does; ``video_dtype`` defaults to what the
    trainer uses on ``device`` (uint8 on CUDA with the reference preprocessing, else float32).
    ``threads`` sets torch's CPU threads in this process; ``passes`` timed passes follow the
    warm-up (more of them steady the CPU-time figure of a fast path). Raises FmModelError for bad
    values.
    """
    if passes < 1:
        raise FmModelError(f"expected passes >= 1, got {passes}", field="passes")
    if limit is not None and limit < 1:
        raise FmModelError(f"expected limit >= 1 windows, got {limit}", field="limit")
    if threads is not None:
        if threads < 1:
            raise FmModelError(f"expected threads >= 1, got {threads}", field="threads")
        torch.set_num_threads(threads)
    ctx = dd.DistContext(device=dd.resolve_device(device))
    dtype = video_dtype or input_format(preprocessing, ctx.device).video_dtype
    ds = FmfWindowDataset(store, windows, preprocessing=preprocessing, augment=True, seed=seed, split=split,
                          rows=rows, video_dtype=dtype)
    if rows is None and limit is not None and limit < len(ds):
        ds = ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), size=limit, replace=False)))
    if len(ds) == 0:
        raise FmModelError(f"expected windows in split {split!r}, got none", ds.store)
    sampler = ShuffleSampler(len(ds), seed=seed)
    (source,), choice = open_batches([BatchRequest(ds, batch_size, sampler)], data=data, budget=resident_budget,
                                     workers=workers, ctx=ctx, progress=progress)
    cuda = ctx.device.type == "cuda"

    def one_pass(epoch: int) -> tuple[float, int, int]:
        set_loader_epoch(source, epoch)
        t0 = time.perf_counter()
        n = batches = 0
        for batch in source:  # on the device, as training takes them
            moved = {k: v.to(ctx.device, non_blocking=True) for k, v in batch.items()}
            n += int(moved["label"].shape[0])
            batches += 1
        if cuda:
            torch.cuda.synchronize(ctx.device)
        return time.perf_counter() - t0, n, batches

    warm, _, _ = one_pass(0)
    me = psutil.Process()
    cpu0 = _cpu_seconds(me)
    seconds = 0.0
    n = batches = 0
    for epoch in range(1, passes + 1):
        dt, k, b = one_pass(epoch)
        seconds, n, batches = seconds + dt, n + k, batches + b
    cpu = _cpu_seconds(me) - cpu0
    return DataPathReport(
        store=ds.store, windows=windows, split=split, path=choice.path, device=str(ctx.device),
        workers=choice.workers, batch_size=batch_size, preprocessing=preprocessing, video_dtype=dtype, items=len(ds),
        passes=passes, batches=batches, seconds=seconds, windows_per_s=n / seconds if seconds > 0 else float("inf"),
        cpu_seconds=cpu, windows_per_cpu_s=n / cpu if cpu > 0 else None, warmup_seconds=warm,
        threads=torch.get_num_threads(), peak_rss_mib=_peak_rss_mib(), data=choice.to_dict())
