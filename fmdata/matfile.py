"""MATLAB MAT files: tell the format from the header, describe variables, write v7.3 and v7.

Reading the *data* of big files is :mod:`fmdata.convert`'s job; this module knows the container:

* :func:`sniff_format` reads the first bytes and answers "7.3" (HDF5 with a 512-byte MATLAB
  header), "5" (the v5/v6/v7 element format), "4" (the headerless v4 format) or None.
* :func:`describe` lists every variable with its MATLAB class, MATLAB-order shape and storage
  (compact / contiguous / chunked with chunk shape and filters for v7.3; zlib-compressed or not
  for v5), without reading any array data.
* :class:`MatWriter` writes v7.3 files the way MATLAB does: userblock with a real MATLAB header,
  ``MATLAB_class`` attributes, reversed dimension order, ``logical`` as uint8 with
  ``MATLAB_int_decode=1``, and either MATLAB-like storage (deflate 3, no shuffle, chunks capped
  near 64 KiB, small variables compact) or plain contiguous datasets. Variables are created by
  MATLAB shape and class and filled block by block along their last MATLAB axis, so a recording
  never has to sit in memory.
* :func:`write_v7` writes the older, non-HDF5 format through ``scipy.io.savemat`` (whole
  arrays in memory, so small files only).

Orientation: a MATLAB array of shape (d0, d1, ..., dk) is the h5py dataset of shape
(dk, ..., d1, d0) whose element [ik, ..., i0] is MATLAB's (i0, ..., ik): ``np_array.T``
maps one to the other.
"""
from __future__ import annotations

import datetime as _dt
import os
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from fmdata.errors import FmDataError

HEADER_BYTES = 512  # the userblock; the HDF5 superblock starts right after it
HEADER_TEXT_BYTES = 116
PLATFORM = "GLNXA64"
STORAGE_MODES = ("matlab", "contiguous")
DEFLATE_LEVEL = 3
CHUNK_CAP_BYTES = 64 * 1024
# MATLAB keeps variables below roughly 10 KB in the compact layout (inside the object header).
COMPACT_MAX_BYTES = 10 * 1024
PENDING_BYTES = 32 << 20  # raw bytes of chunks being compressed ahead of the writer

# MATLAB class -> numpy dtype on disk; logical is stored as uint8 with MATLAB_int_decode=1.
CLASS_DTYPES: dict[str, np.dtype] = {
    "double": np.dtype("<f8"), "single": np.dtype("<f4"),
    "int8": np.dtype("i1"), "uint8": np.dtype("u1"), "int16": np.dtype("<i2"), "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"), "uint32": np.dtype("<u4"), "int64": np.dtype("<i8"), "uint64": np.dtype("<u8"),
    "logical": np.dtype("u1"), "char": np.dtype("<u2"),
}
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_H5_LAYOUTS = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous", h5py.h5d.CHUNKED: "chunked"}
_FILTER_NAMES = {1: "deflate", 2: "shuffle", 3: "fletcher32", 4: "szip", 5: "nbit", 6: "scaleoffset",
                 32001: "blosc", 32004: "lz4", 32008: "bitshuffle", 32015: "zstd"}


