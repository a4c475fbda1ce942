"""Fast reads of whole rows along axis 0 of a store array (frames of ``video``/``mask``, rows of ``current``).

A training window needs a handful of whole frames from far-apart places in the store. zarr-python
answers such a request correctly but spends far more time in its generic selection and async
machinery than in decoding. :class:`LocalAxisReader` goes straight to the bytes instead: it parses
the array's ``zarr.json`` into the shard codec's layout (:mod:`fmdata.store.shards`), reads each
shard's index once (and keeps it), fetches exactly the inner chunks a request needs with
``os.pread`` and decodes them into the caller's buffer. Where a chunk holds several rows (the
source layout: MATLAB's chunks of a few frames), each chunk a request touches is decoded once
and the rows it wants are copied out; where a row spans several chunks, they are read together.
Layouts the codec does not handle, and remote stores, are read through zarr by
:class:`ZarrAxisReader`, which returns identical arrays.

Checks on every read (docs/store-format.md, "What readers check"): each chunk's CRC-32C when
the array has the ``crc32c`` codec (format 2), each shard index's CRC-32C, and, where a chunk is
a whole write block (unsharded arrays such as ``current``), the decoded values against the
writer's recorded checksum. A missing shard or chunk file is an error unless the recorded
checksum says the block held only fill values. Failures are one FmDataError naming the array
and its rows.

Readers hold open file descriptors: create them inside the process that uses them (the torch
dataset does so lazily in each worker) and never pickle them.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any, Protocol

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store.checksums import (
    COVERS_SHARD_FILE,
    axis_name,
    check_block,
    check_missing,
    damaged,
    missing_file,
    recorded_checksums,
    undecodable,
)
from fmdata.store.location import Location
from fmdata.store.shards import EMPTY, ShardIndexError, ShardLayout, UnsupportedLayout, decode_index, decode_row

READER_MODES = ("auto", "fast", "zarr")


class AxisReader(Protocol):
    """Reads whole rows (everything but axis 0) of one array."""

    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str  # "fast" or "zarr"

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``array[index]`` for an int array of axis-0 positions (any order, repeats allowed).

        ``out`` (C-contiguous, shape ``(len(index), *shape[1:])``, the array's dtype) receives the
        rows when given.
        """
        ...


class _LRU:
    """A least-recently-used map bounded by a byte budget (values are numpy arrays) or a count."""

    def __init__(self, max_bytes: int | None = None, max_items: int | None = None) -> None:
        self.max_bytes, self.max_items = max_bytes, max_items
        self.nbytes = 0
        self._d: OrderedDict[int, Any] = OrderedDict()

    def get(self, key: int) -> Any:
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key: int, value: Any, nbytes: int = 0) -> Any:
        if self.max_bytes is not None and nbytes > self.max_bytes:
            return value
        self._d[key] = value
        self.nbytes += nbytes
        while self._d and ((self.max_items is not None and len(self._d) > self.max_items)
                           or (self.max_bytes is not None and self.nbytes > self.max_bytes)):
            _, old = self._d.popitem(last=False)
            self.nbytes -= old.nbytes if isinstance(old, np.ndarray) else 0
            if isinstance(old, _OpenFile):
                old.close()
        return value

    def clear(self) -> None:
        for v in self._d.values():
            if isinstance(v, _OpenFile):
                v.close()
        self._d.clear()
        self.nbytes = 0


