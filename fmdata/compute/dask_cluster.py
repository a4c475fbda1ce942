"""Where Dask work runs, and a progress bar that works on every scheduler.

``dask_runner`` is a context manager that yields a :class:`Runner` for one of three places:

* neither ``workers`` nor ``scheduler``: dask's local threaded scheduler in this process;
* ``workers=N``: a ``distributed.LocalCluster`` of N single-threaded worker *processes*, started
  for the command and closed after it (one worker = one core; zarr's decode pool in each worker
  is limited to one thread so that N workers really means N cores);
* ``scheduler="tcp://host:port"``: an existing ``dask.distributed`` cluster (its workers must be
  able to import fmdata and to open the store by the same path or URL).

``Runner.compute(tasks)`` computes a list of independent delayed tasks (one per block) and shows a
tqdm bar with rate and ETA. Dask's own ``ProgressBar`` only works with local schedulers, so the
distributed path follows futures with ``as_completed`` and the local path uses a scheduler
callback; both count finished blocks, weighted by the caller (frames, bytes).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zarr
from tqdm.auto import tqdm

from fmdata.compute.processes import check_workers
from fmdata.errors import FmDataError

if TYPE_CHECKING:
    from distributed import Client


@dataclass(frozen=True)
class DaskOptions:
    """Where to run: ``workers`` (local worker processes), ``scheduler`` (address), or neither.

    ``memory_limit`` is per worker process ("auto", "2GiB", bytes); ``progress`` shows a bar;
    ``connect_timeout`` bounds the wait for an existing scheduler.
    """

    workers: int | None = None
    scheduler: str | None = None
    memory_limit: str | int = "auto"
    progress: bool = True
    connect_timeout: str = "10s"

    def __post_init__(self) -> None:
        if self.workers is not None and self.scheduler:
            raise FmDataError("expected either local workers or a scheduler address, got both", field="scheduler")
        if self.workers is not None:
            check_workers(self.workers)
        _check_memory_limit(self.memory_limit)


def _check_memory_limit(value: str | int) -> None:
    """Raise FmDataError (field memory_limit) unless ``value`` is one that dask.distributed reads:
    "auto", a number of bytes, a share of the machine's memory (0..1), or a size like "2GiB"."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        import dask.utils  # see dask_runner

        try:
            number = float(dask.utils.parse_bytes(str(value)))
        except (TypeError, ValueError):
            number = -1.0
    if not number >= 0:
        raise FmDataError(f"expected a memory limit like 2GiB, 4e9 (bytes), 0.5 (of the machine) or auto, "
                          f"got {value!r}", field="memory_limit")


def _prepare_worker(modules: Sequence[str]) -> None:
    """Run on each started worker: one zarr decode thread (one worker process is one core), and
    the modules that tasks will run imported up front rather than inside the first task."""
    for name in modules:
        importlib.import_module(name)
    zarr.config.set({"threading.max_workers": 1})


def _key_progress(bar: tqdm, weights: dict[Any, float]) -> Any:
    """Return a local-scheduler callback that advances ``bar`` by ``weights[key]`` when a watched
    key finishes (a dask ``Callback``, used as a context manager around ``dask.compute``)."""
    from dask.callbacks import Callback  # see dask_runner

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        weight = weights.get(key)
        if weight is not None:
            bar.update(weight)

    return Callback(posttask=posttask)


class Runner:
    """Computes lists of delayed tasks on the chosen scheduler, with progress.

    ``client`` is the ``distributed.Client`` (None on the local threaded scheduler);
    ``description`` says in words where work runs (shown by the CLI, kept in provenance).
    """

    def __init__(self, client: Client | None, description: str, progress: bool) -> None:
        self.client = client
        self.description = description
        self.progress = progress

    @property
    def n_workers(self) -> int:
        """Return the number of workers (threads of this process on the local scheduler)."""
        if self.client is None:
            import dask  # see dask_runner

            return int(dask.config.get("num_workers", None) or _cpu_count())
        return len(self.client.scheduler_info().get("workers", {}))

    def compute(self, tasks: Sequence[Any], desc: str, weights: Sequence[float] | None = None,
                unit: str = "block") -> list[Any]:
        """Compute ``tasks`` (dask delayed objects) and return their results in order.

        ``weights`` (one per task, e.g. frames) drive the progress bar; ``unit`` names them.
        Exceptions raised inside tasks are re-raised here.
        """
        tasks = list(tasks)
        if not tasks:
            return []
        w = [1.0] * len(tasks) if weights is None else [float(x) for x in weights]
        with tqdm(total=sum(w), desc=desc, unit=unit, unit_scale=True, disable=not self.progress,
                  dynamic_ncols=True, leave=True) as bar:
            if self.client is None:
                import dask  # see dask_runner

                with _key_progress(bar, {t.key: wi for t, wi in zip(tasks, w)}):
                    return list(dask.compute(*tasks, scheduler="threads"))
            from distributed import as_completed  # see dask_runner: imported only where a cluster runs

            futures = self.client.compute(tasks)
            weight_of = {f.key: wi for f, wi in zip(futures, w)}
            for fut in as_completed(futures):
                if fut.status == "error":
                    fut.result()  # raises the task's exception here, with its own message
                bar.update(weight_of[fut.key])
            return self.client.gather(futures)


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def dask_runner(options: DaskOptions = DaskOptions(), preload: Sequence[str] = ()) -> Iterator[Runner]:
    """Yield a :class:`Runner` for ``options``; a LocalCluster it started is closed on exit.

    ``preload`` names modules that local worker processes import as they start (the callers'
    task modules: this module never imports its clients). Raises FmDataError when the scheduler
    address cannot be reached.
    """
    if options.workers is None and not options.scheduler:
        yield Runner(None, f"local threads ({_cpu_count()})", options.progress)
        return
    # dask.distributed takes ~0.5 s to import, dask itself ~0.15 s: only processes that start or
    # join a cluster pay for distributed, only those that compute with Dask for dask. The converter
    # and its spawned workers import this module (convert can run on a cluster) but, running
    # locally, neither: a 1 GB --layout source conversion takes ~2 s, so 0.15 s per process counts.
    import dask
    from distributed import Client, LocalCluster

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=options.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise FmDataError(f"expected a reachable dask scheduler, got {exc.__class__.__name__}: {exc}",
                              options.scheduler) from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            yield Runner(client, f"scheduler {options.scheduler} ({n} workers)", options.progress)
        finally:
            client.close()
        return
    # distributed sets MALLOC_TRIM_THRESHOLD_ in workers, which turns off glibc's adaptive mmap
    # threshold: every block-sized buffer is then a fresh mmap, page-faulted anew (measured: 100x
    # the page faults and ~40% more CPU on a labels + stats scan). Our workers live for one
    # command and hold a few blocks at most, so they keep glibc's default.
    # Our tasks are independent blocks with tiny results: hand every worker its whole queue up
    # front instead of one task at a time, so a busy client process (the LocalCluster's
    # scheduler runs in it) never leaves workers idle between tasks.
    # Workers log a failed task with its traceback (ERROR); the client re-raises the task's own
    # one-line error, so their logs stay quiet below CRITICAL.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                          "distributed.scheduler.worker-saturation": float("inf")}):
        cluster = LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True,
                               memory_limit=options.memory_limit, dashboard_address=":0",
                               silence_logs=logging.CRITICAL)
    try:
        client = Client(cluster)
        try:
            client.run(_prepare_worker, tuple(preload))
            yield Runner(client, f"local cluster ({options.workers} worker processes)", options.progress)
        finally:
            client.close()
    finally:
        cluster.close()
