"""Single-process and DDP plumbing: device choice, process groups, sharding, gathering.

Multi-GPU runs are started by ``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). The backend is NCCL on CUDA and gloo on
the CPU (tests run two CPU processes). Only rank 0 logs, writes files and shows progress bars.

Evaluation shards windows with :class:`ShardSampler` (rank r takes windows r, r+W, r+2W, ...)
WITHOUT the padding that ``DistributedSampler`` adds, so no window is scored twice (a padded
sampler repeats windows, which metrics would count twice);
:class:`fmmodel.scoring.metrics.MetricSet` also drops repeated window keys as a second guard.
"""
from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from fmmodel.errors import FmModelError

if dist.is_available():
    # torch.distributed.nn binds the default group (group.WORLD) as a default argument value when it is first
    # imported, and DDP's construction imports it (through torch._dynamo). Imported after init_process_group, it
    # keeps the group alive past destroy_process_group: gloo's threads (and rank 0's TCPStore server) then run
    # into interpreter shutdown and are torn down there, in no set order. Imported here, before any group
    # exists, it binds None, and destroy_process_group joins them.
    import torch.distributed.nn


@dataclass(frozen=True)
class DistContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    owns_group: bool = False  # True when setup() created the process group (teardown destroys it)

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process is running."""
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """Return the torch device for "auto" | "cpu" | "cuda" (CUDA index = local rank)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise FmModelError("expected a CUDA device, got none (use the CPU)", field="device")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if name == "cpu":
        return torch.device("cpu")
    raise FmModelError(f"expected a device auto, cpu or cuda, got {name!r}", field="device")


def env_world() -> tuple[int, int, int]:
    """Return (rank, world_size, local_rank) from the launcher's environment (1 process if unset)."""
    try:
        return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as exc:
        raise FmModelError(f"expected integer RANK/WORLD_SIZE/LOCAL_RANK, got {exc}") from None


def setup(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """Join the process group the environment describes (if any) and return the context.

    Safe to call when a group already exists (e.g. set up by a caller that runs several
    commands in one process): it is used and left alone by :func:`teardown`. On CUDA the process
    binds to GPU ``LOCAL_RANK``.
    """
    rank, world, local = env_world()
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(device=dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    else:
        backend = dist.get_backend()
    return DistContext(rank=rank, world_size=world, local_rank=local, device=dev, backend=backend, owns_group=owns)


def teardown(ctx: DistContext) -> None:
    """Leave the process group that :func:`setup` created (one it found is left alone)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def log(ctx: DistContext, message: str) -> None:
    """Print ``message`` to stderr on rank 0 only."""
    if ctx.is_main:
        print(message, file=sys.stderr, flush=True)


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, ...`` of ``n``: every index on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def indices(self) -> torch.Tensor:
        """Return what iterating yields, as one int64 tensor."""
        return torch.arange(self.rank, self.n, self.world_size, dtype=torch.int64)


def all_gather_array(ctx: DistContext, arr: np.ndarray) -> np.ndarray:
    """Concatenate a 1-D numpy array over all ranks (rank order); lengths may differ."""
    if not ctx.distributed:
        return arr
    comm_dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    t = torch.from_numpy(np.ascontiguousarray(arr)).to(comm_dev)
    n = torch.tensor([t.numel()], device=comm_dev, dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=t.dtype, device=comm_dev)
    padded[: t.numel()] = t
    parts = [torch.zeros_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[: int(s)].cpu().numpy() for p, s in zip(parts, sizes)])


def all_reduce_sum(ctx: DistContext, values: list[float]) -> list[float]:
    """Sum a short list of floats over all ranks (float64 on the comm device)."""
    if not ctx.distributed:
        return list(values)
    comm_dev = ctx.device if ctx.backend == "nccl" else torch.device("cpu")
    t = torch.tensor(values, dtype=torch.float64, device=comm_dev)
    dist.all_reduce(t)
    return t.cpu().tolist()
