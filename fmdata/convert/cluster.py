"""Run a conversion's units as tasks on a dask.distributed cluster (``fmdata convert --scheduler``).

:mod:`fmdata.convert.driver` cuts a conversion into units, each a pure call
``convert_unit(unit, location) -> UnitResult`` that reads its rows from the sources by path and
writes whole shards. This module only changes *where* those calls run:
:class:`ClusterRunner` submits them to a ``distributed.Client`` and hands each result back to
the driver as it arrives, so the driver keeps every guarantee of the local path unchanged:

* alignment: the plan (units on whole shards) does not depend on where units run, and
  ``convert_unit`` asserts the alignment on the worker;
* resume: the driver records each finished unit in the store's ledger as its result arrives;
  a lost client, scheduler or worker leaves finished units recorded and ``--resume`` redoes
  only the rest (a unit that ran twice writes the same bytes twice);
* checksums: units return the CRC-32C of every block they wrote, gathered by the driver.

What the cluster must provide, checked before any unit is submitted (one clear error if not):
every worker sees each source file by the same absolute path with the same size, and reaches
the store being written (a shared folder, or a URL such as ``s3://``; never ``memory://``,
which lives inside one process). The store's :class:`~fmdata.store.location.Location` was
resolved once on the client (explicit options, ``FMF_STORAGE_OPTIONS``, ``FMF_S3_ENDPOINT``...)
and travels with every task, so workers need no environment of their own; note that this ships
any credentials put into ``FMF_STORAGE_OPTIONS`` to the scheduler and workers.

Workers should run one thread each (``dask worker --nthreads 1``; h5py serialises threads
anyway): units of one worker process are run one at a time, because the per-process reader
cache of :mod:`fmdata.convert.units` is not shared safely between threads.
"""
from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fmdata.compute.dask_cluster import DaskOptions, dask_runner
from fmdata.convert.driver import ConvertReport, convert
from fmdata.errors import FmDataError
from fmdata.sources import DEFAULT_FPS
from fmdata.store.layout import DEFAULT_LAYOUT
from fmdata.store.location import Location, LocationLike

if TYPE_CHECKING:  # dask.distributed is imported where a cluster is used (see fmdata.compute.dask_cluster)
    from distributed import Client

_UNIT_LOCK = threading.Lock()
DRAIN_TIMEOUT_S = 120.0  # after a failure, how long to wait for units still running on workers


def _run_unit(fn: Callable[..., Any], *args: Any) -> Any:
    """Worker side: run one unit, one at a time per worker process."""
    with _UNIT_LOCK:
        return fn(*args)


def _processing(keys: Sequence[str], dask_scheduler: Any = None) -> list[str]:
    """Scheduler side: the keys among ``keys`` assigned to a worker (running or about to run)."""
    tasks = dask_scheduler.tasks
    return [k for k in keys if k in tasks and tasks[k].state == "processing"]


def _probe(files: Sequence[tuple[str, int]], location: Location | None) -> list[str]:
    """Worker side: return what this worker cannot see (sources by path and size, the store)."""
    problems = []
    for path, size in files:
        if not os.path.isfile(path):
            problems.append(f"{path}: expected the source file, got nothing at this path")
        elif os.path.getsize(path) != size:
            problems.append(f"{path}: expected {size} bytes as on the client, got {os.path.getsize(path)}")
    if location is not None:
        try:
            seen = location.join("zarr.json").exists()
        except Exception as exc:  # any failure to reach the store is the answer we report
            seen, why = False, f"{exc.__class__.__name__}: {exc}"
        else:
            why = "nothing there"
        if not seen:
            problems.append(f"{location}: expected the store being written, got {why}")
    return problems


def _unit_files(args: Sequence[tuple]) -> list[tuple[str, int]]:
    files: dict[str, int] = {}
    for a in args:
        for piece in getattr(a[0], "pieces", ()):
            for path, size, _mtime in piece.source.fingerprint:
                files[path] = size
    return sorted(files.items())


