"""Write whole Zarr v3 shards fast, in the exact layout zarr-python reads back.

zarr-python 3 spends about 0.3 ms of Python per inner chunk when it encodes a shard; with
one-frame chunks that is several times the cost of compressing the data (measured in
``docs/store-format.md``). The converter therefore encodes the inner chunks itself with the
same numcodecs Blosc codec that the array's metadata names, assembles the shard as the
sharding codec specifies (encoded chunks back to back, then the index of (offset, nbytes)
uint64 pairs in C order over the chunk grid, little endian, followed by its CRC32C), and puts
the bytes through the array's own zarr store object, so local folders and fsspec URLs behave
the same. Readers use stock zarr; the test suite reads every shard written here back with it.

Unsharded arrays (``bytes`` + ``blosc``) are written the same way, one whole chunk at a time.
Only the layouts that :func:`fmdata.store.create_arrays` makes are accepted (sharding with
inner ``bytes`` + ``blosc`` and index ``bytes`` + ``crc32c`` at the end, or plain
``bytes`` + ``blosc``), split along axis 0 only; anything else raises.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr
from numcodecs import Blosc
from numcodecs.blosc import compress as blosc_compress
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

import google_crc32c

from fmdata.errors import FmDataError

_EMPTY = np.uint64(2**64 - 1)
_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}


def _blosc_layout(codecs: tuple, where: str) -> tuple[BytesCodec, BloscCodec]:
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec):
        raise FmDataError(f"{where}: expected codecs bytes+blosc, got {codecs}")
    return codecs[0], codecs[1]


class ShardWriter:
    """Encode and store whole write blocks along axis 0 of one Zarr array.

    A write block is a shard for sharded arrays and a chunk otherwise; it must span the full
    extent of every axis but the first. :meth:`write` takes the data of one block.
    """

    def __init__(self, array: zarr.Array) -> None:
        codecs = array.metadata.codecs
        self.array = array
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.shard_shape = tuple(array.metadata.chunk_grid.chunk_shape)
        if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
            sharding: ShardingCodec = codecs[0]
            index = sharding.index_codecs
            if (len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
                    or sharding.index_location != ShardingCodecIndexLocation.end):
                raise FmDataError(f"{array.path}: expected a shard index bytes+crc32c at the end, got {sharding}")
            endian, blosc = _blosc_layout(tuple(sharding.codecs), array.path)
            self.chunk_shape = tuple(sharding.chunk_shape)
            self.sharded = True
        else:
            endian, blosc = _blosc_layout(tuple(codecs), array.path)
            self.chunk_shape = self.shard_shape
            self.sharded = False
        if self.dtype.itemsize > 1 and endian.endian is not None and endian.endian.value != "little":
            raise FmDataError(f"{array.path}: expected little-endian chunks, got {endian.endian}")
        if self.shard_shape[1:] != tuple(array.shape[1:]) or self.chunk_shape[1:] != self.shard_shape[1:]:
            raise FmDataError(f"{array.path}: expected blocks split along axis 0 only, "
                              f"got shards {self.shard_shape}, chunks {self.chunk_shape}")
        self.chunk_len = self.chunk_shape[0]
        self.shard_len = self.shard_shape[0]
        self.chunks_per_shard = self.shard_len // self.chunk_len
        self.fill = np.asarray(array.metadata.fill_value, dtype=self.dtype)
        self._skip_empty = self.sharded and not self.fill.any()
        # The same call numcodecs' Blosc.encode makes (zarr passes the metadata's typesize to it),
        # without its per-call wrapping: one-frame chunks make that overhead count.
        cname, clevel = blosc.cname.value.encode(), int(blosc.clevel)
        shuffle, blocksize, typesize = _SHUFFLE[blosc.shuffle.value], int(blosc.blocksize), int(blosc.typesize)
        self._encode = lambda chunk: blosc_compress(chunk, cname, clevel, shuffle, blocksize, typesize)
        self._store = array.store_path.store
        self._prefix = array.path
        self._proto = default_buffer_prototype()
        # Local folders are written directly (temp file + rename, as LocalStore does): going
        # through zarr's event-loop thread costs two thread hops per block.
        self._root = Path(self._store.root) if isinstance(self._store, zarr.storage.LocalStore) else None

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Return the [start, stop) rows of axis 0 that shard number ``shard`` covers."""
        start = shard * self.shard_len
        return start, min(start + self.shard_len, self.array.shape[0])

    def encode(self, data: np.ndarray) -> bytes:
        """Return the bytes of one block holding ``data`` (the block's rows, edge blocks shorter)."""
        return b"".join(self._encode_parts(data))

    def _encode_parts(self, data: np.ndarray) -> list[bytes]:
        """The block's bytes as pieces to write back to back (encoded chunks, then the index)."""
        rows = data.shape[0]
        if rows > self.shard_len or data.shape[1:] != self.shard_shape[1:]:
            raise FmDataError(f"{self._prefix}: expected a shard block of at most {self.shard_shape}, got {data.shape}")
        data = np.ascontiguousarray(data, dtype=self.dtype)
        n_chunks = -(-rows // self.chunk_len)
        whole = (rows // self.chunk_len) * self.chunk_len
        if self._skip_empty:  # all-fill chunks are left out of the shard, as zarr itself does
            nonempty = np.ones(n_chunks, bool)
            rows_ = data[:whole].reshape(whole // self.chunk_len, -1)
            # max of unsigned bytes is a SIMD pass; any() first casts to bool
            nonempty[:whole // self.chunk_len] = rows_.max(axis=1) != 0 if self.dtype.kind == "u" else rows_.any(axis=1)
            if whole < rows:
                nonempty[-1] = data[whole:].any()
            todo = np.flatnonzero(nonempty).tolist()
        else:
            todo = range(n_chunks)
        encode, cl = self._encode, self.chunk_len
        pieces: list[bytes] = []
        for i in todo:
            chunk = data[i * cl:(i + 1) * cl]
            if chunk.shape[0] < cl:  # the array's last chunk is stored full size, padded
                padded = np.empty(self.chunk_shape, dtype=self.dtype)
                padded[...] = self.fill
                padded[:chunk.shape[0]] = chunk
                chunk = padded
            pieces.append(encode(chunk))
        if not self.sharded:
            return pieces or [encode(np.full(self.chunk_shape, self.fill))]
        index = np.full((self.chunks_per_shard, 2), _EMPTY, dtype="<u8")
        if pieces:
            sizes = np.fromiter(map(len, pieces), np.uint64, len(pieces))
            where = np.asarray(todo, np.int64)
            index[where, 1] = sizes
            index[where, 0] = np.cumsum(sizes) - sizes
        index_bytes = index.tobytes()
        pieces.append(index_bytes)
        pieces.append(np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes())
        return pieces

    def write(self, shard: int, data: np.ndarray) -> None:
        """Encode ``data`` as shard number ``shard`` and store it, replacing what was there.

        ``data`` must cover the whole shard (or up to the array's end for the last one):
        concurrent writers of one shard would lose data, so partial shards are refused.
        """
        start, stop = self.shard_range(shard)
        if data.shape[0] != stop - start:
            raise FmDataError(f"{self._prefix}: expected a whole shard of rows {start}..{stop}, "
                              f"got {data.shape[0]} rows")
        coords = (shard,) + (0,) * (len(self.shard_shape) - 1)
        key = f"{self._prefix}/{self.array.metadata.encode_chunk_key(coords)}" if self._prefix else \
            self.array.metadata.encode_chunk_key(coords)
        parts = self._encode_parts(data)
        if self._root is None:
            sync(self._store.set(key, self._proto.buffer.from_bytes(b"".join(parts))))
            return
        path = self._root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        _write_all(tmp, parts)
        os.replace(tmp, path)


def _write_all(path: Path, parts: list[bytes]) -> None:
    """Write ``parts`` back to back into a new file at ``path`` (gathered writes, no joined copy)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(0, len(parts), 512):  # stay below IOV_MAX
            group = parts[i:i + 512]
            done, total = os.writev(fd, group), sum(len(p) for p in group)
            if done < total:  # a short write: finish the rest plainly
                rest = b"".join(group)[done:]
                while rest:
                    rest = rest[os.write(fd, rest):]
    finally:
        os.close(fd)
