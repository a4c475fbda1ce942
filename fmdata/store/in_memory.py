"""Write a small, complete store from recordings held in memory (tests, demos, notebooks).

Large sources go through :mod:`fmdata.convert`, which streams; this writes everything at once.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.checksums import block_checksums, checksum_attr
from fmdata.store.layout import Chunking, create_arrays
from fmdata.store.location import Location, LocationLike


@dataclass
class RecordingArrays:
    """One recording held in memory, already in store orientation (see fmdata.store.schema).

    ``frame_current_end`` is local to the recording (0..n_current); ``split`` uses the schema's
    split codes.
    """

    video: np.ndarray  # (N, H, W, 3) uint8
    mask: np.ndarray  # (N, H, W) uint8
    split: np.ndarray  # (N,) int8
    frame_time: np.ndarray  # (N,) float64
    current: np.ndarray  # (M, 3) float64
    current_time: np.ndarray  # (M,) float64
    frame_current_end: np.ndarray  # (N,) int64, local
    info: schema.RecordingInfo


def write_store_from_arrays(location: LocationLike, recordings: Sequence[RecordingArrays], fps: float,
                            chunking: Chunking = Chunking(), created_by: str = "",
                            format_version: int = schema.FORMAT_VERSION) -> zarr.Group:
    """Write a complete store holding ``recordings`` at ``location`` (must not exist); return its root.

    Every array records its block checksums, as the converter's do. ``format_version`` 1 writes
    the older layout (no per-chunk CRC-32C), for tests of how stores written before format 2 are
    read. The ``complete`` flag is written last, so an interrupted write never looks complete.
    """
    if not recordings:
        raise FmDataError("expected at least one recording, got none")
    n_frames = sum(len(r.video) for r in recordings)
    n_current = sum(len(r.current) for r in recordings)
    h, w = recordings[0].video.shape[1:3]
    if format_version not in schema.READABLE_VERSIONS:
        raise FmDataError(f"expected a format version in {schema.READABLE_VERSIONS}, got {format_version!r}",
                          field="format_version")
    root = Location.parse(location).open_group("w-")
    create_arrays(root, n_frames, n_current, h, w, len(recordings), chunking, chunk_crc=format_version >= 2)
    f_off = np.concatenate([[0], np.cumsum([len(r.video) for r in recordings])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([len(r.current) for r in recordings])]).astype(np.int64)
    data = {
        schema.VIDEO: np.concatenate([r.video for r in recordings]),
        schema.MASK: np.concatenate([r.mask for r in recordings]),
        schema.SPLIT: np.concatenate([r.split for r in recordings]).astype(np.int8),
        schema.RECORDING: np.repeat(np.arange(len(recordings), dtype=np.int32), np.diff(f_off)),
        schema.FRAME_TIME: np.concatenate([r.frame_time for r in recordings]),
        schema.FRAME_CURRENT_END: np.concatenate([r.frame_current_end + c_off[i] for i, r in enumerate(recordings)]),
        schema.CURRENT: np.concatenate([r.current for r in recordings]),
        schema.CURRENT_TIME: np.concatenate([r.current_time for r in recordings]),
        schema.RECORDING_FRAME_OFFSETS: f_off,
        schema.RECORDING_CURRENT_OFFSETS: c_off,
    }
    for name, values in data.items():
        arr = root[name]
        arr[:] = values
        block = int(arr.metadata.chunk_grid.chunk_shape[0])
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(
            block, block_checksums(values, block, schema.DTYPES[name]))})
    root.attrs[schema.ATTR_RECORDINGS] = [r.info.to_dict() for r in recordings]
    meta = schema.StoreMeta(n_frames=n_frames, n_current=n_current, n_recordings=len(recordings),
                            height=int(h), width=int(w), fps=float(fps), complete=True, created_by=created_by,
                            version=format_version)
    root.attrs[schema.ATTR_STORE] = meta.to_dict()
    return root
