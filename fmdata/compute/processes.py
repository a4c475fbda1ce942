"""Run independent calls on local worker processes, this process being one of them.

h5py serialises threads behind one lock and blosc/zstd hold the GIL in places, so parallel
reading and encoding needs processes. :func:`run_parallel` is the local runner of the converter
and of ``fmdata verify``; a runner with the same call signature can run the same calls on a
Dask cluster instead (:class:`fmdata.convert.cluster.ClusterRunner`). :func:`exit_with` is how
a worker process, these and fmmodel's DataLoader workers alike, ends with the process it works for.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import select
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import numcodecs.blosc

from fmdata.errors import FmDataError

# More worker processes than this many per CPU only add memory and switching: a larger count is
# a typo (--workers 100000 would start processes until memory ends), refused before any starts.
WORKERS_PER_CPU = 4

# A runner calls fn(*a) for every a in args wherever it likes (processes, a dask cluster) and
# passes each result to on_result as it arrives.
UnitRunner = Callable[[Callable[..., Any], Sequence[tuple], Callable[[Any], None]], None]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCH_SECONDS = 0.2  # how often a watch without a pidfd looks (platforms without pidfd_open)


def exit_with(pid: int) -> None:
    """Make this process end (SIGKILL) as soon as process ``pid`` is gone, however that ends.

    Workers call this first with the pid of the process they work for (convert's driver, a
    DataLoader's main process), so that a SIGKILL of that one process leaves no workers behind:
    nobody would read what they make, and they keep their memory. When ``pid`` is this process's
    parent the kernel sends the signal (Linux ``prctl(PR_SET_PDEATHSIG)``). Otherwise (a
    DataLoader worker's parent is multiprocessing's forkserver, which itself waits for its clients,
    the workers among them, to end), and where prctl is missing, a daemon thread waits for
    ``pid`` to end (on a pidfd, Linux 5.3+; else by polling). Already gone: this process ends now.
    """
    if pid == os.getppid():
        try:
            done = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0
        except (OSError, AttributeError):  # not Linux: watch instead
            done = False
        if done:
            if os.getppid() != pid:  # the parent ended before prctl took effect
                _end()
            return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        _end()
    except (OSError, AttributeError):  # no pidfds here: poll
        fd = -1
    threading.Thread(target=_watch, args=(pid, fd), name=f"exit-with-{pid}", daemon=True).start()


def _watch(pid: int, fd: int) -> None:
    """Wait until process ``pid`` ends (its pidfd ``fd`` turns readable; -1: poll), then end this one."""
    if fd >= 0:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # alive, and another user's
                pass
            time.sleep(_WATCH_SECONDS)
    _end()


def _end() -> None:
    """End this process as its parent-death signal would (no clean-up: nobody waits for it)."""
    os.kill(os.getpid(), signal.SIGKILL)


def init_worker(parent: int) -> None:
    """Worker start-up: die with ``parent`` (no orphan writers after a kill), leave Ctrl-C to it."""
    exit_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    numcodecs.blosc.use_threads = False  # one process per core already; no blosc thread pool or global lock


def run_parallel(fn: Callable[..., Any], args: Sequence[tuple], workers: int,
                 on_result: Callable[[Any], None]) -> None:
    """Call ``fn(*a)`` for every ``a`` in ``args`` on ``workers`` processes, passing each return
    value to ``on_result`` as it arrives.

    This process is one of the workers: it runs calls itself between collecting the results of
    ``workers - 1`` spawned children (each spawned process costs ~0.7 s of imports, and its
    memory). The children take calls from the front of the list, this process from the back.
    The first exception cancels what has not started, waits for what is running, and propagates.
    ``fn`` must be importable by name (children are spawned, not forked: zarr's I/O thread).
    """
    todo = deque(args)
    if workers <= 1 or len(todo) <= 1:
        while todo:
            on_result(_in_this_process(fn, todo.popleft()))
        return
    children = min(workers - 1, len(todo) - 1)
    pool = ProcessPoolExecutor(max_workers=children, mp_context=mp.get_context("spawn"), initializer=init_worker,
                               initargs=(os.getpid(),))
    try:
        pending: set[Future] = set()
        while todo or pending:
            while todo and len(pending) < 2 * children:  # one queued per child: never idle
                pending.add(pool.submit(fn, *todo.popleft()))
            if todo:
                on_result(_in_this_process(fn, todo.pop()))
            finished, pending = wait(pending, timeout=0 if todo else None, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_this_process(fn: Callable[..., Any], a: tuple) -> Any:
    """Run one call here with blosc single-threaded (the other cores run the children)."""
    saved = numcodecs.blosc.use_threads
    numcodecs.blosc.use_threads = False
    try:
        return fn(*a)
    finally:
        numcodecs.blosc.use_threads = saved


def check_workers(workers: int, *, minimum: int = 1) -> int:
    """Return ``workers`` when it is a count of worker processes from ``minimum`` to
    ``WORKERS_PER_CPU`` per CPU of this machine; FmDataError (field ``workers``) otherwise."""
    most = WORKERS_PER_CPU * (os.cpu_count() or 1)
    if not minimum <= workers <= most:
        raise FmDataError(f"expected at least {minimum} worker{'' if minimum == 1 else 's'} and at most {most} "
                          f"({WORKERS_PER_CPU} per CPU), got {workers}", field="workers")
    return int(workers)


def resolve_workers(workers: int | None, *, in_process: bool = False) -> int:
    """Return ``workers``, or the CPU count when None; FmDataError for fewer than one or more than
    :func:`check_workers` allows.

    ``in_process``: the data lives in this process only (a ``memory://`` store), so the work runs
    here: None gives 1, and more than one worker is an FmDataError (other processes cannot see it).
    """
    if workers is None:
        return 1 if in_process else (os.cpu_count() or 1)
    check_workers(workers)
    if in_process and workers > 1:
        raise FmDataError(f"expected 1 worker process for a store that lives in this process (memory://: other "
                          f"processes cannot see it), got {workers}", field="workers")
    return int(workers)
