"""The shard codec: how an FMF store's arrays lie in their chunk files, encoded and decoded by hand.

zarr-python 3 reads and writes every layout correctly, but spends 0.2-0.5 ms of Python per
inner chunk in its generic machinery, and a store's default inner chunk is one frame: a scan or a
batch of training windows through zarr costs several times the decompression itself (measured
in docs/performance.md). The converter (:mod:`fmdata.store.shard_writer`), the derivations'
block scans (:mod:`fmdata.store.block_reader`) and the training reader
(:mod:`fmdata.store.row_reader`) therefore share this one codec, which follows the Zarr v3
specification of the layouts the toolkit writes:

* a regular chunk grid whose chunks span every axis but the first (a chunk holds whole rows:
  frames, or current samples);
* chunk bytes: the ``bytes`` codec (little endian), then at most one compressor (blosc, zstd or
  gzip; the toolkit writes blosc), then optionally the ``crc32c`` codec: the CRC-32C of the
  encoded bytes appended as four little-endian bytes (format 2 writes it; every decode checks it
  and raises :class:`ChunkChecksumError` on a mismatch);
* optionally inside one ``sharding_indexed`` codec: the encoded inner chunks back to back, and an
  index of (offset, nbytes) uint64 pairs in C order over the inner chunks, little endian, at the
  end (or start) of the shard, followed by its CRC-32C when the index codecs say ``crc32c``. An
  inner chunk never written (all fill value) has the entry (2^64-1, 2^64-1).

:class:`ShardLayout` is parsed from an array's metadata (``zarr.json``) and raises
:class:`UnsupportedLayout` for anything else (nested shards, transposes, other codecs): callers
then fall back to zarr, which returns identical arrays.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numcodecs
import numcodecs.blosc
import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store.checksums import ChunkChecksumError, damaged, undecodable

EMPTY = 2**64 - 1  # index entry (offset and size) of an inner chunk that was never written
INDEX_ENTRY_BYTES = 16  # (offset, nbytes), two little-endian uint64
CRC_BYTES = 4
_BLOSC_SHUFFLE = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
                  "bitshuffle": numcodecs.Blosc.BITSHUFFLE}

Decoder = Callable[[Any, np.ndarray], None]
Encoder = Callable[[np.ndarray], bytes]


class UnsupportedLayout(FmDataError):
    """The array's layout is outside what this codec handles; read (or write) it through zarr."""


