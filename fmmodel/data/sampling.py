"""Samplers and the DataLoader factory for :class:`fmmodel.data.dataset.FmfWindowDataset`.

Both samplers are deterministic for (seed, epoch): a run resumed at epoch ``e`` draws the same
order as an uninterrupted one. They optionally partition the order between DDP ranks (each rank
takes every ``num_replicas``-th index of a common order truncated to a multiple of
``num_replicas``, so every rank sees the same number of batches; use an unpadded partition for
evaluation). ``make_loader`` picks safe multiprocessing settings: zarr v3 runs an asyncio thread,
so workers start by "forkserver" (or "spawn"), never by plain fork.
"""
from __future__ import annotations

import abc
import functools
import multiprocessing
import os
import re
from collections.abc import Iterator
from typing import Any

import numcodecs.blosc
import numpy as np
import torch
import torch.utils.data

from fmdata.compute import exit_with
from fmdata.compute.processes import check_workers
from fmdata.errors import FmDataError, FmfError
from fmdata.store.failpoints import pause_point
from fmmodel.data.dataset import FmfWindowDataset, collate_windows
from fmmodel.errors import FmModelError

SAFE_CONTEXTS = ("forkserver", "spawn")


def check_loader_workers(workers: int) -> int:
    """Return ``workers`` when it is a count of DataLoader worker processes (0: load in this process)
    that :func:`fmdata.compute.processes.check_workers` allows; FmModelError (field ``workers``) otherwise."""
    try:
        return check_workers(workers, minimum=0)
    except FmDataError as exc:
        raise FmModelError(exc.message, field=exc.field) from None


