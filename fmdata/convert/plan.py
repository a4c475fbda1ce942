"""The plan of a conversion: its recordings, offsets, chunking and the work units that cover it.

A unit covers rows [start, stop) of one store axis ("frame" or "sample") on whole write blocks
(shards of frames; chunks of current rows) and knows which part of which recording fills them
(its pieces). The plan depends only on the data and the chunking, never on where or how many
units run, so a resumed conversion finds the same units. :mod:`fmdata.convert.units` runs one.

The plan also says how video and mask are written (:func:`copy_plan`): copied chunk by chunk in
the source layout where every recording allows it, decoded and encoded in the plain layout
otherwise, with the reason.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fmdata.compute.memory import available_memory, require_memory
from fmdata.errors import FmDataError
from fmdata.sources import DEFAULT_FPS, RecordingSource
from fmdata.store import schema
from fmdata.store.layout import Chunking, CopiedChunks, default_chunking

FRAME_AXIS = "frame"
CURRENT_AXIS = "sample"
UNIT_BYTES = 32 << 20  # source bytes (uncompressed) per frame unit: few units, bounded memory
MIN_UNITS = 8  # split small inputs into at least this many frame units (both cores busy)
# a frame unit's worker holds its video and mask rows (3 + 1 bytes a pixel) twice: read, then encoded
UNIT_COPIES = 2
# a shard of copied chunks holds whole chunk rows of every copied array; an array whose chunk rows
# would need shards of more video than this is not copied
SOURCE_SHARD_BYTES_LIMIT = 64 << 20
COPYABLE = {schema.VIDEO: "video", schema.MASK: "mask"}  # store array -> its RecordingSource variable


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
    chunking: Chunking
    fps: float
    frame_offsets: np.ndarray
    current_offsets: np.ndarray
    unit_frames: int
    units: list[WorkUnit] = field(default_factory=list)
    copied: dict[str, CopiedChunks] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        """Frames in the store."""
        return int(self.frame_offsets[-1])

    @property
    def n_current(self) -> int:
        """Current rows in the store."""
        return int(self.current_offsets[-1])

    def signature(self) -> dict[str, Any]:
        """Return what must not change between a conversion and its resumption, as it reads back from
        the store's JSON attribute (lists, not tuples), so that the two compare equal."""
        sig = {"sources": [[list(fp) for fp in r.fingerprint] for r in self.recordings],
               "names": [r.name for r in self.recordings],
               "chunking": self.chunking.to_dict(),
               "fps": self.fps, "unit_frames": self.unit_frames}
        if any(r.mask_nonzero for r in self.recordings):  # absent otherwise: older ledgers stay resumable
            sig["mask_nonzero"] = [r.mask_nonzero for r in self.recordings]
        if self.copied:  # likewise
            sig["copied"] = {name: c.to_dict() for name, c in sorted(self.copied.items())}
        normalised: dict[str, Any] = json.loads(json.dumps(sig))
        return normalised


def _frames_bytes(frames: int, height: int, width: int) -> int:
    return UNIT_COPIES * frames * height * width * 4


def _check_memory(chunking: Chunking, unit_frames: int, height: int, width: int) -> None:
    """FmDataError (field ``chunk_frames``, or ``shard_frames`` when the chunk alone fits) when a frame
    unit's rows would not fit in memory: a chunk or shard length far beyond the data, caught before
    anything is written."""
    need = _frames_bytes(unit_frames, height, width)
    if need <= available_memory():
        return
    chunk, shard = chunking.chunk_frames, chunking.shard_frames
    by_chunk = shard is None or shard == chunk or _frames_bytes(chunk, height, width) > available_memory()
    what = f"{chunk:,} frames per chunk" if by_chunk else f"{shard:,} frames per shard"
    require_memory(need, f"{what} of {height}x{width} pixels (a write unit of {unit_frames:,} frames)",
                   field="chunk_frames" if by_chunk else "shard_frames")


def _pieces(recs: Sequence[RecordingSource], offsets: np.ndarray, current_offsets: np.ndarray,
            start: int, stop: int, axis: str) -> tuple[Piece, ...]:
    out = []
    for r, rec in enumerate(recs):
        lo, hi = max(start, int(offsets[r])), min(stop, int(offsets[r + 1]))
        if lo < hi:
            out.append(Piece(rec, r, lo - int(offsets[r]), hi - int(offsets[r]), lo, int(current_offsets[r])))
    return tuple(out)


def _copy_note(recs: Sequence[RecordingSource], f_off: np.ndarray, name: str) -> str | None:
    """Why store array ``name`` cannot hold the recordings' chunks copied as they are, or None."""
    for r in recs:
        spec = getattr(r, COPYABLE[name])
        if spec.h5_chunks is None:
            return f"{r.name}: {spec.copy_note}" if len(recs) > 1 else spec.copy_note
        if name == schema.MASK and r.mask_nonzero:
            return "--mask-nonzero maps its values above 0 to 1"
    grids = sorted({getattr(r, COPYABLE[name]).h5_chunks for r in recs})
    if len(grids) > 1:
        return f"the recordings' chunk shapes differ ({', '.join('x'.join(map(str, g)) for g in grids)})"
    step = grids[0][0]
    for r, off in zip(recs[1:], f_off[1:-1].tolist()):
        if off % step:
            return (f"recording {r.name} starts at store frame {off}, not on the {step}-frame chunk grid (the "
                    "recordings before it do not end on whole chunks)")
    return None