class _OpenFile:
    """An open read-only descriptor (or None when the file does not exist) and the file's size."""

    def __init__(self, path: str) -> None:
        try:
            self.fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self.size = os.fstat(self.fd).st_size
        except FileNotFoundError:
            self.fd, self.size = None, 0

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class LocalAxisReader:
    """Reads axis-0 rows of one array of a local store by decoding exactly the chunks they live in.

    ``cache_bytes`` bounds an LRU of decoded chunks (0 disables it): it pays for the current
    array (a 240-row window lives in one large chunk) and for sequential evaluation, where
    consecutive windows share most frames. Shard indexes (16 bytes per inner chunk) are kept for
    the ``max_shards`` most recently used shards, open files for the ``max_files`` most recent.
    ``cache_single_rows=False`` skips the cache when a chunk holds a single row (random frame
    reads then gain nothing from it). ``checksums=False`` skips the checksum checks (only to
    measure what they cost; see the module docstring for what they are).
    """

    kind = "fast"

    def __init__(self, array_dir: str, cache_bytes: int = 0, *, cache_single_rows: bool = True,
                 max_shards: int = 4096, max_files: int = 64, checksums: bool = True) -> None:
        path = os.path.join(array_dir, "zarr.json")
        try:
            with open(path, "rb") as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise UnsupportedLayout(f"{path}: {exc}") from None
        self.layout = ShardLayout.from_metadata(meta)
        self._decode = self.layout.decoder(check_crc=checksums)
        self.dir = array_dir
        self.name = os.path.basename(os.path.normpath(array_dir))
        self._store_dir = os.path.dirname(os.path.normpath(array_dir))
        attrs = meta.get("attributes") or {}
        sums = recorded_checksums(attrs, self.layout.shape[0]) if checksums else None
        # the writer's checksums cover outer chunks (shards, or chunks when unsharded)
        self._sums = sums if sums is not None and sums[0] == self.layout.outer_rows else None
        # copied shards (the source layout) are all written: a missing one is always damage
        self._all_written = recorded_checksums(attrs, self.layout.shape[0], covers=COVERS_SHARD_FILE) is not None
        self._check_decoded = self._sums is not None and not self.layout.sharded
        self.shape = self.layout.shape
        self.dtype = self.layout.dtype
        self._row_shape = self.shape[1:]
        self._chunk_shape = (self.layout.inner_rows, *self._row_shape)
        use_cache = cache_bytes > 0 and (cache_single_rows or self.layout.inner_rows > 1)
        self._cache = _LRU(max_bytes=cache_bytes) if use_cache else None
        self._index = _LRU(max_items=max_shards)
        self._files = _LRU(max_items=max_files)

    # -- bytes ------------------------------------------------------------------------------
    def _file(self, outer_chunk: int) -> _OpenFile:
        f = self._files.get(outer_chunk)
        if f is None:
            key = self.layout.chunk_key(outer_chunk)
            f = self._files.put(outer_chunk, _OpenFile(os.path.join(self.dir, *key.split("/"))))
        return f

    def _shard_index(self, shard: int) -> tuple[list[int], list[int]] | None:
        """Return (offsets, lengths) of the inner chunks of ``shard``, or None when it is absent."""
        idx = self._index.get(shard)
        if idx is not None:
            return idx or None
        f = self._file(shard)
        if f.fd is None:
            self._check_missing(shard)
            self._index.put(shard, ())
            return None
        at = self.layout.index_offset(f.size)  # negative in a file shorter than its index
        raw = os.pread(f.fd, self.layout.index_nbytes, at) if at >= 0 else b""
        try:
            table = decode_index(raw, self.layout, self._where(shard), shard_nbytes=f.size)
        except ShardIndexError as exc:  # cut short or damaged: every row of the shard is lost
            start, stop = self.layout.outer_range(shard)
            raise damaged(self.name, self.layout.axis, start, stop, exc.message, self._store_dir) from None
        idx = (table[:, 0].tolist(), table[:, 1].tolist())
        self._index.put(shard, idx)
        return idx

    def _where(self, outer_chunk: int) -> str:
        return os.path.join(self.dir, *self.layout.chunk_key(outer_chunk).split("/"))

    def _check_missing(self, outer: int) -> None:
        """Raise unless outer chunk ``outer``, whose file is missing, recorded the checksum of an
        all-fill block (zarr leaves such chunks unwritten; the toolkit's writer writes every shard)."""
        start, stop = self.layout.outer_range(outer)
        if self._all_written:
            raise missing_file(self.layout.chunk_key(outer), self.name, self.layout.axis, start, stop, self._store_dir)
        check_missing(self._sums, outer, (stop - start, *self._row_shape), self.dtype, self.layout.fill_value,
                      self.layout.chunk_key(outer), self.name, self.layout.axis, start, self._store_dir)

    def _damaged_chunk(self, chunk: int, exc: Exception) -> FmDataError:
        """The one-line error for decode unit ``chunk`` that failed its CRC-32C or could not be decoded."""
        start = chunk * self.layout.inner_rows
        return damaged(self.name, self.layout.axis, start, min(start + self.layout.inner_rows, self.shape[0]),
                       undecodable(exc), self._store_dir)

    def _chunk_bytes(self, chunk: int) -> list[Any] | None:
        """Return the encoded bytes of the inner chunks of decode unit (chunk row) ``chunk``, in index
        order (an entry None: never written, the fill value), or None when none was written."""
        lay = self.layout
        if not lay.sharded:
            f = self._file(chunk)
            if f.fd is None:
                self._check_missing(chunk)
                return None
            return [os.pread(f.fd, f.size, 0)]
        per = lay.per_row
        shard, j = divmod(chunk, lay.outer_rows // lay.inner_rows)
        idx = self._shard_index(shard)
        if idx is None:
            return None
        offs, sizes = idx[0][j * per:(j + 1) * per], idx[1][j * per:(j + 1) * per]
        fd = self._fd(shard)
        if per == 1:
            return None if offs[0] == EMPTY else [os.pread(fd, sizes[0], offs[0])]
        present = [k for k, o in enumerate(offs) if o != EMPTY]
        if not present:
            return None
        lo = min(offs[k] for k in present)
        hi = max(offs[k] + sizes[k] for k in present)
        if hi - lo == sum(sizes[k] for k in present):  # stored back to back, as the writers store them: one read
            raw = memoryview(os.pread(fd, hi - lo, lo))
            return [raw[o - lo:o - lo + n] if o != EMPTY else None for o, n in zip(offs, sizes)]
        return [os.pread(fd, n, o) if o != EMPTY else None for o, n in zip(offs, sizes)]

    def _fd(self, outer: int) -> int:
        """The open descriptor of outer chunk ``outer``'s file, whose index said it holds data."""
        fd = self._file(outer).fd
        if fd is None:
            raise FmDataError("expected the shard file, got none (was the store changed while reading?)",
                              self._where(outer))
        return fd

    def _decode_into(self, chunk: int, dest: np.ndarray) -> None:
        pieces = self._chunk_bytes(chunk)
        if pieces is None:
            dest[...] = self.layout.fill_value
            return
        try:
            decode_row(self.layout, self._decode, pieces, dest)
        except Exception as exc:  # a CRC mismatch, or a corrupt or truncated chunk: name it
            raise self._damaged_chunk(chunk, exc) from None
        if self._check_decoded:  # an unsharded chunk is a whole write block: check its values too
            rows = min(self.layout.inner_rows, self.shape[0] - chunk * self.layout.inner_rows)
            check_block(dest.reshape(self._chunk_shape)[:rows], chunk, self._sums, self.name, self.layout.axis,
                        self._store_dir)

    def _chunk(self, chunk: int) -> np.ndarray:
        """Return decode unit ``chunk`` as an array of the chunk shape (from the cache when held)."""
        if self._cache is not None:
            hit = self._cache.get(chunk)
            if hit is not None:
                return hit
        out = np.empty(self._chunk_shape, self.dtype)
        self._decode_into(chunk, out)
        if self._cache is not None:
            self._cache.put(chunk, out, out.nbytes)
        return out

    def _take_single_rows(self, index: np.ndarray, out: np.ndarray) -> None:
        """Decode rows ``index`` (one row per chunk) into ``out``, keeping the last shard at hand."""
        lay = self.layout
        if not lay.sharded:
            for k, i in enumerate(index.tolist()):
                self._decode_into(i, out[k])
            return
        per_shard, decode = lay.chunks_per_shard, self._decode
        last, idx, fd = -1, None, -1
        for k, i in enumerate(index.tolist()):
            shard, j = divmod(i, per_shard)
            if shard != last:  # a window's frames mostly share a shard
                last, idx = shard, self._shard_index(shard)
                fd = -1 if idx is None else self._fd(shard)
            if idx is None or idx[0][j] == EMPTY:
                out[k] = lay.fill_value
                continue
            try:
                decode(os.pread(fd, idx[1][j], idx[0][j]), out[k])
            except Exception as exc:  # a CRC mismatch, or a corrupt or truncated chunk: name it
                raise self._damaged_chunk(i, exc) from None

    # -- rows -------------------------------------------------------------------------------
    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``array[index]`` (shape ``(len(index), *shape[1:])``) for int positions on axis 0.

        ``out`` (C-contiguous, that shape, the array's dtype) receives the rows when given.
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if out is None:
            out = np.empty((index.size, *self._row_shape), self.dtype)
        elif out.shape != (index.size, *self._row_shape) or out.dtype != self.dtype or not out.flags.c_contiguous:
            raise ValueError(f"expected out of shape {(index.size, *self._row_shape)} {self.dtype}, got {out.shape}")
        if index.size == 0:
            return out
        if index.min() < 0 or index.max() >= self.shape[0]:
            raise FmDataError(f"expected rows in [0, {self.shape[0]}), got {index.min()}..{index.max()}", self.dir)
        rows = self.layout.inner_rows
        if rows == 1 and self._cache is None and self.layout.whole_rows:
            # One row per chunk: decode each straight into its place (a repeat decodes twice;
            # callers with many repeats pass unique rows).
            self._take_single_rows(index, out)
            return out
        chunk_of = index // rows
        order = np.argsort(chunk_of, kind="stable")
        sorted_chunks = chunk_of[order]
        cuts = np.flatnonzero(sorted_chunks[1:] != sorted_chunks[:-1]) + 1
        for lo, hi in zip(np.r_[0, cuts].tolist(), np.r_[cuts, index.size].tolist()):
            c = int(sorted_chunks[lo])
            where = order[lo:hi]
            out[where] = self._chunk(c)[index[where] - c * rows]
        return out

    def close(self) -> None:
        """Close open files and drop caches."""
        self._files.clear()
        self._index.clear()
        if self._cache is not None:
            self._cache.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ZarrAxisReader:
    """Reads axis-0 rows through zarr's orthogonal selection: works for every store zarr can open."""

    kind = "zarr"

    def __init__(self, array: Any) -> None:
        self.array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Return ``array[index]`` for int positions on axis 0 (one zarr call for all of them)."""
        if out is not None:
            out[...] = self.take(index)
            return out
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size == 0:
            return np.empty((0, *self.shape[1:]), self.dtype)
        if index.min() < 0 or index.max() >= self.shape[0]:
            raise FmDataError(f"expected rows in [0, {self.shape[0]}), got {index.min()}..{index.max()}")
        unique, inverse = np.unique(index, return_inverse=True)
        sel = (unique,) + (slice(None),) * (len(self.shape) - 1)
        try:
            data = np.asarray(self.array.get_orthogonal_selection(sel))
        except Exception as exc:  # zarr's crc32c codec (ValueError), or a decoder failing on damaged bytes
            raise damaged(self.array.path, axis_name(self.array), int(unique[0]), int(unique[-1]) + 1,
                          undecodable(exc)) from None
        return data if unique.size == index.size and np.all(inverse == np.arange(index.size)) else data[inverse]


class OpenStore(Protocol):
    """What a reader needs of an open store (:class:`fmdata.store.handle.StoreHandle` is one): its
    location, whose files the fast reader reads, and its root group, for the zarr reader."""

    @property
    def location(self) -> Location: ...

    @property
    def root(self) -> zarr.Group: ...


def open_axis_reader(store: OpenStore, name: str, *, mode: str = "auto", cache_bytes: int = 0,
                     cache_single_rows: bool = True, checksums: bool = True) -> AxisReader:
    """Return a reader of array ``name`` of the open ``store`` (:func:`fmdata.store.handle.open_store`).

    ``mode``: "fast" requires :class:`LocalAxisReader` (FmDataError when the layout does not
    allow it), "zarr" always uses zarr, "auto" takes the fast reader where possible. Only the zarr
    reader asks for ``store.root`` (a handle unpickled in a worker opens its store then). ``cache_bytes``
    and ``cache_single_rows`` configure the fast reader's decoded-chunk cache; ``checksums=False``
    turns its checks off (only to measure their cost; zarr always checks the ``crc32c`` codec).
    """
    if mode not in READER_MODES:
        raise FmDataError(f"expected a reader mode in {READER_MODES}, got {mode!r}", field="reader")
    loc = store.location
    local = loc.local_path
    if mode != "zarr":
        reason = "the store is remote"
        if local is not None:
            try:
                return LocalAxisReader(os.path.join(local, name), cache_bytes=cache_bytes,
                                       cache_single_rows=cache_single_rows, checksums=checksums)
            except UnsupportedLayout as exc:
                reason = str(exc)
        if mode == "fast":
            raise FmDataError(f"expected a layout the fast reader decodes, got one it does not ({reason})", str(loc))
    return ZarrAxisReader(store.root[name])
