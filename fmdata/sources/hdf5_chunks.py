"""Raw HDF5 chunk access: MATLAB's deflate chunks inflated outside HDF5, or copied as they are.

MATLAB stores large variables chunked with deflate level 3 and chunks near 64 KiB, several
frames each. Reading frame by frame would decompress each chunk many times, and HDF5's own
filter pipeline runs behind one global lock. :class:`DirectChunks` fetches chunks raw with
``read_direct_chunk`` and inflates them with libdeflate (the shard codec's
:func:`fmdata.store.shards.zlib_inflate`, about twice as fast as the zlib inside HDF5);
:func:`aligned_ranges` cuts other reads on the chunk grid, so each chunk is decompressed by
exactly one read. For the source layout, which copies chunks' zlib streams into the store as
they are, :meth:`DirectChunks.copy_keys` lists them in the store's order and :func:`copy_problem`
says when a variable's chunks cannot be copied.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import h5py
import numpy as np

from fmdata.sources.matinfo import VariableInfo
from fmdata.store.shards import zlib_inflate


def aligned_ranges(start: int, stop: int, chunk: int, target: int) -> Iterator[tuple[int, int]]:
    """Yield consecutive [a, b) covering [start, stop) whose inner ends lie on multiples of ``chunk``.

    Each range holds at least ``target`` frames (the last may hold fewer), so every source chunk
    inside [start, stop) is decompressed by exactly one read.
    """
    a = start
    while a < stop:
        b = -(-(a + max(1, target)) // chunk) * chunk
        b = min(b, stop)
        yield a, b
        a = b



class DirectChunks:
    """Raw-chunk access to one HDF5 dataset stored chunked with deflate (or no filter), as MATLAB
    stores its variables: chunks come from ``read_direct_chunk`` and are inflated with libdeflate,
    outside HDF5's filter pipeline. :func:`direct_chunks` returns None for other datasets.
    """

    def __init__(self, ds: h5py.Dataset, deflated: bool) -> None:
        self.ds = ds
        self.chunks = tuple(ds.chunks)
        self.shape = tuple(ds.shape)
        self.dtype = ds.dtype
        self.count = int(np.prod(self.chunks))
        self.nbytes = self.count * self.dtype.itemsize
        self.deflated = deflated
        # chunks span whole rows (all but the frame axis): blocks can be handed out chunk by chunk
        self.whole_rows = self.chunks[1:] == self.shape[1:]
        self._rest = [range(0, s, c) for s, c in zip(self.shape[1:], self.chunks[1:])]
        # chunks of the chunk row a read ended inside: the next read (the next block) starts there
        self._tail: dict[tuple[int, ...], np.ndarray] = {}

    def chunk(self, key: tuple[int, ...]) -> np.ndarray | None:
        """Return the decoded chunk at ``key`` (its first element's index), None if never written."""
        cached = self._tail.get(key)
        if cached is not None:
            return cached
        try:
            mask, raw = self.ds.id.read_direct_chunk(key)
        except (KeyError, ValueError, RuntimeError):
            return None
        data = zlib_inflate(raw, self.nbytes) if self.deflated and not mask & 1 else raw
        return np.frombuffer(data, self.dtype, count=self.count).reshape(self.chunks)

    def rows(self, a: int, b: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, view) over rows [a, b), one piece per chunk, without copying.

        Only for whole-row chunks; a chunk never written is read through h5py (fill value).
        """
        step = self.chunks[0]
        for r0 in range(a - a % step, b, step):
            lo, hi = max(a, r0), min(b, r0 + step)
            chunk = self.chunk((r0,) + (0,) * (len(self.shape) - 1))
            if chunk is None:
                yield lo, self.ds[lo:hi]
            else:
                yield lo, chunk[lo - r0:hi - r0]

    def read(self, a: int, b: int) -> np.ndarray:
        """Return rows [a, b) as one array (any chunk shape)."""
        out = np.empty((b - a,) + self.shape[1:], self.dtype)
        keep: dict[tuple[int, ...], np.ndarray] = {}
        step = self.chunks[0]
        for r0 in range(a - a % step, b, step):
            lo, hi = max(a, r0), min(b, r0 + step)
            for offs in itertools.product(*self._rest):
                key = (r0, *offs)
                chunk = self.chunk(key)
                if chunk is None:
                    return self.ds[a:b]
                if r0 + step > b:
                    keep[key] = chunk
                dst = (slice(lo - a, hi - a),) + tuple(slice(o, min(o + c, s)) for o, c, s in
                                                        zip(offs, self.chunks[1:], self.shape[1:]))
                src = (slice(lo - r0, hi - r0),) + tuple(slice(0, min(c, s - o)) for o, c, s in
                                                         zip(offs, self.chunks[1:], self.shape[1:]))
                out[dst] = chunk[src]
        self._tail = keep
        return out


    @property
    def stored_max(self) -> int:
        """The most bytes one stored chunk can take: deflate's worst case (stored blocks) and zlib's frame."""
        return self.nbytes + self.nbytes // 64 + 64

    def copy_keys(self, start: int, stop: int, order: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Return the keys (first element index) of the chunks covering rows [start, stop) in the
        order of a Zarr shard index over a store array whose chunk is this one's, transposed:
        store axis ``j`` is this dataset's axis ``inverse[j]`` (``order`` is the transpose codec's:
        the dataset's axis ``i`` is the store's axis ``order[i]``). Chunk rows first, then the
        other store axes in C order."""
        inverse = np.argsort(order)
        grid = [-(-s // c) for s, c in zip(self.shape, self.chunks)]
        step = self.chunks[0]
        rows = np.arange(start - start % step, stop, step)
        # store grid coordinates in C order (chunk rows slowest), then the dataset's element offsets
        coords = np.indices((len(rows), *(grid[inverse[j]] for j in range(1, len(order))))).reshape(len(order), -1)
        coords[0] = rows[coords[0]] // step
        keys = coords[list(order)].T * np.asarray(self.chunks)
        return list(map(tuple, keys.tolist()))

    def valid(self, key: tuple[int, ...]) -> tuple[slice, ...]:
        """Return the part of the chunk at ``key`` that lies inside the dataset (edge chunks are padded)."""
        return tuple(slice(0, min(c, s - k)) for k, c, s in zip(key, self.chunks, self.shape))


def copy_problem(v: VariableInfo, mat_format: str) -> str | None:
    """Return why video or mask variable ``v`` of a MAT file of ``mat_format`` cannot be copied chunk by
    chunk into a store of the source layout (one line), or None when it can: a v7.3 variable,
    chunked, with deflate as its only filter, whose values keep their type (uint8 or logical)."""
    if mat_format != "7.3":
        return f"a MATLAB v{mat_format} file (not HDF5) has no chunks to copy"
    if v.layout != "chunked":
        return f"{v.layout} storage (not chunked)"
    if not v.filters or len(v.filters) > 1 or not v.filters[0].startswith("deflate"):
        return f"filters {', '.join(v.filters) or 'none'} (only chunks with deflate alone are copied)"
    if not v.h5_shape or not v.h5_chunks or len(v.h5_shape) != len(v.h5_chunks):
        return "no chunk grid"
    if v.matlab_class not in ("uint8", "logical"):
        return f"MATLAB class {v.matlab_class}: its values change type (to uint8)"
    return None


def random_read(v: VariableInfo) -> dict[str, int]:
    """Estimate what reading one random frame of frame variable ``v`` costs in its chunk grid: the chunks
    holding it (``chunks``), the bytes they decode to (``decoded_bytes``) and the frame's own bytes
    (``frame_bytes``). Every chunk holding part of the frame is decoded whole; chunks of whole frames
    hold their neighbours too. Without a chunk grid, a frame decodes itself."""
    shape = v.h5_shape or ()
    item = np.dtype(v.dtype).itemsize if v.dtype != "group" else 1
    frame = int(np.prod(shape[1:], dtype=np.int64)) * item if shape else 0
    if not v.h5_chunks or len(v.h5_chunks) != len(shape):
        return {"chunks": 1, "decoded_bytes": frame, "frame_bytes": frame}
    per_row = int(np.prod([-(-s // c) for s, c in zip(shape[1:], v.h5_chunks[1:])], dtype=np.int64))
    chunk = int(np.prod(v.h5_chunks, dtype=np.int64)) * item
    return {"chunks": per_row, "decoded_bytes": per_row * chunk, "frame_bytes": frame}


def deflate_level(v: VariableInfo) -> int:
    """The deflate level of a variable's filter (``deflate(3)``: 3), or 3 when it does not say."""
    found = re.match(r"deflate\((\d+)\)", v.filters[0]) if v.filters else None
    return int(found.group(1)) if found else 3


def direct_chunks(ds: h5py.Dataset) -> DirectChunks | None:
    """Return raw-chunk access to ``ds``, or None unless it is chunked with deflate (or nothing)
    as its only filter and holds plain numbers."""
    if ds.chunks is None or ds.dtype.kind not in "uifb" or ds.ndim < 1:
        return None
    dcpl = ds.id.get_create_plist()
    filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
    if filters not in ([], [h5py.h5z.FILTER_DEFLATE]):
        return None
    return DirectChunks(ds, bool(filters))

