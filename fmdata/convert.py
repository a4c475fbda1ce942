"""Convert FMF sources (V1 MAT files, V2 folders) into a store of format v1, streaming and in parallel.

The work is cut into **units** (:mod:`fmdata.convert_units`), each a pure function call
``convert_unit(unit, store)`` that reads its frames (or current rows) from the sources by path,
writes whole shards (whole chunks for the current arrays) and returns the CRC-32C of every block
it wrote. Units never share a shard, so any number of processes (or dask.distributed tasks, see
:mod:`fmdata.convert_cluster`) can run them in any order.

The driver, :func:`convert`:

1. validates every source up front (:func:`fmdata.sources.open_sources`);
2. creates the store in a hidden staging sibling (``.<name>.partial-<id>``; URLs are written in
   place) with ``complete=False``, the recording provenance and the conversion plan;
3. runs the units in this process and ``workers - 1`` spawned ones (h5py serialises threads
   behind one lock, so parallel reading needs processes), recording each finished unit's
   checksums in a small ledger object inside the store, so ``--resume`` skips finished units
   after a crash or a kill;
4. gathers the checksums into each array's ``fmf_checksums`` attribute, drops the ledger, sets
   ``complete=True`` last and renames the staging folder onto the output.

Bad input raises :class:`FmDataError` and removes the staging store; an interruption keeps it
for ``--resume``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync

import fmdata
from fmdata import remote, schema, store
from fmdata.checksums import block_checksum, checksum_attr
from fmdata.convert_units import (  # noqa: F401  (re-exported: callers use fmdata.convert.<name>)
    CURRENT_AXIS, CURRENT_UNIT_ARRAYS, FRAME_AXIS, FRAME_UNIT_ARRAYS, MIN_UNITS, SHARD_BYTES_MAX, UNIT_BYTES,
    ConversionPlan, Piece, UnitResult, WorkUnit, close_cached, init_worker, convert_unit, default_chunking,
    expected_current_block, expected_frame_block, frame_streams, override_chunking, plan_conversion)
from fmdata.errors import FmDataError
from fmdata.sources import DEFAULT_FPS, open_sources  # noqa: F401  (open_sources re-exported)

ATTR_CONVERT = "fmf_convert"  # root attribute: the conversion plan (sources, chunking), for --resume
LEDGER_PREFIX = "fmf_convert_ledger"  # one small JSON object per finished unit, removed at the end


# ---- ledger of finished units --------------------------------------------------------------------
class Ledger:
    """Finished units of a conversion, one small JSON object per unit inside the store.

    Single objects written whole work the same on local folders and object stores, survive a
    kill at any point (a torn write leaves no object: LocalStore writes via rename) and need no
    locking between writers.
    """

    def __init__(self, root: zarr.Group) -> None:
        self._store = root.store
        self._proto = default_buffer_prototype()

    def record(self, result: UnitResult) -> None:
        """Persist one unit's result."""
        body = json.dumps({"key": result.key, "axis": result.axis, "rows": result.rows,
                           "checksums": result.checksums}).encode()
        sync(self._store.set(f"{LEDGER_PREFIX}/{result.key}.json", self._proto.buffer.from_bytes(body)))

    def load(self) -> dict[str, UnitResult]:
        """Return every recorded result by unit key."""
        keys = collect_aiterator(self._store.list_prefix(f"{LEDGER_PREFIX}/"))
        out = {}
        for k in keys:
            buf = sync(self._store.get(k, prototype=self._proto))
            if buf is None:
                continue
            d = json.loads(buf.to_bytes())
            out[d["key"]] = UnitResult(d["key"], d["axis"], int(d["rows"]),
                                       {n: [(int(b), int(c)) for b, c in v] for n, v in d["checksums"].items()})
        return out

    def clear(self) -> None:
        """Remove the ledger (after its content went into the arrays' attributes)."""
        sync(self._store.delete_dir(LEDGER_PREFIX))


