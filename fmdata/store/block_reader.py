"""Read whole write blocks (shards) along axis 0 of a store array, fast: the derivations' scans.

Derivations scan whole arrays block by block. :class:`BlockReader` fetches each shard with one
request through the array's own zarr store object (local folders and fsspec URLs alike) and
decodes it with the shard codec (:mod:`fmdata.store.shards`) straight into the output, checking
the shard index's CRC-32C, each chunk's CRC-32C (format 2) and the block against the checksum
the writer recorded (:mod:`fmdata.store.checksums`; every format): of its decoded values, or of
the shard file's bytes for arrays in the source layout (a chunk of several frames is decoded
once). A shard file that is missing is an error unless the block's recorded checksum is that of
an all-fill block (zarr leaves those unwritten; copied shards are never left out). For layouts
the codec does not handle, and for ranges that do not cover whole blocks, it reads through zarr,
which returns identical arrays and checks the ``crc32c`` codec only. :meth:`BlockReader.stream`
reads scattered rows (the resident windows' frames) block by block, skipping blocks that hold
none of them.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fmdata.store.checksums import (
    COVERS_SHARD_FILE,
    axis_name,
    check_block,
    check_missing,
    check_shard_file,
    missing_file,
    read_rows,
    recorded_checksums,
)
from fmdata.store.shards import ShardLayout, UnsupportedLayout, decode_shard

# Dask blocks of a scan hold whole write units and about this many bytes.
TARGET_BLOCK_BYTES = 16 * 2**20


def write_unit(arr: zarr.Array) -> int:
    """Return the rows of ``arr``'s independent write unit (its shard, or chunk if unsharded)."""
    return int(arr.metadata.chunk_grid.chunk_shape[0])


def block_frames(arr: zarr.Array, target_bytes: int | None = None) -> int:
    """Return a scan block length along axis 0: whole write units of ``arr``, about ``target_bytes``.

    ``target_bytes`` defaults to the module's TARGET_BLOCK_BYTES (16 MiB).
    """
    target_bytes = TARGET_BLOCK_BYTES if target_bytes is None else target_bytes
    unit = write_unit(arr)
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * np.dtype(arr.dtype).itemsize)
    units = max(1, target_bytes // (unit * row_bytes))
    return int(min(unit * units, max(unit, arr.shape[0])))


def block_ranges(n: int, block: int) -> list[tuple[int, int]]:
    """Return the [start, stop) row ranges of consecutive blocks of ``block`` rows covering ``n``."""
    return [(s, min(s + block, n)) for s in range(0, n, block)]


class BlockReader:
    """Reads rows ``[start, stop)`` of axis 0 of one zarr array, whole blocks at a time.

    ``block`` is the rows of one write block (shard, or chunk when unsharded); ``fast`` says
    whether the shard codec applies (otherwise every read goes through zarr).
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.block = write_unit(array)
        try:
            self.layout: ShardLayout | None = ShardLayout.of_array(array)
            self._decode = self.layout.decoder()
        except UnsupportedLayout:
            self.layout = None
        self.fast = self.layout is not None
        sums = recorded_checksums(array.attrs, self.shape[0])
        self.sums = sums if sums is not None and sums[0] == self.block else None
        files = recorded_checksums(array.attrs, self.shape[0], covers=COVERS_SHARD_FILE)
        self.file_sums = files if files is not None and files[0] == self.block else None
        self.axis = axis_name(array)
        store = array.store_path.store
        self.where = str(getattr(store, "root", None) or getattr(store, "path", "") or "") or None

    def shard_bytes(self, block: int) -> bytes | None:
        """Return the stored bytes of write block ``block`` (a shard file), or None when it is missing."""
        assert self.layout is not None
        key = self.layout.chunk_key(block)
        key = f"{self.array.path}/{key}" if self.array.path else key
        buf = sync(self.array.store_path.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def _decode_block(self, block: int, out: np.ndarray) -> None:
        """Decode write block ``block`` into ``out`` (its rows, the array's last block shorter), checked."""
        assert self.layout is not None
        name, first = self.array.path, block * self.block
        data = self.shard_bytes(block)
        if data is None:
            if self.file_sums is not None:  # copied shards are all written
                raise missing_file(self.layout.chunk_key(block), name, self.axis, first, first + len(out), self.where)
            check_missing(self.sums, block, out.shape, self.dtype, self.layout.fill_value,
                          self.layout.chunk_key(block), name, self.axis, first, self.where)
            out[...] = self.layout.fill_value
            return
        check_shard_file(data, block, self.file_sums, name, self.axis, self.shape[0], self.where)
        decode_shard(self.layout, self._decode, data, out, f"{name} shard {block}", name=name, first_row=first,
                     store=self.where)
        check_block(out, block, self.sums, name, self.axis, self.where)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return ``array[start:stop]``; direct decoding when both ends sit on block edges."""
        start, stop = int(start), int(min(stop, self.shape[0]))
        aligned = start % self.block == 0 and (stop % self.block == 0 or stop == self.shape[0])
        if not (self.fast and aligned):
            return read_rows(self.array, start, stop, self.where)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for b in range(start // self.block, -(-stop // self.block)):
            lo = b * self.block
            self._decode_block(b, out[lo - start:min(lo + self.block, stop) - start])
        return out

    def stream(self, rows: np.ndarray, block: int, put: Callable[[int, int, np.ndarray], None]) -> None:
        """Read the sorted global ``rows`` of the array, one scan block of ``block`` rows at a time.

        Calls ``put(lo, hi, values)`` with ``values`` the rows ``rows[lo:hi]`` (a view of the block
        where they are consecutive). Only blocks holding wanted rows are read, and within a block
        only the write units from the first wanted row to the last.
        """
        unit = self.block
        for a, b in block_ranges(self.shape[0], block):
            lo, hi = np.searchsorted(rows, [a, b])
            if lo == hi:
                continue
            first = int(rows[lo]) // unit * unit
            last = min(b, -(-(int(rows[hi - 1]) + 1) // unit) * unit)
            data = self.read(first, last)
            local = rows[lo:hi] - first
            run = int(local[-1]) - int(local[0]) + 1 == local.size  # consecutive: a view, no copy
            put(int(lo), int(hi), data[int(local[0]):int(local[-1]) + 1] if run else data[local])