@dataclass(frozen=True)
class ShardLayout:
    """Where the bytes of an array's rows are, parsed from its Zarr v3 metadata.

    ``outer_rows``: axis-0 length of a chunk-grid chunk (a shard when ``sharded``);
    ``inner_rows``: axis-0 length of the unit that is encoded (the inner chunk when sharded).
    ``compressor``: the compressor's codec dict (name and configuration), or None for raw bytes;
    ``chunk_crc``: each encoded chunk ends with its CRC-32C (the ``crc32c`` codec); ``axis``: the
    name of axis 0 (for messages).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    fill_value: Any
    outer_rows: int
    inner_rows: int
    sharded: bool
    index_at_start: bool
    index_has_crc: bool
    key_prefix: str
    separator: str
    compressor: dict[str, Any] | None
    chunk_crc: bool = False
    axis: str = "row"

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> ShardLayout:
        """Parse a Zarr v3 array metadata dict; UnsupportedLayout when the codec does not apply."""
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
            raise UnsupportedLayout("expected Zarr v3 array metadata")
        if meta.get("storage_transformers"):
            raise UnsupportedLayout("expected no storage transformers")
        try:
            dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        except TypeError:
            raise UnsupportedLayout(f"expected a numeric data type, got {meta['data_type']!r}") from None
        shape = tuple(int(s) for s in meta["shape"])
        grid = meta.get("chunk_grid", {})
        if grid.get("name") != "regular" or not shape:
            raise UnsupportedLayout("expected a regular chunk grid")
        outer = tuple(int(c) for c in grid["configuration"]["chunk_shape"])
        if outer[1:] != shape[1:]:
            raise UnsupportedLayout(f"expected chunks spanning every axis but the first, got {outer} for {shape}")
        enc = meta.get("chunk_key_encoding", {"name": "default"})
        sep = (enc.get("configuration") or {}).get("separator")
        if enc.get("name") == "default":
            sep = sep or "/"
            prefix = "c" + sep
        elif enc.get("name") == "v2":
            sep, prefix = sep or ".", ""
        else:
            raise UnsupportedLayout(f"expected a default or v2 chunk key encoding, got {enc.get('name')!r}")
        codecs = list(meta.get("codecs", []))
        sharded, at_start, crc, inner = False, False, False, outer
        if codecs and codecs[0].get("name") == "sharding_indexed":
            if len(codecs) != 1:
                raise UnsupportedLayout("expected the sharding codec alone")
            conf = codecs[0]["configuration"]
            inner = tuple(int(c) for c in conf["chunk_shape"])
            if inner[1:] != shape[1:] or outer[0] % inner[0]:
                raise UnsupportedLayout(f"expected inner chunks spanning every axis but the first, got {inner}")
            index_codecs = [c.get("name") for c in conf.get("index_codecs", [])]
            if index_codecs not in (["bytes"], ["bytes", "crc32c"]):
                raise UnsupportedLayout(f"expected shard index codecs bytes(+crc32c), got {index_codecs}")
            if (conf["index_codecs"][0].get("configuration") or {}).get("endian", "little") != "little":
                raise UnsupportedLayout("expected a little-endian shard index")
            sharded, crc = True, index_codecs == ["bytes", "crc32c"]
            at_start = conf.get("index_location", "end") == "start"
            codecs = list(conf["codecs"])
        compressor, chunk_crc = _chunk_codecs(codecs, dtype)
        dims = meta.get("dimension_names") or []
        return cls(shape=shape, dtype=dtype, fill_value=_fill(meta.get("fill_value")), outer_rows=outer[0],
                   inner_rows=inner[0], sharded=sharded, index_at_start=at_start, index_has_crc=crc,
                   key_prefix=prefix, separator=sep, compressor=compressor, chunk_crc=chunk_crc,
                   axis=str(dims[0]) if dims and dims[0] else "row")

    @classmethod
    def of_array(cls, array: zarr.Array) -> ShardLayout:
        """Parse the layout of an open zarr array."""
        return cls.from_metadata(array.metadata.to_dict())

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def chunks_per_shard(self) -> int:
        """Inner chunks per outer chunk (1 when unsharded)."""
        return self.outer_rows // self.inner_rows

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row (everything but axis 0)."""
        return self.shape[1:]

    @property
    def inner_shape(self) -> tuple[int, ...]:
        """The shape of one encoded unit (inner chunk, or chunk when unsharded)."""
        return (self.inner_rows, *self.row_shape)

    def outer_range(self, outer: int) -> tuple[int, int]:
        """Return the [start, stop) rows of axis 0 that outer chunk ``outer`` covers."""
        start = outer * self.outer_rows
        return start, min(start + self.outer_rows, self.shape[0])

    def chunk_key(self, outer: int) -> str:
        """Return the storage key of outer chunk ``outer``, relative to the array's folder."""
        return self.key_prefix + self.separator.join([str(outer)] + ["0"] * (len(self.shape) - 1))

    @property
    def index_nbytes(self) -> int:
        """Bytes of a shard's index, its checksum included."""
        return INDEX_ENTRY_BYTES * self.chunks_per_shard + (CRC_BYTES if self.index_has_crc else 0)

    def index_offset(self, shard_nbytes: int) -> int:
        """Byte offset of the index inside a shard of ``shard_nbytes`` bytes."""
        return 0 if self.index_at_start else shard_nbytes - self.index_nbytes

    # ---- codecs -------------------------------------------------------------------------------
    def decoder(self, check_crc: bool = True) -> Decoder:
        """Return ``decode(encoded, dest)`` that fills ``dest`` (one inner chunk) from its bytes.

        With the ``crc32c`` codec it first checks the chunk's CRC-32C (ChunkChecksumError on a
        mismatch); ``check_crc=False`` only strips it (to measure what the check costs).
        """
        base = self._plain_decoder()
        if not self.chunk_crc:
            return base

        def decode(buf: Any, dest: np.ndarray) -> None:
            if len(buf) < CRC_BYTES:
                raise ChunkChecksumError(f"expected a chunk with its CRC-32C, got {len(buf)} bytes")
            # bytes (a pread) slice fastest as bytes; views (a shard in memory) without a copy
            body = buf[:-CRC_BYTES] if isinstance(buf, bytes) else np.frombuffer(buf, np.uint8)[:-CRC_BYTES]
            if check_crc and google_crc32c.value(body) != int.from_bytes(buf[-CRC_BYTES:], "little"):
                raise ChunkChecksumError("expected chunk bytes matching their stored CRC-32C, got a mismatch")
            base(body, dest)

        return decode

    def _plain_decoder(self) -> Decoder:
        if self.compressor is None:
            return _raw_decode
        name = self.compressor.get("name")
        if name == "blosc":
            return _blosc_decode
        codec = numcodecs.Zstd() if name == "zstd" else numcodecs.GZip()

        def decode(buf: Any, dest: np.ndarray) -> None:
            codec.decode(buf, out=dest)

        return decode

    def encoder(self) -> Encoder:
        """Return ``encode(chunk) -> bytes`` for inner chunks; UnsupportedLayout unless blosc.

        The same call numcodecs' Blosc.encode makes (zarr passes the metadata's typesize), without
        its per-call wrapping: one-frame chunks make that overhead count.
        """
        if self.compressor is None or self.compressor.get("name") != "blosc":
            raise UnsupportedLayout(f"expected blosc chunks to write, got {self.compressor}")
        conf = self.compressor.get("configuration") or {}
        cname, clevel = str(conf["cname"]).encode(), int(conf["clevel"])
        shuffle, blocksize = _BLOSC_SHUFFLE[str(conf["shuffle"])], int(conf.get("blocksize", 0))
        typesize = int(conf.get("typesize") or self.dtype.itemsize)

        def encode(chunk: np.ndarray) -> bytes:
            return numcodecs.blosc.compress(chunk, cname, clevel, shuffle, blocksize, typesize)

        if not self.chunk_crc:
            return encode

        def encode_with_crc(chunk: np.ndarray) -> bytes:
            body = encode(chunk)
            return body + int(google_crc32c.value(body)).to_bytes(CRC_BYTES, "little")

        return encode_with_crc


