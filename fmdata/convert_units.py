"""The units of a conversion: the plan that cuts it into units, and the pure function that runs one.

A unit covers rows [start, stop) of one store axis ("frame" or "sample") on whole write blocks
(shards of frames; chunks of current rows) and knows which part of which recording fills them
(its pieces). :func:`convert_unit` reads those rows from the sources by path, writes the blocks
and returns their CRC-32Cs; the same unit always writes the same bytes, so units can run in any
order, in any process, on a dask cluster, and again after a crash. The plan depends only on the
data and the chunking, never on where units run. :mod:`fmdata.convert` drives them.
"""
from __future__ import annotations

import json
import os
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import zarr

from fmdata import remote, schema, store
from fmdata.checksums import block_checksum
from fmdata.errors import FmDataError
from fmdata.shard_writer import ShardWriter
from fmdata.sources import DEFAULT_FPS, RecordingReader, RecordingSource

FRAME_AXIS = "frame"
CURRENT_AXIS = "sample"
UNIT_BYTES = 32 << 20  # source bytes (uncompressed) per frame unit: few units, bounded memory
MIN_UNITS = 8  # split small inputs into at least this many frame units (both cores busy)
SHARD_BYTES_MAX = 4 << 20  # default shard: at most this much uncompressed video
FRAME_UNIT_ARRAYS = (schema.VIDEO, schema.MASK, schema.SPLIT, schema.RECORDING, schema.FRAME_TIME,
                     schema.FRAME_CURRENT_END)
CURRENT_UNIT_ARRAYS = (schema.CURRENT, schema.CURRENT_TIME)


# ---- plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """The part of one recording that a unit covers: local rows [local_start, local_stop).

    ``global_start`` is the store row of ``local_start``; ``current_base`` is the store's current
    row of the recording's local current row 0 (to make ``frame_current_end`` global).
    """

    source: RecordingSource
    recording: int
    local_start: int
    local_stop: int
    global_start: int
    current_base: int

    @property
    def global_stop(self) -> int:
        """Store row one past the piece's last row."""
        return self.global_start + self.local_stop - self.local_start


@dataclass(frozen=True)
class WorkUnit:
    """Rows [start, stop) of one axis ("frame" or "sample") of the store, from its pieces."""

    axis: str
    index: int
    start: int
    stop: int
    pieces: tuple[Piece, ...]

    @property
    def key(self) -> str:
        """Stable name of the unit (its ledger entry)."""
        return f"{'f' if self.axis == FRAME_AXIS else 'c'}{self.index:07d}"


@dataclass(frozen=True)
class UnitResult:
    """What a unit returns: its key, rows written and CRC-32C per written block and array."""

    key: str
    axis: str
    rows: int
    checksums: dict[str, list[tuple[int, int]]]


@dataclass
class ConversionPlan:
    """Recordings, offsets, chunking and the list of units of one conversion."""

    recordings: list[RecordingSource]
    chunking: store.Chunking
    fps: float
    frame_offsets: np.ndarray
    current_offsets: np.ndarray
    unit_frames: int
    units: list[WorkUnit] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        """Frames in the store."""
        return int(self.frame_offsets[-1])

    @property
    def n_current(self) -> int:
        """Current rows in the store."""
        return int(self.current_offsets[-1])

    def signature(self) -> dict[str, Any]:
        """Return what must not change between a conversion and its resumption (JSON-able)."""
        return {"sources": [[list(fp) for fp in r.fingerprint] for r in self.recordings],
                "names": [r.name for r in self.recordings],
                "chunking": {"chunk_frames": self.chunking.chunk_frames, "shard_frames": self.chunking.shard_frames,
                             "current_chunk": self.chunking.current_chunk},
                "fps": self.fps, "unit_frames": self.unit_frames}


def default_chunking(height: int, width: int) -> store.Chunking:
    """Return the default chunking for frames of ``height`` x ``width``.

    One frame per chunk (random windows read only the frames they need) and shards of
    ``store.DEFAULT_SHARD_FRAMES`` frames, halved until a shard holds at most 4 MiB of video
    (so a writer holds little memory at high resolutions). See docs/store-format.md.
    """
    shard = store.DEFAULT_SHARD_FRAMES
    while shard > 1 and shard * height * width * 3 > SHARD_BYTES_MAX:
        shard //= 2
    return store.Chunking(chunk_frames=store.DEFAULT_CHUNK_FRAMES if shard >= store.DEFAULT_CHUNK_FRAMES else 1,
                          shard_frames=shard, current_chunk=store.DEFAULT_CURRENT_CHUNK)


