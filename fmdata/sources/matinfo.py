"""MATLAB MAT files as containers: tell the format from the header, describe the variables.

Reading the *data* of big files is :mod:`fmdata.sources.readers`' job; this module knows the
container, without reading any array data:

* :func:`sniff_format` reads the first bytes and answers "7.3" (HDF5 with a 512-byte MATLAB
  header), "5" (the v5/v6/v7 element format), "4" (the headerless v4 format) or None.
* :func:`describe` lists every variable with its MATLAB class, MATLAB-order shape and storage
  (compact / contiguous / chunked with chunk shape and filters for v7.3; zlib-compressed or not
  for v5).

Orientation: a MATLAB array of shape (d0, d1, ..., dk) is the h5py dataset of shape
(dk, ..., d1, d0) whose element [ik, ..., i0] is MATLAB's (i0, ..., ik): ``np_array.T``
maps one to the other. The writing side (used to make synthetic recordings and test files) is
:mod:`fmdata.synth.matwriter`.
"""
from __future__ import annotations

import os
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np

from fmdata.errors import FmDataError, first_line

HEADER_BYTES = 512  # the userblock; the HDF5 superblock starts right after it
HEADER_TEXT_BYTES = 116
V7_MAX_VARIABLE_BYTES = 2**31 - 1  # the v5/v7 format's limit per variable

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


# ---- describing files ---------------------------------------------------------------------------
@dataclass
class VariableInfo:
    """One variable of a MAT file as stored; shapes and chunks in MATLAB order.

    ``layout`` is compact / contiguous / chunked (or sparse, or group for structs and cells) for
    v7.3 and compressed / uncompressed for v5 (v4 is always uncompressed). A sparse matrix's
    ``shape`` is its MATLAB shape and ``data_bytes`` the bytes of its non-zero values.
    ``chunks_written``/``chunks_total`` count the chunks of a chunked v7.3 variable.
    ``h5_shape``/``h5_chunks`` are the h5py-order views (None for v4/v5). ``stored_bytes`` is
    what the variable occupies in the file, ``data_bytes`` its size in memory.
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
    chunks_written: int | None = None
    chunks_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-able dict (tuples become lists, as after a JSON round trip)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @property
    def missing_chunks(self) -> int:
        """Chunks of a chunked v7.3 variable that were never written (0 for a finished file).

        MATLAB writes every chunk of a variable; an unwritten chunk reads as zeros without error,
        so a file whose writer stopped (or that only declared its variables) looks valid to a
        reader that does not count them.
        """
        if self.chunks_written is None or self.chunks_total is None:
            return 0
        return max(0, self.chunks_total - self.chunks_written)

    def problem(self) -> str | None:
        """One line saying what makes this variable unusable as stored (missing chunks), or None."""
        missing = self.missing_chunks
        if not missing:
            return None
        return (f"variable {self.name!r}: expected all {self.chunks_total:,} chunks written, got "
                f"{self.chunks_written:,} ({missing:,} missing: an unfinished file, whose unwritten chunks "
                "would read as zeros)")


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
    written = total = None
    if ds.chunks and not empty:
        # counting chunks reads the chunk index only (no data): milliseconds for the benchmark's files
        total = int(np.prod([-(-int(n) // int(c)) for n, c in zip(ds.shape, ds.chunks)], dtype=np.int64))
        written = int(ds.id.get_num_chunks())
    return VariableInfo(
        name=name, matlab_class=cls, shape=shape, dtype=str(ds.dtype), layout=layout,
        stored_bytes=int(ds.id.get_storage_size()), data_bytes=data_bytes,
        chunks=tuple(reversed(ds.chunks)) if ds.chunks else None, filters=dataset_filters(ds),
        h5_shape=tuple(ds.shape), h5_chunks=tuple(ds.chunks) if ds.chunks else None,
        logical=cls == "logical",
        empty=empty, chunks_written=written, chunks_total=total)


def _describe_sparse(name: str, group: h5py.Group) -> VariableInfo:
    """A MATLAB sparse matrix: a group with ``MATLAB_sparse`` (its row count) holding ``data``
    (the non-zero values), ``ir`` (their rows) and ``jc`` (column starts, one per column + 1)."""
    cls = _attr_str(group, "MATLAB_class") or "double"
    rows = int(np.asarray(group.attrs["MATLAB_sparse"]).ravel()[0])
    jc = group.get("jc")
    cols = max(int(jc.shape[0]) - 1, 0) if isinstance(jc, h5py.Dataset) and jc.shape else 0
    parts = [group[k] for k in ("data", "ir", "jc") if isinstance(group.get(k), h5py.Dataset)]
    data = group.get("data")
    nonzero = int(data.size) if isinstance(data, h5py.Dataset) else 0
    dtype = str(data.dtype) if isinstance(data, h5py.Dataset) else "float64"
    return VariableInfo(name=name, matlab_class=cls, shape=(rows, cols), dtype=dtype, layout="sparse",
                        stored_bytes=sum(int(d.id.get_storage_size()) for d in parts),
                        data_bytes=nonzero * (data.dtype.itemsize if isinstance(data, h5py.Dataset) else 8),
                        logical=cls == "logical")


def _describe_hdf5(p: str) -> list[VariableInfo]:
    try:
        with h5py.File(p, "r") as f:
            out = []
            for name, obj in f.items():
                if name.startswith("#"):  # '#refs#' and '#subsystem#' hold cell/object payloads
                    continue
                if isinstance(obj, h5py.Dataset):
                    out.append(_describe_dataset(name, obj))
                elif "MATLAB_sparse" in obj.attrs:
                    out.append(_describe_sparse(name, obj))
                else:
                    cls = _attr_str(obj, "MATLAB_class") or "struct"
                    out.append(VariableInfo(name=name, matlab_class=cls, shape=(1, 1), dtype="group",
                                            layout="group", stored_bytes=0, data_bytes=0))
            return out
    except FmDataError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        reason = first_line(exc) or type(exc).__name__
        raise FmDataError(f"expected a readable MATLAB v7.3 (HDF5) file, got a truncated or corrupt one ({reason})",
                          p) from None


def _scipy_whos(p: str) -> list[tuple[str, tuple[int, ...], str]]:
    import scipy.io  # v5/v7 files only; scipy.io costs 0.2 s to import

    try:
        return [(n, tuple(int(s) for s in shape), cls) for n, shape, cls in scipy.io.whosmat(p)]
    except Exception as exc:  # scipy raises ValueError, TypeError, zlib.error, MatReadError, ...
        reason = first_line(exc) or type(exc).__name__
        raise FmDataError(f"expected a readable MAT file, got a corrupt one ({reason})", p) from None


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