# ---- driver ---------------------------------------------------------------------------------------
@dataclass
class ConvertReport:
    """What :func:`convert` did: where, how much, how long, and what a resume skipped."""

    store: str
    n_recordings: int
    n_frames: int
    n_current: int
    units: int
    units_resumed: int
    workers: int
    seconds: float
    source_bytes: int
    store_bytes: int
    chunking: store.Chunking

    def summary(self) -> str:
        """Return a one-paragraph human summary."""
        resumed = f", {self.units_resumed} of {self.units} units already done" if self.units_resumed else ""
        ratio = self.store_bytes / self.source_bytes if self.source_bytes else float("nan")
        return (f"wrote {self.store}: {self.n_recordings} recording(s), {self.n_frames} frames, "
                f"{self.n_current} current rows in {self.seconds:.1f} s with {self.workers} worker(s){resumed}; "
                f"store {self.store_bytes / 1e6:.1f} MB = {ratio:.2f} x source {self.source_bytes / 1e6:.1f} MB")


def _tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def _partials(out: str) -> list[str]:
    """Local staging folders left by earlier, unfinished conversions into ``out``."""
    path = remote.local_path(out)
    if path is None:
        return []
    head, tail = os.path.split(os.path.abspath(path).rstrip(os.sep))
    prefix = f".{tail}.partial-"
    try:
        return sorted(os.path.join(head, f) for f in os.listdir(head) if f.startswith(prefix))
    except OSError:
        return []


def _is_zarr_store(location: str, storage_options: dict | None) -> bool:
    return remote.exists(remote.join(location, "zarr.json"), storage_options)


def _is_partial(location: str, storage_options: dict | None) -> bool:
    """True when ``location`` holds an FMF store whose writer has not finished."""
    try:
        root = zarr.open_group(store=remote.zarr_store(location, "r", storage_options), mode="r", zarr_format=3)
        return not store.read_meta(root, location).complete
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError, FmDataError):
        return False


def _create(staging: str, plan: ConversionPlan, storage_options: dict | None) -> zarr.Group:
    root = zarr.open_group(store=remote.zarr_store(staging, "w", storage_options), mode="w-", zarr_format=3)
    first = plan.recordings[0]
    meta = schema.StoreMeta(n_frames=plan.n_frames, n_current=plan.n_current, n_recordings=len(plan.recordings),
                            height=first.height, width=first.width, fps=plan.fps, complete=False,
                            created_by=f"fmdata {fmdata.__version__} convert")
    root.attrs.update({schema.ATTR_STORE: meta.to_dict(),
                       schema.ATTR_RECORDINGS: [r.info().to_dict() for r in plan.recordings],
                       ATTR_CONVERT: plan.signature()})
    store.create_arrays(root, plan.n_frames, plan.n_current, first.height, first.width, len(plan.recordings),
                        plan.chunking)
    root[schema.RECORDING_FRAME_OFFSETS][:] = plan.frame_offsets
    root[schema.RECORDING_CURRENT_OFFSETS][:] = plan.current_offsets
    return root


