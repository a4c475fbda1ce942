"""Write MATLAB MAT files the way MATLAB does: v7.3 (HDF5) and the older v7 format.

* :class:`MatWriter` writes v7.3 files: userblock with a real MATLAB header, ``MATLAB_class``
  attributes, reversed dimension order, ``logical`` as uint8 with ``MATLAB_int_decode=1``, and
  either MATLAB-like storage (deflate 3, no shuffle, chunks capped near 64 KiB, small variables
  compact) or plain contiguous datasets. Variables are created by MATLAB shape and class and
  filled block by block along their last MATLAB axis, so a recording never has to sit in memory.
* :func:`write_v7` writes the older, non-HDF5 format through ``scipy.io.savemat`` (whole
  arrays in memory, so small files only).

The container facts shared with the reading side (header size, class dtypes, the v7 limit) live
in :mod:`fmdata.sources.matinfo`.
"""
from __future__ import annotations

import datetime as _dt
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from fmdata.errors import FmDataError
from fmdata.sources.matinfo import CLASS_DTYPES, HEADER_BYTES, HEADER_TEXT_BYTES, V7_MAX_VARIABLE_BYTES

PLATFORM = "GLNXA64"
STORAGE_MODES = ("matlab", "contiguous")
DEFLATE_LEVEL = 3
CHUNK_CAP_BYTES = 64 * 1024
# MATLAB keeps variables below roughly 10 KB in the compact layout (inside the object header).
COMPACT_MAX_BYTES = 10 * 1024
PENDING_BYTES = 32 << 20  # raw bytes of chunks being compressed ahead of the writer


def header_text(created: _dt.datetime, version: str = "7.3", platform: str = PLATFORM, note: str = "") -> str:
    """Return MATLAB's descriptive header text for a file created at ``created``.

    MATLAB writes ``MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed May 10 21:33:27 2023
    HDF5 schema 1.00 .`` for v7.3 and the same without the schema part (and "5.0") for v7.
    ``note`` follows after a space (the text is descriptive only: MATLAB reads the version and
    byte order after it); FmDataError when the text would not fit the header's 116 bytes.
    """
    stamp = f"{created:%a %b} {created.day:2d} {created:%H:%M:%S %Y}"
    if version == "7.3":
        text = f"MATLAB 7.3 MAT-file, Platform: {platform}, Created on: {stamp} HDF5 schema 1.00 ."
    else:
        text = f"MATLAB 5.0 MAT-file, Platform: {platform}, Created on: {stamp}"
    text = f"{text} {note}" if note else text
    if len(text.encode("ascii")) > HEADER_TEXT_BYTES:
        raise FmDataError(f"expected a header text of at most {HEADER_TEXT_BYTES} bytes, got {len(text)}: {text!r}")
    return text


def header_bytes(created: _dt.datetime, version: str = "7.3", platform: str = PLATFORM, note: str = "") -> bytes:
    """Return the 128 leading header bytes: text (with ``note``) padded to 116, 8 zero bytes, version, 'IM'."""
    text = header_text(created, version, platform, note).encode("ascii").ljust(HEADER_TEXT_BYTES, b" ")
    ver = 0x0200 if version == "7.3" else 0x0100
    return text + b"\x00" * 8 + struct.pack("<H", ver) + b"IM"


# ---- writing v7.3 -----------------------------------------------------------------------------
def matlab_chunks(h5_shape: tuple[int, ...], itemsize: int, cap: int = CHUNK_CAP_BYTES) -> tuple[int, ...]:
    """Return a MATLAB-like chunk shape (h5py order) for a dataset of ``h5_shape``.

    Starting from the whole array, halve (rounding up) the slowest axis, the last MATLAB axis
    (frames for a video), until the chunk fits in ``cap`` bytes; when that axis is down to one,
    go on with the next. A 64x64 RGB uint8 video gets chunks of a few whole frames.
    """
    chunk = [max(1, int(s)) for s in h5_shape]
    axis = 0
    while int(np.prod(chunk)) * itemsize > cap and axis < len(chunk):
        if chunk[axis] == 1:
            axis += 1
            continue
        chunk[axis] = (chunk[axis] + 1) // 2
    return tuple(chunk)


def matlab_stored_shape(shape: Iterable[int]) -> tuple[int, ...]:
    """Return ``shape`` with trailing singleton dimensions dropped (never below two), as MATLAB does."""
    s = [int(x) for x in shape]
    while len(s) > 2 and s[-1] == 1:
        s.pop()
    while len(s) < 2:
        s.append(1)
    return tuple(s)