def _chunk_codecs(codecs: list[dict[str, Any]], dtype: np.dtype) -> tuple[dict[str, Any] | None, bool]:
    """Check a ``[bytes, <one compressor>?, crc32c?]`` chain; return (the compressor dict or None for
    raw bytes, whether chunks end with their CRC-32C)."""
    if not codecs or codecs[0].get("name") != "bytes":
        raise UnsupportedLayout(f"expected a 'bytes' codec first, got {codecs[:1]}")
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if dtype.itemsize > 1 and endian != "little":
        raise UnsupportedLayout(f"expected little-endian bytes, got {endian!r}")
    rest = codecs[1:]
    crc = bool(rest) and rest[-1].get("name") == "crc32c"
    if crc:
        rest = rest[:-1]
    if len(rest) > 1:
        raise UnsupportedLayout(f"expected at most one compressor, got {[c.get('name') for c in rest]}")
    if rest and rest[0].get("name") not in ("blosc", "zstd", "gzip"):
        raise UnsupportedLayout(f"expected blosc, zstd or gzip, got {rest[0].get('name')!r}")
    return (dict(rest[0]) if rest else None), crc


def _fill(value: Any) -> Any:
    if isinstance(value, str):  # v3 spells non-finite floats as strings
        return float({"Infinity": "inf", "-Infinity": "-inf"}.get(value, value))
    return 0 if value is None else value


