"""Raw HDF5 chunk access: MATLAB's deflate chunks inflated outside HDF5, reads aligned to the chunk grid.

MATLAB stores large variables chunked with deflate level 3 and chunks near 64 KiB, several
frames each. Reading frame by frame would decompress each chunk many times, and HDF5's own
filter pipeline runs behind one global lock. :class:`DirectChunks` fetches chunks raw with
``read_direct_chunk`` and inflates them with libdeflate (the ``deflate`` package, about twice
as fast as the zlib inside HDF5; stdlib zlib when it is missing); :func:`aligned_ranges` cuts
other reads on the chunk grid, so each chunk is decompressed by exactly one read.
"""
from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterator

import h5py
import numpy as np

try:  # libdeflate: about 2x zlib's inflate speed on MATLAB's deflate-3 chunks (docs/performance.md)
    import deflate as _libdeflate

    def _inflate(raw: bytes, nbytes: int) -> bytes | bytearray:
        return _libdeflate.zlib_decompress(raw, nbytes)
except ImportError:  # pragma: no cover - the dependency is declared; stay correct without it
    def _inflate(raw: bytes, nbytes: int) -> bytes | bytearray:
        return zlib.decompress(raw)



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
        data = _inflate(raw, self.nbytes) if self.deflated and not mask & 1 else raw
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

