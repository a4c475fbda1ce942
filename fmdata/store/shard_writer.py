"""Write whole Zarr v3 shards fast, in the exact layout zarr-python reads back.

zarr-python 3 spends about 0.3 ms of Python per inner chunk when it encodes a shard; with
one-frame chunks that is several times the cost of compressing the data (measured in
``docs/store-format.md``). The converter therefore encodes shards with the toolkit's shard codec
(:mod:`fmdata.store.shards`, the same numcodecs Blosc call the array's metadata names) and puts
the bytes through the array's own zarr store object, so local folders and fsspec URLs behave the
same. Readers may use stock zarr; the test suite reads every shard written here back with it.

Only layouts the codec handles are accepted (the layouts :func:`fmdata.store.layout.create_arrays`
makes), split along axis 0 only; anything else raises. :meth:`ShardWriter.write` encodes rows
(blosc on whole rows); :meth:`ShardWriter.write_chunks` stores inner chunks encoded elsewhere
(MATLAB's deflate chunks, copied into an array of the source layout) without decoding them.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import google_crc32c
import numpy as np
import zarr
import zarr.storage
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fmdata.errors import FmDataError
from fmdata.store.atomic import replace_file
from fmdata.store.shards import (
    EncodedChunks,
    Encoder,
    ShardLayout,
    UnsupportedLayout,
    assemble_shard,
    encode_shard,
)


class ShardWriter:
    """Encode and store whole write blocks along axis 0 of one Zarr array.

    A write block is a shard for sharded arrays and a chunk otherwise; it spans the full extent
    of every axis but the first. :meth:`write` takes the data of one block.
    """

    def __init__(self, array: zarr.Array) -> None:
        try:
            self.layout = ShardLayout.of_array(array)
        except UnsupportedLayout as exc:
            raise FmDataError(f"{array.path}: expected a layout the shard writer encodes, got one it does not "
                              f"({exc})") from None
        self._encode: Encoder | None = None
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
        self._root = str(self._store.root) if isinstance(self._store, zarr.storage.LocalStore) else None

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Return the [start, stop) rows of axis 0 that shard number ``shard`` covers."""
        return self.layout.outer_range(shard)

    def _pieces(self, data: np.ndarray) -> list[bytes]:
        if data.shape[0] > self.shard_len or data.shape[1:] != self.layout.row_shape:
            raise FmDataError(f"{self._prefix}: expected a shard block of at most "
                              f"{(self.shard_len, *self.layout.row_shape)}, got {data.shape}")
        if self._encode is None:
            try:
                self._encode = self.layout.encoder()
            except UnsupportedLayout as exc:
                raise FmDataError(f"{self._prefix}: expected a layout the shard writer encodes, got one it does not "
                                  f"({exc})") from None
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
        self._store_shard(shard, self._pieces(data))

    def write_chunks(self, shard: int, runs: Sequence[EncodedChunks]) -> int:
        """Store shard number ``shard`` made of ``runs``: its inner chunks encoded elsewhere, in the
        shard index's order, every chunk of the whole shard (or up to the array's end for the last
        one), each followed by room for its CRC-32C (written here). Returns the CRC-32C of the shard
        file's bytes, the block checksum of arrays whose chunks are copied (``COVERS_SHARD_FILE``)."""
        start, stop = self.shard_range(shard)
        lay = self.layout
        want = -(-(stop - start) // lay.inner_rows) * lay.per_row
        got = sum(len(r) for r in runs)
        if got != want:
            raise FmDataError(f"{self._prefix}: expected the {want} inner chunks of shard {shard} (rows "
                              f"{start}..{stop}), got {got}")
        pieces = assemble_shard(lay, runs)
        crc = 0
        for p in pieces:
            crc = google_crc32c.extend(crc, p)
        self._store_shard(shard, pieces)
        return int(crc)

    def _store_shard(self, shard: int, pieces: list[Any]) -> None:
        key = self.layout.chunk_key(shard)
        key = f"{self._prefix}/{key}" if self._prefix else key
        if self._root is None:
            sync(self._store.set(key, self._proto.buffer.from_bytes(b"".join(pieces))))
            return
        path = os.path.join(self._root, key)  # strings: pathlib's parsing costs more than a small shard's write
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # no fsync per shard: the store counts only once its `complete` flag is written
        replace_file(path, pieces, durable=False)