def _blosc_decode(buf: Any, dest: np.ndarray) -> None:
    numcodecs.blosc.decompress(buf, dest)


def _raw_decode(buf: Any, dest: np.ndarray) -> None:
    dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(buf, dtype=np.uint8)


# ---- shard indexes --------------------------------------------------------------------------------
class ShardIndexError(FmDataError):
    """A shard's index is cut short, fails its CRC-32C or points outside the shard: the message is
    "expected X, got Y"; readers name the array and the shard's rows (:func:`fmdata.store.checksums.damaged`)."""


def decode_index(raw: Any, layout: ShardLayout, where: str, *, shard_nbytes: int | None = None) -> np.ndarray:
    """Return the (inner chunks, 2) uint64 index [offset, nbytes] from its bytes, CRC checked.

    ``shard_nbytes`` (the whole shard's size, when known) is checked to hold the index, and every
    entry to lie inside the shard, beside the index: a shard cut short (an empty file included)
    fails here rather than in a read at a negative or far offset. Raises ShardIndexError naming
    ``where`` when the bytes are short, the checksum does not match or an entry is out of bounds.
    """
    if shard_nbytes is not None and shard_nbytes < layout.index_nbytes:
        raise ShardIndexError(f"expected a shard of at least {layout.index_nbytes} bytes (its index), got "
                              f"{shard_nbytes} bytes", where)
    raw = memoryview(raw)
    if len(raw) != layout.index_nbytes:
        raise ShardIndexError(f"expected a shard index of {layout.index_nbytes} bytes, got {len(raw)}", where)
    body = raw[:INDEX_ENTRY_BYTES * layout.chunks_per_shard]
    if layout.index_has_crc:
        want = int.from_bytes(raw[len(body):], "little")
        if google_crc32c.value(bytes(body)) != want:
            raise ShardIndexError("expected a shard index with a valid CRC-32C, got a mismatch", where)
    index = np.frombuffer(body, "<u8").reshape(layout.chunks_per_shard, 2)
    if shard_nbytes is not None:
        lo = layout.index_nbytes if layout.index_at_start else 0
        hi = shard_nbytes if layout.index_at_start else shard_nbytes - layout.index_nbytes
        off, size = index[:, 0], index[:, 1]
        # (off, size) both EMPTY: never written; otherwise inside [lo, hi) (no uint64 overflow: size first)
        bad = ~((off == EMPTY) & (size == EMPTY)) & ((off < lo) | (size > hi - lo) | (off > hi - size))
        if bad.any():
            i = int(np.argmax(bad))
            raise ShardIndexError(f"expected inner chunks within bytes {lo}..{hi} of the shard, got chunk {i} at "
                                  f"offset {int(off[i])} of {int(size[i])} bytes", where)
    return index


def encode_index(index: np.ndarray, layout: ShardLayout) -> list[bytes]:
    """Return the index bytes (and its CRC-32C when the layout has one) of a (n, 2) uint64 index."""
    body = np.ascontiguousarray(index, dtype="<u8").tobytes()
    if not layout.index_has_crc:
        return [body]
    return [body, int(google_crc32c.value(body)).to_bytes(CRC_BYTES, "little")]