class ClusterRunner:
    """Runs unit calls ``fn(unit, location)`` on a ``distributed.Client``.

    Call it as ``runner(fn, args, on_result)``: it checks that every worker sees the sources and
    the store, submits one task per args tuple, calls ``on_result`` with each result as it
    arrives (in completion order), and returns when all are done. The first failing unit
    cancels the rest and raises: its own exception for bad data (FmDataError), ConnectionError
    when workers were lost (the driver then keeps finished units for ``--resume``).
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    @property
    def n_workers(self) -> int:
        """Return the number of workers the scheduler knows now."""
        return len(self.client.scheduler_info().get("workers", {}))

    def check_visibility(self, args: Sequence[tuple]) -> None:
        """Raise FmDataError naming the worker and path when a worker cannot see a source or the store."""
        if not args:
            return
        location: Location = args[0][1]
        answers = self.client.run(_probe, _unit_files(args), location)
        bad = [(w, p) for w, probs in sorted(answers.items()) for p in probs]
        if bad:
            worker, problem = bad[0]
            more = f" (and {len(bad) - 1} more problem(s))" if len(bad) > 1 else ""
            hint = " memory:// stores live inside one process;" if location.protocol == "memory" else ""
            raise FmDataError(f"expected every dask worker to see the sources and the store,{hint} "
                              f"got on worker {worker}: {problem}{more}")

    def __call__(self, fn: Callable[..., Any], args: Sequence[tuple], on_result: Callable[[Any], None]) -> None:
        from distributed import as_completed
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        args = list(args)
        if not args:
            return
        if self.n_workers == 0:
            raise FmDataError("expected a dask cluster with at least one worker, got none")
        self.check_visibility(args)
        run = uuid.uuid4().hex[:8]
        futures = [self.client.submit(_run_unit, fn, *a, key=f"fmf-unit-{getattr(a[0], 'key', i)}-{run}",
                                      pure=False) for i, a in enumerate(args)]
        try:
            for fut in as_completed(futures):
                try:
                    result = fut.result()
                except KilledWorker as exc:
                    raise ConnectionError(f"dask workers died running a unit ({exc})") from None
                except FutureCancelledError as exc:
                    raise ConnectionError(f"the cluster cancelled a unit ({exc})") from None
                on_result(result)
        except Exception:
            self._drain(futures)
            raise
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _drain(self, futures: list[Any], timeout: float = DRAIN_TIMEOUT_S) -> None:
        """After a failure: drop units not yet started and wait for those running to finish.

        The driver may delete the partial store next (bad input); a unit still writing would
        then leave stray shards behind. Nothing to do when the scheduler itself is gone.
        """
        from distributed import wait

        try:
            pending = [f for f in futures if not f.done()]
            running = set(self.client.run_on_scheduler(_processing, [f.key for f in pending]))
            self.client.cancel([f for f in pending if f.key not in running])
            wait([f for f in pending if f.key in running], timeout=timeout)
        except Exception:  # the cluster is unreachable or slow: nothing more we can do here
            pass


def convert_on_cluster(sources: Sequence[str | os.PathLike[str]], out: LocationLike, scheduler: str | Client, *,
                       overwrite: bool = False, resume: bool = False, chunk_frames: int | None = None,
                       shard_frames: int | None = None, fps: float = DEFAULT_FPS, progress: bool = True,
                       connect_timeout: str = "10s", mask_nonzero: bool = False,
                       layout: str = DEFAULT_LAYOUT) -> ConvertReport:
    """Convert ``sources`` into ``out`` with the units running on a dask.distributed cluster.

    ``scheduler`` is an address ("tcp://host:8786") or an open ``distributed.Client``. Sources
    are given as paths every worker sees; ``out`` is a shared path or a URL. The other options
    are those of :func:`fmdata.convert.driver.convert`, whose report (``workers`` being the
    cluster's worker count) is returned. ``connect_timeout`` bounds the wait for the scheduler.
    Raises FmDataError when the scheduler cannot be reached, has no workers, or a worker cannot
    see a source or the store.
    """
    target = Location.parse(out)
    sources = [os.path.abspath(os.fspath(s)) for s in sources]

    def run(client: Client) -> ConvertReport:
        runner = ClusterRunner(client)
        return convert(sources, target, workers=max(1, runner.n_workers), runner=runner, overwrite=overwrite,
                       resume=resume, chunk_frames=chunk_frames, shard_frames=shard_frames, fps=fps, progress=progress,
                       mask_nonzero=mask_nonzero, layout=layout)

    if not isinstance(scheduler, str):
        return run(scheduler)
    with dask_runner(DaskOptions(scheduler=scheduler, progress=progress, connect_timeout=connect_timeout)) as dr:
        assert dr.client is not None  # a scheduler address always gives a client
        return run(dr.client)