def _open_partial(staging: str, plan: ConversionPlan, storage_options: dict | None) -> zarr.Group:
    try:
        root = zarr.open_group(store=remote.zarr_store(staging, "r+", storage_options), mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        raise FmDataError("expected an interrupted conversion to resume, got an unreadable folder; "
                          "remove it or use --overwrite", staging) from None
    if root.attrs.get(ATTR_CONVERT) != json.loads(json.dumps(plan.signature())):
        raise FmDataError("expected the interrupted conversion to use the same sources (unchanged) and chunking, "
                          "got different ones; use --overwrite to start again", staging)
    return root


def _finalise(root: zarr.Group, plan: ConversionPlan, results: dict[str, UnitResult]) -> None:
    """Move checksums from the ledger into array attributes, drop the ledger, set complete last."""
    by_array: dict[str, dict[int, int]] = {}
    for res in results.values():
        for name, pairs in res.checksums.items():
            by_array.setdefault(name, {}).update(dict(pairs))
    for name in FRAME_UNIT_ARRAYS + CURRENT_UNIT_ARRAYS:
        arr = root[name]
        block = int(arr.metadata.chunk_grid.chunk_shape[0])
        n = -(-arr.shape[0] // block)
        got = by_array.get(name, {})
        missing = [i for i in range(n) if i not in got]
        if missing:
            raise AssertionError(f"{name}: blocks {missing[:5]} were never written")
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(block, [got[i] for i in range(n)])})
    for name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        arr = root[name]
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(arr.shape[0], [block_checksum(arr[:])])})
    Ledger(root).clear()
    if isinstance(root.store, zarr.storage.LocalStore):  # temp files of writers killed mid-write
        for dirpath, _, files in os.walk(root.store.root):
            for f in files:
                if f.startswith(".") and f.endswith(".partial"):
                    os.unlink(os.path.join(dirpath, f))
    remote.set_complete(root, True)


# A runner calls fn(*a) for every a in args wherever it likes (processes, a dask cluster) and
# passes each result to on_result as it arrives; see fmdata.convert_cluster.
Runner = Callable[[Callable[..., Any], Sequence[tuple], Callable[[Any], None]], None]


def run_parallel(fn: Any, args: Sequence[tuple], workers: int, on_result: Any) -> None:
    """Call ``fn(*a)`` for every ``a`` in ``args`` on ``workers`` processes, passing each return
    value to ``on_result`` as it arrives.

    This process is one of the workers: it runs calls itself between collecting the results of
    ``workers - 1`` spawned children (each spawned process costs ~0.7 s of imports, and its
    memory). The children take calls from the front of the list, this process from the back.
    The first exception cancels what has not started, waits for what is running, and propagates.
    """
    todo = deque(args)
    if workers <= 1 or len(todo) <= 1:
        while todo:
            on_result(_in_this_process(fn, todo.popleft()))
        return
    children = min(workers - 1, len(todo) - 1)
    pool = ProcessPoolExecutor(max_workers=children, mp_context=mp.get_context("spawn"), initializer=init_worker)
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


def _in_this_process(fn: Any, a: tuple) -> Any:
    """Run one call here with blosc single-threaded (the other cores run the children)."""
    import numcodecs.blosc

    saved = numcodecs.blosc.use_threads
    numcodecs.blosc.use_threads = False
    try:
        return fn(*a)
    finally:
        numcodecs.blosc.use_threads = saved


def _run_units(units: list[WorkUnit], staging: str, storage_options: dict | None, workers: int,
               ledger: Ledger, results: dict[str, UnitResult], bar: Any, runner: Runner | None) -> None:
    def done(res: UnitResult) -> None:
        ledger.record(res)
        results[res.key] = res
        if res.axis == FRAME_AXIS:
            bar.update(res.rows)

    args = [(u, staging, storage_options) for u in units]
    if runner is not None:
        runner(convert_unit, args, done)
    else:
        run_parallel(convert_unit, args, workers, done)


