"""Provenance of derived data: what it was computed from, so that stale results are recognised.

A derived array (labels, a window table, statistics) records in its attributes the fingerprints
of the arrays it was computed from. A fingerprint is cheap: the array's name, shape, dtype and a
digest of the per-block checksums the converter recorded, never a pass over the data. Readers
compare the recorded provenance with :func:`array_fingerprint` of today's store to tell whether
a derived result is still up to date.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from fmdata.store import schema


def array_fingerprint(arr: zarr.Array) -> dict[str, Any]:
    """Return what identifies an array's content cheaply: name, shape, dtype, checksum digest.

    The digest hashes the per-block checksums recorded in the array's ``fmf_checksums``
    attribute; arrays without them get ``None`` (shape only).
    """
    sums = arr.attrs.get(schema.ATTR_CHECKSUMS)
    digest = None if sums is None else hashlib.sha256(
        json.dumps(sums, sort_keys=True, default=str).encode()).hexdigest()
    return {"array": arr.basename, "shape": list(arr.shape), "dtype": str(arr.dtype), "checksums_sha256": digest}


def values_digest(values: np.ndarray) -> str:
    """Return the SHA-256 of an in-memory array's bytes (C order): for small index arrays."""
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def matches(recorded: Any, expected: Mapping[str, Any]) -> bool:
    """True when the ``recorded`` provenance dict holds every key of ``expected`` with the same value."""
    return isinstance(recorded, dict) and all(recorded.get(k) == v for k, v in expected.items())


def reconsolidate(root: zarr.Group) -> None:
    """Re-consolidate metadata after adding arrays, when the store uses consolidated metadata."""
    if getattr(root.metadata, "consolidated_metadata", None) is not None:
        zarr.consolidate_metadata(root.store)


def store_fingerprint(root: zarr.Group) -> str:
    """Return a digest of what a store holds: the fingerprints of its source arrays (video, mask,
    current, times, split, recordings, offsets; their shapes and recorded checksums).

    Equal for a copy or a moved store, different after any change of its data; derived arrays
    (labels, window tables, statistics) do not enter it. Cheap: no data is read.
    """
    parts = [array_fingerprint(root[name]) for name in schema.SOURCE_ARRAYS]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
