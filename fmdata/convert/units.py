"""The unit of a conversion: a pure function that reads its rows from the sources and writes whole blocks.

:func:`convert_unit` reads a unit's frames (or current rows) from the sources by path, writes
whole shards (whole chunks for the current arrays) and returns the CRC-32C of every block it
wrote. The same unit always writes the same bytes, so units can run in any order, in any
process, on a dask cluster, and again after a crash. Readers and writers stay open in each
process between units (:func:`close_cached` closes them). ``fmdata verify`` computes the same
expected blocks (:func:`expected_frame_block`, :func:`expected_current_block`,
:func:`expected_chunks`) to compare.

Arrays in the source layout (the store's ``StoreMeta.layouts``) are never decoded: each shard is
the source's deflate chunks copied as they are (:func:`expected_chunks`), and its block checksum
the CRC-32C of the shard file.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from fmdata.convert.plan import FRAME_AXIS, Piece, UnitResult, WorkUnit
from fmdata.sources import RecordingReader, RecordingSource, open_reader
from fmdata.store import schema
from fmdata.store.checksums import block_checksum
from fmdata.store.layout import DEFAULT_SHARD_FRAMES
from fmdata.store.location import Location
from fmdata.store.shard_writer import ShardWriter
from fmdata.store.shards import CRC_BYTES, EncodedChunks

# ---- the unit of work (runs in worker processes) ------------------------------------------------
_WRITERS: dict[str, Any] = {}
_READERS: OrderedDict[tuple[str, str], RecordingReader] = OrderedDict()


def _writers(location: Location) -> tuple[dict[str, ShardWriter], tuple[str, ...]]:
    """This process's writers of the store's arrays, and the names of those in the source layout."""
    key = json.dumps([location.text, location.storage_options], sort_keys=True, default=str)
    if _WRITERS.get("key") != key:
        root = location.open_group("r+")
        layouts = schema.StoreMeta.from_dict(root.attrs[schema.ATTR_STORE]).layouts
        _WRITERS.clear()
        _WRITERS.update({"key": key, "arrays": {n: ShardWriter(root[n]) for n in
                                                schema.FRAME_ARRAYS + schema.CURRENT_ARRAYS},
                         "copied": tuple(n for n in schema.SOURCE_ORDER if layouts.get(n) == schema.LAYOUT_SOURCE)})
    return _WRITERS["arrays"], _WRITERS["copied"]


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
        rd = open_reader(src, block)
        while len(_READERS) >= max(4, keep):
            _READERS.popitem(last=False)[1].close()
    _READERS[key] = rd
    return rd


def _check_alignment(unit: WorkUnit, block: int, rows: int) -> None:
    if unit.start % block or (unit.stop % block and unit.stop != rows) or not 0 <= unit.start < unit.stop <= rows:
        raise AssertionError(f"unit {unit.key} rows {unit.start}..{unit.stop} are not aligned to blocks of {block} "
                             f"(array of {rows} rows): concurrent writers would lose data")


def expected_frame_block(pieces: Iterable[tuple[Piece, RecordingReader, Any, Any]], s0: int, s1: int,
                         height: int, width: int, copied: Collection[str] = ()) -> dict[str, np.ndarray]:
    """Return every frame-axis array's rows [s0, s1) as the sources define them, but those named in
    ``copied`` (the source layout: :func:`expected_chunks` gives their chunks).

    ``pieces`` holds (piece, reader, video stream, mask stream) in order; the streams advance
    (None for copied arrays). The arrays are this process's reusable buffers, valid until the
    next call (fresh pages for every shard cost page faults). Shared by conversion and by
    ``fmdata verify --source``.
    """
    n = s1 - s0
    shapes = {schema.VIDEO: (n, height, width, 3), schema.MASK: (n, height, width)}
    out = {**{name: _buffer(name, shape) for name, shape in shapes.items() if name not in copied},
           **{name: _buffer(name, (n,)) for name in schema.FRAME_ARRAYS[2:]}}
    for piece, rd, vs, ms in pieces:
        lo, hi = max(s0, piece.global_start), min(s1, piece.global_stop)
        if lo >= hi:
            continue
        a, b = lo - s0, hi - s0
        ll = piece.local_start + lo - piece.global_start
        lh = ll + hi - lo
        if vs is not None:
            vs.take_into(out[schema.VIDEO][a:b])
        if ms is not None:
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


def expected_chunks(pieces: Iterable[tuple[Piece, RecordingReader, Any, Any]], s0: int, s1: int, name: str,
                    gap: int = CRC_BYTES) -> list[EncodedChunks]:
    """Return the inner chunks of store array ``name`` (source layout) that cover rows [s0, s1), in
    shard index order, as the sources hold them (``RecordingReader.copied_chunks``): one run per
    recording, each chunk followed by ``gap`` spare bytes (room for its CRC-32C).

    The recordings start on the chunk grid (the plan copies nothing otherwise), so every piece's
    chunks are whole chunk rows of the store. The runs are valid until the next call.
    """
    runs = []
    for piece, rd, _, _ in pieces:
        lo, hi = max(s0, piece.global_start), min(s1, piece.global_stop)
        if lo < hi:
            ll = piece.local_start + lo - piece.global_start
            runs.append(rd.copied_chunks(name, ll, ll + hi - lo, gap))
    return runs


def frame_streams(unit: WorkUnit, block: int,
                  copied: Collection[str] = ()) -> list[tuple[Piece, RecordingReader, Any, Any]]:
    """Open (or reuse) a reader per piece of a frame unit and start its video and mask streams (None
    for the arrays named in ``copied``, whose chunks are copied rather than decoded)."""
    out = []
    for p in unit.pieces:
        rd = _reader(p.source, block, len(unit.pieces))
        vs = None if schema.VIDEO in copied else rd.video_stream(p.local_start, p.local_stop)
        ms = None if schema.MASK in copied else rd.mask_stream(p.local_start, p.local_stop)
        out.append((p, rd, vs, ms))
    return out


def convert_unit(unit: WorkUnit, location: Location) -> UnitResult:
    """Convert one unit: read its rows from the sources, write whole blocks, return their CRC-32Cs.

    Pure apart from the blocks it writes: the same unit always writes the same bytes, so a
    unit can be re-run (resume, retries on a cluster) safely. Opens sources and store by path.
    """
    writers, copied = _writers(location)
    sums: dict[str, list[tuple[int, int]]] = {}
    if unit.axis == FRAME_AXIS:
        vw = writers[schema.VIDEO]
        block = vw.shard_len
        _check_alignment(unit, block, vw.array.shape[0])
        for name in schema.FRAME_ARRAYS:
            assert writers[name].shard_len == block, f"{name}: write blocks differ from the video's"
        h, w = vw.array.shape[1:3]
        streams = frame_streams(unit, block, copied)
        for s0 in range(unit.start, unit.stop, block):
            s1 = min(s0 + block, unit.stop)
            data = expected_frame_block(streams, s0, s1, h, w, copied)
            for name in schema.FRAME_ARRAYS:
                if name in copied:
                    crc = writers[name].write_chunks(s0 // block, expected_chunks(streams, s0, s1, name))
                else:
                    writers[name].write(s0 // block, data[name])
                    crc = block_checksum(data[name], schema.DTYPES[name])
                sums.setdefault(name, []).append((s0 // block, crc))
    else:
        cw = writers[schema.CURRENT]
        block = cw.shard_len
        _check_alignment(unit, block, cw.array.shape[0])
        for c0 in range(unit.start, unit.stop, block):
            c1 = min(c0 + block, unit.stop)
            data = expected_current_block(unit.pieces, c0, c1, DEFAULT_SHARD_FRAMES)
            for name in schema.CURRENT_ARRAYS:
                writers[name].write(c0 // block, data[name])
                sums.setdefault(name, []).append((c0 // block, block_checksum(data[name], schema.DTYPES[name])))
    return UnitResult(unit.key, unit.axis, unit.stop - unit.start, sums)


def close_cached() -> None:
    """Close the readers and store handles this process keeps between units."""
    while _READERS:
        _READERS.popitem()[1].close()
    _WRITERS.clear()
    _BUFFERS.clear()