def convert(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, workers: int | None = None,
            overwrite: bool = False, resume: bool = False, chunking: store.Chunking | None = None,
            chunk_frames: int | None = None, shard_frames: int | None = None,
            fps: float = DEFAULT_FPS, progress: bool = True,
            storage_options: dict | None = None, runner: Runner | None = None) -> ConvertReport:
    """Convert ``sources`` (V1 MAT files and/or V2 folders, in order) into a new store at ``out``.

    ``workers`` processes run the units: this one and ``workers - 1`` spawned children (default:
    the CPU count; a script that calls this with more than one worker needs the usual
    ``if __name__ == "__main__":`` guard of spawned multiprocessing). ``overwrite`` replaces an
    existing store (only a Zarr store; the old one stays until the new one is complete);
    ``resume`` continues an interrupted conversion into ``out`` without redoing finished units.
    ``chunking`` defaults to :func:`default_chunking`; ``chunk_frames`` / ``shard_frames``
    override its frame-axis lengths. ``fps`` is the V1 frame rate; ``progress``
    shows a tqdm bar (frames/s, ETA). ``runner`` runs the units elsewhere (a dask cluster, see
    :mod:`fmdata.convert_cluster`) instead of a local process pool. Returns a
    :class:`ConvertReport`. Raises FmDataError for bad sources or output paths, removing the
    partial store; an interruption (lost workers, Ctrl-C) keeps finished units for ``resume``.
    """
    t0 = time.perf_counter()
    out = os.fspath(out)
    workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
    recs = open_sources([os.fspath(s) for s in sources], fps)
    chunking = override_chunking(chunking or default_chunking(recs[0].height, recs[0].width), chunk_frames,
                                 shard_frames)
    plan = plan_conversion(recs, chunking, fps)
    exists = remote.exists(out, storage_options)
    resume_in_place = remote.is_url(out) and exists and resume and _is_partial(out, storage_options)
    if exists and not overwrite and not resume_in_place:
        raise FmDataError("expected a new output path, got one that exists; pass --overwrite to replace it", out)
    if exists and not _is_zarr_store(out, storage_options):
        raise FmDataError("refusing to replace something that is not a Zarr store", out)
    remote.check_writable_parent(out, storage_options)
    partials = _partials(out)
    staging, root = None, None
    if remote.is_url(out):
        if resume_in_place:
            staging, root = out, _open_partial(out, plan, storage_options)
        elif exists:
            remote.remove_store(out, storage_options)
    elif partials and resume:
        staging = partials[-1]
        root = _open_partial(staging, plan, storage_options)
        for other in partials[:-1]:
            remote.remove_store(other)
    elif partials and not overwrite:
        raise FmDataError(f"expected no interrupted conversion into this path, got {partials[-1]}; "
                          f"pass --resume to continue it or --overwrite to start again", out)
    else:
        for other in partials:
            remote.remove_store(other)
    if root is None:
        staging = remote.staging_location(out)
        try:
            root = _create(staging, plan, storage_options)
        except OSError as exc:
            _discard(staging, storage_options)
            raise FmDataError(f"expected to create the store, got {exc.strerror or exc}", out) from None
    assert staging is not None
    ledger = Ledger(root)
    results = ledger.load()
    todo = [u for u in plan.units if u.key not in results]
    done_frames = sum(r.rows for r in results.values() if r.axis == FRAME_AXIS)
    from tqdm.auto import tqdm

    bar = tqdm(total=plan.n_frames, initial=done_frames, unit="frame", unit_scale=True, desc="convert",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    try:
        if not store.read_meta(root, staging).complete:
            _run_units(todo, staging, storage_options, workers, ledger, results, bar, runner)
            _finalise(root, plan, results)
    except FmDataError:
        _discard(staging, storage_options)
        raise
    except (OSError, BrokenProcessPool) as exc:
        raise FmDataError(f"conversion stopped ({exc.__class__.__name__}: {exc}); finished units are kept in "
                          f"{staging}: run again with --resume", out) from None
    except KeyboardInterrupt:
        raise FmDataError(f"interrupted; finished units are kept in {staging}: run again with --resume", out) from None
    finally:
        bar.close()
        close_cached()
    if exists and not remote.is_url(out):
        remote.remove_store(out, storage_options)
    remote.publish(staging, out)
    local = remote.local_path(out)
    return ConvertReport(
        store=out, n_recordings=len(recs), n_frames=plan.n_frames, n_current=plan.n_current, units=len(plan.units),
        units_resumed=len(plan.units) - len(todo), workers=workers, seconds=time.perf_counter() - t0,
        source_bytes=sum(r.source_bytes for r in recs), store_bytes=_tree_bytes(local) if local else 0,
        chunking=plan.chunking)


def _discard(staging: str, storage_options: dict | None) -> None:
    try:
        remote.remove_store(staging, storage_options)
    except (OSError, FmDataError):
        pass