def copy_plan(recs: Sequence[RecordingSource], f_off: np.ndarray,
              chunking: Chunking) -> tuple[dict[str, CopiedChunks], dict[str, str], Chunking]:
    """Decide which of video and mask are copied (the source layout) and how the others are written.

    Returns (the copied arrays and their chunks, per array a line saying how it is written, the
    chunking: shards rounded to whole chunk rows of every copied array, near the requested
    length). An array is copied when every recording's variable can be copied (v7.3, chunked with
    deflate alone, values unchanged: see VarSpec.copy_note), all share one chunk shape, every
    recording starts on that chunk grid, and the shards stay under SOURCE_SHARD_BYTES_LIMIT.
    """
    copied: dict[str, CopiedChunks] = {}
    notes: dict[str, str] = {}
    for name in COPYABLE:
        note = _copy_note(recs, f_off, name)
        if note is not None:
            notes[name] = note
            continue
        spec = getattr(recs[0], COPYABLE[name])
        inverse = np.argsort(schema.SOURCE_ORDER[name])
        copied[name] = CopiedChunks(tuple(int(spec.h5_chunks[i]) for i in inverse), spec.deflate_level)
    frame_bytes = recs[0].height * recs[0].width * 3
    while copied:
        unit = math.lcm(chunking.chunk_frames, *(c.chunk[0] for c in copied.values()))
        if unit * frame_bytes <= SOURCE_SHARD_BYTES_LIMIT:
            break
        drop = max(copied, key=lambda n: copied[n].chunk[0])
        notes[drop] = (f"its chunks of {copied[drop].chunk[0]} frames need shards of {unit} frames "
                       f"({unit * frame_bytes / 2**20:.0f} MiB of video), more than {SOURCE_SHARD_BYTES_LIMIT >> 20} MiB")
        del copied[drop]
    if copied:
        unit = math.lcm(chunking.chunk_frames, *(c.chunk[0] for c in copied.values()))
        shard = max(1, round(chunking.write_block / unit)) * unit
        chunking = Chunking(chunking.chunk_frames, shard, chunking.current_chunk)
    paths = {name: (f"copied: the source's deflate chunks of {'x'.join(map(str, copied[name].chunk))} "
                    f"({', '.join(schema.DIMS[name])}), not decoded" if name in copied
                    else f"decoded and encoded (blosc): {notes[name]}") for name in COPYABLE}
    return copied, paths, chunking


def plan_conversion(recordings: Sequence[RecordingSource], chunking: Chunking | None = None,
                    fps: float = DEFAULT_FPS, layout: str = schema.LAYOUT_PLAIN) -> ConversionPlan:
    """Return the conversion plan for validated ``recordings``: offsets and the work units.

    Frame units cover whole shards (``unit_frames`` a multiple of the shard length, about
    32 MiB of source each); current units cover one current chunk. The plan depends only on
    the data and the chunking, never on the number of workers, so a resumed conversion finds
    the same units. ``layout`` "source" copies video and mask chunk by chunk where the sources
    allow it (:func:`copy_plan`; the shard length then becomes whole chunk rows), "plain" decodes
    and encodes them. FmDataError (field ``chunk_frames`` or ``shard_frames``) when a frame unit
    would not fit in memory.
    """
    recs = list(recordings)
    if not recs:
        raise FmDataError("expected at least one recording, got none")
    if layout not in schema.ARRAY_LAYOUTS:
        raise FmDataError(f"expected a layout in {schema.ARRAY_LAYOUTS}, got {layout!r}", field="layout")
    h, w = recs[0].height, recs[0].width
    chunking = chunking or default_chunking(h, w, layout)
    f_off = np.concatenate([[0], np.cumsum([r.n_frames for r in recs])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([r.n_current for r in recs])]).astype(np.int64)
    copied: dict[str, CopiedChunks] = {}
    paths = {name: "decoded and encoded (blosc): --layout plain" for name in COPYABLE}
    if layout == schema.LAYOUT_SOURCE:
        copied, paths, chunking = copy_plan(recs, f_off, chunking)
    block = chunking.write_block
    n = int(f_off[-1])
    n_blocks = -(-n // block)
    per_unit = max(1, UNIT_BYTES // (block * h * w * 4))
    per_unit = max(1, min(per_unit, -(-n_blocks // MIN_UNITS)))
    unit_frames = per_unit * block
    _check_memory(chunking, unit_frames, h, w)
    plan = ConversionPlan(recs, chunking, float(fps), f_off, c_off, unit_frames, copied=copied, paths=paths)
    for i, a in enumerate(range(0, n, unit_frames)):
        b = min(n, a + unit_frames)
        plan.units.append(WorkUnit(FRAME_AXIS, i, a, b, _pieces(recs, f_off, c_off, a, b, FRAME_AXIS)))
    m = int(c_off[-1])
    for i, a in enumerate(range(0, m, chunking.current_chunk)):
        b = min(m, a + chunking.current_chunk)
        plan.units.append(WorkUnit(CURRENT_AXIS, i, a, b, _pieces(recs, c_off, c_off, a, b, CURRENT_AXIS)))
    return plan
