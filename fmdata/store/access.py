"""Open a store and read what every reader needs first: its metadata, recordings and offsets.

``open_store`` takes a :class:`~fmdata.store.location.Location` or anything
``Location.parse`` accepts (a local path, an fsspec URL). It refuses what is not an FMF store of
format (versions 1 and 2) and, unless told otherwise, a store whose writer never finished.
"""
from __future__ import annotations

import os

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.checksums import read_checked
from fmdata.store.location import Location, LocationLike


def open_store(location: LocationLike, mode: str = "r", *, require_complete: bool = True) -> zarr.Group:
    """Open the store at ``location`` and return its root group.

    ``mode`` is "r" (read only) or "r+" (read and add derived arrays). Raises FmDataError when
    nothing is there, when it is not an FMF store, or (unless ``require_complete=False``) when
    its writer never finished.
    """
    if mode not in ("r", "r+"):
        raise FmDataError(f"expected mode 'r' or 'r+', got {mode!r}", field="mode")
    loc = Location.parse(location)
    path = loc.local_path if not loc.is_url else None
    if path is not None and not os.path.isdir(path):
        raise FmDataError("expected an FMF Zarr store (a folder), got nothing there" if not os.path.exists(path)
                          else "expected an FMF Zarr store (a folder), got a file", str(loc))
    root = loc.open_group(mode)
    meta = read_meta(root, str(loc))
    if require_complete and not meta.complete:
        raise FmDataError("store is incomplete (its writer did not finish); re-run `fmdata convert --resume`", str(loc))
    return root


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
