"""Read whole write blocks (shards) along axis 0 of a store array, fast: the derivations' scans.

Derivations scan whole arrays block by block. :class:`BlockReader` fetches each shard with one
request through the array's own zarr store object (local folders and fsspec URLs alike) and
decodes it with the shard codec (:mod:`fmdata.store.shards`) straight into the output, the
shard index's CRC-32C checked. For layouts the codec does not handle, and for ranges that do
not cover whole blocks, it reads through zarr, which returns identical arrays.
"""
from __future__ import annotations

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from fmdata.errors import FmDataError
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

    def _get(self, block: int) -> bytes | None:
        assert self.layout is not None
        key = self.layout.chunk_key(block)
        key = f"{self.array.path}/{key}" if self.array.path else key
        buf = sync(self.array.store_path.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def _decode_block(self, block: int, out: np.ndarray) -> None:
        """Decode write block ``block`` into ``out`` (its rows, the array's last block shorter)."""
        assert self.layout is not None
        data = self._get(block)
        if data is None:
            out[...] = self.layout.fill_value
            return
        decode_shard(self.layout, self._decode, data, out, f"{self.array.path} shard {block}")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return ``array[start:stop]``; direct decoding when both ends sit on block edges."""
        start, stop = int(start), int(min(stop, self.shape[0]))
        aligned = start % self.block == 0 and (stop % self.block == 0 or stop == self.shape[0])
        if not (self.fast and aligned):
            return read_rows(self.array, start, stop)
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for b in range(start // self.block, -(-stop // self.block)):
            lo = b * self.block
            self._decode_block(b, out[lo - start:min(lo + self.block, stop) - start])
        return out


def read_rows(array: zarr.Array, start: int | None = None, stop: int | None = None) -> np.ndarray:
    """Return ``array[start:stop]`` through zarr; FmDataError naming the array when a chunk does not
    decode (zarr passes the compressor's own error up: a corrupt store)."""
    try:
        return np.asarray(array[start:stop])
    except Exception as exc:  # blosc, zstd, gzip and zarr each raise their own types for corrupt chunks
        detail = str(exc).strip().splitlines()
        raise FmDataError(f"expected decodable chunks, got corrupt data ({type(exc).__name__}"
                          f"{': ' + detail[0] if detail else ''}; corrupt store)", array.path or "array") from None