def override_chunking(base: store.Chunking, chunk_frames: int | None = None,
                      shard_frames: int | None = None) -> store.Chunking:
    """Return ``base`` with the given frame-axis lengths replaced.

    A chunk length alone keeps the shard length when it is a multiple, else rounds the shard
    up to the next multiple. Raises FmDataError for lengths below one or inconsistent pairs.
    """
    if chunk_frames is None and shard_frames is None:
        return base
    for label, v in (("--chunk-frames", chunk_frames), ("--shard-frames", shard_frames)):
        if v is not None and v < 1:
            raise FmDataError(f"{label}: expected a positive number of frames, got {v}")
    chunk = chunk_frames or base.chunk_frames
    shard = shard_frames if shard_frames is not None else -(-(base.shard_frames or chunk) // chunk) * chunk
    return store.Chunking(chunk_frames=chunk, shard_frames=shard, current_chunk=base.current_chunk)


def _pieces(recs: Sequence[RecordingSource], offsets: np.ndarray, current_offsets: np.ndarray,
            start: int, stop: int, axis: str) -> tuple[Piece, ...]:
    out = []
    for r, rec in enumerate(recs):
        lo, hi = max(start, int(offsets[r])), min(stop, int(offsets[r + 1]))
        if lo < hi:
            out.append(Piece(rec, r, lo - int(offsets[r]), hi - int(offsets[r]), lo, int(current_offsets[r])))
    return tuple(out)


def plan_conversion(recordings: Sequence[RecordingSource], chunking: store.Chunking | None = None,
                    fps: float = DEFAULT_FPS) -> ConversionPlan:
    """Return the conversion plan for validated ``recordings``: offsets and the work units.

    Frame units cover whole shards (``unit_frames`` a multiple of the shard length, about
    32 MiB of source each); current units cover one current chunk. The plan depends only on
    the data and the chunking, never on the number of workers, so a resumed conversion finds
    the same units.
    """
    recs = list(recordings)
    if not recs:
        raise FmDataError("expected at least one recording, got none")
    h, w = recs[0].height, recs[0].width
    chunking = chunking or default_chunking(h, w)
    f_off = np.concatenate([[0], np.cumsum([r.n_frames for r in recs])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([r.n_current for r in recs])]).astype(np.int64)
    block = chunking.write_block
    n = int(f_off[-1])
    n_blocks = -(-n // block)
    per_unit = max(1, UNIT_BYTES // (block * h * w * 4))
    per_unit = max(1, min(per_unit, -(-n_blocks // MIN_UNITS)))
    unit_frames = per_unit * block
    plan = ConversionPlan(recs, chunking, float(fps), f_off, c_off, unit_frames)
    for i, a in enumerate(range(0, n, unit_frames)):
        b = min(n, a + unit_frames)
        plan.units.append(WorkUnit(FRAME_AXIS, i, a, b, _pieces(recs, f_off, c_off, a, b, FRAME_AXIS)))
    m = int(c_off[-1])
    for i, a in enumerate(range(0, m, chunking.current_chunk)):
        b = min(m, a + chunking.current_chunk)
        plan.units.append(WorkUnit(CURRENT_AXIS, i, a, b, _pieces(recs, c_off, c_off, a, b, CURRENT_AXIS)))
    return plan


# ---- the unit of work (runs in worker processes) ------------------------------------------------
_WRITERS: dict[str, Any] = {}
_READERS: "OrderedDict[tuple[str, str], RecordingReader]" = OrderedDict()


def _writers(store_location: str, storage_options: dict | None) -> dict[str, ShardWriter]:
    key = json.dumps([store_location, storage_options], sort_keys=True, default=str)
    if _WRITERS.get("key") != key:
        root = zarr.open_group(store=remote.zarr_store(store_location, "r+", storage_options), mode="r+",
                               zarr_format=3)
        _WRITERS.clear()
        _WRITERS.update({"key": key, "arrays": {n: ShardWriter(root[n]) for n in
                                                FRAME_UNIT_ARRAYS + CURRENT_UNIT_ARRAYS}})
    return _WRITERS["arrays"]


_BUFFERS: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}


def _buffer(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """This process's reusable buffer for array ``name`` rows of ``shape`` (store dtype)."""
    key = (name, shape)
    buf = _BUFFERS.get(key)
    if buf is None:
        if len(_BUFFERS) > 32:
            _BUFFERS.clear()
        buf = _BUFFERS[key] = np.empty(shape, schema.DTYPES[name])
    return buf


def _reader(src: RecordingSource, block: int, keep: int = 1) -> RecordingReader:
    """Return this process's open reader of ``src``, opening it if needed.

    Readers stay open across units (file handle and chunk cache reused); the least recently
    used are closed beyond ``max(4, keep)``, where ``keep`` is how many the caller holds at once.
    """
    key = (src.mat_path, src.name)
    rd = _READERS.pop(key, None)
    if rd is None:
        rd = RecordingReader(src, block)
        while len(_READERS) >= max(4, keep):
            _READERS.popitem(last=False)[1].close()
    _READERS[key] = rd
    return rd


def _check_alignment(unit: WorkUnit, block: int, rows: int) -> None:
    if unit.start % block or (unit.stop % block and unit.stop != rows) or not 0 <= unit.start < unit.stop <= rows:
        raise AssertionError(f"unit {unit.key} rows {unit.start}..{unit.stop} are not aligned to blocks of {block} "
                             f"(array of {rows} rows): concurrent writers would lose data")


def expected_frame_block(pieces: Iterable[tuple[Piece, RecordingReader, Any, Any]], s0: int, s1: int,
                         height: int, width: int) -> dict[str, np.ndarray]:
    """Return every frame-axis array's rows [s0, s1) as the sources define them.

    ``pieces`` holds (piece, reader, video stream, mask stream) in order; the streams advance.
    The arrays are this process's reusable buffers, valid until the next call (fresh pages for
    every shard cost page faults). Shared by conversion and by ``fmdata verify --source``.
    """
    n = s1 - s0
    out = {schema.VIDEO: _buffer(schema.VIDEO, (n, height, width, 3)), schema.MASK: _buffer(schema.MASK, (n, height, width)),
           **{name: _buffer(name, (n,)) for name in FRAME_UNIT_ARRAYS[2:]}}
    for piece, rd, vs, ms in pieces:
        lo, hi = max(s0, piece.global_start), min(s1, piece.global_stop)
        if lo >= hi:
            continue
        a, b = lo - s0, hi - s0
        ll = piece.local_start + lo - piece.global_start
        lh = ll + hi - lo
        vs.take_into(out[schema.VIDEO][a:b])
        ms.take_into(out[schema.MASK][a:b])
        out[schema.SPLIT][a:b] = rd.split(ll, lh)
        out[schema.RECORDING][a:b] = piece.recording
        out[schema.FRAME_TIME][a:b] = rd.frame_time(ll, lh)
        out[schema.FRAME_CURRENT_END][a:b] = rd.frame_current_end(ll, lh) + piece.current_base
    return out


def expected_current_block(pieces: Sequence[Piece], c0: int, c1: int, block: int) -> dict[str, np.ndarray]:
    """Return the current arrays' rows [c0, c1) as the sources define them."""
    n = c1 - c0
    out = {schema.CURRENT: np.empty((n, 3), np.float64), schema.CURRENT_TIME: np.empty(n, np.float64)}
    for piece in pieces:
        lo, hi = max(c0, piece.global_start), min(c1, piece.global_stop)
        if lo >= hi:
            continue
        rd = _reader(piece.source, block, len(pieces))
        ll = piece.local_start + lo - piece.global_start
        out[schema.CURRENT][lo - c0:hi - c0] = rd.current(ll, ll + hi - lo)
        out[schema.CURRENT_TIME][lo - c0:hi - c0] = rd.current_time(ll, ll + hi - lo)
    return out


def frame_streams(unit: WorkUnit, block: int) -> list[tuple[Piece, RecordingReader, Any, Any]]:
    """Open (or reuse) a reader per piece of a frame unit and start its video and mask streams."""
    out = []
    for p in unit.pieces:
        rd = _reader(p.source, block, len(unit.pieces))
        out.append((p, rd, rd.video_stream(p.local_start, p.local_stop), rd.mask_stream(p.local_start, p.local_stop)))
    return out


def convert_unit(unit: WorkUnit, store_location: str, storage_options: dict | None = None) -> UnitResult:
    """Convert one unit: read its rows from the sources, write whole blocks, return their CRC-32Cs.

    Pure apart from the blocks it writes: the same unit always writes the same bytes, so a
    unit can be re-run (resume, retries on a cluster) safely. Opens sources and store by path.
    """
    writers = _writers(store_location, storage_options)
    sums: dict[str, list[tuple[int, int]]] = {}
    if unit.axis == FRAME_AXIS:
        vw = writers[schema.VIDEO]
        block = vw.shard_len
        _check_alignment(unit, block, vw.array.shape[0])
        for name in FRAME_UNIT_ARRAYS:
            assert writers[name].shard_len == block, f"{name}: write blocks differ from the video's"
        h, w = vw.array.shape[1:3]
        streams = frame_streams(unit, block)
        for s0 in range(unit.start, unit.stop, block):
            s1 = min(s0 + block, unit.stop)
            data = expected_frame_block(streams, s0, s1, h, w)
            for name in FRAME_UNIT_ARRAYS:
                writers[name].write(s0 // block, data[name])
                sums.setdefault(name, []).append((s0 // block, block_checksum(data[name], schema.DTYPES[name])))
    else:
        cw = writers[schema.CURRENT]
        block = cw.shard_len
        _check_alignment(unit, block, cw.array.shape[0])
        for c0 in range(unit.start, unit.stop, block):
            c1 = min(c0 + block, unit.stop)
            data = expected_current_block(unit.pieces, c0, c1, store.DEFAULT_SHARD_FRAMES)
            for name in CURRENT_UNIT_ARRAYS:
                writers[name].write(c0 // block, data[name])
                sums.setdefault(name, []).append((c0 // block, block_checksum(data[name], schema.DTYPES[name])))
    return UnitResult(unit.key, unit.axis, unit.stop - unit.start, sums)


def init_worker() -> None:
    """Worker start-up: die with the parent (no orphan writers after a kill), leave Ctrl-C to it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(1)
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False  # one process per core already; no blosc thread pool or global lock


def close_cached() -> None:
    """Close the readers and store handles this process keeps between units."""
    while _READERS:
        _READERS.popitem()[1].close()
    _WRITERS.clear()
    _BUFFERS.clear()
