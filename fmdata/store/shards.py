"""The shard codec: how an FMF store's arrays lie in their chunk files, encoded and decoded by hand.

zarr-python 3 reads and writes every layout correctly, but spends 0.2-0.5 ms of Python per
inner chunk in its generic machinery, and a store's default inner chunk is one frame: a scan or a
batch of training windows through zarr costs several times the decompression itself (measured
in docs/performance.md). The converter (:mod:`fmdata.store.shard_writer`), the derivations'
block scans (:mod:`fmdata.store.block_reader`) and the training reader
(:mod:`fmdata.store.row_reader`) therefore share this one codec, which follows the Zarr v3
specification of the layouts the toolkit writes:

* a regular chunk grid whose chunks (shards, when sharded) span every axis but the first: a
  shard holds whole rows (frames, or current samples); unsharded chunks hold exactly whole rows;
* inner chunks of a shard on a regular grid along every axis: whole rows (the plain layout), or
  several rows and part of a row (the source layout, docs/store-format.md: MATLAB's own chunk
  grid, whose edge chunks are stored full size, padded, as zarr stores them). The unit a reader
  decodes is a **chunk row**: the inner chunks that cover the same rows, which lie one after
  another in the shard index (C order, axis 0 slowest), decoded once per read;
* chunk bytes: optionally the ``transpose`` codec (the encoded chunk is the decoded one with its
  axes in ``order``: MATLAB's chunks in the source layout), the ``bytes`` codec (little
  endian), then at most one compressor (blosc, zstd, gzip or ``numcodecs.zlib``; the toolkit
  writes blosc, and zlib only by copying MATLAB's deflate chunks), then optionally the
  ``crc32c`` codec: the CRC-32C of the encoded bytes appended as four little-endian bytes
  (format 2 writes it; every decode checks it and raises :class:`ChunkChecksumError` on a
  mismatch). zlib is inflated with libdeflate (about twice the standard library's speed);
* optionally inside one ``sharding_indexed`` codec: the encoded inner chunks back to back, and an
  index of (offset, nbytes) uint64 pairs in C order over the inner chunks, little endian, at the
  end (or start) of the shard, followed by its CRC-32C when the index codecs say ``crc32c``. An
  inner chunk never written (all fill value) has the entry (2^64-1, 2^64-1).

:class:`ShardLayout` is parsed from an array's metadata (``zarr.json``) and raises
:class:`UnsupportedLayout` for anything else (nested shards, other codecs): callers then fall
back to zarr, which returns identical arrays.
"""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numcodecs
import numcodecs.blosc
import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store.checksums import ChunkChecksumError, damaged, undecodable

try:  # libdeflate: about 2x the standard library's inflate on MATLAB's deflate chunks (docs/performance.md)
    import deflate as _libdeflate

    def zlib_inflate(raw: Any, nbytes: int) -> bytes | bytearray:
        """Return the ``nbytes`` bytes of the zlib stream ``raw`` (libdeflate)."""
        return _libdeflate.zlib_decompress(raw, nbytes)

    def zlib_deflate(raw: Any, level: int) -> bytes:
        """Return ``raw`` as a zlib stream compressed at ``level`` (libdeflate)."""
        return bytes(_libdeflate.zlib_compress(raw, level))
except ImportError:  # pragma: no cover - the dependency is declared; stay correct without it
    def zlib_inflate(raw: Any, nbytes: int) -> bytes | bytearray:
        """Return the ``nbytes`` bytes of the zlib stream ``raw`` (the standard library)."""
        return zlib.decompress(raw)

    def zlib_deflate(raw: Any, level: int) -> bytes:
        """Return ``raw`` as a zlib stream compressed at ``level`` (the standard library)."""
        return zlib.compress(raw, level)

