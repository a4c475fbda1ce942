"""``fmdata labels``: per-frame class labels and abnormal-pixel counts, computed with Dask.

A frame is abnormal when any of its mask pixels is 1 (the benchmark README's definition,
MATLAB ``sum(label,[1,2]) > 0.5``). The results are two derived frame-axis arrays,
``frame_label`` (uint8) and ``abnormal_pixels`` (int32), whose attribute ``fmf_provenance`` says
what they were computed from (array, shape, checksums), with which rule and toolkit version.

Work is one Dask task per block of whole mask shards (about 16 MiB); each task reads its block
with :class:`fmdata.block_reader.BlockReader` (zarr's own per-chunk path is ~10x slower on
one-frame chunks), counts, and writes whole chunks of both outputs (the output chunk equals the
block), so no two tasks ever touch the same chunk. Provenance is written last: a run that dies
part-way leaves arrays without provenance, which count as missing and are recomputed.
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
from fmdata.store.access import open_store, read_meta
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.columns import read_column
from fmdata.store.location import Location, LocationLike
from fmdata.store.provenance import array_fingerprint, matches, reconsolidate

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


def labels_up_to_date(root: zarr.Group) -> bool:
    """Return True when both label arrays exist, are complete and match the store's mask."""
    expected = expected_provenance(root)
    n = root[schema.MASK].shape[0]
    for name in schema.DERIVED_FRAME_ARRAYS:
        if name not in root or root[name].shape != (n,):
            return False
        if not matches(root[name].attrs.get(schema.ATTR_PROVENANCE), expected):
            return False
    return True


def read_labels(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_label uint8, abnormal_pixels int32), each (n_frames,), from an open store.

    Raises FmDataError when they are missing or stale (run ``fmdata labels``).
    """
    if not labels_up_to_date(root):
        raise FmDataError("expected up-to-date frame labels, got none or stale ones (run `fmdata labels STORE`)")
    return read_column(root[schema.FRAME_LABEL], np.uint8), read_column(root[schema.ABNORMAL_PIXELS], np.int32)


def count_abnormal(mask_block: np.ndarray) -> np.ndarray:
    """Return the number of mask pixels equal to 1 per frame of a (frames, y, x) block (int32)."""
    flat = mask_block.reshape(mask_block.shape[0], -1)
    return np.count_nonzero(flat == 1, axis=1).astype(np.int32)


def _label_block(reader: BlockReader, start: int, stop: int, label_arr: zarr.Array,
                 count_arr: zarr.Array) -> tuple[int, int, int]:
    """Dask task: count mask rows [start, stop), write whole output chunks; return (frames, abnormal, pixels)."""
    chunk = label_arr.chunks[0]
    # Writes must cover whole chunks: two tasks writing into one chunk lose each other's data.
    assert start % chunk == 0 and (stop % chunk == 0 or stop == label_arr.shape[0]), (start, stop, chunk)
    counts = count_abnormal(reader.read(start, stop))
    label = (counts > 0).astype(np.uint8)
    count_arr[start:stop] = counts
    label_arr[start:stop] = label
    return int(len(counts)), int(label.sum()), int(counts.sum(dtype=np.int64))


def _compute(loc: Location, root: zarr.Group, runner: Runner) -> LabelsReport:
    mask = root[schema.MASK]
    n = int(mask.shape[0])
    block = block_frames(mask)
    outputs = {}
    for name in schema.DERIVED_FRAME_ARRAYS:
        outputs[name] = root.create_array(
            name, shape=(n,), dtype=schema.DTYPES[name], chunks=(max(1, min(block, n)),),
            dimension_names=schema.DIMS[name], fill_value=0, overwrite=True)
    reader = BlockReader(mask)
    ranges = block_ranges(n, block)
    tasks = [delayed(_label_block, pure=False)(reader, a, b, outputs[schema.FRAME_LABEL],
                                               outputs[schema.ABNORMAL_PIXELS]) for a, b in ranges]
    t0 = time.perf_counter()
    parts = runner.compute(tasks, desc="labels", weights=[b - a for a, b in ranges], unit="frame")
    seconds = time.perf_counter() - t0
    frames, abnormal, pixels = (int(sum(p[i] for p in parts)) for i in range(3))
    prov = {**expected_provenance(root), "toolkit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scheduler": runner.description}
    for arr in outputs.values():
        arr.attrs[schema.ATTR_PROVENANCE] = prov
    reconsolidate(root)
    return LabelsReport(store=str(loc), status="computed", frames=frames, abnormal_frames=abnormal,
                        abnormal_pixels=pixels, seconds=seconds, scheduler=runner.description)


def compute_labels(location: LocationLike, *, force: bool = False, options: DaskOptions = DaskOptions(),
                   runner: Runner | None = None) -> LabelsReport:
    """Compute and store ``frame_label`` and ``abnormal_pixels`` for the store at ``location``.

    A no-op (status "up to date") when current labels exist, unless ``force``. ``runner``
    reuses an open Dask runner; otherwise one is started from ``options``.
    """
    loc = Location.parse(location)
    root = open_store(loc, "r+")
    read_meta(root, str(loc))
    if not force and labels_up_to_date(root):
        frame_label, counts = read_labels(root)
        return LabelsReport(store=str(loc), status="up to date", frames=int(len(frame_label)),
                            abnormal_frames=int(frame_label.sum()), abnormal_pixels=int(counts.sum(dtype=np.int64)))
    if runner is not None:
        return _compute(loc, root, runner)
    with dask_runner(options, preload=WORKER_MODULES) as new_runner:
        return _compute(loc, root, new_runner)


def ensure_labels(location: LocationLike, options: DaskOptions = DaskOptions(), runner: Runner | None = None) -> bool:
    """Compute the labels of the store at ``location`` if they are missing or stale; return True if it computed."""
    loc = Location.parse(location)
    if labels_up_to_date(open_store(loc)):
        return False
    compute_labels(loc, options=options, runner=runner)
    return True
