"""Convert FMF sources (V1 MAT files, V2 folders) into a store (format version 2), streaming and in parallel.

The work is cut into **units** (:mod:`fmdata.convert.plan`), each a pure function call
``convert_unit(unit, location)`` (:mod:`fmdata.convert.units`) that reads its rows from the
sources by path, writes whole shards and returns the CRC-32C of every block it wrote. Units
never share a shard, so any number of processes (or dask.distributed tasks, see
:mod:`fmdata.convert.cluster`) can run them in any order.

The driver, :func:`convert`:

1. validates every source up front (:func:`fmdata.sources.open_sources`);
2. creates the store in a hidden staging sibling (``.<name>.partial-<id>``; URLs are written in
   place) with ``complete=False``, the recording provenance and the conversion plan;
3. runs the units in this process and ``workers - 1`` spawned ones
   (:func:`fmdata.compute.run_parallel`), recording each finished unit's checksums in the
   store's ledger (:mod:`fmdata.convert.ledger`), so ``--resume`` skips finished units after a
   crash or a kill;
4. gathers the checksums into each array's ``fmf_checksums`` attribute, drops the ledger, sets
   ``complete=True`` last and renames the staging folder onto the output (an old store there is
   renamed aside first and deleted last, :func:`fmdata.store.atomic.place`).

All of it runs under the output's writer lock (:mod:`fmdata.store.lock`): a second writer of the
same OUT fails at once, naming the first. Holding it, the driver first repairs what a killed
writer left: an old store renamed aside while OUT is missing is moved back, other hidden
leftovers are deleted. OUT that is a symbolic link is refused (a store is replaced by renaming,
which would replace the link, not the store it points to).

Bad input raises :class:`FmDataError` and removes the staging store; an interruption keeps it
for ``--resume``.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import zarr
from tqdm.auto import tqdm

from fmdata.compute.memory import format_bytes
from fmdata.compute.processes import UnitRunner, resolve_workers, run_parallel
from fmdata.convert.ledger import Ledger
from fmdata.convert.plan import (
    FRAME_AXIS,
    ConversionPlan,
    UnitResult,
    WorkUnit,
    plan_conversion,
)
from fmdata.convert.units import close_cached, convert_unit
from fmdata.errors import FmDataError, Interrupted
from fmdata.sources import DEFAULT_FPS, RecordingSource, is_source, open_sources
from fmdata.store import schema
from fmdata.store.access import read_meta
from fmdata.store.atomic import is_temporary, leftovers, remove_tree
from fmdata.store.checksums import COVERS_SHARD_FILE, COVERS_VALUES, block_checksum, checksum_attr
from fmdata.store.derived import recover as recover_switches
from fmdata.store.layout import DEFAULT_LAYOUT, Chunking, create_arrays, default_chunking, override_chunking
from fmdata.store.location import Location, LocationLike, set_complete
from fmdata.store.lock import writer_lock
from fmdata.store.outputs import check_apart, output_exists, refusal
from fmdata.version import __version__

ATTR_CONVERT = "fmf_convert"  # root attribute: the conversion plan (sources, chunking), for --resume
# root attribute of a partial store started with --overwrite: --resume then finishes the replacement
ATTR_REPLACES = "fmf_convert_replaces"


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
    chunking: Chunking
    layout: str = schema.LAYOUT_PLAIN
    paths: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """Return a human summary: one paragraph, then how video and mask were written."""
        resumed = f", {self.units_resumed} of {self.units} units already done" if self.units_resumed else ""
        ratio = self.store_bytes / self.source_bytes if self.source_bytes else float("nan")
        lines = [f"wrote {self.store}: {self.n_recordings} recording(s), {self.n_frames} frames, "
                 f"{self.n_current} current rows in {self.seconds:.1f} s with {self.workers} worker(s){resumed}; "
                 f"store {format_bytes(self.store_bytes)} = {ratio:.2f} x source {format_bytes(self.source_bytes)}"]
        lines += [f"  {name}: {path}" for name, path in self.paths.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        d = {k: v for k, v in vars(self).items() if k != "chunking"}
        d["chunking"] = self.chunking.to_dict()
        return d


def _tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total




def _peek(location: Location) -> tuple[zarr.Group, schema.StoreMeta] | None:
    """Open the store at ``location`` read-only: (root group, its StoreMeta), or None when no
    readable FMF store is there."""
    try:
        root = zarr.open_group(store=location.zarr_store("r"), mode="r", zarr_format=3)
        return root, read_meta(root, str(location))
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError, FmDataError):
        return None


def _is_partial(location: Location) -> bool:
    """True when ``location`` holds an FMF store whose writer has not finished."""
    found = _peek(location)
    return found is not None and not found[1].complete


def _refuse_link(target: Location) -> None:
    """Raise FmDataError when OUT is itself a symbolic link (to a store, or dangling)."""
    real = target.link_target()
    if real is None:
        return
    if not os.path.exists(real):
        raise FmDataError(f"expected OUT to be a new path or a store, got a symbolic link to {real}, which does "
                          f"not exist; remove the link or give another path", str(target))
    raise FmDataError(f"expected OUT to be the store's own path, got a symbolic link to {real}; a store is "
                      f"replaced by renaming, which would replace the link and not the store: give {real} itself",
                      str(target))


def _recover(target: Location) -> None:
    """Repair what a writer killed while replacing or removing the local store ``target`` left behind.

    Called with the writer lock held. An old store renamed aside while ``target`` is missing (a
    kill between the two renames of a replacement) is complete: it is moved back. A switch of
    derived arrays that a killed writer journalled is finished
    (:func:`fmdata.store.derived.recover`). Every other hidden ``.old-``/``.tmp-`` sibling is a
    half-deleted leftover and is deleted.
    """
    path = target.local_path
    if path is None:
        return
    if not os.path.lexists(path):
        for old in leftovers(path, ("old",)):
            if old.is_dir() and _is_complete(Location(str(old))):
                os.replace(old, path)
                break
    if os.path.isdir(path):  # derived data: a switch a killed writer journalled is finished first
        recover_switches(os.path.realpath(path))
    for stale in leftovers(path):
        remove_tree(stale)
    # abandoned partial stores renamed aside to be deleted: ..<name>.partial-<id>.old-<pid>-<hex>
    head, tail = os.path.split(os.path.abspath(path).rstrip(os.sep))
    trash = re.compile(rf"^\.\.{re.escape(tail)}\.partial-.+\.old-\d+-[0-9a-f]{{8}}$")
    for name in os.listdir(head):
        if trash.match(name):
            remove_tree(os.path.join(head, name))


def _is_complete(location: Location) -> bool:
    found = _peek(location)
    return found is not None and found[1].complete


def _create(staging: Location, plan: ConversionPlan, replaces: bool = False) -> zarr.Group:
    root = staging.open_group("w-")
    first = plan.recordings[0]
    layouts = {name: schema.LAYOUT_SOURCE for name in plan.copied}
    meta = schema.StoreMeta(n_frames=plan.n_frames, n_current=plan.n_current, n_recordings=len(plan.recordings),
                            height=first.height, width=first.width, fps=plan.fps, complete=False,
                            created_by=f"fmdata {__version__} convert", layouts=layouts,
                            version=schema.format_version(layouts))
    root.attrs.update({schema.ATTR_STORE: meta.to_dict(),
                       schema.ATTR_RECORDINGS: [r.info().to_dict() for r in plan.recordings],
                       ATTR_CONVERT: plan.signature(), **({ATTR_REPLACES: True} if replaces else {})})
    create_arrays(root, plan.n_frames, plan.n_current, first.height, first.width, len(plan.recordings),
                  plan.chunking, copied=plan.copied)
    root[schema.RECORDING_FRAME_OFFSETS][:] = plan.frame_offsets
    root[schema.RECORDING_CURRENT_OFFSETS][:] = plan.current_offsets
    return root


def _open_partial(staging: Location, plan: ConversionPlan) -> zarr.Group:
    try:
        root = zarr.open_group(store=staging.zarr_store("r+"), mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        raise FmDataError("expected an interrupted conversion to resume, got an unreadable folder; "
                          "remove it or use --overwrite", str(staging)) from None
    if root.attrs.get(ATTR_CONVERT) != plan.signature():
        raise FmDataError("expected the interrupted conversion to use the same sources (unchanged) and chunking, "
                          "got different ones; use --overwrite to start again", str(staging))
    return root


def _finalise(root: zarr.Group, results: dict[str, UnitResult], plan: ConversionPlan) -> None:
    """Move checksums from the ledger into array attributes (those of copied arrays cover shard
    files), drop the ledger, set complete last."""
    by_array: dict[str, dict[int, int]] = {}
    for res in results.values():
        for name, pairs in res.checksums.items():
            by_array.setdefault(name, {}).update(dict(pairs))
    for name in schema.FRAME_ARRAYS + schema.CURRENT_ARRAYS:
        arr = root[name]
        block = int(arr.metadata.chunk_grid.chunk_shape[0])
        n = -(-arr.shape[0] // block)
        got = by_array.get(name, {})
        missing = [i for i in range(n) if i not in got]
        if missing:
            raise AssertionError(f"{name}: blocks {missing[:5]} were never written")
        covers = COVERS_SHARD_FILE if name in plan.copied else COVERS_VALUES
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(block, [got[i] for i in range(n)], covers)})
    for name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        arr = root[name]
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(arr.shape[0], [block_checksum(arr[:])])})
    Ledger(root).clear()
    if ATTR_REPLACES in root.attrs:
        del root.attrs[ATTR_REPLACES]
    if isinstance(root.store, zarr.storage.LocalStore):  # temp files of writers killed mid-write
        for dirpath, _, files in os.walk(root.store.root):
            for f in files:
                if is_temporary(f):
                    os.unlink(os.path.join(dirpath, f))
    set_complete(root, True)


def _run_units(units: list[WorkUnit], staging: Location, workers: int, ledger: Ledger,
               results: dict[str, UnitResult], bar: Any, runner: UnitRunner | None) -> None:
    def done(res: UnitResult) -> None:
        ledger.record(res)
        results[res.key] = res
        if res.axis == FRAME_AXIS:
            bar.update(res.rows)

    args = [(u, staging) for u in units]
    if runner is not None:
        runner(convert_unit, args, done)
    else:
        run_parallel(convert_unit, args, workers, done)


def convert(sources: Sequence[str | os.PathLike[str]], out: LocationLike, *, workers: int | None = None,
            overwrite: bool = False, resume: bool = False, chunking: Chunking | None = None,
            chunk_frames: int | None = None, shard_frames: int | None = None,
            fps: float = DEFAULT_FPS, progress: bool = True, runner: UnitRunner | None = None,
            mask_nonzero: bool = False, layout: str = DEFAULT_LAYOUT) -> ConvertReport:
    """Convert ``sources`` (V1 MAT files, folders of them and/or V2 folders, in order) into a new store at ``out``.

    ``workers`` processes run the units: this one and ``workers - 1`` spawned children (default:
    the CPU count; a script that calls this with more than one worker needs the usual
    ``if __name__ == "__main__":`` guard of spawned multiprocessing). ``overwrite`` replaces an
    existing store (only an FMF store; the old one stays until the new one is complete);
    An ``out`` that is a source ("expected OUT after the sources": a forgotten output), lies inside
    one (a V2 folder) or holds one is refused.
    ``resume`` continues an interrupted conversion into ``out`` without redoing finished units
    (a store at ``out`` already complete from the same sources and chunking is left as it is).
    ``chunking`` defaults to :func:`fmdata.store.layout.default_chunking`; ``chunk_frames`` /
    ``shard_frames`` override its frame-axis lengths. ``fps`` is the V1 frame rate; ``progress``
    shows a tqdm bar (frames/s, ETA). ``runner`` runs the units elsewhere (a dask cluster, see
    :mod:`fmdata.convert.cluster`) instead of local processes. ``mask_nonzero`` stores every mask
    value above 0 as 1, as the authors' loader reads masks (by default any value other than 0 or
    1 is refused); the store's recordings record it, and ``verify`` reads the sources the same
    way. ``layout`` "source" copies video and mask chunk by chunk from MATLAB's deflate chunks
    where every source allows it (docs/store-format.md, "Layouts"), "plain" decodes and encodes
    them; the report says which path each took and why. Returns a :class:`ConvertReport`.
    Raises FmDataError for bad sources or output paths (OUT a symbolic link included), removing
    the partial store, and when another process is writing ``out`` (it names that process); an
    interruption (lost workers, Ctrl-C) keeps finished units for ``resume``.
    """
    t0 = time.perf_counter()
    target = Location.parse(out)
    _refuse_link(target)
    check_apart(target, sources, field="out", what="the sources it reads")
    if target.local_path is not None and is_source(target.local_path):  # the store's path was left out
        raise FmDataError("expected OUT after the sources (the path of the new store), got a source last",
                          target.local_path, field="out")
    # a runner runs the units elsewhere (a cluster: its own error if it cannot reach the store)
    workers = resolve_workers(workers, in_process=target.in_process and runner is None)
    recs = open_sources([os.fspath(s) for s in sources], fps, mask_nonzero=mask_nonzero)
    chunking = override_chunking(chunking or default_chunking(recs[0].height, recs[0].width, layout), chunk_frames,
                                 shard_frames)
    plan = plan_conversion(recs, chunking, fps, layout)
    if target.local_path is not None:  # the lock file goes beside OUT: say first if that folder is unusable
        target.check_writable_parent()
    with writer_lock(target, "fmdata convert"):
        _recover(target)
        return _convert_into(target, plan, recs, workers, overwrite, resume, progress, runner, t0)


def _convert_into(target: Location, plan: ConversionPlan, recs: list[RecordingSource], workers: int, overwrite: bool,
                  resume: bool, progress: bool, runner: UnitRunner | None, t0: float) -> ConvertReport:
    """The conversion proper, run with the writer lock of ``target`` held (see :func:`convert`)."""
    exists = target.exists()
    partials = target.partials()  # [] for URLs
    if exists and resume and not target.is_url and not partials and _finished(target, plan):
        # a run killed after its store was in place (while the old one was being deleted): done
        return _report(target, plan, recs, workers, len(plan.units), t0)
    resume_in_place = target.is_url and exists and resume and _is_partial(target)
    # --resume of an interrupted --overwrite finishes the replacement it was making
    finish_replacing = resume and not target.is_url and bool(partials) and _replaces(partials[-1])
    if exists and not overwrite and not resume_in_place and not finish_replacing:
        raise output_exists(str(target))
    if exists and _peek(target) is None:  # --overwrite replaces only what convert makes: an FMF store
        raise refusal(str(target), "fmdata convert", "something that is not an FMF store")
    target.check_writable_parent()
    staging: Location | None = None
    root: zarr.Group | None = None
    if target.is_url:
        if resume_in_place:
            staging, root = target, _open_partial(target, plan)
        elif exists:
            target.remove()
    elif partials and resume:
        staging = partials[-1]
        root = _open_partial(staging, plan)
        for other in partials[:-1]:
            other.remove()
    elif partials and not overwrite:
        raise FmDataError(f"expected no interrupted conversion into this path, got {partials[-1]}; "
                          f"pass --resume to continue it or --overwrite to start again", str(target))
    else:
        for other in partials:
            other.remove()
    if root is None:
        staging = target.staging()
        try:
            root = _create(staging, plan, replaces=overwrite and exists)
        except OSError as exc:
            _discard(staging)
            raise FmDataError(f"expected to create the store, got {exc.strerror or exc}", str(target)) from None
    assert staging is not None
    ledger = Ledger(root)
    results = ledger.load()
    todo = [u for u in plan.units if u.key not in results]
    done_frames = sum(r.rows for r in results.values() if r.axis == FRAME_AXIS)
    bar = tqdm(total=plan.n_frames, initial=done_frames, unit="frame", unit_scale=True, desc="convert",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    try:
        if not read_meta(root, str(staging)).complete:
            _run_units(todo, staging, workers, ledger, results, bar, runner)
            _finalise(root, results, plan)
    except FmDataError:
        _discard(staging)
        raise
    except (OSError, BrokenProcessPool) as exc:
        raise FmDataError(f"conversion stopped ({exc.__class__.__name__}: {exc}); finished units are kept in "
                          f"{staging}: run again with --resume", str(target)) from None
    except KeyboardInterrupt:
        raise Interrupted(f"{target}: interrupted; finished units are kept in {staging}: run the same command "
                          "with --resume to continue") from None
    finally:
        bar.close()
        close_cached()
    target.publish(staging)
    return _report(target, plan, recs, workers, len(plan.units) - len(todo), t0)


def _report(target: Location, plan: ConversionPlan, recs: list[RecordingSource], workers: int, resumed: int,
            t0: float) -> ConvertReport:
    local = target.local_path
    return ConvertReport(
        store=str(target), n_recordings=len(recs), n_frames=plan.n_frames, n_current=plan.n_current,
        units=len(plan.units), units_resumed=resumed, workers=workers,
        seconds=time.perf_counter() - t0, source_bytes=sum(r.source_bytes for r in recs),
        store_bytes=_tree_bytes(local) if local else 0, chunking=plan.chunking,
        layout=schema.LAYOUT_SOURCE if plan.copied else schema.LAYOUT_PLAIN, paths=dict(plan.paths))


def _replaces(partial: Location) -> bool:
    """True when the partial store was started by ``--overwrite`` of an existing store, or is complete
    (then only its placement over the old store was interrupted)."""
    found = _peek(partial)
    return found is not None and (bool(found[0].attrs.get(ATTR_REPLACES)) or found[1].complete)


def _finished(target: Location, plan: ConversionPlan) -> bool:
    """True when ``target`` holds a complete store converted with this very plan."""
    found = _peek(target)
    return found is not None and found[1].complete and found[0].attrs.get(ATTR_CONVERT) == plan.signature()


def _discard(staging: Location) -> None:
    try:
        staging.remove()
    except (OSError, FmDataError):
        pass