# ---- format sniffing --------------------------------------------------------------------------
def sniff_format(path: str | os.PathLike[str]) -> str | None:
    """Return the MAT format of ``path`` from its first bytes: "7.3", "5", "4" or None.

    "7.3" needs a MATLAB header with version 0x0200 *and* an HDF5 superblock at byte 512 (MATLAB
    itself wrote some v7.3 files whose text says "MATLAB 7.0"); "5" covers v5, v6 and v7 files
    (version 0x0100); "4" is the headerless format, recognised by a plausible first matrix
    header. Raises FmDataError when the path cannot be read.
    """
    p = os.fspath(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(HEADER_BYTES + len(_HDF5_SIGNATURE))
    except IsADirectoryError:
        raise FmDataError("expected a MAT file, got a folder", p) from None
    except OSError as exc:
        raise FmDataError(f"cannot read: {exc.strerror or exc}", p) from None
    if len(head) >= 128 and head[:6] == b"MATLAB":
        version, endian = head[124:126], head[126:128]
        if endian == b"IM":
            ver = struct.unpack("<H", version)[0]
        elif endian == b"MI":
            ver = struct.unpack(">H", version)[0]
        else:
            return None
        if ver == 0x0200 and head[HEADER_BYTES:HEADER_BYTES + 8] == _HDF5_SIGNATURE:
            return "7.3"
        if ver == 0x0100:
            return "5"
        return None
    return "4" if _looks_like_v4(head) else None


def _looks_like_v4(head: bytes) -> bool:
    """A v4 file starts with a 20-byte matrix header: type MOPT, rows, cols, imagf, namlen."""
    if len(head) < 20:
        return False
    for order in ("<", ">"):
        mopt, rows, cols, imagf, namlen = struct.unpack(order + "5i", head[:20])
        m, o, p_, t = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
        if (0 <= mopt < 5000 and m in (0, 1) and o == 0 and p_ <= 5 and t <= 2 and rows >= 0 and cols >= 0
                and imagf in (0, 1) and 1 <= namlen <= 64 and 20 + namlen <= len(head)
                and head[20 + namlen - 1] == 0):
            return True
    return False


def header_text(created: _dt.datetime, version: str = "7.3", platform: str = PLATFORM) -> str:
    """Return MATLAB's descriptive header text for a file created at ``created``.

    MATLAB writes ``MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed May 10 21:33:27 2023
    HDF5 schema 1.00 .`` for v7.3 and the same without the schema part (and "5.0") for v7.
    """
    stamp = f"{created:%a %b} {created.day:2d} {created:%H:%M:%S %Y}"
    if version == "7.3":
        return f"MATLAB 7.3 MAT-file, Platform: {platform}, Created on: {stamp} HDF5 schema 1.00 ."
    return f"MATLAB 5.0 MAT-file, Platform: {platform}, Created on: {stamp}"


def header_bytes(created: _dt.datetime, version: str = "7.3", platform: str = PLATFORM) -> bytes:
    """Return the 128 leading header bytes: text padded to 116, 8 zero bytes, version, 'IM'."""
    text = header_text(created, version, platform).encode("ascii").ljust(HEADER_TEXT_BYTES, b" ")
    ver = 0x0200 if version == "7.3" else 0x0100
    return text + b"\x00" * 8 + struct.pack("<H", ver) + b"IM"


# ---- describing files ---------------------------------------------------------------------------
@dataclass
class VariableInfo:
    """One variable of a MAT file as stored; shapes and chunks in MATLAB order.

    ``layout`` is compact / contiguous / chunked for v7.3 and compressed / uncompressed for v5
    (v4 is always uncompressed). ``h5_shape``/``h5_chunks`` are the h5py-order views (None for
    v4/v5). ``stored_bytes`` is what the variable occupies in the file, ``data_bytes`` its size
    in memory.
    """

    name: str
    matlab_class: str
    shape: tuple[int, ...]
    dtype: str
    layout: str
    stored_bytes: int
    data_bytes: int
    chunks: tuple[int, ...] | None = None
    filters: list[str] = field(default_factory=list)
    h5_shape: tuple[int, ...] | None = None
    h5_chunks: tuple[int, ...] | None = None
    logical: bool = False
    empty: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-able dict (tuples become lists, as after a JSON round trip)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class MatFileInfo:
    """A MAT file: format ("7.3", "5", "4"), header text, file size and its variables."""

    path: str
    format: str
    header: str
    file_bytes: int
    variables: list[VariableInfo]

    def variable(self, name: str) -> VariableInfo:
        """Return the variable called ``name``; raise FmDataError when the file lacks it."""
        for v in self.variables:
            if v.name == name:
                return v
        raise FmDataError(f"expected a variable {name!r}, got only {[v.name for v in self.variables]}", self.path)

    def to_dict(self) -> dict[str, Any]:
        """Return the description as a JSON-able dict."""
        d = {k: v for k, v in asdict(self).items() if k != "variables"}
        d["variables"] = [v.to_dict() for v in self.variables]
        return d


def describe(path: str | os.PathLike[str]) -> MatFileInfo:
    """Describe the MAT file at ``path`` without reading array data.

    Returns a :class:`MatFileInfo`. Raises FmDataError (one line naming the file) for anything
    that is not a readable MAT file: another file type, a truncated or corrupt HDF5 file, a v5
    file whose element structure is broken.
    """
    p = os.fspath(path)
    fmt = sniff_format(p)
    if fmt is None:
        raise FmDataError("expected a MATLAB MAT file (v4, v5/v7 or v7.3), got an unknown file type", p)
    size = os.path.getsize(p)
    with open(p, "rb") as fh:
        head = fh.read(HEADER_TEXT_BYTES)
    text = head.decode("ascii", "replace").rstrip(" \x00") if fmt != "4" else ""
    if fmt == "7.3":
        variables = _describe_hdf5(p)
    elif fmt == "5":
        variables = _describe_v5(p, size)
    else:
        variables = _describe_v4(p)
    return MatFileInfo(path=p, format=fmt, header=text, file_bytes=size, variables=variables)


def _attr_str(obj: h5py.HLObject, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("ascii", "replace")
    return str(value)


def dataset_filters(ds: h5py.Dataset) -> list[str]:
    """Return the HDF5 filter pipeline of ``ds`` as readable names, e.g. ["deflate(3)"]."""
    dcpl = ds.id.get_create_plist()
    names = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, _name = dcpl.get_filter(i)
        label = _FILTER_NAMES.get(code, f"filter{code}")
        names.append(f"{label}({values[0]})" if code == 1 and values else label)
    return names


def _describe_dataset(name: str, ds: h5py.Dataset) -> VariableInfo:
    cls = _attr_str(ds, "MATLAB_class") or "(no MATLAB_class)"
    layout = _H5_LAYOUTS.get(ds.id.get_create_plist().get_layout(), "other")
    empty = bool(ds.attrs.get("MATLAB_empty", 0))
    if empty:
        shape = tuple(int(x) for x in np.asarray(ds[()]).ravel()) if ds.size else (0, 0)
    else:
        shape = tuple(reversed(ds.shape))
        if len(shape) == 1:  # MATLAB always has two dimensions; a bare vector is a row
            shape = (1, shape[0])
    data_bytes = 0 if empty else int(ds.size) * ds.dtype.itemsize
    return VariableInfo(
        name=name, matlab_class=cls, shape=shape, dtype=str(ds.dtype), layout=layout,
        stored_bytes=int(ds.id.get_storage_size()), data_bytes=data_bytes,
        chunks=tuple(reversed(ds.chunks)) if ds.chunks else None, filters=dataset_filters(ds),
        h5_shape=tuple(ds.shape), h5_chunks=tuple(ds.chunks) if ds.chunks else None,
        logical=cls == "logical",
        empty=empty)


def _describe_hdf5(p: str) -> list[VariableInfo]:
    try:
        with h5py.File(p, "r") as f:
            out = []
            for name, obj in f.items():
                if name.startswith("#"):  # '#refs#' and '#subsystem#' hold cell/object payloads
                    continue
                if isinstance(obj, h5py.Dataset):
                    out.append(_describe_dataset(name, obj))
                else:
                    cls = _attr_str(obj, "MATLAB_class") or "struct"
                    out.append(VariableInfo(name=name, matlab_class=cls, shape=(1, 1), dtype="group",
                                            layout="group", stored_bytes=0, data_bytes=0))
            return out
    except FmDataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise FmDataError(f"expected a readable MATLAB v7.3 (HDF5) file, got a truncated or corrupt one ({_first_line(exc)})",
                          p) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _scipy_whos(p: str) -> list[tuple[str, tuple[int, ...], str]]:
    import scipy.io

    try:
        return [(n, tuple(int(s) for s in shape), cls) for n, shape, cls in scipy.io.whosmat(p)]
    except Exception as exc:  # scipy raises ValueError, TypeError, zlib.error, MatReadError, ...
        raise FmDataError(f"expected a readable MAT file, got a corrupt one ({_first_line(exc)})", p) from None


def _v5_elements(p: str, size: int) -> list[tuple[bool, int]]:
    """Walk the top-level data elements of a v5 file: (compressed?, stored bytes) per variable."""
    out = []
    with open(p, "rb") as fh:
        fh.seek(126)
        order = "<" if fh.read(2) == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            mtype, nbytes = struct.unpack(order + "II", fh.read(8))
            if mtype >> 16:  # small data element: never a top-level variable
                raise FmDataError(f"expected a v5 data element at byte {pos}, got a small element", p)
            if mtype not in (14, 15) or pos + 8 + nbytes > size:
                raise FmDataError(f"expected a variable (miMATRIX or miCOMPRESSED) of {nbytes} bytes at byte {pos}, "
                                  f"got type {mtype} in a file of {size} bytes (truncated or corrupt)", p)
            out.append((mtype == 15, 8 + nbytes))
            pos += 8 + nbytes + ((-nbytes) % 8 if mtype == 14 else 0)
    return out


def _class_dtype(cls: str) -> str:
    return str(CLASS_DTYPES[cls]) if cls in CLASS_DTYPES else cls


def _describe_v5(p: str, size: int) -> list[VariableInfo]:
    elements = _v5_elements(p, size)
    whos = _scipy_whos(p)
    if len(whos) != len(elements):
        raise FmDataError(f"expected {len(elements)} readable variables, got {len(whos)}", p)
    out = []
    for (name, shape, cls), (compressed, stored) in zip(whos, elements):
        n = int(np.prod(shape)) if shape else 0
        item = CLASS_DTYPES.get(cls, np.dtype("u1")).itemsize
        out.append(VariableInfo(name=name, matlab_class=cls, shape=shape, dtype=_class_dtype(cls),
                                layout="compressed" if compressed else "uncompressed",
                                filters=["zlib"] if compressed else [], stored_bytes=stored,
                                data_bytes=n * item if cls in CLASS_DTYPES else 0, logical=cls == "logical"))
    return out


def _describe_v4(p: str) -> list[VariableInfo]:
    out = []
    for name, shape, cls in _scipy_whos(p):
        n = int(np.prod(shape)) if shape else 0
        out.append(VariableInfo(name=name, matlab_class=cls, shape=shape, dtype=_class_dtype(cls),
                                layout="uncompressed", stored_bytes=n * 8, data_bytes=n * 8))
    return out


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

    def __init__(self, writer: "MatWriter", ds: h5py.Dataset, matlab_shape: tuple[int, ...], dtype: np.dtype) -> None:
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
    output); ``threads`` compress chunks in parallel (zlib releases the GIL). The header is
    written when the file closes; a file whose writer failed is deleted.
    """

    def __init__(self, path: str | os.PathLike[str], *, storage: str = "matlab",
                 created: _dt.datetime | None = None, threads: int = 2) -> None:
        if storage not in STORAGE_MODES:
            raise FmDataError(f"expected storage one of {STORAGE_MODES}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.created = created or _dt.datetime.now().replace(microsecond=0)
        self._logical: dict[str, bool] = {}
        self._pool = ThreadPoolExecutor(max(1, threads)) if storage == "matlab" and threads > 1 else None
        self._pending: deque[tuple[h5py.h5d.DatasetID, tuple[int, ...], int, Future[bytes]]] = deque()
        self._pending_bytes = 0
        self._file = h5py.File(self.path, "w", userblock_size=HEADER_BYTES, libver="earliest")

    # -- context management
    def __enter__(self) -> "MatWriter":
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
                fh.write(header_bytes(self.created))

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
            self._pending.append((dsid, offset, piece.nbytes, self._pool.submit(zlib.compress, piece, DEFLATE_LEVEL)))
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
V7_MAX_VARIABLE_BYTES = 2**31 - 1


def write_v7(path: str | os.PathLike[str], variables: Mapping[str, Any], *,
             created: _dt.datetime | None = None) -> Path:
    """Write MATLAB-order arrays to a v7 file (v5 format, zlib-compressed) with scipy; return the path.

    Holds every array in memory, so it suits small files; bool arrays become ``logical``.
    ``created`` fixes the header time, making the bytes reproducible. Raises FmDataError for a
    variable above the format's 2^31-byte limit.
    """
    import scipy.io

    arrays = {k: np.asarray(v) for k, v in variables.items()}
    for k, v in arrays.items():
        if v.nbytes > V7_MAX_VARIABLE_BYTES:
            raise FmDataError(f"{k}: expected at most 2^31 bytes per variable in a v7 MAT file, got {v.nbytes}", path)
    scipy.io.savemat(os.fspath(path), arrays, format="5", do_compression=True, oned_as="row")
    with open(path, "r+b") as fh:
        fh.write(header_bytes(created or _dt.datetime.now().replace(microsecond=0), version="5")[:HEADER_TEXT_BYTES])
    return Path(path)
