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
they read (:func:`read_labels`, :func:`labels_up_to_date`).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr
from dask import delayed

from fmdata import __version__
from fmdata.compute.dask_cluster import DaskOptions, Runner, dask_runner
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import open_store, store_writable
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.columns import read_column
from fmdata.store.derived import DerivedArray, store_writer, write_derived
from fmdata.store.location import Location, LocationLike
from fmdata.store.lock import reading
from fmdata.store.provenance import array_fingerprint, matches

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


def labels_up_to_date(root: zarr.Group) -> bool:
    """Return True when both label arrays exist, are complete and match the store's mask."""
    with reading(root):
        return _up_to_date(root)


def read_labels(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_label uint8, abnormal_pixels int32), each (n_frames,), from an open store.

    Both come from one version (read under the store's switch lock) and are checked against
    their checksums. Raises FmDataError when they are missing or stale (run ``fmdata labels``)
    or damaged.
    """
    with reading(root):
        if not _up_to_date(root):
            raise FmDataError("expected up-to-date frame labels, got none or stale ones (run `fmdata labels STORE`)")
        return read_column(root[schema.FRAME_LABEL], np.uint8), read_column(root[schema.ABNORMAL_PIXELS], np.int32)


def count_abnormal(mask_block: np.ndarray) -> np.ndarray:
    """Return the number of mask pixels equal to 1 per frame of a (frames, y, x) block (int32)."""
    flat = mask_block.reshape(mask_block.shape[0], -1)
    return np.count_nonzero(flat == 1, axis=1).astype(np.int32)


def _label_block(reader: BlockReader, start: int, stop: int) -> np.ndarray:
    """Dask task: count the abnormal pixels of mask rows [start, stop) (int32 per frame)."""
    return count_abnormal(reader.read(start, stop))


def _compute(loc: Location, root: zarr.Group, runner: Runner) -> LabelsReport:
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
    return LabelsReport(store=str(loc), status="computed", frames=n, abnormal_frames=int(label.sum()),
                        abnormal_pixels=int(counts.sum(dtype=np.int64)), seconds=seconds,
                        scheduler=runner.description)


def require_writable(location: Location, what: str = "frame labels") -> None:
    """Raise FmDataError when the store at ``location`` is read-only: ``what`` is missing or stale
    and cannot be stored; the message says what to run where the store is writable."""
    if not store_writable(location):
        raise FmDataError(f"expected up-to-date {what} or a writable store to compute them, got neither (the store "
                          f"is read-only): run `fmdata labels {location}` where it is writable", str(location))


def compute_labels(location: LocationLike, *, force: bool = False, options: DaskOptions = DaskOptions(),
                   runner: Runner | None = None) -> LabelsReport:
    """Compute and store ``frame_label`` and ``abnormal_pixels`` for the store at ``location``.

    A no-op (status "up to date") when current labels exist, unless ``force``: it then only
    reads, so it works on a read-only store. ``runner`` reuses an open Dask runner; otherwise
    one is started from ``options``. Raises FmDataError when labels must be computed (or
    ``force`` recomputes them) and the store is read-only: nothing is written.
    """
    loc = Location.parse(location)
    root = open_store(loc)
    if not force and labels_up_to_date(root):
        return _up_to_date_report(loc, root)
    if force and not store_writable(loc):
        state = "up to date" if labels_up_to_date(root) else "missing or stale"
        raise FmDataError(f"expected a writable store to recompute the labels (--force), got a read-only one: nothing "
                          f"was written (--force would recompute frame_label and abnormal_pixels from the masks and "
                          f"replace them; the stored ones are {state})", str(loc))
    require_writable(loc)
    with store_writer(loc, "fmdata labels"):
        root = open_store(loc, "r+")
        if not force and labels_up_to_date(root):  # another writer finished them meanwhile
            return _up_to_date_report(loc, root)
        if runner is not None:
            return _compute(loc, root, runner)
        with dask_runner(options, preload=WORKER_MODULES) as new_runner:
            return _compute(loc, root, new_runner)


def _up_to_date_report(loc: Location, root: zarr.Group) -> LabelsReport:
    frame_label, counts = read_labels(root)
    return LabelsReport(store=str(loc), status="up to date", frames=int(len(frame_label)),
                        abnormal_frames=int(frame_label.sum()), abnormal_pixels=int(counts.sum(dtype=np.int64)))


def ensure_labels(location: LocationLike, options: DaskOptions = DaskOptions(), runner: Runner | None = None) -> None:
    """Compute the labels of the store at ``location`` if they are missing or stale."""
    loc = Location.parse(location)
    if not labels_up_to_date(open_store(loc)):
        compute_labels(loc, options=options, runner=runner)
