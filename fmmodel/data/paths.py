"""Which data path feeds a model, and the one interface the trainer and scorers read batches through.

Two paths deliver identical batches (same windows, order, flips and values):

* ``lazy``: :class:`~fmmodel.data.dataset.FmfWindowDataset` through a DataLoader
  (:func:`fmmodel.data.sampling.make_loader`): every batch decoded from the store by worker processes;
  memory does not grow with the data.
* ``resident``: :class:`~fmmodel.data.resident.ResidentWindows` loaded once onto the training device,
  each batch a gather there (:class:`~fmmodel.data.resident.ResidentLoader`); no workers.

``auto`` (the default) takes the resident path when everything the run's datasets need fits the
resident budget: by default :data:`RESIDENT_SHARE` of the free CUDA memory of the device, or of
the available RAM on the CPU (shared by the processes of one node under DDP), and the lazy path
otherwise. :func:`open_batches` is the one place that makes this choice, logs it (rank 0) and
returns a :class:`BatchSource` per request with a :class:`DataChoice` that runs record
(``config.json``, evaluation reports). Under DDP every rank holds what its own sampler can draw
(the whole training set: its share of a shuffled epoch changes every epoch), and the ranks agree
on one path.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import psutil
import torch
from torch.utils.data import Sampler

from fmdata.compute.memory import format_bytes
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.resident import ResidentLoader, ResidentPlan, ResidentWindows, check_resident_budget
from fmmodel.data.sampling import epoch_dependent, make_loader, sampler_indices
from fmmodel.errors import FmModelError
from fmmodel.protocol import DATA_PATHS
from fmmodel.runtime import distributed as dd

# Share of the free device memory (CUDA) or of the available RAM (CPU) that ``auto`` lets resident
# data take: the rest is for the model, its activations and optimizer state, and everything else.
RESIDENT_SHARE = 0.5


class BatchSource(Protocol):
    """What the trainer and :func:`fmmodel.scoring.inference.run_inference` read: a DataLoader or a
    ResidentLoader. Iterating gives one pass of batch dicts; ``len`` is its number of batches."""

    dataset: Any
    sampler: Any

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class BatchRequest:
    """One source of batches a command needs: ``dataset`` drawn by ``sampler`` (None: in order).

    ``evaluation`` sources are read once per call (the lazy path does not keep their workers
    between passes).
    """

    dataset: FmfWindowDataset
    batch_size: int
    sampler: Sampler | None = None
    evaluation: bool = False
    drop_last: bool = False

    def items(self) -> np.ndarray | None:
        """Return the dataset positions this request can ever draw (None: any of them)."""
        if self.sampler is None or epoch_dependent(self.sampler):
            return None
        return np.unique(sampler_indices(self.sampler, len(self.dataset)))


@dataclass
class DataChoice:
    """The data path a command took and why; ``to_dict`` is what runs and reports record.

    ``requested`` is ``--data``; ``path`` "resident" or "lazy"; ``need_bytes`` what the resident
    copy takes (or would take) on this rank; ``budget_bytes`` and ``budget_source`` the budget
    ``auto`` compared it with; ``resident`` what was loaded (per source: bytes, load seconds,
    device memory allocated) when resident.
    """

    requested: str
    path: str
    reason: str
    device: str
    need_bytes: int
    budget_bytes: int | None
    budget_source: str
    workers: int
    resident: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the choice as a JSON-able dict."""
        return asdict(self)

    def summary(self) -> str:
        """Return the one-line account of the choice (and of the load, once resident)."""
        line = f"data: {self.path} ({self.reason})"
        if self.path == "lazy":
            return line + f"; {self.workers} loader worker(s)"
        if self.resident:
            seconds = sum(r["load_seconds"] for r in self.resident)
            used = [r["device_bytes_allocated"] for r in self.resident]
            mem = (f"; device memory allocated {format_bytes(sum(used))}" if all(u is not None for u in used) else "")
            line += f"; loaded {format_bytes(self.need_bytes)} onto {self.device} in {seconds:.1f} s{mem}; no loader workers"
        return line


