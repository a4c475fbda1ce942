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

import hashlib
import json
import time
from typing import Any

import numpy as np
import zarr
from dask import delayed

import fmdata
from fmdata import schema
from fmdata.block_reader import BlockReader, block_frames, block_ranges
from fmdata.cluster import DaskOptions, Runner, dask_runner
from fmdata.errors import FmDataError
from fmdata.store import open_store, read_meta

# Bump when the rule or the output layout changes: older derived arrays then count as stale.
LABELS_ALGORITHM = 1


def array_fingerprint(arr: zarr.Array) -> dict[str, Any]:
    """Return what identifies an array's content cheaply: name, shape, dtype, checksum digest.

    The digest hashes the per-shard checksums that ``fmdata convert`` records in the array's
    ``fmf_checksums`` attribute; stores written without them get ``None`` (shape only).
    """
    sums = arr.attrs.get(schema.ATTR_CHECKSUMS)
    digest = None if sums is None else hashlib.sha256(
        json.dumps(sums, sort_keys=True, default=str).encode()).hexdigest()
    return {"array": arr.basename, "shape": list(arr.shape), "dtype": str(arr.dtype), "checksums_sha256": digest}


def expected_provenance(root: zarr.Group) -> dict[str, Any]:
    """Return the provenance that up-to-date label arrays of this store carry."""
    return {"derived_from": array_fingerprint(root[schema.MASK]), "command": "fmdata labels",
            "rule": "frame_label = any(mask == 1); abnormal_pixels = count(mask == 1)",
            "algorithm": LABELS_ALGORITHM}


def _same(prov: Any, expected: dict[str, Any]) -> bool:
    return isinstance(prov, dict) and all(prov.get(k) == v for k, v in expected.items())


def labels_up_to_date(root: zarr.Group) -> bool:
    """Return True when both label arrays exist, are complete and match the store's mask."""
    expected = expected_provenance(root)
    n = root[schema.MASK].shape[0]
    for name in schema.DERIVED_FRAME_ARRAYS:
        if name not in root or root[name].shape != (n,):
            return False
        if not _same(root[name].attrs.get(schema.ATTR_PROVENANCE), expected):
            return False
    return True


def read_labels(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_label uint8, abnormal_pixels int32), each (n_frames,), from an open store.

    Raises FmDataError when they are missing or stale (run ``fmdata labels``).
    """
    if not labels_up_to_date(root):
        raise FmDataError("expected up-to-date frame labels, got none or stale ones (run `fmdata labels STORE`)")
    return (np.asarray(root[schema.FRAME_LABEL][:], np.uint8),
            np.asarray(root[schema.ABNORMAL_PIXELS][:], np.int32))


def count_abnormal(mask_block: np.ndarray) -> np.ndarray:
    """Return the number of mask pixels equal to 1 per frame of a (frames, y, x) block (int32)."""
    flat = mask_block.reshape(mask_block.shape[0], -1)
    return np.count_nonzero(flat == 1, axis=1).astype(np.int32)


def _label_block(reader: BlockReader, start: int, stop: int, label_arr: zarr.Array,
                 count_arr: zarr.Array) -> tuple[int, int, int]:
    """Dask task: count mask rows [start, stop), write whole output chunks; return (frames, abnormal, pixels)."""
    chunk = label_arr.chunks[0]
    # Writes must cover whole chunks or two tasks could lose each other's data (pitfalls: Zarr).
    assert start % chunk == 0 and (stop % chunk == 0 or stop == label_arr.shape[0]), (start, stop, chunk)
    counts = count_abnormal(reader.read(start, stop))
    label = (counts > 0).astype(np.uint8)
    count_arr[start:stop] = counts
    label_arr[start:stop] = label
    return int(len(counts)), int(label.sum()), int(counts.sum(dtype=np.int64))


def reconsolidate(root: zarr.Group) -> None:
    """Re-consolidate metadata after adding arrays, when the store uses consolidated metadata."""
    if getattr(root.metadata, "consolidated_metadata", None) is not None:
        zarr.consolidate_metadata(root.store)


def _compute(path: str, root: zarr.Group, runner: Runner) -> dict[str, Any]:
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
    prov = {**expected_provenance(root), "toolkit_version": fmdata.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "scheduler": runner.description}
    for arr in outputs.values():
        arr.attrs[schema.ATTR_PROVENANCE] = prov
    reconsolidate(root)
    return {"status": "computed", "frames": frames, "abnormal_frames": abnormal, "abnormal_pixels": pixels,
            "seconds": seconds, "scheduler": runner.description, "store": path}


def compute_labels(path: str, force: bool = False, options: DaskOptions = DaskOptions(),
                   runner: Runner | None = None) -> dict[str, Any]:
    """Compute and store ``frame_label`` and ``abnormal_pixels`` for the store at ``path``.

    A no-op (status "up to date") when current labels exist, unless ``force``. ``runner``
    reuses an open Dask runner; otherwise one is started from ``options``. Returns a summary
    dict: status, frames, abnormal_frames, abnormal_pixels, seconds, scheduler, store.
    """
    root = open_store(path, "r+")
    read_meta(root, path)
    if not force and labels_up_to_date(root):
        frame_label, counts = read_labels(root)
        return {"status": "up to date", "frames": int(len(frame_label)), "abnormal_frames": int(frame_label.sum()),
                "abnormal_pixels": int(counts.sum(dtype=np.int64)), "seconds": 0.0, "scheduler": "", "store": path}
    if runner is not None:
        return _compute(path, root, runner)
    with dask_runner(options) as new_runner:
        return _compute(path, root, new_runner)


def ensure_labels(path: str, options: DaskOptions = DaskOptions(), runner: Runner | None = None) -> bool:
    """Compute the labels of ``path`` if they are missing or stale; return True if it computed."""
    root = open_store(path, "r")
    if labels_up_to_date(root):
        return False
    compute_labels(path, options=options, runner=runner)
    return True