EMPTY = 2**64 - 1  # index entry (offset and size) of an inner chunk that was never written
INDEX_ENTRY_BYTES = 16  # (offset, nbytes), two little-endian uint64
CRC_BYTES = 4
ZLIB = "numcodecs.zlib"  # the codec name of zlib streams (MATLAB's deflate chunks) in Zarr v3 metadata
_COMPRESSORS = ("blosc", "zstd", "gzip", ZLIB)
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
    name of axis 0 (for messages). ``chunk``: the whole shape of an inner chunk (empty: whole
    rows, ``(inner_rows, *shape[1:])``); ``span``: the shard's extent on every axis but the first
    (empty: the array's); ``order``: the ``transpose`` codec's order (None: no transpose).
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
    chunk: tuple[int, ...] = ()
    span: tuple[int, ...] = ()
    order: tuple[int, ...] | None = None
    # per inner chunk of a chunk row: (its place in the rows, the valid part of the chunk, whole?)
    regions: tuple[tuple[tuple[slice, ...], tuple[slice, ...], bool], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.chunk:
            object.__setattr__(self, "chunk", (self.inner_rows, *self.shape[1:]))
        if not self.span:
            object.__setattr__(self, "span", tuple(self.shape[1:]))
        regions = []
        for offs in itertools.product(*(range(0, s, c) for s, c in zip(self.span, self.chunk[1:]))):
            dst = tuple(slice(o, min(o + c, n)) for o, c, n in zip(offs, self.chunk[1:], self.shape[1:]))
            src = tuple(slice(0, d.stop - d.start) for d in dst)
            regions.append((dst, src, all(d.stop - d.start == c for d, c in zip(dst, self.chunk[1:]))))
        object.__setattr__(self, "regions", tuple(regions))

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
            if len(outer) != len(shape) or any(o < s for o, s in zip(outer[1:], shape[1:])):
                raise UnsupportedLayout(f"expected shards spanning every axis but the first, got {outer} for {shape}")
            conf = codecs[0]["configuration"]
            inner = tuple(int(c) for c in conf["chunk_shape"])
            if len(inner) != len(shape) or any(c < 1 or o % c for o, c in zip(outer, inner)):
                raise UnsupportedLayout(f"expected inner chunks that divide the shard {outer}, got {inner}")
            index_codecs = [c.get("name") for c in conf.get("index_codecs", [])]
            if index_codecs not in (["bytes"], ["bytes", "crc32c"]):
                raise UnsupportedLayout(f"expected shard index codecs bytes(+crc32c), got {index_codecs}")
            if (conf["index_codecs"][0].get("configuration") or {}).get("endian", "little") != "little":
                raise UnsupportedLayout("expected a little-endian shard index")
            sharded, crc = True, index_codecs == ["bytes", "crc32c"]
            at_start = conf.get("index_location", "end") == "start"
            codecs = list(conf["codecs"])
        elif outer[1:] != shape[1:]:
            raise UnsupportedLayout(f"expected chunks spanning every axis but the first, got {outer} for {shape}")
        order, compressor, chunk_crc = _chunk_codecs(codecs, dtype, len(shape))
        dims = meta.get("dimension_names") or []
        return cls(shape=shape, dtype=dtype, fill_value=_fill(meta.get("fill_value")), outer_rows=outer[0],
                   inner_rows=inner[0], sharded=sharded, index_at_start=at_start, index_has_crc=crc,
                   key_prefix=prefix, separator=sep, compressor=compressor, chunk_crc=chunk_crc,
                   axis=str(dims[0]) if dims and dims[0] else "row", chunk=inner, span=outer[1:], order=order)

    @classmethod
    def of_array(cls, array: zarr.Array) -> ShardLayout:
        """Parse the layout of an open zarr array."""
        return cls.from_metadata(array.metadata.to_dict())

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def per_row(self) -> int:
        """Inner chunks in one chunk row (1 when inner chunks hold whole rows)."""
        return len(self.regions)

    @property
    def whole_rows(self) -> bool:
        """True when an inner chunk holds whole rows and nothing else (one chunk per chunk row)."""
        return self.chunk[1:] == self.shape[1:]

    @property
    def chunks_per_shard(self) -> int:
        """Inner chunks per outer chunk (1 when unsharded)."""
        return self.outer_rows // self.inner_rows * self.per_row

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row (everything but axis 0)."""
        return self.shape[1:]

    @property
    def inner_shape(self) -> tuple[int, ...]:
        """The shape of one decode unit (a chunk row: ``inner_rows`` whole rows)."""
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
        """Return ``decode(encoded, dest)`` that fills ``dest`` (one inner chunk, of shape ``chunk``)
        from its bytes.

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
        name = None if self.compressor is None else self.compressor.get("name")
        if self.order is not None or name == ZLIB:
            return self._bytes_decoder(name)
        if name is None:
            return _contiguous(_raw_decode)
        if name == "blosc":
            return _contiguous(_blosc_decode)
        codec = numcodecs.Zstd() if name == "zstd" else numcodecs.GZip()

        def decode(buf: Any, dest: np.ndarray) -> None:
            codec.decode(buf, out=dest)

        return _contiguous(decode)

    def _bytes_decoder(self, name: str | None) -> Decoder:
        """Decode to the encoded chunk's bytes, then place them (transposed back when ``order``)."""
        order = self.order
        encoded = self.chunk if order is None else tuple(self.chunk[i] for i in order)
        nbytes = int(np.prod(encoded, dtype=np.int64)) * self.dtype.itemsize
        inverse = None if order is None else tuple(int(i) for i in np.argsort(order))
        codec = None if name in (None, ZLIB, "blosc") else (numcodecs.Zstd() if name == "zstd" else numcodecs.GZip())

        def decode(buf: Any, dest: np.ndarray) -> None:
            if name == ZLIB:
                raw: Any = zlib_inflate(buf, nbytes)
            elif name == "blosc":
                raw = numcodecs.blosc.decompress(buf)
            elif codec is not None:
                raw = codec.decode(buf)
            else:
                raw = buf
            if len(raw) != nbytes:
                raise ValueError(f"expected {nbytes} decoded bytes, got {len(raw)}")
            place(dest, np.frombuffer(raw, self.dtype).reshape(encoded), inverse)

        return decode

    def encoder(self) -> Encoder:
        """Return ``encode(chunk) -> bytes`` for inner chunks; UnsupportedLayout unless blosc on whole rows.

        The same call numcodecs' Blosc.encode makes (zarr passes the metadata's typesize), without
        its per-call wrapping: one-frame chunks make that overhead count. Arrays in the source
        layout are written by copying encoded chunks (:func:`assemble_shard`), never encoded here.
        """
        if self.compressor is None or self.compressor.get("name") != "blosc" or self.order or not self.whole_rows:
            raise UnsupportedLayout(f"expected blosc chunks of whole rows to write, got {self.compressor}")
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


def _chunk_codecs(codecs: list[dict[str, Any]], dtype: np.dtype,
                  ndim: int) -> tuple[tuple[int, ...] | None, dict[str, Any] | None, bool]:
    """Check a ``[transpose?, bytes, <one compressor>?, crc32c?]`` chain; return (the transpose order or
    None, the compressor dict or None for raw bytes, whether chunks end with their CRC-32C)."""
    order = None
    if codecs and codecs[0].get("name") == "transpose":
        order = tuple(int(i) for i in (codecs[0].get("configuration") or {}).get("order", ()))
        if sorted(order) != list(range(ndim)):
            raise UnsupportedLayout(f"expected a transpose order over {ndim} axes, got {order}")
        codecs = codecs[1:]
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
    if rest and rest[0].get("name") not in _COMPRESSORS:
        raise UnsupportedLayout(f"expected one of {', '.join(_COMPRESSORS)}, got {rest[0].get('name')!r}")
    return order, (dict(rest[0]) if rest else None), crc


def _fill(value: Any) -> Any:
    if isinstance(value, str):  # v3 spells non-finite floats as strings
        return float({"Infinity": "inf", "-Infinity": "-inf"}.get(value, value))
    return 0 if value is None else value


def _blosc_decode(buf: Any, dest: np.ndarray) -> None:
    numcodecs.blosc.decompress(buf, dest)


def _raw_decode(buf: Any, dest: np.ndarray) -> None:
    dest.reshape(-1).view(np.uint8)[:] = np.frombuffer(buf, dtype=np.uint8)


def _contiguous(decode: Decoder) -> Decoder:
    """Wrap a decoder that writes into contiguous memory so that it also fills strided views."""

    def into(buf: Any, dest: np.ndarray) -> None:
        if dest.flags.c_contiguous:
            decode(buf, dest)
            return
        tmp = np.empty(dest.shape, dest.dtype)
        decode(buf, tmp)
        dest[...] = tmp

    return into


def place(dest: np.ndarray, encoded: np.ndarray, inverse: tuple[int, ...] | None) -> None:
    """Copy ``encoded`` (a chunk as its codec chain stores it) into ``dest`` (the chunk in array order),
    transposing it by ``inverse`` (the inverse of the ``transpose`` codec's order; None: as it is).

    MATLAB's RGB chunks (frame, channel, x, y) become (frame, y, x, channel) one colour plane at a
    time: three 2-D transposes run about three times faster than one 4-D strided copy.
    """
    if inverse is None:
        dest[...] = encoded
    elif inverse == (0, 3, 2, 1):
        for c in range(encoded.shape[1]):
            dest[..., c] = encoded[:, c].transpose(0, 2, 1)
    else:
        dest[...] = encoded.transpose(inverse)


# ---- chunk rows and shards ------------------------------------------------------------------------
def decode_row(layout: ShardLayout, decode: Decoder, pieces: Sequence[Any], dest: np.ndarray) -> None:
    """Decode one chunk row from its inner chunks' bytes ``pieces`` (index order; None: never written,
    the fill value) into ``dest``: its rows, ``(n <= inner_rows, *row_shape)``. The array's last
    chunk row is shorter; edge chunks are stored full size and clipped here."""
    n = len(dest)
    if layout.whole_rows:
        buf = pieces[0]
        if buf is None:
            dest[...] = layout.fill_value
        elif n == layout.inner_rows:
            decode(buf, dest)
        else:  # the array's last inner chunk is stored full size, padded
            scratch = np.empty(layout.chunk, layout.dtype)
            decode(buf, scratch)
            dest[...] = scratch[:n]
        return
    tmp: np.ndarray | None = None
    for buf, (dst, src, whole) in zip(pieces, layout.regions):
        where = (slice(None), *dst)
        if buf is None:
            dest[where] = layout.fill_value
        elif whole and n == layout.inner_rows:
            decode(buf, dest[where])
        else:
            if tmp is None:
                tmp = np.empty(layout.chunk, layout.dtype)
            decode(buf, tmp)
            dest[where] = tmp[(slice(0, n), *src)]


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


def _with_index(layout: ShardLayout, pieces: list[Any], where: list[int], sizes: np.ndarray | None = None) -> list[Any]:
    """Return a shard's pieces: ``pieces`` (the encoded inner chunks at index positions ``where``, back
    to back; one piece each unless ``sizes`` gives their sizes) and the index."""
    index = np.full((layout.chunks_per_shard, 2), EMPTY, dtype="<u8")
    if where:
        sizes = (np.fromiter(map(len, pieces), np.uint64, len(pieces)) if sizes is None
                 else np.asarray(sizes, np.uint64))
        at = np.asarray(where, np.int64)
        start = layout.index_nbytes if layout.index_at_start else 0
        index[at, 1] = sizes
        index[at, 0] = np.cumsum(sizes) - sizes + np.uint64(start)
    if layout.index_at_start:
        return encode_index(index, layout) + pieces
    return pieces + encode_index(index, layout)


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
    return _with_index(layout, pieces, todo)


@dataclass(frozen=True)
class EncodedChunks:
    """Inner chunks encoded elsewhere (MATLAB's deflate chunks), back to back in one buffer: chunk ``i``
    is ``data[starts[i]:starts[i] + sizes[i]]``, followed by ``gap`` spare bytes, the room
    :func:`assemble_shard` writes its CRC-32C into, so that a shard's chunks are written from one
    piece of memory (a piece per chunk costs more than copying it). ``raw`` holds, by chunk, the
    raw bytes of chunks the source stored without compression (compressed by the reader)."""

    data: np.ndarray
    sizes: np.ndarray
    gap: int = CRC_BYTES
    raw: dict[int, bytes] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def starts(self) -> np.ndarray:
        """The offset of every chunk in ``data``."""
        step = self.sizes + self.gap
        return np.cumsum(step) - step

    @property
    def nbytes(self) -> int:
        """The bytes of ``data`` the chunks and their gaps take."""
        return int(self.sizes.sum()) + self.gap * len(self.sizes)

    def chunk(self, i: int) -> np.ndarray:
        """The bytes of chunk ``i`` (a view)."""
        start = int(self.starts[i])
        return self.data[start:start + int(self.sizes[i])]


def with_crcs(run: EncodedChunks) -> np.ndarray:
    """Write each chunk's CRC-32C (little-endian) into the ``CRC_BYTES`` after it and return the
    run's chunks and checksums as one piece (a view of ``run.data``), as a ``crc32c`` codec stores them."""
    if run.gap != CRC_BYTES:
        raise FmDataError(f"expected {CRC_BYTES} spare bytes after each chunk, got {run.gap}")
    ends = run.starts + run.sizes
    crcs = np.array([google_crc32c.value(run.data[e - z:e]) for e, z in zip(ends.tolist(), run.sizes.tolist())], "<u4")
    run.data[ends[:, None] + np.arange(CRC_BYTES)] = crcs.view(np.uint8).reshape(-1, CRC_BYTES)
    return run.data[:run.nbytes]


def assemble_shard(layout: ShardLayout, runs: Sequence[EncodedChunks]) -> list[Any]:
    """Return the pieces (the runs' chunks, each followed by its CRC-32C when the layout has the
    ``crc32c`` codec, written into its gap; then the index) of one shard whose inner chunks are
    ``runs``' chunks, in index order (they may stop short of the index's end). Used to copy chunks
    encoded elsewhere into a shard without decoding them: each run is one piece, never joined."""
    if not layout.sharded:
        raise UnsupportedLayout("expected a sharded array to assemble shards of")
    gap = CRC_BYTES if layout.chunk_crc else 0
    n = sum(len(r) for r in runs)
    if n > layout.chunks_per_shard or any(r.gap != gap for r in runs):
        raise FmDataError(f"expected at most {layout.chunks_per_shard} inner chunks per shard with {gap} bytes "
                          f"after each, got {n} with {[r.gap for r in runs]}")
    pieces = [with_crcs(run) if gap else run.data[:run.nbytes] for run in runs]
    sizes = [run.sizes + gap for run in runs]
    return _with_index(layout, pieces, list(range(n)), sizes=np.concatenate(sizes) if sizes else np.zeros(0, np.int64))


def shard_chunks(layout: ShardLayout, raw: Any, where: str) -> list[memoryview | None]:
    """Return the stored bytes of every inner chunk of one shard (index order; None: not stored),
    CRC-32C included, from the shard's bytes ``raw``; ShardIndexError when the shard is cut short
    or its index is damaged or points outside it."""
    raw = memoryview(raw)
    at = max(0, layout.index_offset(len(raw)))  # negative in a shard shorter than its index
    index = decode_index(raw[at:at + layout.index_nbytes], layout, where, shard_nbytes=len(raw))
    return [None if off == EMPTY else raw[off:off + size] for off, size in index.tolist()]


def decode_shard(layout: ShardLayout, decode: Decoder, raw: Any, out: np.ndarray, where: str, *,
                 name: str = "", first_row: int = 0, store: str | None = None) -> None:
    """Decode one outer chunk's bytes ``raw`` into ``out`` (its rows; the array's last one shorter).

    A shard cut short or with a damaged index (all its rows), and a chunk that fails its CRC-32C
    (checked first) or cannot be decoded (blosc, zstd, gzip and zlib each raise their own types
    for damaged bytes), raise the one-line error naming array ``name`` (else ``where``) and its
    rows (``first_row`` is ``out``'s first row in the array; ``store`` names the store).
    """
    raw = memoryview(raw)
    cl = layout.inner_rows
    lo = 0  # first row of the chunk row being decoded, for the error
    try:  # one try around the whole shard: no cost per inner chunk
        if not layout.sharded:
            decode_row(layout, decode, [raw], out)
            return
        chunks = shard_chunks(layout, raw, where)
        per = layout.per_row
        for i in range(-(-len(out) // cl)):
            lo = i * cl
            decode_row(layout, decode, chunks[i * per:(i + 1) * per], out[lo:lo + cl])
    except ShardIndexError as exc:  # the shard's index is damaged or cut short: all its rows are lost
        raise damaged(name or where, layout.axis, first_row, first_row + len(out), exc.message, store) from None
    except Exception as exc:  # a CRC mismatch, or a decoder failing on damaged bytes
        n = min(cl, len(out) - lo)
        raise damaged(name or where, layout.axis, first_row + lo, first_row + lo + n, undecodable(exc), store) from None
