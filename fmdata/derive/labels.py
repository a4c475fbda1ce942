"""``fmdata labels``: per-frame class labels and abnormal-pixel counts, computed with Dask.

A frame is abnormal when any of its mask pixels is 1 (the benchmark README's definition,
MATLAB ``sum(label,[1,2]) > 0.5``). The results are two derived frame-axis arrays,
``frame_label`` (uint8) and ``abnormal_pixels`` (int32), whose attribute ``fmf_provenance`` says
what they were computed from (array, shape, checksums), with which rule and toolkit version.

Work is one Dask task per block of whole mask shards (about 16 MiB); each task reads its block
with :class:`fmdata.store.block_reader.BlockReader` (zarr's own per-chunk path is ~10x slower on
one-frame chunks; every block is checked against its checksums as it is read) and returns its
per-frame counts (4 bytes a frame). The driver writes both outputs whole through
:func:`fmdata.store.derived.write_derived`: built aside with their checksums and provenance, then
switched in together, so a reader (another process) sees the old labels or the new ones, never a
torn or missing array. Writing holds the store's writer lock; readers hold its switch lock while
they read (:func:`read_labels`, :func:`labels_up_to_date`). Readers take an open store
(:class:`fmdata.store.handle.StoreHandle`), which keeps what :func:`read_labels` read; after
labels were computed, a fresh handle (:func:`ensure_labels` returns one) sees them.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr
from dask import delayed

from fmdata.compute.dask_cluster import DaskOptions, Runner, dask_runner
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import store_writable
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.columns import read_column
from fmdata.store.derived import DerivedArray, store_writer, write_derived
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.location import Location
from fmdata.store.lock import reading
from fmdata.store.provenance import array_fingerprint, matches
from fmdata.version import __version__

# Bump when the rule or the output layout changes: older derived arrays then count as stale.
LABELS_ALGORITHM = 1
# Modules a Dask worker imports as it starts (this package's task functions).
WORKER_MODULES = ("fmdata.derive",)


@dataclass(frozen=True)
class LabelsReport:
    """What :func:`compute_labels` did: ``status`` "computed" or "up to date", and the counts."""

    store: str
    status: str
    frames: int
    abnormal_frames: int
    abnormal_pixels: int
    seconds: float = 0.0
    scheduler: str = ""

    def summary(self) -> str:
        """Return the one-line human summary."""
        if self.status == "up to date":
            return (f"{self.store}: labels up to date ({self.frames:,} frames, {self.abnormal_frames:,} abnormal); "
                    "--force recomputes")
        return (f"{self.store}: labelled {self.frames:,} frames, {self.abnormal_frames:,} abnormal, "
                f"{self.abnormal_pixels:,} abnormal pixels in {self.seconds:.1f} s on {self.scheduler}")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        return asdict(self)


def expected_provenance(root: zarr.Group) -> dict[str, Any]:
    """Return the provenance that up-to-date label arrays of this store carry."""
    return {"derived_from": array_fingerprint(root[schema.MASK]), "command": "fmdata labels",
            "rule": "frame_label = any(mask == 1); abnormal_pixels = count(mask == 1)",
            "algorithm": LABELS_ALGORITHM}


def _up_to_date(root: zarr.Group) -> bool:
    expected = expected_provenance(root)
    n = root[schema.MASK].shape[0]
    for name in schema.DERIVED_FRAME_ARRAYS:
        if name not in root or root[name].shape != (n,):
            return False
        if not matches(root[name].attrs.get(schema.ATTR_PROVENANCE), expected):
            return False
    return True


def labels_up_to_date(store: StoreHandle) -> bool:
    """Return True when both label arrays of the open ``store`` exist, are complete and match its mask."""
    with reading(store.root):
        return _up_to_date(store.root)


def read_labels(store: StoreHandle) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_label uint8, abnormal_pixels int32), each (n_frames,), of the open ``store``.

    Both come from one version (read under the store's switch lock) and are checked against
    their checksums; read once per handle (read-only arrays). Raises FmDataError when they are
    missing or stale (run ``fmdata labels``) or damaged.
    """
    return store.cached("frame_labels", lambda: _read_labels(store.root))