class _EpochSampler(torch.utils.data.Sampler[int], abc.ABC):
    def __init__(self, n: int, seed: int, num_replicas: int, rank: int) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise FmModelError(f"expected 0 <= rank < num_replicas, got rank {rank} of {num_replicas}")
        self.n, self.seed, self.num_replicas, self.rank = n, int(seed), num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch``."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        # One stream per (seed, epoch): derived with numpy's SeedSequence, handed to torch.
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    @abc.abstractmethod
    def _order(self) -> torch.Tensor:
        """Return this epoch's order of item indices (before the rank partition)."""

    def _part(self, order: torch.Tensor) -> torch.Tensor:
        usable = len(order) // self.num_replicas * self.num_replicas
        return order[:usable][self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def indices(self) -> torch.Tensor:
        """Return this epoch's indices for this rank as one int64 tensor (what iterating yields)."""
        return self._part(self._order())

    def __len__(self) -> int:
        return self._count() // self.num_replicas

    def _count(self) -> int:
        return self.n


class ShuffleSampler(_EpochSampler):
    """A random permutation of ``range(n)`` per epoch, deterministic for (seed, epoch)."""

    def __init__(self, n: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(n, seed, num_replicas, rank)

    def _order(self) -> torch.Tensor:
        return torch.randperm(self.n, generator=self._generator())


class ClassBalancedSampler(_EpochSampler):
    """Draws ``num_samples`` indices per epoch with replacement, each class equally likely.

    ``labels`` are the items' class labels (``dataset.labels``); a window is drawn with
    probability proportional to 1 / (windows of its class). ``num_samples`` defaults to len(labels).
    """

    def __init__(self, labels: np.ndarray, num_samples: int | None = None, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        super().__init__(len(labels), seed, num_replicas, rank)
        if len(labels) == 0:
            raise FmModelError("expected at least one window to sample, got none")
        counts = np.bincount(labels)
        self.weights = torch.from_numpy(1.0 / counts[labels])
        self.num_samples = int(num_samples if num_samples is not None else len(labels))

    def _count(self) -> int:
        return self.num_samples

    def _order(self) -> torch.Tensor:
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self._generator())


def worker_init(worker_id: int, reuse_buffers: int = 0, zero_copy: bool = False, main_pid: int | None = None) -> None:
    """DataLoader worker set-up: one compute thread per worker (the workers are the parallelism).

    ``main_pid``: the process the loader belongs to; the worker ends as soon as it is gone (a
    SIGKILL of a training run's main process leaves no workers behind, and with them goes
    multiprocessing's forkserver, which waits for its clients). ``reuse_buffers`` > 0 makes this
    worker's copy of the dataset fill that many shared batch buffers round-robin instead of a
    fresh one per batch (see fmmodel.data.batches.SharedRing); it must exceed the loader's
    prefetch_factor. Batches are then copied out when the main process unpickles them, unless
    ``zero_copy`` (for loaders that pin, which copy anyway).
    """
    if main_pid is not None:
        exit_with(main_pid)
    torch.set_num_threads(1)
    numcodecs.blosc.use_threads = False
    info = torch.utils.data.get_worker_info()
    if reuse_buffers and info is not None and isinstance(info.dataset, FmfWindowDataset):
        info.dataset.reuse_buffers, info.dataset.zero_copy = reuse_buffers, zero_copy


def default_context() -> str:
    """Return the start method for workers: "forkserver" where the platform has it, else "spawn"."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def make_sampler(dataset: FmfWindowDataset, *, shuffle: bool = False, balanced: bool = False, seed: int | None = None,
                 num_replicas: int = 1, rank: int = 0) -> torch.utils.data.Sampler | None:
    """Return the sampler of an epoch-wise loader over ``dataset``, or None for the items in order.

    ``balanced`` gives a ClassBalancedSampler, ``shuffle`` a ShuffleSampler, both seeded with
    ``seed`` (default: the dataset's seed) and partitioned by ``num_replicas``/``rank``; more than
    one replica needs one of them.
    """
    seed = dataset.seed if seed is None else seed
    if balanced:
        return ClassBalancedSampler(dataset.labels, seed=seed, num_replicas=num_replicas, rank=rank)
    if shuffle:
        return ShuffleSampler(len(dataset), seed=seed, num_replicas=num_replicas, rank=rank)
    if num_replicas > 1:
        raise FmModelError("expected shuffle or balanced sampling (or a sampler) with num_replicas > 1, got none")
    return None


def sampler_indices(sampler: torch.utils.data.Sampler | None, n: int) -> np.ndarray:
    """Return the indices one pass of ``sampler`` yields (int64), or ``range(n)`` for None.

    Samplers with an ``indices()`` method (this module's and fmmodel.runtime.distributed's) give them as one
    tensor; any other sampler is iterated.
    """
    if sampler is None:
        return np.arange(n, dtype=np.int64)
    indices = getattr(sampler, "indices", None)
    if callable(indices):
        return np.asarray(torch.as_tensor(indices()).numpy(), dtype=np.int64)
    return np.fromiter(iter(sampler), dtype=np.int64)


def epoch_dependent(sampler: torch.utils.data.Sampler | None) -> bool:
    """True when ``sampler`` draws another order each epoch (so over time it may yield any item)."""
    return isinstance(sampler, _EpochSampler)


def make_loader(dataset: FmfWindowDataset, batch_size: int, workers: int = 0, *, shuffle: bool = False,
                balanced: bool = False, seed: int | None = None, drop_last: bool = False,
                sampler: torch.utils.data.Sampler | None = None, num_replicas: int = 1, rank: int = 0,
                pin_memory: bool | None = None, prefetch_factor: int = 4, persistent_workers: bool = True,
                context: str | None = None, zero_copy: bool | None = None,
                **kwargs: Any) -> WindowLoader:
    """Return a DataLoader over ``dataset`` with batched fetches and safe worker settings.

    ``shuffle`` uses a ShuffleSampler, ``balanced`` a ClassBalancedSampler (both seeded with
    ``seed``, default the dataset's seed, and partitioned by ``num_replicas``/``rank``); ``sampler``
    overrides both. ``pin_memory`` defaults to whether CUDA is available. With ``workers > 0`` the
    workers start by ``context`` ("forkserver" or "spawn"; plain "fork" is refused), stay alive
    between epochs (``persistent_workers``), end with this process however it ends (a SIGKILL
    included: :func:`fmdata.compute.exit_with`) and prefetch ``prefetch_factor`` batches each. Each
    worker fills ``prefetch_factor + 2`` shared batch buffers in turn (far fewer page faults than
    a fresh buffer per batch); the main process copies each batch out as it unpickles it, except
    with ``zero_copy``, which defaults to on exactly when batches are pinned for CUDA (the pin
    thread copies them anyway); set it by hand only if no batch is kept beyond the next two
    iterations. Call :func:`set_loader_epoch` before each epoch. Extra keyword arguments go to
    the DataLoader.
    """
    if batch_size < 1:
        raise FmModelError(f"expected a batch size >= 1, got {batch_size}", field="batch_size")
    check_loader_workers(workers)
    if sampler is None:
        sampler = make_sampler(dataset, shuffle=shuffle, balanced=balanced, seed=seed, num_replicas=num_replicas,
                               rank=rank)
    pin = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
    if zero_copy is None:
        zero_copy = pin and torch.cuda.is_available()
    options: dict[str, Any] = {}
    if workers > 0:
        context = context or default_context()
        if context not in SAFE_CONTEXTS:
            raise FmModelError(f"expected a worker start method in {SAFE_CONTEXTS} (fork can deadlock "
                               f"zarr's I/O thread), got {context!r}")
        options.update(multiprocessing_context=context, persistent_workers=persistent_workers,
                       prefetch_factor=prefetch_factor,
                       worker_init_fn=functools.partial(worker_init, reuse_buffers=prefetch_factor + 2,
                                                        zero_copy=bool(zero_copy), main_pid=os.getpid()))
    options.update(kwargs)
    return WindowLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=workers,
        collate_fn=collate_windows, drop_last=drop_last,
        pin_memory=pin, **options)


class WindowLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers' errors arrive as the worker raised them: one line.

    torch re-raises an exception from a worker process as the same type whose message is
    "Caught X in DataLoader worker process N." followed by the worker's whole traceback; the
    toolkit's own errors (FmDataError, FmModelError) are turned back into their one line here.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator over torch's iterator
        return _one_line_errors(super().__iter__(), self.num_workers > 0)


def _one_line_errors(batches: Iterator[Any], workers: bool = False) -> Iterator[Any]:
    try:
        for batch in batches:
            if workers:  # the workers are up and delivering: the reliability tests kill the run here
                pause_point("loader-running")
                workers = False
            yield batch
    except FmfError as exc:
        original = worker_error_line(str(exc))
        if original is None:
            raise
        # stop the workers now: the traceback keeps this iterator alive until the interpreter
        # exits, whose clean-up then warns about the workers' leaked semaphores
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        raise type(exc)(original) from None


_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_LAST_LINE = re.compile(r"^[\w.]+: (.+)$")


def worker_error_line(text: str) -> str | None:
    """Return the original message of an error torch re-raised from a DataLoader worker (None if
    ``text`` is not such a message): the last line of the worker's traceback, without its type."""
    if not _WORKER_ERROR.match(text):
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    found = _LAST_LINE.match(lines[-1].strip()) if lines else None
    return found.group(1) if found else None


def set_loader_epoch(loader: Any, epoch: int) -> None:
    """Set ``epoch`` on the loader's dataset (flip decisions) and sampler (order); call before iterating.

    ``loader`` is a DataLoader or anything else with ``dataset`` and ``sampler`` attributes (the
    resident batches of fmmodel.data.resident).
    """
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
