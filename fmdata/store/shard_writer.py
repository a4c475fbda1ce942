"""Write whole Zarr v3 shards fast, in the exact layout zarr-python reads back.

zarr-python 3 spends about 0.3 ms of Python per inner chunk when it encodes a shard; with
one-frame chunks that is several times the cost of compressing the data (measured in
``docs/store-format.md``). The converter therefore encodes shards with the toolkit's shard codec
(:mod:`fmdata.store.shards`, the same numcodecs Blosc call the array's metadata names) and puts
the bytes through the array's own zarr store object, so local folders and fsspec URLs behave the
same. Readers may use stock zarr; the test suite reads every shard written here back with it.

Only layouts the codec handles and blosc writes are accepted (the layouts
:func:`fmdata.store.layout.create_arrays` makes), split along axis 0 only; anything else raises.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr
import zarr.storage
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fmdata.errors import FmDataError
from fmdata.store.atomic import replace_file
from fmdata.store.shards import ShardLayout, UnsupportedLayout, encode_shard


class ShardWriter:
    """Encode and store whole write blocks along axis 0 of one Zarr array.

    A write block is a shard for sharded arrays and a chunk otherwise; it spans the full extent
    of every axis but the first. :meth:`write` takes the data of one block.
    """

    def __init__(self, array: zarr.Array) -> None:
        try:
            self.layout = ShardLayout.of_array(array)
            self._encode = self.layout.encoder()
        except UnsupportedLayout as exc:
            raise FmDataError(f"{array.path}: expected a layout the shard writer encodes, got one it does not "
                              f"({exc})") from None
        if self.layout.sharded and self.layout.index_at_start:
            raise FmDataError(f"{array.path}: expected the shard index at the end, got it at the start")
        self.array = array
        self.dtype = self.layout.dtype
        self.shard_len = self.layout.outer_rows
        self._store = array.store_path.store
        self._prefix = array.path
        self._proto = default_buffer_prototype()
        # Local folders are written directly (temp file + rename, as LocalStore does): going
        # through zarr's event-loop thread costs two thread hops per block.
        self._root = Path(self._store.root) if isinstance(self._store, zarr.storage.LocalStore) else None

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Return the [start, stop) rows of axis 0 that shard number ``shard`` covers."""
        return self.layout.outer_range(shard)

    def _pieces(self, data: np.ndarray) -> list[bytes]:
        if data.shape[0] > self.shard_len or data.shape[1:] != self.layout.row_shape:
            raise FmDataError(f"{self._prefix}: expected a shard block of at most "
                              f"{(self.shard_len, *self.layout.row_shape)}, got {data.shape}")
        return encode_shard(self.layout, self._encode, np.ascontiguousarray(data, dtype=self.dtype))

    def write(self, shard: int, data: np.ndarray) -> None:
        """Encode ``data`` as shard number ``shard`` and store it, replacing what was there.

        ``data`` must cover the whole shard (or up to the array's end for the last one):
        concurrent writers of one shard would lose data, so partial shards are refused.
        """
        start, stop = self.shard_range(shard)
        if data.shape[0] != stop - start:
            raise FmDataError(f"{self._prefix}: expected a whole shard of rows {start}..{stop}, "
                              f"got {data.shape[0]} rows")
        key = self.layout.chunk_key(shard)
        key = f"{self._prefix}/{key}" if self._prefix else key
        pieces = self._pieces(data)
        if self._root is None:
            sync(self._store.set(key, self._proto.buffer.from_bytes(b"".join(pieces))))
            return
        path = self._root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        # no fsync per shard: the store counts only once its `complete` flag is written
        replace_file(path, pieces, durable=False)