class MatVariable:
    """A v7.3 variable being written; fill it with :meth:`write` in blocks along its last axis."""

    def __init__(self, writer: MatWriter, ds: h5py.Dataset, matlab_shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._writer = writer
        self.ds = ds
        self.shape = matlab_shape  # the full MATLAB shape, trailing singletons included
        self.dtype = dtype
        self.written = 0

    @property
    def chunk_frames(self) -> int:
        """Frames per chunk along the last MATLAB axis (1 when not chunked)."""
        chunks = self.ds.chunks
        return int(chunks[0]) if chunks and self.ds.ndim == len(self.shape) else 1

    def write(self, block: np.ndarray, start: int | None = None) -> None:
        """Write ``block`` (MATLAB order, the last axis counts frames) at frame ``start``.

        ``start`` defaults to where the previous block ended. The block's other dimensions must
        equal the variable's. Values are cast to the variable's class (logical: nonzero -> 1).
        """
        start = self.written if start is None else int(start)
        block = np.asarray(block)
        lead = self.shape[:-1]
        if block.ndim == len(lead):
            block = block[..., None]
        if tuple(block.shape[:-1]) != lead:
            raise FmDataError(f"{self.ds.name}: expected blocks of shape {lead} + (n,), got {block.shape}")
        n = block.shape[-1]
        if start < 0 or start + n > self.shape[-1]:
            raise FmDataError(f"{self.ds.name}: expected frames within 0..{self.shape[-1]}, got {start}..{start + n}")
        if block.dtype != self.dtype:
            block = (block != 0) if self._writer._logical.get(self.ds.name) else block
            block = block.astype(self.dtype)
        self._writer._write_h5(self.ds, np.ascontiguousarray(block.T), start)
        self.written = max(self.written, start + n)


class MatWriter:
    """Write a MATLAB v7.3 file: ``with MatWriter(path) as w: w.create(...).write(...)``.

    ``storage`` is "matlab" (deflate 3, no shuffle, chunks capped near 64 KiB, variables under
    ~10 KB compact) or "contiguous" (uncompressed, contiguous; small variables compact as well).
    ``created`` fixes the header's "Created on" time (pass a seed-derived time for byte-identical
    output); ``note`` ends the header text (:func:`header_text`); ``threads`` compress chunks in
    parallel (zlib releases the GIL). The header is written when the file closes; a file whose
    writer failed is deleted.
    """

    def __init__(self, path: str | os.PathLike[str], *, storage: str = "matlab",
                 created: _dt.datetime | None = None, threads: int = 2, note: str = "") -> None:
        if storage not in STORAGE_MODES:
            raise FmDataError(f"expected storage one of {STORAGE_MODES}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.created = created or _dt.datetime.now().replace(microsecond=0)
        self.note = note
        header_text(self.created, note=note)  # a note that does not fit fails now, not at the end
        self._logical: dict[str, bool] = {}
        self._pool = ThreadPoolExecutor(max(1, threads)) if storage == "matlab" and threads > 1 else None
        self._pending: deque[tuple[h5py.h5d.DatasetID, tuple[int, ...], int, Future[bytes]]] = deque()
        self._pending_bytes = 0
        self._file = h5py.File(self.path, "w", userblock_size=HEADER_BYTES, libver="earliest")

    # -- context management
    def __enter__(self) -> MatWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()

    def close(self) -> None:
        """Close the HDF5 file and write the MATLAB header into the userblock."""
        self._drain(0)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._file.id.valid:
            self._file.close()
            with open(self.path, "r+b") as fh:
                fh.write(header_bytes(self.created, note=self.note))

    def abort(self) -> None:
        """Close and delete the unfinished file."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._file.id.valid:
            self._file.close()
        self.path.unlink(missing_ok=True)

    # -- variables
    def create(self, name: str, shape: Iterable[int], matlab_class: str) -> MatVariable:
        """Create variable ``name`` with MATLAB ``shape`` and class; return it for block writes.

        Trailing singleton dimensions are dropped from what is stored, as MATLAB drops them.
        Empty arrays are not supported here (the toolkit never writes them).
        """
        if matlab_class not in CLASS_DTYPES:
            raise FmDataError(f"expected a MATLAB class among {sorted(CLASS_DTYPES)}, got {matlab_class!r}")
        full = tuple(int(x) for x in shape)
        if not full or any(x <= 0 for x in full):
            raise FmDataError(f"{name}: expected a non-empty MATLAB shape, got {full}")
        dtype = CLASS_DTYPES[matlab_class]
        h5_shape = tuple(reversed(matlab_stored_shape(full)))
        nbytes = int(np.prod(h5_shape)) * dtype.itemsize
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        if nbytes < COMPACT_MAX_BYTES:
            dcpl.set_layout(h5py.h5d.COMPACT)
        elif self.storage == "matlab":
            dcpl.set_chunk(matlab_chunks(h5_shape, dtype.itemsize))
            dcpl.set_deflate(DEFLATE_LEVEL)
        else:
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        space = h5py.h5s.create_simple(h5_shape)
        tid = h5py.h5t.py_create(dtype)
        dsid = h5py.h5d.create(self._file.id, name.encode(), tid, space, dcpl=dcpl)
        ds = h5py.Dataset(dsid)
        ds.attrs.create("MATLAB_class", np.bytes_(matlab_class.encode()))
        if matlab_class == "logical":
            ds.attrs.create("MATLAB_int_decode", np.int32(1))
        self._logical[ds.name] = matlab_class == "logical"
        return MatVariable(self, ds, full, dtype)

    def write(self, name: str, array: Any, matlab_class: str | None = None) -> None:
        """Create ``name`` from a whole (small) MATLAB-order array and write it in one go.

        The class defaults from the dtype (bool -> logical, float64 -> double, ...).
        """
        arr = np.asarray(array)
        if arr.ndim < 2:
            arr = arr.reshape(1, -1)
        cls = matlab_class or class_of(arr.dtype)
        self.create(name, arr.shape, cls).write(arr, 0)

    def _write_h5(self, ds: h5py.Dataset, data: np.ndarray, start: int) -> None:
        """Write h5py-order ``data`` (frames first) at frame ``start``; compress chunks in threads."""
        shape = ds.shape  # h5py properties take its lock: read them once per block
        if len(shape) != data.ndim:  # trailing MATLAB singletons (one frame) were dropped
            self._drain(0)
            ds[...] = data.reshape(shape)
            return
        chunks = ds.chunks
        if self._pool is None or chunks is None or chunks[1:] != shape[1:] or start % chunks[0]:
            self._drain(0)
            ds[start:start + data.shape[0]] = data
            return
        # Whole-frame chunks and an aligned start: compress each chunk with zlib in the pool and
        # hand HDF5 the finished bytes, in submission order (the file layout stays deterministic).
        # Up to PENDING_BYTES of chunks stay in flight, so compression overlaps the caller's next
        # block. Edge chunks are stored full size, padded with zeros.
        c = chunks[0]
        n = data.shape[0]
        rest = (0,) * (len(shape) - 1)
        dsid = ds.id
        for i in range(0, n, c):
            piece = data[i:i + c]
            if piece.shape[0] < c:
                if start + i + piece.shape[0] < shape[0]:  # a partial chunk that is not the edge
                    self._drain(0)
                    ds[start + i:start + i + piece.shape[0]] = piece
                    continue
                pad = np.zeros((c,) + piece.shape[1:], piece.dtype)
                pad[:piece.shape[0]] = piece
                piece = pad
            piece = np.ascontiguousarray(piece)
            offset = (start + i,) + rest
            self._pending.append((dsid, offset, piece.nbytes, self._pool.submit(zlib.compress, piece.data, DEFLATE_LEVEL)))
            self._pending_bytes += piece.nbytes
        self._drain(PENDING_BYTES)

    def _drain(self, keep_bytes: int) -> None:
        """Write finished chunks, oldest first, until at most ``keep_bytes`` remain in flight."""
        while self._pending and self._pending_bytes > keep_bytes:
            dsid, offset, nbytes, future = self._pending.popleft()
            dsid.write_direct_chunk(offset, future.result())
            self._pending_bytes -= nbytes


def class_of(dtype: np.dtype) -> str:
    """Return the MATLAB class for a numpy dtype (bool -> logical)."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return "logical"
    for cls, d in CLASS_DTYPES.items():
        if cls not in ("logical", "char") and d.kind == dt.kind and d.itemsize == dt.itemsize:
            return cls
    raise FmDataError(f"expected a numeric or bool dtype, got {dt}")


def write_mat73(path: str | os.PathLike[str], variables: Mapping[str, Any], *, storage: str = "matlab",
                created: _dt.datetime | None = None) -> Path:
    """Write small in-memory MATLAB-order arrays to a v7.3 file at ``path``; return the path."""
    with MatWriter(path, storage=storage, created=created, threads=1) as w:
        for name, arr in variables.items():
            w.write(name, arr)
    return Path(path)


# ---- writing v7 (the older, non-HDF5 format) --------------------------------------------------


def write_v7(path: str | os.PathLike[str], variables: Mapping[str, Any], *,
             created: _dt.datetime | None = None, note: str = "") -> Path:
    """Write MATLAB-order arrays to a v7 file (v5 format, zlib-compressed) with scipy; return the path.

    Holds every array in memory, so it suits small files; bool arrays become ``logical``.
    ``created`` fixes the header time, making the bytes reproducible; ``note`` ends the header
    text. Raises FmDataError for a variable above the format's 2^31-byte limit.
    """
    arrays = {k: np.asarray(v) for k, v in variables.items()}
    for k, v in arrays.items():
        if v.nbytes > V7_MAX_VARIABLE_BYTES:
            raise FmDataError(f"{k}: expected at most 2^31 bytes per variable in a v7 MAT file, got {v.nbytes}", path)
    scipy.io.savemat(os.fspath(path), arrays, format="5", do_compression=True, oned_as="row")
    with open(path, "r+b") as fh:
        fh.write(header_bytes(created or _dt.datetime.now().replace(microsecond=0), version="5",
                              note=note)[:HEADER_TEXT_BYTES])
    return Path(path)