def encode_shard(layout: ShardLayout, encode: Encoder, data: np.ndarray) -> list[bytes]:
    """Return the pieces (encoded inner chunks, then the index) of one outer chunk holding ``data``.

    ``data`` holds the chunk's rows in the store dtype (the array's last chunk may be shorter; its
    last inner chunk is stored full size, padded with the fill value, as zarr does). Inner chunks
    that hold only the fill value 0 are left out of a shard, as zarr leaves them out.
    """
    rows = data.shape[0]
    cl = layout.inner_rows
    n_chunks = -(-rows // cl)
    whole = (rows // cl) * cl
    fill = np.asarray(layout.fill_value, dtype=layout.dtype)
    if layout.sharded and not fill.any():
        nonempty = np.ones(n_chunks, bool)
        if whole:  # a last shard shorter than one inner chunk has no whole chunk
            flat = data[:whole].reshape(whole // cl, -1)
            # max of unsigned bytes is a SIMD pass; any() first casts to bool
            nonempty[:whole // cl] = flat.max(axis=1) != 0 if layout.dtype.kind == "u" else flat.any(axis=1)
        if whole < rows:
            nonempty[-1] = data[whole:].any()
        todo: list[int] = np.flatnonzero(nonempty).tolist()
    else:
        todo = list(range(n_chunks))
    pieces: list[bytes] = []
    for i in todo:
        chunk = data[i * cl:(i + 1) * cl]
        if chunk.shape[0] < cl:
            padded = np.empty(layout.inner_shape, dtype=layout.dtype)
            padded[...] = fill
            padded[:chunk.shape[0]] = chunk
            chunk = padded
        pieces.append(encode(chunk))
    if not layout.sharded:
        return pieces or [encode(np.full(layout.inner_shape, fill))]
    index = np.full((layout.chunks_per_shard, 2), EMPTY, dtype="<u8")
    if pieces:
        sizes = np.fromiter(map(len, pieces), np.uint64, len(pieces))
        where = np.asarray(todo, np.int64)
        start = layout.index_nbytes if layout.index_at_start else 0
        index[where, 1] = sizes
        index[where, 0] = np.cumsum(sizes) - sizes + np.uint64(start)
    if layout.index_at_start:
        return encode_index(index, layout) + pieces
    return pieces + encode_index(index, layout)


def decode_shard(layout: ShardLayout, decode: Decoder, raw: Any, out: np.ndarray, where: str, *,
                 name: str = "", first_row: int = 0, store: str | None = None) -> None:
    """Decode one outer chunk's bytes ``raw`` into ``out`` (its rows; the array's last one shorter).

    A shard cut short or with a damaged index (all its rows), and a chunk that fails its CRC-32C
    (checked first) or cannot be decoded (blosc, zstd and gzip each raise their own types for
    damaged bytes), raise the one-line error naming array ``name`` (else ``where``) and its rows
    (``first_row`` is ``out``'s first row in the array; ``store`` names the store).
    """
    raw = memoryview(raw)
    scratch: np.ndarray | None = None
    cl = layout.inner_rows
    lo = 0  # first row of the chunk being decoded, for the error
    try:  # one try around the whole shard: no cost per inner chunk
        if not layout.sharded:
            if len(out) == cl:
                decode(raw, out)
            else:
                scratch = np.empty(layout.inner_shape, layout.dtype)
                decode(raw, scratch)
                out[...] = scratch[:len(out)]
            return
        at = max(0, layout.index_offset(len(raw)))
        index = decode_index(raw[at:at + layout.index_nbytes], layout, where, shard_nbytes=len(raw))
        for i in range(-(-len(out) // cl)):
            lo = i * cl
            rows = out[lo:lo + cl]
            off, size = int(index[i, 0]), int(index[i, 1])
            if off == EMPTY:
                rows[...] = layout.fill_value
            elif len(rows) == cl:
                decode(raw[off:off + size], rows)
            else:  # the array's last inner chunk is stored full size, padded
                if scratch is None:
                    scratch = np.empty(layout.inner_shape, layout.dtype)
                decode(raw[off:off + size], scratch)
                rows[...] = scratch[:len(rows)]
    except ShardIndexError as exc:  # the shard's index is damaged or cut short: all its rows are lost
        raise damaged(name or where, layout.axis, first_row, first_row + len(out), exc.message, store) from None
    except Exception as exc:  # a CRC mismatch, or a decoder failing on damaged bytes
        n = min(cl, len(out) - lo)
        raise damaged(name or where, layout.axis, first_row + lo, first_row + lo + n, undecodable(exc), store) from None

