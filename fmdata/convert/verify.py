"""Verify a store: recompute every recorded checksum and, given the sources, compare every element.

:func:`verify` returns a :class:`VerifyReport` listing :class:`Problem` records (array, axis,
row range, what is wrong); it raises FmDataError only when the store cannot be opened at all.
Derived data is checked too: ``frame_label``, ``abnormal_pixels`` and every window table against
their recorded block checksums, the statistics attribute against its CRC-32C; derived data
written before format 2 has none, which the report notes without failing.
The store is read through stock zarr (not the converter's shard writer), so a passing verify
also shows that zarr reads back what the converter wrote. The work runs in units of whole
blocks in worker processes, like the conversion.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import numpy as np
import zarr
from tqdm.auto import tqdm
from zarr.core.sync import sync

from fmdata.compute.processes import resolve_workers, run_parallel
from fmdata.convert.plan import (
    CURRENT_AXIS,
    FRAME_AXIS,
    WorkUnit,
    plan_conversion,
)
from fmdata.convert.units import (
    close_cached,
    expected_chunks,
    expected_current_block,
    expected_frame_block,
    frame_streams,
)
from fmdata.errors import FmDataError
from fmdata.sources import open_sources
from fmdata.store import schema
from fmdata.store.block_reader import BlockReader
from fmdata.store.checksums import (
    attribute_checksum,
    axis_name,
    block_checksum,
    n_blocks,
    read_checksums,
    recorded_checksums,
)
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.layout import DEFAULT_SHARD_FRAMES, Chunking
from fmdata.store.lock import reading
from fmdata.store.shards import CRC_BYTES, EncodedChunks, ShardLayout, UnsupportedLayout, shard_chunks, zlib_inflate

VERIFY_UNIT_BLOCKS = 8


@dataclass(frozen=True)
class Problem:
    """One thing that does not hold: ``array`` rows [start, stop) along ``axis``, and what.

    ``kind`` is "checksum" (decoded block differs from its recorded CRC-32C), "elements"
    (``elements`` values in ``rows`` rows differ from the sources, the first at row ``first``),
    "missing" (the chunk file ``detail`` holding the rows is missing), "unreadable" (the block
    cannot be decoded, its chunk file is cut short, or its source cannot be read), "chunks"
    (``elements`` of the ``rows`` copied chunks differ from the source's bytes, the first at row
    ``first``: arrays in the source layout) or "structure" (layout, metadata or recordings; no row
    range). ``detail`` says more.
    """

    array: str
    axis: str
    start: int
    stop: int
    kind: str
    detail: str = ""
    elements: int = 0
    rows: int = 0
    first: int = -1

    def __str__(self) -> str:
        where = f" {self.axis}s {self.start}..{self.stop - 1}" if self.stop > self.start else ""
        if self.kind == "checksum":
            what = "checksum differs from the one recorded"
        elif self.kind == "elements":
            what = (f"{self.elements} element(s) in {self.rows} {self.axis}(s) differ from the source "
                    f"(first at {self.axis} {self.first})")
        elif self.kind == "missing":
            what = f"expected the chunk file {self.detail}, got none"
        elif self.kind == "chunks":
            what = (f"{self.elements} of {self.rows} copied chunk(s) differ from the source's (first at "
                    f"{self.axis} {self.first})")
        elif self.kind == "unreadable":
            what = f"cannot be read ({self.detail})"
        else:
            what = self.detail
        return f"{self.array}{where}: {what}"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`: ``ok`` when no problem was found."""

    store: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    blocks_checked: int = 0
    compared_with_sources: bool = False
    n_frames: int = 0
    n_current: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every checksum (and every compared element) holds."""
        return not self.problems

    def summary(self) -> str:
        """Return a readable report: one line when all holds, one line per problem otherwise."""
        what = "checksums and every element equal the sources" if self.compared_with_sources else "checksums match"
        notes = [f"  note: {n}" for n in self.notes]
        if self.ok:
            return "\n".join([f"OK {self.store}: {self.n_frames} frames, {self.n_current} current rows, "
                              f"{self.blocks_checked} blocks; {what} ({self.seconds:.1f} s)", *notes])
        lines = [f"FAILED {self.store}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines + notes)


def _units_without_sources(n_frames: int, frame_block: int, n_current: int, current_block: int) -> list[WorkUnit]:
    units = []
    step = frame_block * VERIFY_UNIT_BLOCKS
    for i, a in enumerate(range(0, n_frames, step)):
        units.append(WorkUnit(FRAME_AXIS, i, a, min(n_frames, a + step), ()))
    for i, a in enumerate(range(0, n_current, current_block)):
        units.append(WorkUnit(CURRENT_AXIS, i, a, min(n_current, a + current_block), ()))
    return units


def _compare(name: str, axis: str, start: int, got: np.ndarray, want: np.ndarray) -> Problem | None:
    if got.shape != want.shape:
        return Problem(name, axis, start, start + len(got), "structure",
                       f"shape {got.shape} differs from the source's {want.shape}")
    same = (got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else got == want
    if same.all():
        return None
    bad_rows = ~same.reshape(len(same), -1).all(axis=1)
    return Problem(name, axis, start, start + len(got), "elements", elements=int((~same).sum()),
                   rows=int(bad_rows.sum()), first=start + int(np.argmax(bad_rows)))


def _lost_file(arr: zarr.Array, name: str, axis: str, start: int, stop: int) -> Problem | None:
    """Return the problem of a chunk file holding rows [start, stop) of ``arr`` that is missing
    ("missing") or shorter than its shard index ("unreadable": cut short), or None when every such
    file is there. zarr reads a missing file, and an empty one, as fill values: without this look
    they would show as a mere checksum difference."""
    chunk_rows = int(arr.metadata.chunk_grid.chunk_shape[0])
    try:
        layout = ShardLayout.of_array(arr)
        least = layout.index_nbytes if layout.sharded else 1
    except UnsupportedLayout:
        least = 1
    store = arr.store_path.store
    for c in range(start // chunk_rows, -(-stop // chunk_rows)):
        key = arr.metadata.encode_chunk_key((c,) + (0,) * (arr.ndim - 1))
        try:
            size = sync(store.getsize(f"{arr.path}/{key}" if arr.path else key))
        except FileNotFoundError:
            return Problem(name, axis, start, stop, "missing", key)
        if size < least:
            what = f"fewer than its shard index's {least}" if size else "an empty file"
            return Problem(name, axis, start, stop, "unreadable", f"the chunk file {key} is cut short: {size} bytes, "
                                                                  f"{what}")
    return None


def _unreadable(arr: zarr.Array, name: str, axis: str, start: int, stop: int, exc: Exception) -> Problem:
    """The problem of rows [start, stop) of ``arr`` that zarr failed to read with ``exc``: a chunk file
    cut short when it is, else the decoder's or checksum's own words."""
    return (_lost_file(arr, name, axis, start, stop)
            or Problem(name, axis, start, stop, "unreadable", f"{exc.__class__.__name__}: {exc}"[:200]))


def _same_chunk(stored: Any, runs: list[EncodedChunks], i: int, layout: ShardLayout) -> bool:
    """True when a stored inner chunk (its CRC-32C included) holds chunk ``i`` of the source's ``runs``:
    the same zlib stream where it was copied, the same values where the source stored it raw."""
    for run in runs:
        if i >= len(run):
            i -= len(run)
            continue
        if stored is None:
            return False
        body = bytes(stored[:-CRC_BYTES] if layout.chunk_crc else stored)
        if i not in run.raw:
            return body == run.chunk(i).tobytes()
        try:
            return bytes(zlib_inflate(body, len(run.raw[i]))) == run.raw[i]
        except Exception:  # a damaged stream: it differs
            return False
    return stored is None


def _verify_copied(arr: zarr.Array, name: str, axis: str, s0: int, s1: int, rec: tuple[int, list[int]] | None,
                   block: int, want: list[EncodedChunks] | None) -> list[Problem]:
    """Check shard ``s0 // block`` of an array in the source layout: the shard file against its recorded
    CRC-32C, each chunk against its own, and each chunk against the source's bytes (``want``: the
    runs of :func:`expected_chunks`). Without sources, every chunk is decoded through stock zarr
    instead. Copied chunks are compared, never decoded: a read of the file."""
    reader = BlockReader(arr)
    assert reader.layout is not None
    lay = reader.layout
    raw = reader.shard_bytes(s0 // block)
    if raw is None:
        return [Problem(name, axis, s0, s1, "missing", lay.chunk_key(s0 // block))]
    problems = []
    if rec is None or rec[0] != block or s0 // block >= len(rec[1]):
        problems.append(Problem(name, axis, s0, s1, "structure", "no checksum recorded for this block"))
    elif google_crc32c.value(raw) != rec[1][s0 // block]:
        problems.append(Problem(name, axis, s0, s1, "checksum"))
    try:
        chunks = shard_chunks(lay, raw, f"{name} shard {s0 // block}")
    except FmDataError as exc:
        return problems + [Problem(name, axis, s0, s1, "unreadable", str(exc))]
    first = [s0 + (i // lay.per_row) * lay.inner_rows for i in range(len(chunks))]
    bad = [i for i, c in enumerate(chunks) if c is not None and lay.chunk_crc
           and google_crc32c.value(bytes(c[:-CRC_BYTES])) != int.from_bytes(c[-CRC_BYTES:], "little")]
    if bad:
        problems.append(Problem(name, axis, s0, s1, "unreadable", f"{len(bad)} chunk(s) fail their CRC-32C (first at "
                                                                  f"{axis} {first[bad[0]]})"))
    if want is None:
        try:
            arr[s0:s1]
        except Exception as exc:  # a damaged chunk: any decoding error is the finding
            problems.append(Problem(name, axis, s0, s1, "unreadable", f"{exc.__class__.__name__}: {exc}"[:200]))
        return problems
    n = sum(len(r) for r in want)
    differ = [i for i in range(max(n, len(chunks))) if not _same_chunk(chunks[i] if i < len(chunks) else None,
                                                                          want, i, lay)]
    if differ:
        problems.append(Problem(name, axis, s0, s1, "chunks", elements=len(differ), rows=max(n, len(chunks)),
                                first=first[differ[0]] if differ[0] < len(first) else s0))
    return problems


def verify_unit(unit: WorkUnit, store: StoreHandle) -> tuple[int, int, list[Problem]]:
    """Check one unit's blocks of the open ``store`` (in a worker process: opened there, once per
    unit): recompute their CRC-32C and, when the unit has source pieces, compare every element
    with the sources (every chunk's bytes, for arrays in the source layout). Returns (frames
    covered, blocks checked, problems)."""
    root = store.root
    names = schema.FRAME_ARRAYS if unit.axis == FRAME_AXIS else schema.CURRENT_ARRAYS
    arrays = {n: root[n] for n in names}
    recorded = {n: read_checksums(a) for n, a in arrays.items()}
    layouts = store.meta.layouts
    copied = tuple(n for n in names if layouts.get(n) == schema.LAYOUT_SOURCE)
    block = int(arrays[names[0]].metadata.chunk_grid.chunk_shape[0])
    problems: list[Problem] = []
    checked = 0
    streams: Any = None
    if unit.pieces and unit.axis == FRAME_AXIS:
        streams = frame_streams(unit, block, copied)
    h, w = (arrays[schema.VIDEO].shape[1:3] if unit.axis == FRAME_AXIS else (0, 0))
    for s0 in range(unit.start, unit.stop, block):
        s1 = min(s0 + block, unit.stop)
        want: dict[str, np.ndarray] | None = None
        chunks: dict[str, list[EncodedChunks]] = {}
        if unit.pieces:
            try:
                want = (expected_frame_block(streams, s0, s1, h, w, copied) if unit.axis == FRAME_AXIS
                        else expected_current_block(unit.pieces, s0, s1, DEFAULT_SHARD_FRAMES))
                chunks = {n: expected_chunks(streams, s0, s1, n, CRC_BYTES) for n in copied}
            except FmDataError as exc:
                problems.append(Problem("sources", unit.axis, s0, s1, "unreadable", str(exc)))
                unit = WorkUnit(unit.axis, unit.index, unit.start, unit.stop, ())
                want = None
        for n in names:
            checked += 1
            if n in copied:
                problems += _verify_copied(arrays[n], n, unit.axis, s0, s1, recorded[n], block,
                                           chunks.get(n) if want is not None else None)
                continue
            try:
                got = arrays[n][s0:s1]
            except Exception as exc:  # a damaged shard: any decoding error is the finding
                problems.append(_unreadable(arrays[n], n, unit.axis, s0, s1, exc))
                continue
            rec = recorded[n]
            if rec is not None:
                rows, values = rec
                b = s0 // rows
                if rows != block or b >= len(values):
                    problems.append(Problem(n, unit.axis, s0, s1, "structure", "no checksum recorded for this block"))
                elif block_checksum(got, schema.DTYPES[n]) != values[b]:
                    lost = _lost_file(arrays[n], n, unit.axis, s0, s1)
                    problems.append(lost or Problem(n, unit.axis, s0, s1, "checksum"))
                    if lost is not None:  # zarr read fill values: no element comparison to make
                        continue
            if want is not None:
                p = _compare(n, unit.axis, s0, got, want[n])
                if p is not None:
                    problems.append(p)
    return (unit.stop - unit.start if unit.axis == FRAME_AXIS else 0), checked, problems


def _merge(problems: list[Problem]) -> list[Problem]:
    """Merge adjacent problems of one array and kind into one row range (counts add up)."""
    out: list[Problem] = []
    for p in sorted(problems, key=lambda q: (q.array, q.start, q.kind)):
        last = out[-1] if out else None
        if (last and p.kind in ("checksum", "elements", "chunks") and last.array == p.array and last.kind == p.kind
                and last.stop == p.start):
            out[-1] = Problem(p.array, p.axis, last.start, p.stop, p.kind, elements=last.elements + p.elements,
                              rows=last.rows + p.rows, first=last.first)
        else:
            out.append(p)
    return out


def _structure(root: zarr.Group, meta: schema.StoreMeta) -> list[Problem]:
    """Check array presence, dtypes, dims, lengths, offsets and checksum attributes."""
    problems = []
    rows = {**{n: meta.n_frames for n in schema.FRAME_ARRAYS}, **{n: meta.n_current for n in schema.CURRENT_ARRAYS},
            schema.RECORDING_FRAME_OFFSETS: meta.n_recordings + 1,
            schema.RECORDING_CURRENT_OFFSETS: meta.n_recordings + 1}
    for name, n in rows.items():
        try:
            arr = root[name]
        except KeyError:
            problems.append(Problem(name, "", 0, 0, "structure", "array missing"))
            continue
        if not isinstance(arr, zarr.Array):
            problems.append(Problem(name, "", 0, 0, "structure", "expected an array, got a group"))
            continue
        if str(arr.dtype) != schema.DTYPES[name]:
            problems.append(Problem(name, "", 0, 0, "structure", f"expected dtype {schema.DTYPES[name]}, got {arr.dtype}"))
        if tuple(arr.metadata.dimension_names or ()) != schema.DIMS[name]:
            problems.append(Problem(name, "", 0, 0, "structure", f"expected dimension names {schema.DIMS[name]}, "
                                                    f"got {arr.metadata.dimension_names}"))
        if arr.shape[0] != n:
            problems.append(Problem(name, "", 0, 0, "structure", f"expected {n} rows, got {arr.shape[0]}"))
        rec = read_checksums(arr)
        if rec is None:
            problems.append(Problem(name, "", 0, 0, "structure", "no checksums recorded"))
        elif len(rec[1]) != n_blocks(arr.shape[0], rec[0]):
            problems.append(Problem(name, "", 0, 0, "structure", f"expected {n_blocks(arr.shape[0], rec[0])} checksums, "
                                                    f"got {len(rec[1])}"))
    if problems:
        return problems
    for name, total in ((schema.RECORDING_FRAME_OFFSETS, meta.n_frames),
                        (schema.RECORDING_CURRENT_OFFSETS, meta.n_current)):
        arr, n = root[name], int(root[name].shape[0])
        try:
            off = np.asarray(arr[:])
        except Exception as exc:  # a damaged chunk: zarr's crc32c codec or the decoder says so
            problems.append(_unreadable(arr, name, "recording_edge", 0, n, exc))
            continue
        rec = read_checksums(arr)
        if rec is not None and block_checksum(off, schema.DTYPES[name]) != rec[1][0]:
            lost = _lost_file(arr, name, "recording_edge", 0, n)
            problems.append(lost or Problem(name, "recording_edge", 0, n, "checksum"))
            if lost is not None:  # read as fill values: their order says nothing more
                continue
        if off[0] != 0 or off[-1] != total or (np.diff(off) < 0).any():
            problems.append(Problem(name, "recording_edge", 0, len(off), "structure",
                                    f"expected offsets rising from 0 to {total}, got {off.tolist()}"))
    return problems


def _derived(root: zarr.Group) -> tuple[list[Problem], list[str], int]:
    """Check the derived arrays and the statistics attribute; return (problems, notes, blocks checked)."""
    problems: list[Problem] = []
    notes: list[str] = []
    checked = 0
    arrays = [(n, root[n]) for n in schema.DERIVED_FRAME_ARRAYS if n in root]
    if schema.WINDOWS_GROUP in root:
        arrays += [(f"{schema.WINDOWS_GROUP}/{n}", a) for n, a in root[schema.WINDOWS_GROUP].arrays()]
    for path, arr in arrays:
        axis, n = axis_name(arr), int(arr.shape[0])
        try:
            data = np.asarray(arr[:])
        except Exception as exc:  # a damaged chunk: zarr's crc32c codec or the decoder says so
            problems.append(_unreadable(arr, path, axis, 0, n, exc))
            continue
        sums = recorded_checksums(arr.attrs, n)
        if sums is None:
            if schema.ATTR_CHECKSUMS in arr.attrs:
                problems.append(Problem(path, "", 0, 0, "structure", "checksums recorded in a form that is not one"))
            else:
                notes.append(f"{path}: no checksums recorded (written before store format 2; not checked)")
            continue
        rows = sums[0]
        for b, want in enumerate(sums[1]):
            checked += 1
            if block_checksum(data[b * rows:(b + 1) * rows]) != want:
                lo, hi = b * rows, min((b + 1) * rows, n)
                problems.append(_lost_file(arr, path, axis, lo, hi) or Problem(path, axis, lo, hi, "checksum"))
    stats = root.attrs.get(schema.ATTR_STATS)
    if isinstance(stats, dict):
        if "checksum" not in stats:
            notes.append(f"{schema.ATTR_STATS}: no checksum recorded (written before store format 2; not checked)")
        elif attribute_checksum(stats) != stats["checksum"]:
            problems.append(Problem(schema.ATTR_STATS, "", 0, 0, "checksum"))
        checked += 1
    return problems, notes, checked


def verify(store: StoreLike, sources: Sequence[str | os.PathLike[str]] = (), *,
           workers: int | None = None, progress: bool = True) -> VerifyReport:
    """Verify ``store`` (an open store or its location); with ``sources``, compare every element to them.

    ``sources`` are the V1 files / V2 folders it was converted from, in the same order.
    Returns a :class:`VerifyReport` (``ok`` False with precise problems when anything differs).
    Raises FmDataError when the store cannot be opened or the sources are unreadable.
    """
    t0 = time.perf_counter()
    store = open_store(store)
    workers = resolve_workers(workers, in_process=store.location.in_process)
    root, meta = store.root, store.meta
    report = VerifyReport(store=str(store), n_frames=meta.n_frames, n_current=meta.n_current)
    report.problems.extend(_structure(root, meta))
    if report.problems:
        report.seconds = time.perf_counter() - t0
        return report
    with reading(root):  # a derived array being switched in is read whole, old or new
        derived, report.notes, report.blocks_checked = _derived(root)
    report.problems.extend(derived)
    frame_block = int(root[schema.VIDEO].metadata.chunk_grid.chunk_shape[0])
    current_block = int(root[schema.CURRENT].metadata.chunk_grid.chunk_shape[0])
    units = _units_without_sources(meta.n_frames, frame_block, meta.n_current, current_block)
    if sources:
        recs = open_sources([os.fspath(s) for s in sources], meta.fps)
        infos = store.recordings
        # read the sources as the conversion did: masks above 0 as 1 where it was asked to
        if len(recs) == len(infos):
            recs = [dataclasses.replace(r, mask_nonzero=i.mask_nonzero) for r, i in zip(recs, infos)]
        f_off, c_off = store.offsets
        got = [(r.name, r.n_frames, r.n_current) for r in recs]
        have = [(i.name, int(f_off[k + 1] - f_off[k]), int(c_off[k + 1] - c_off[k]))
                for k, i in enumerate(infos)]
        if got != have:
            report.problems.append(Problem("recordings", "", 0, 0, "structure",
                                           f"store holds (name, frames, current rows) {have}, sources give {got}"))
            report.seconds = time.perf_counter() - t0
            return report
        chunking = Chunking(chunk_frames=int(root[schema.VIDEO].metadata.codecs[0].chunk_shape[0]),
                                  shard_frames=frame_block, current_chunk=current_block)
        units = plan_conversion(recs, chunking, meta.fps).units
        report.compared_with_sources = True
    bar = tqdm(total=meta.n_frames, unit="frame", unit_scale=True, desc="verify", disable=not progress,
               dynamic_ncols=True)

    def on_result(res: tuple[int, int, list[Problem]]) -> None:
        bar.update(res[0])
        report.blocks_checked += res[1]
        report.problems.extend(res[2])

    try:
        run_parallel(verify_unit, [(u, store) for u in units], workers, on_result)
    finally:
        bar.close()
        close_cached()
    report.problems = _merge(report.problems)
    report.seconds = time.perf_counter() - t0
    return report
