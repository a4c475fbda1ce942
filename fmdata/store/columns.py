"""Whole 1-D arrays of a store (split, recording, frame times, labels ...), read fast.

The frame-axis 1-D arrays are chunked at the shard length (256 frames), so reading one through
zarr-python costs some 0.25 ms of Python per chunk: at 120,000 frames about 0.1 s per array, and a
derivation's driver reads several of them while its workers wait (the serial part of
``fmdata stats``, docs/performance.md). :func:`read_column` reads a local array's chunks with the
row reader (:class:`fmdata.store.row_reader.LocalAxisReader`: ``pread`` and a direct decode, some
5x faster) and anything else through zarr, which returns the identical array. What is checked
(docs/store-format.md, "What readers check"): each chunk's CRC-32C (the ``crc32c`` codec, store
format 2) on both paths; the writer's recorded block checksums always through zarr
(:func:`fmdata.store.checksums.read_checked`), and by the row reader where a chunk is a whole
write block (unsharded arrays, as the 1-D frame arrays are). A sharded array read by the row
reader has its shard indexes' CRC-32C checked but not its decoded blocks against the recorded
checksums. A failed check is the one-line error naming the array and rows.
"""
from __future__ import annotations

import os

import numpy as np
import zarr
from zarr.storage import LocalStore

from fmdata.store.checksums import read_checked
from fmdata.store.row_reader import LocalAxisReader
from fmdata.store.shards import UnsupportedLayout


def read_column(array: zarr.Array, dtype: np.dtype | type | str | None = None, where: str | None = None) -> np.ndarray:
    """Return the whole of ``array`` (an open zarr array, any rank) as numpy, cast to ``dtype`` if
    given; FmDataError (naming ``where``, the store) when a chunk or block fails its checks."""
    store = array.store_path.store
    values = None
    if isinstance(store, LocalStore) and array.shape and array.shape[0]:
        try:
            reader = LocalAxisReader(os.path.join(str(store.root), *array.path.split("/")))
        except UnsupportedLayout:
            reader = None
        if reader is not None:
            values = reader.take(np.arange(array.shape[0]))
            reader.close()
    if values is None:
        values = read_checked(array, where)
    return values if dtype is None else np.asarray(values, dtype=dtype)
