"""Read validated recordings (:mod:`fmdata.sources.validate`) in store orientation, block by block.

A reader opens one recording by path (so each worker process opens its own) and hands out
blocks already in store orientation, checking values as they stream past (masks and splits 0/1,
finite current). MATLAB v7.3 files are read in blocks that end on the source's chunk grid,
whole chunks raw where MATLAB's deflate allows it (:mod:`fmdata.sources.hdf5_chunks`); any other
storage goes through h5py's normal reads with a chunk cache that holds a block. v5/v7 files
(small by nature: scipy reads a variable whole) are loaded one variable at a time.
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any

import h5py
import numpy as np

from fmdata.errors import FmDataError, first_line
from fmdata.sources.hdf5_chunks import DirectChunks, aligned_ranges, direct_chunks
from fmdata.sources.layouts import LAYOUT_V2, v2_key
from fmdata.sources.v2_text import (
    parse_time,
    read_currents,
    read_split_json,
    read_timestamps,
    seconds_since,
    split_codes,
)
from fmdata.sources.validate import RecordingSource, VarSpec
from fmdata.store import schema
from fmdata.store.shards import EncodedChunks, zlib_deflate, zlib_inflate


class RecordingReader(abc.ABC):
    """Read one recording's arrays in store orientation, block by block, checking values.

    Opens the MAT file by path (h5py objects cannot cross processes) with a chunk cache that
    holds one block of the largest variable. Frame indices are local to the recording. Video
    and mask come from the MAT file in both layouts; the layouts differ in where split, times
    and current come from (:class:`V1Reader`, :class:`V2Reader`; :func:`open_reader` picks).
    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, src: RecordingSource, block_frames: int = 256) -> None:
        self.src = src
        self.block_frames = max(1, int(block_frames))
        self._h5: h5py.File | None = None
        self._v5: dict[str, np.ndarray] = {}
        if src.mat_format == "7.3":
            specs = [s for s in (src.video, src.mask, src.current, src.split) if s is not None]
            cache = max((-(-self.block_frames // s.frame_chunk) + 1) * s.frame_chunk * s.frame_bytes for s in specs)
            try:
                self._h5 = h5py.File(src.mat_path, "r", rdcc_nbytes=int(cache) + (1 << 20), rdcc_nslots=100_003)
            except OSError as exc:
                raise FmDataError(f"expected a readable MATLAB v7.3 (HDF5) file, got {exc}", src.mat_path) from None
        self._direct: dict[str, DirectChunks | None] = {}
        self._datasets: dict[str, h5py.Dataset] = {}
        self._copy_buffers: dict[str, np.ndarray] = {}

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the MAT file."""
        self._datasets.clear()
        self._direct.clear()
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self._v5.clear()

    # -- raw access in MATLAB-reversed (h5py) order, rows = frames
    def _raw(self, spec: VarSpec, a: int, b: int) -> np.ndarray:
        """Return frames [a, b) of ``spec`` in h5py order (frames first)."""
        try:
            if self.src.mat_format == "7.3":
                ds = self._dataset(spec.name)
                if spec.dropped:
                    return ds[()][None]
                if spec is self.src.split:
                    return ds[a:b, 0] if spec.row else ds[0, a:b]  # MATLAB (1, N) is h5py (N, 1)
                direct = self._direct_chunks(spec.name)
                return direct.read(a, b) if direct is not None else ds[a:b]
            arr = self._v5.get(spec.name)
            if arr is None:
                arr = _load_v5(self.src.mat_path, spec.name)
                self._v5[spec.name] = arr
            if spec is self.src.split:
                return arr.reshape(-1)[a:b]
            full = arr if not spec.dropped else arr[..., None]
            return full[..., a:b].T
        except FmDataError:
            raise
        except Exception as exc:  # h5py, zlib, libdeflate and scipy each raise their own types
            raise FmDataError(f"expected readable data in {spec.name!r} frames {a}..{b - 1}, got a corrupt or "
                              f"unreadable chunk ({_reason(exc)})", self.src.mat_path) from None

    def _dataset(self, name: str) -> h5py.Dataset:
        """The open dataset ``name`` (kept: h5py's lookup by name costs half a millisecond)."""
        ds = self._datasets.get(name)
        if ds is None:
            if self._h5 is None:
                raise ValueError("reader is closed")
            ds = self._datasets[name] = self._h5[name]
        return ds

    def _direct_chunks(self, name: str) -> DirectChunks | None:
        if name not in self._direct:
            self._direct[name] = direct_chunks(self._dataset(name))
        return self._direct[name]

    def blocks(self, spec: VarSpec, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first frame, raw block) over [start, stop), reads aligned to the chunk grid.

        Where the source chunks span whole frames and can be read raw, the blocks are the
        decoded chunks themselves (views, no copy); otherwise reads of at least ``block_frames``
        that end on the chunk grid.
        """
        if self._h5 is not None and not spec.dropped and spec is not self.src.split:
            direct = self._direct_chunks(spec.name)
            if direct is not None and direct.whole_rows:
                try:
                    yield from direct.rows(start, stop)
                except Exception as exc:  # h5py, zlib and libdeflate each raise their own types
                    raise FmDataError(f"expected readable data in {spec.name!r} frames {start}..{stop - 1}, got a "
                                      f"corrupt or unreadable chunk ({_reason(exc)})", self.src.mat_path) from None
                return
        for a, b in aligned_ranges(start, stop, spec.frame_chunk, self.block_frames):
            yield a, self._raw(spec, a, b)

    def copied_chunks(self, array: str, start: int, stop: int, gap: int = 0) -> EncodedChunks:
        """Return the chunks of store array ``array`` (video or mask) covering local frames [start, stop)
        as zlib streams, in the order of the store's shard index (source layout, ``start`` on the
        source's chunk grid), back to back with ``gap`` spare bytes after each (see
        :class:`~fmdata.store.shards.EncodedChunks`). A chunk the file stored without its deflate
        filter (a filter mask) is compressed here and its raw bytes kept. Mask chunks are inflated
        and checked (values 0 or 1) but handed over as they are; video chunks are never inflated (a
        damaged zlib stream is copied as it is and fails when read, as in the source). The chunks
        live in a buffer that the next call for the same array reuses: reading into fresh memory
        costs a page fault per 4 KiB."""
        spec = self.src.video if array == schema.VIDEO else self.src.mask
        if spec.h5_chunks is None or self._h5 is None:
            raise FmDataError(f"expected {spec.name!r} chunks that can be copied, got {spec.copy_note}",
                              self.src.mat_path)
        direct = self._direct_chunks(spec.name)
        assert direct is not None  # deflate alone: copy_problem said so
        keys = direct.copy_keys(start, stop, schema.SOURCE_ORDER[array])
        room = direct.stored_max + gap
        buf = self._copy_buffers.get(array)
        if buf is None or len(buf) < len(keys) * room:
            buf = self._copy_buffers[array] = np.empty(len(keys) * room, np.uint8)
        sizes = np.empty(len(keys), np.int64)
        raw: dict[int, bytes] = {}
        read, level, check = direct.ds.id.read_direct_chunk, spec.deflate_level, array == schema.MASK
        pos, key = 0, (start,) + (0,) * (len(direct.shape) - 1)
        try:
            for i, key in enumerate(keys):
                mask, view = read(key, out=buf[pos:])
                n = len(view)
                if not direct.deflated or mask & 1:  # stored raw: compress it here
                    raw[i] = buf[pos:pos + n].tobytes()
                    packed = zlib_deflate(raw[i], level)
                    n = len(packed)
                    buf[pos:pos + n] = np.frombuffer(packed, np.uint8)
                if check:
                    values = raw[i] if i in raw else zlib_inflate(buf[pos:pos + n], direct.nbytes)
                    block = np.frombuffer(values, direct.dtype, count=direct.count)
                    if block.max() > 1:  # one pass; the padding of an edge chunk may hold anything
                        _as_binary(block.reshape(direct.chunks)[direct.valid(key)], spec.name, key[0],
                                   self.src.mat_path, mask=True)
                sizes[i] = n
                pos += n + gap
        except FmDataError:
            raise
        except Exception as exc:  # h5py, libdeflate and zlib each raise their own types
            raise FmDataError(f"expected readable data in {spec.name!r} frames from {key[0]}, got a corrupt or "
                              f"unreadable chunk ({_reason(exc)})", self.src.mat_path) from None
        return EncodedChunks(buf, sizes, gap, raw)

    # -- store-orientation streams with value checks
    def video_stream(self, start: int, stop: int) -> FrameStream:
        """Return a stream of video frames [start, stop) as (n, H, W, 3) uint8."""
        return FrameStream(self.blocks(self.src.video, start, stop), _copy_video)

    def mask_stream(self, start: int, stop: int) -> FrameStream:
        """Return a stream of mask frames [start, stop) as (n, H, W) uint8; values other than 0/1 raise,
        unless the recording reads values above 0 as 1 (``RecordingSource.mask_nonzero``)."""
        name, path, nonzero = self.src.mask.name, self.src.mat_path, self.src.mask_nonzero
        blocks = ((a, _as_binary(raw, name, a, path, mask=True, nonzero=nonzero))
                  for a, raw in self.blocks(self.src.mask, start, stop))
        return FrameStream(blocks, _copy_mask)

    # -- per layout
    @abc.abstractmethod
    def split(self, start: int, stop: int) -> np.ndarray:
        """Return the int8 split codes of frames [start, stop)."""

    @abc.abstractmethod
    def frame_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's origin of frames [start, stop)."""

    @abc.abstractmethod
    def frame_current_end(self, start: int, stop: int) -> np.ndarray:
        """Return, per frame, the local current row one past the last row at or before its time."""

    @abc.abstractmethod
    def current(self, start: int, stop: int) -> np.ndarray:
        """Return current rows [start, stop) as (n, 3) float64 amperes; FmDataError on NaN/Inf."""

    @abc.abstractmethod
    def current_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's origin of current rows [start, stop)."""


class V1Reader(RecordingReader):
    """A V1 file: split and current are MAT variables, one current sample per frame, frame i at i / fps."""

    def split(self, start: int, stop: int) -> np.ndarray:
        """Return the int8 split codes of frames [start, stop) (the file's 0/1 ``train_test_index``)."""
        assert self.src.split is not None
        parts = [(_as_binary(raw, self.src.split.name, a, self.src.mat_path)).reshape(-1)
                 for a, raw in self.blocks(self.src.split, start, stop)]
        return np.concatenate(parts).astype(np.int8) if parts else np.zeros(0, np.int8)

    def frame_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's start of frames [start, stop): i / fps."""
        return np.arange(start, stop, dtype=np.float64) / self.src.fps

    def frame_current_end(self, start: int, stop: int) -> np.ndarray:
        """Return, per frame, one past its own current sample (sample i belongs to frame i)."""
        return np.arange(start + 1, stop + 1, dtype=np.int64)

    def current(self, start: int, stop: int) -> np.ndarray:
        """Return current rows [start, stop) as (n, 3) float64 amperes; FmDataError on NaN/Inf."""
        assert self.src.current is not None
        parts = []
        for a, raw in self.blocks(self.src.current, start, stop):
            block = np.asarray(raw, dtype=np.float64).reshape(-1, 3)
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise FmDataError(f"expected finite values in {self.src.current.name!r}, got {block[i].tolist()} "
                                  f"at sample {a + i}", self.src.mat_path)
            parts.append(block)
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def current_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's start of current rows [start, stop): i / fps."""
        return np.arange(start, stop, dtype=np.float64) / self.src.fps


class V2Reader(RecordingReader):
    """A V2 recording: split from the JSON lists, times from the CSV timestamps, current from the 2 Hz CSV."""

    def __init__(self, src: RecordingSource, block_frames: int = 256) -> None:
        super().__init__(src, block_frames)
        self._split: np.ndarray | None = None
        self._times: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def split(self, start: int, stop: int) -> np.ndarray:
        """Return the int8 split codes of frames [start, stop) (train.json / test.json; others none)."""
        if self._split is None:
            self._split = split_codes(read_split_json(self.src.train_json), read_split_json(self.src.test_json),
                                      v2_key(self.src.name), self.src.n_frames, self.src.train_json,
                                      self.src.test_json)
        return self._split[start:stop].copy()

    def _v2_times(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame_time, current_time, frame_current_end) of the recording, parsed once."""
        if self._times is None:
            frame_ts = read_timestamps(self.src.timestamps_csv)
            cur_ts, _ = read_currents(self.src.currents_csv)
            origin = parse_time(self.src.origin)
            self._times = (seconds_since(frame_ts, origin), seconds_since(cur_ts, origin),
                           np.searchsorted(cur_ts, frame_ts, side="right").astype(np.int64))
        return self._times

    def frame_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's origin of frames [start, stop)."""
        return self._v2_times()[0][start:stop].copy()

    def frame_current_end(self, start: int, stop: int) -> np.ndarray:
        """Return, per frame, the local current row one past the last row at or before its time."""
        return self._v2_times()[2][start:stop].copy()

    def current(self, start: int, stop: int) -> np.ndarray:
        """Return current rows [start, stop) as (n, 3) float64 amperes (finite: checked when parsed)."""
        return read_currents(self.src.currents_csv)[1][start:stop].copy()

    def current_time(self, start: int, stop: int) -> np.ndarray:
        """Return float64 seconds since the recording's origin of current rows [start, stop)."""
        return self._v2_times()[1][start:stop].copy()


def open_reader(src: RecordingSource, block_frames: int = 256) -> RecordingReader:
    """Return the reader of ``src``'s layout, opened (``block_frames``: frames per read of other storage)."""
    return (V2Reader if src.layout == LAYOUT_V2 else V1Reader)(src, block_frames)


def _copy_video(dst: np.ndarray, raw: np.ndarray) -> None:
    """h5py (n, 3, W, H) -> store (n, H, W, 3). One 2-D transpose per colour plane is about three
    times faster than one 4-D strided copy (measured: 2.2 vs 0.8 GB/s)."""
    for c in range(3):
        dst[..., c] = raw[:, c].transpose(0, 2, 1)


def _copy_mask(dst: np.ndarray, raw: np.ndarray) -> None:
    """h5py (n, W, H) -> store (n, H, W)."""
    np.copyto(dst, raw.transpose(0, 2, 1), casting="unsafe")


class FrameStream:
    """Consecutive frames from source-aligned blocks, copied into caller buffers of any length.

    Reads follow the source's chunk grid; :meth:`take_into` fills store-shaped buffers (one
    shard at a time), transposing on the copy, so each frame is copied once.
    """

    def __init__(self, blocks: Iterator[tuple[int, np.ndarray]],
                 copy: Callable[[np.ndarray, np.ndarray], None]) -> None:
        self._blocks = blocks
        self._copy = copy
        self._raw: np.ndarray | None = None
        self._pos = 0

    def take_into(self, out: np.ndarray) -> None:
        """Fill ``out`` (n frames, store orientation) with the next n frames of the stream."""
        filled, n = 0, out.shape[0]
        while filled < n:
            if self._raw is None or self._pos == len(self._raw):
                try:
                    _, self._raw = next(self._blocks)
                except StopIteration:
                    raise FmDataError(f"expected {n - filled} more frames, got the end of the source") from None
                self._pos = 0
            k = min(n - filled, len(self._raw) - self._pos)
            self._copy(out[filled:filled + k], self._raw[self._pos:self._pos + k])
            filled += k
            self._pos += k


def _reason(exc: BaseException) -> str:
    """An exception as one non-empty line (h5py's MemoryError, for one, has no message)."""
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _as_binary(raw: np.ndarray, name: str, first: int, path: str, *, mask: bool = False,
               nonzero: bool = False) -> np.ndarray:
    """Return ``raw`` as uint8 after checking every value is 0 or 1 (first frame index for errors).

    ``mask``: the values are a mask, whose refusal names the option that reads them otherwise
    when that option would read them (values above 1). With ``nonzero`` every value above 0
    becomes 1, as the authors' loader reads masks; values below 0 (and NaN) are refused either
    way, and their line names no option: neither rule gives them a meaning.
    """
    if raw.dtype == np.bool_:
        return raw.view(np.uint8)
    if nonzero:
        bad = _below_zero(raw)
    elif raw.dtype == np.uint8:
        bad = raw > 1
    else:
        bad = (raw != 0) & (raw != 1)
    if bad.any():
        below = bad if nonzero else _below_zero(raw) if mask else None
        if below is not None and below.any():
            frame, value = _first_where(raw, below)
            raise FmDataError(f"expected {name!r} values of 0 or above, got {value} at frame {first + frame} "
                              "(a mask value below 0 has no meaning, whatever the options)", path)
        frame, value = _first_where(raw, bad)
        hint = "; --mask-nonzero maps every value above 0 to 1, as the authors' loader does" if mask else ""
        raise FmDataError(f"expected {name!r} values 0 or 1, got {value} at frame {first + frame}{hint}", path)
    if nonzero:
        return (raw > 0).view(np.uint8)
    return raw.astype(np.uint8, copy=False)


def _below_zero(raw: np.ndarray) -> np.ndarray:
    """Where ``raw`` holds a value below 0 or NaN (nothing, for unsigned integers)."""
    if raw.dtype.kind == "u":
        return np.zeros(raw.shape, bool)
    return (raw < 0) | np.isnan(raw) if raw.dtype.kind == "f" else raw < 0


def _first_where(raw: np.ndarray, where: np.ndarray) -> tuple[int, Any]:
    """Return (frame index along axis 0, value) of the first element of ``raw`` where ``where`` holds."""
    if raw.ndim == 1:
        i = int(np.argmax(where))
        return i, raw[i]
    frame = int(np.argmax(where.reshape(len(raw), -1).any(axis=1)))
    return frame, raw[frame][where[frame]].ravel()[0]


def _load_v5(path: str, name: str) -> np.ndarray:
    import scipy.io  # v5/v7 files only: scipy.io costs 0.2 s in every conversion worker

    try:
        data = scipy.io.loadmat(path, variable_names=[name], squeeze_me=False, mat_dtype=False)
    except Exception as exc:  # scipy raises ValueError, TypeError, zlib.error, MatReadError, ...
        raise FmDataError(f"expected a readable MAT file, got a corrupt one ({first_line(exc) or type(exc).__name__})",
                          path) from None
    if name not in data:
        raise FmDataError(f"expected a variable {name!r}, got none", path)
    return np.asarray(data[name])