def _read_labels(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    with reading(root):
        if not _up_to_date(root):
            raise FmDataError("expected up-to-date frame labels, got none or stale ones (run `fmdata labels STORE`)")
        label, pixels = read_column(root[schema.FRAME_LABEL], np.uint8), read_column(root[schema.ABNORMAL_PIXELS], np.int32)
    label.flags.writeable = pixels.flags.writeable = False  # kept by the handle, shared by its readers
    return label, pixels


def count_abnormal(mask_block: np.ndarray) -> np.ndarray:
    """Return the number of mask pixels equal to 1 per frame of a (frames, y, x) block (int32)."""
    flat = mask_block.reshape(mask_block.shape[0], -1)
    return np.count_nonzero(flat == 1, axis=1).astype(np.int32)


def _label_block(reader: BlockReader, start: int, stop: int) -> np.ndarray:
    """Dask task: count the abnormal pixels of mask rows [start, stop) (int32 per frame)."""
    return count_abnormal(reader.read(start, stop))


def _compute(store: StoreHandle, runner: Runner) -> LabelsReport:
    root = store.root
    mask = root[schema.MASK]
    n = int(mask.shape[0])
    block = block_frames(mask)
    reader = BlockReader(mask)
    ranges = block_ranges(n, block)
    tasks = [delayed(_label_block, pure=False)(reader, a, b) for a, b in ranges]
    t0 = time.perf_counter()
    parts = runner.compute(tasks, desc="labels", weights=[b - a for a, b in ranges], unit="frame")
    seconds = time.perf_counter() - t0
    counts = np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)
    label = (counts > 0).astype(np.uint8)
    prov = {**expected_provenance(root), "toolkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scheduler": runner.description}
    chunk = max(1, min(block, n))
    write_derived(root, [DerivedArray(schema.FRAME_LABEL, label, chunk, schema.DIMS[schema.FRAME_LABEL],
                                      {schema.ATTR_PROVENANCE: prov}),
                         DerivedArray(schema.ABNORMAL_PIXELS, counts, chunk, schema.DIMS[schema.ABNORMAL_PIXELS],
                                      {schema.ATTR_PROVENANCE: prov})], "fmdata labels")
    return LabelsReport(store=str(store), status="computed", frames=n, abnormal_frames=int(label.sum()),
                        abnormal_pixels=int(counts.sum(dtype=np.int64)), seconds=seconds,
                        scheduler=runner.description)


def require_writable(location: Location, what: str = "frame labels") -> None:
    """Raise FmDataError when the store at ``location`` is read-only: ``what`` is missing or stale
    and cannot be stored; the message says what to run where the store is writable."""
    if not store_writable(location):
        raise FmDataError(f"expected up-to-date {what} or a writable store to compute them, got neither (the store "
                          f"is read-only): run `fmdata labels {location}` where it is writable", str(location))


def compute_labels(store: StoreLike, *, force: bool = False, options: DaskOptions = DaskOptions(),
                   runner: Runner | None = None) -> LabelsReport:
    """Compute and store ``frame_label`` and ``abnormal_pixels`` for ``store`` (an open store or its location).

    A no-op (status "up to date") when current labels exist, unless ``force``: it then only
    reads, so it works on a read-only store. ``runner`` reuses an open Dask runner; otherwise
    one is started from ``options``. Raises FmDataError when labels must be computed (or
    ``force`` recomputes them) and the store is read-only: nothing is written.
    """
    given = store = open_store(store)
    loc = store.location
    if not force and labels_up_to_date(store):
        return _up_to_date_report(store)
    if force and not store_writable(loc):
        state = "up to date" if labels_up_to_date(store) else "missing or stale"
        raise FmDataError(f"expected a writable store to recompute the labels (--force), got a read-only one: nothing "
                          f"was written (--force would recompute frame_label and abnormal_pixels from the masks and "
                          f"replace them; the stored ones are {state})", str(loc))
    require_writable(loc)
    with store_writer(loc, "fmdata labels"):
        store = store.reopen("r+")
        if not force and labels_up_to_date(store):  # another writer finished them meanwhile
            return _up_to_date_report(store)
        try:
            if runner is not None:
                return _compute(store, runner)
            with dask_runner(options, preload=WORKER_MODULES) as new_runner:
                return _compute(store, new_runner)
        finally:
            given.forget("frame_labels")  # the caller's handle reads the new ones


def _up_to_date_report(store: StoreHandle) -> LabelsReport:
    frame_label, counts = read_labels(store)
    return LabelsReport(store=str(store), status="up to date", frames=int(len(frame_label)),
                        abnormal_frames=int(frame_label.sum()), abnormal_pixels=int(counts.sum(dtype=np.int64)))


def ensure_labels(store: StoreLike, options: DaskOptions = DaskOptions(), runner: Runner | None = None) -> StoreHandle:
    """Compute the labels of ``store`` if they are missing or stale; return the handle to read it
    through from now on (``store`` itself when they were up to date, else a fresh one that sees them)."""
    store = open_store(store)
    if labels_up_to_date(store):
        return store
    compute_labels(store, options=options, runner=runner)
    return store.reopen()
