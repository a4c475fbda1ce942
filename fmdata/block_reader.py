"""Read whole write blocks (shards) along axis 0 of a store array, fast.

Derivations scan whole arrays block by block. zarr-python 3 decodes correctly but spends about
0.2-0.5 ms of Python per inner chunk, and a store's default inner chunk is one frame, so a scan
through zarr costs several times the decompression itself (measured in docs/performance.md,
"Derivations"). :class:`BlockReader` fetches each shard with one request through the array's
own zarr store object (local folders and fsspec URLs alike), checks the shard index's CRC32C,
and decodes the inner chunks with numcodecs' Blosc straight into the output. It accepts the
layouts that ``fmdata.store.create_arrays`` makes (a sharding codec with inner ``bytes`` +
``blosc`` and an index ``bytes`` + ``crc32c`` at the end, or plain ``bytes`` + ``blosc``, split
along axis 0 only); for anything else, and for ranges that do not cover whole blocks, it reads
through zarr, which returns identical arrays.
"""
from __future__ import annotations

from typing import Any

import google_crc32c
import numcodecs.blosc
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

_EMPTY = 2**64 - 1
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


def _blosc_chain(codecs: tuple[Any, ...]) -> bool:
    return len(codecs) == 2 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], BloscCodec)


class BlockReader:
    """Reads rows ``[start, stop)`` of axis 0 of one zarr array, whole blocks at a time.

    ``block`` is the rows of one write block (shard, or chunk when unsharded); ``fast`` says
    whether the direct decoder applies (otherwise every read goes through zarr).
    """

    def __init__(self, array: zarr.Array) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        grid = tuple(array.metadata.chunk_grid.chunk_shape)
        codecs = tuple(array.metadata.codecs)
        self.block = int(grid[0])
        self.inner = self.block
        self.sharded = False
        fast = self.dtype.byteorder in ("=", "<", "|") and grid[1:] == self.shape[1:]
        if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
            sc: ShardingCodec = codecs[0]
            index = tuple(sc.index_codecs)
            fast = (fast and _blosc_chain(tuple(sc.codecs)) and sc.index_location == ShardingCodecIndexLocation.end
                    and len(index) == 2 and isinstance(index[0], BytesCodec) and isinstance(index[1], Crc32cCodec)
                    and tuple(sc.chunk_shape)[1:] == self.shape[1:])
            self.inner = int(sc.chunk_shape[0])
            self.sharded = True
        else:
            fast = fast and _blosc_chain(codecs)
        self.fast = bool(fast)
        self.fill = array.metadata.fill_value

    def _get(self, block: int) -> bytes | None:
        coords = (block,) + (0,) * (len(self.shape) - 1)
        key = self.array.metadata.encode_chunk_key(coords)
        key = f"{self.array.path}/{key}" if self.array.path else key
        buf = sync(self.array.store_path.store.get(key, prototype=default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def _decode_block(self, block: int, out: np.ndarray) -> None:
        """Decode write block ``block`` into ``out`` (its rows, the array's last block shorter)."""
        data = self._get(block)
        if data is None:
            out[...] = self.fill
            return
        row_shape = self.shape[1:]
        chunk = np.empty((self.inner, *row_shape), self.dtype)
        if not self.sharded:
            numcodecs.blosc.decompress(data, chunk)
            out[...] = chunk[:len(out)]
            return
        n_inner = self.block // self.inner
        raw = memoryview(data)
        index_bytes = raw[len(raw) - 16 * n_inner - 4:len(raw) - 4]
        crc = int(np.frombuffer(raw[len(raw) - 4:], "<u4")[0])
        if google_crc32c.value(bytes(index_bytes)) != crc:
            raise OSError(f"shard {block} of {self.array.path}: index checksum mismatch (corrupt store)")
        index = np.frombuffer(index_bytes, "<u8").reshape(n_inner, 2)
        for i in range(-(-len(out) // self.inner)):
            rows = out[i * self.inner:(i + 1) * self.inner]
            off, size = int(index[i, 0]), int(index[i, 1])
            if off == _EMPTY:
                rows[...] = self.fill
            elif len(rows) == self.inner:
                numcodecs.blosc.decompress(raw[off:off + size], rows)
            else:  # the array's last inner chunk is stored full size, padded
                numcodecs.blosc.decompress(raw[off:off + size], chunk)
                rows[...] = chunk[:len(rows)]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Return ``array[start:stop]``; direct decoding when both ends sit on block edges."""
        start, stop = int(start), int(min(stop, self.shape[0]))
        aligned = start % self.block == 0 and (stop % self.block == 0 or stop == self.shape[0])
        if not (self.fast and aligned):
            return np.asarray(self.array[start:stop])
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        for b in range(start // self.block, -(-stop // self.block)):
            lo = b * self.block
            self._decode_block(b, out[lo - start:min(lo + self.block, stop) - start])
        return out