def default_budget(device: torch.device) -> tuple[int, str]:
    """Return (bytes, how they were found): :data:`RESIDENT_SHARE` of free CUDA memory on a GPU,
    else of the available RAM divided by the processes of this node (``LOCAL_WORLD_SIZE``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * RESIDENT_SHARE), f"{RESIDENT_SHARE:.0%} of the free memory of {device} ({format_bytes(free)})"
    available = psutil.virtual_memory().available
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    share = f" / {local} processes" if local > 1 else ""
    return (int(available * RESIDENT_SHARE / local),
            f"{RESIDENT_SHARE:.0%} of the available RAM ({format_bytes(available)}){share}")


def choose_data_path(data: str, need_bytes: int, device: torch.device, budget: int | None,
                     ctx: dd.DistContext | None = None, workers: int = 0) -> DataChoice:
    """Decide between the resident and the lazy path for ``need_bytes`` of resident data.

    ``data`` is "resident", "lazy" or "auto"; ``budget`` (bytes) replaces :func:`default_budget`.
    Under DDP (``ctx``) ``auto`` goes resident only when it fits on every rank.
    """
    if data not in DATA_PATHS:
        raise FmModelError(f"expected a data path in {DATA_PATHS}, got {data!r}", field="data")
    check_resident_budget(budget)
    if budget is None:
        budget, source = default_budget(device)
    else:
        source = "--resident-budget"
    fits = need_bytes <= budget
    if ctx is not None and ctx.distributed:  # one path for every rank
        fits = dd.all_reduce_sum(ctx, [0.0 if fits else 1.0])[0] == 0
    sizes = f"needs {format_bytes(need_bytes)}, budget {format_bytes(budget)}: {source}"
    if data == "auto":
        path = "resident" if fits else "lazy"
        reason = f"auto: {sizes}" + ("" if fits else (" on some rank" if ctx is not None and ctx.distributed else ""))
    else:
        path, reason = data, f"requested; {sizes}"
    return DataChoice(requested=data, path=path, reason=reason, device=str(device), need_bytes=int(need_bytes),
                      budget_bytes=int(budget), budget_source=source, workers=0 if path == "resident" else workers)


def open_batches(requests: Sequence[BatchRequest], *, data: str, budget: int | None, workers: int,
                 ctx: dd.DistContext, progress: bool = False) -> tuple[list[BatchSource], DataChoice]:
    """Return one :class:`BatchSource` per request, on the path ``data`` chooses, and the choice.

    ``data``: "auto", "resident" or "lazy"; ``budget``: bytes for ``auto`` (None: the default);
    ``workers``: DataLoader processes of the lazy path. The resident path loads every request's
    data onto ``ctx.device`` now (a progress bar with ``progress`` on rank 0). Logs the choice.
    """
    plans = [ResidentPlan.of(r.dataset, r.items()) for r in requests]
    choice = choose_data_path(data, sum(p.total_bytes for p in plans), ctx.device, budget, ctx, workers)
    sources: list[BatchSource] = []
    if choice.path == "lazy":
        dd.log(ctx, choice.summary())
        pin = ctx.device.type == "cuda"
        for r in requests:
            sources.append(make_loader(r.dataset, r.batch_size, workers, sampler=r.sampler, pin_memory=pin,
                                       drop_last=r.drop_last, persistent_workers=not r.evaluation))
        return sources, choice
    for r, plan in zip(requests, plans):
        windows = ResidentWindows.load(r.dataset, ctx.device, items=plan.items, plan=plan,
                                       progress=progress and ctx.is_main)
        choice.resident.append(windows.describe())
        sources.append(ResidentLoader(r.dataset, windows, r.batch_size, r.sampler, drop_last=r.drop_last))
    dd.log(ctx, choice.summary())
    return sources, choice
