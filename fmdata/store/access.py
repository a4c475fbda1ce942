"""What every reader of an open store reads first: its metadata, recordings and offsets.

The readers of an open root group; a command opens its store once with
:func:`fmdata.store.handle.open_store`, which reads these through them and keeps them.
"""
from __future__ import annotations

import os

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.checksums import read_checked
from fmdata.store.location import Location, LocationLike


def store_writable(location: LocationLike) -> bool:
    """Return False when the local store at ``location`` cannot be written (a read-only folder or
    file system); True otherwise (URLs: a refused write reports itself)."""
    loc = Location.parse(location)
    path = loc.local_path
    return path is None or os.access(path, os.W_OK)


def read_meta(root: zarr.Group, where: str = "store") -> schema.StoreMeta:
    """Return the StoreMeta of an open root group; FmDataError if the attribute is missing."""
    d = root.attrs.get(schema.ATTR_STORE)
    if not isinstance(d, dict):
        raise FmDataError(f"expected attribute {schema.ATTR_STORE!r} (an FMF store), got none", where)
    try:
        return schema.StoreMeta.from_dict(d)
    except FmDataError as exc:
        raise FmDataError(str(exc), where) from None


def read_recordings(root: zarr.Group) -> list[schema.RecordingInfo]:
    """Return the per-recording provenance list of an open store."""
    return [schema.RecordingInfo.from_dict(d) for d in root.attrs.get(schema.ATTR_RECORDINGS, [])]


def read_offsets(root: zarr.Group) -> tuple[np.ndarray, np.ndarray]:
    """Return (frame_offsets, current_offsets), each int64 of length R + 1, checked against their checksums."""
    return (np.asarray(read_checked(root[schema.RECORDING_FRAME_OFFSETS]), dtype=np.int64),
            np.asarray(read_checked(root[schema.RECORDING_CURRENT_OFFSETS]), dtype=np.int64))
