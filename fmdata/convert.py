"""Convert FMF sources (V1 MAT files, V2 folders) into a store of format v1, streaming and in parallel.

The work is cut into **units**, each a pure function call ``convert_unit(unit, store)`` that
reads its frames (or current rows) from the sources by path, writes whole shards (whole chunks
for the current arrays) and returns the CRC-32 of every block it wrote. Units never share a
shard, so any number of processes (or dask.distributed tasks) can run them in any order.

The driver, :func:`convert`:

1. validates every source up front (:func:`fmdata.sources.open_sources`);
2. creates the store in a hidden staging sibling (``.<name>.partial-<id>``; URLs are written in
   place) with ``complete=False``, the recording provenance and the conversion plan;
3. runs the units in a process pool (h5py serialises threads behind one lock), recording each
   finished unit's checksums in a small ledger object inside the store, so ``--resume`` skips
   finished units after a crash or a kill;
4. gathers the checksums into each array's ``fmf_checksums`` attribute, drops the ledger, sets
   ``complete=True`` last and renames the staging folder onto the output.

Bad input raises :class:`FmDataError` and removes the staging store; an interruption keeps it
for ``--resume``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from collections import OrderedDict, deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync

import fmdata
from fmdata import remote, schema, store
from fmdata.checksums import block_checksum, checksum_attr
from fmdata.errors import FmDataError
from fmdata.shard_writer import ShardWriter
from fmdata.sources import DEFAULT_FPS, RecordingReader, RecordingSource, open_sources

ATTR_CONVERT = "fmf_convert"  # root attribute: the conversion plan (sources, chunking), for --resume
LEDGER_PREFIX = "fmf_convert_ledger"  # one small JSON object per finished unit, removed at the end
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
    """What a unit returns: its key, rows written and CRC-32 per written block and array."""

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
    Shared by conversion and by ``fmdata verify --source``.
    """
    n = s1 - s0
    out = {schema.VIDEO: np.empty((n, height, width, 3), np.uint8), schema.MASK: np.empty((n, height, width), np.uint8),
           schema.SPLIT: np.empty(n, np.int8), schema.RECORDING: np.empty(n, np.int32),
           schema.FRAME_TIME: np.empty(n, np.float64), schema.FRAME_CURRENT_END: np.empty(n, np.int64)}
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
    """Convert one unit: read its rows from the sources, write whole blocks, return their CRC-32s.

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


def _init_worker() -> None:
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


# ---- ledger of finished units --------------------------------------------------------------------
class Ledger:
    """Finished units of a conversion, one small JSON object per unit inside the store.

    Single objects written whole work the same on local folders and object stores, survive a
    kill at any point (a torn write leaves no object: LocalStore writes via rename) and need no
    locking between writers.
    """

    def __init__(self, root: zarr.Group) -> None:
        self._store = root.store
        self._proto = default_buffer_prototype()

    def record(self, result: UnitResult) -> None:
        """Persist one unit's result."""
        body = json.dumps({"key": result.key, "axis": result.axis, "rows": result.rows,
                           "checksums": result.checksums}).encode()
        sync(self._store.set(f"{LEDGER_PREFIX}/{result.key}.json", self._proto.buffer.from_bytes(body)))

    def load(self) -> dict[str, UnitResult]:
        """Return every recorded result by unit key."""
        keys = collect_aiterator(self._store.list_prefix(f"{LEDGER_PREFIX}/"))
        out = {}
        for k in keys:
            buf = sync(self._store.get(k, prototype=self._proto))
            if buf is None:
                continue
            d = json.loads(buf.to_bytes())
            out[d["key"]] = UnitResult(d["key"], d["axis"], int(d["rows"]),
                                       {n: [(int(b), int(c)) for b, c in v] for n, v in d["checksums"].items()})
        return out

    def clear(self) -> None:
        """Remove the ledger (after its content went into the arrays' attributes)."""
        sync(self._store.delete_dir(LEDGER_PREFIX))


# ---- driver ---------------------------------------------------------------------------------------
@dataclass
class ConvertReport:
    """What :func:`convert` did: where, how much, how long, and what a resume skipped."""

    store: str
    n_recordings: int
    n_frames: int
    n_current: int
    units: int
    units_resumed: int
    workers: int
    seconds: float
    source_bytes: int
    store_bytes: int
    chunking: store.Chunking

    def summary(self) -> str:
        """Return a one-paragraph human summary."""
        resumed = f", {self.units_resumed} of {self.units} units already done" if self.units_resumed else ""
        ratio = self.store_bytes / self.source_bytes if self.source_bytes else float("nan")
        return (f"wrote {self.store}: {self.n_recordings} recording(s), {self.n_frames} frames, "
                f"{self.n_current} current rows in {self.seconds:.1f} s with {self.workers} worker(s){resumed}; "
                f"store {self.store_bytes / 1e6:.1f} MB = {ratio:.2f} x source {self.source_bytes / 1e6:.1f} MB")


def _tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, f))
            except OSError:
                pass
    return total


def _partials(out: str) -> list[str]:
    """Local staging folders left by earlier, unfinished conversions into ``out``."""
    path = remote.local_path(out)
    if path is None:
        return []
    head, tail = os.path.split(os.path.abspath(path).rstrip(os.sep))
    prefix = f".{tail}.partial-"
    try:
        return sorted(os.path.join(head, f) for f in os.listdir(head) if f.startswith(prefix))
    except OSError:
        return []


def _is_zarr_store(location: str, storage_options: dict | None) -> bool:
    return remote.exists(remote.join(location, "zarr.json"), storage_options)


def _is_partial(location: str, storage_options: dict | None) -> bool:
    """True when ``location`` holds an FMF store whose writer has not finished."""
    try:
        root = zarr.open_group(store=remote.zarr_store(location, "r", storage_options), mode="r", zarr_format=3)
        return not store.read_meta(root, location).complete
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError, FmDataError):
        return False


def _create(staging: str, plan: ConversionPlan, storage_options: dict | None) -> zarr.Group:
    root = zarr.open_group(store=remote.zarr_store(staging, "w", storage_options), mode="w-", zarr_format=3)
    first = plan.recordings[0]
    meta = schema.StoreMeta(n_frames=plan.n_frames, n_current=plan.n_current, n_recordings=len(plan.recordings),
                            height=first.height, width=first.width, fps=plan.fps, complete=False,
                            created_by=f"fmdata {fmdata.__version__} convert")
    root.attrs.update({schema.ATTR_STORE: meta.to_dict(),
                       schema.ATTR_RECORDINGS: [r.info().to_dict() for r in plan.recordings],
                       ATTR_CONVERT: plan.signature()})
    store.create_arrays(root, plan.n_frames, plan.n_current, first.height, first.width, len(plan.recordings),
                        plan.chunking)
    root[schema.RECORDING_FRAME_OFFSETS][:] = plan.frame_offsets
    root[schema.RECORDING_CURRENT_OFFSETS][:] = plan.current_offsets
    return root


def _open_partial(staging: str, plan: ConversionPlan, storage_options: dict | None) -> zarr.Group:
    try:
        root = zarr.open_group(store=remote.zarr_store(staging, "r+", storage_options), mode="r+", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        raise FmDataError("expected an interrupted conversion to resume, got an unreadable folder; "
                          "remove it or use --overwrite", staging) from None
    if root.attrs.get(ATTR_CONVERT) != json.loads(json.dumps(plan.signature())):
        raise FmDataError("expected the interrupted conversion to use the same sources (unchanged) and chunking, "
                          "got different ones; use --overwrite to start again", staging)
    return root


def _finalise(root: zarr.Group, plan: ConversionPlan, results: dict[str, UnitResult]) -> None:
    """Move checksums from the ledger into array attributes, drop the ledger, set complete last."""
    by_array: dict[str, dict[int, int]] = {}
    for res in results.values():
        for name, pairs in res.checksums.items():
            by_array.setdefault(name, {}).update(dict(pairs))
    for name in FRAME_UNIT_ARRAYS + CURRENT_UNIT_ARRAYS:
        arr = root[name]
        block = int(arr.metadata.chunk_grid.chunk_shape[0])
        n = -(-arr.shape[0] // block)
        got = by_array.get(name, {})
        missing = [i for i in range(n) if i not in got]
        if missing:
            raise AssertionError(f"{name}: blocks {missing[:5]} were never written")
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(block, [got[i] for i in range(n)])})
    for name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        arr = root[name]
        arr.update_attributes({schema.ATTR_CHECKSUMS: checksum_attr(arr.shape[0], [block_checksum(arr[:])])})
    Ledger(root).clear()
    if isinstance(root.store, zarr.storage.LocalStore):  # temp files of writers killed mid-write
        for dirpath, _, files in os.walk(root.store.root):
            for f in files:
                if f.startswith(".") and f.endswith(".partial"):
                    os.unlink(os.path.join(dirpath, f))
    remote.set_complete(root, True)


# A runner calls fn(*a) for every a in args wherever it likes (processes, a dask cluster) and
# passes each result to on_result as it arrives; see fmdata.convert_cluster.
Runner = Callable[[Callable[..., Any], Sequence[tuple], Callable[[Any], None]], None]


def run_parallel(fn: Any, args: Sequence[tuple], workers: int, on_result: Any) -> None:
    """Call ``fn(*a)`` for every ``a`` in ``args`` on ``workers`` processes, passing each return
    value to ``on_result`` as it arrives.

    This process is one of the workers: it runs calls itself between collecting the results of
    ``workers - 1`` spawned children (each spawned process costs ~0.7 s of imports, and its
    memory). The children take calls from the front of the list, this process from the back.
    The first exception cancels what has not started, waits for what is running, and propagates.
    """
    todo = deque(args)
    if workers <= 1 or len(todo) <= 1:
        while todo:
            on_result(_in_this_process(fn, todo.popleft()))
        return
    children = min(workers - 1, len(todo) - 1)
    pool = ProcessPoolExecutor(max_workers=children, mp_context=mp.get_context("spawn"), initializer=_init_worker)
    try:
        pending: set[Future] = set()
        while todo or pending:
            while todo and len(pending) < 2 * children:  # one queued per child: never idle
                pending.add(pool.submit(fn, *todo.popleft()))
            if todo:
                on_result(_in_this_process(fn, todo.pop()))
            finished, pending = wait(pending, timeout=0 if todo else None, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(fut.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _in_this_process(fn: Any, a: tuple) -> Any:
    """Run one call here with blosc single-threaded (the other cores run the children)."""
    import numcodecs.blosc

    saved = numcodecs.blosc.use_threads
    numcodecs.blosc.use_threads = False
    try:
        return fn(*a)
    finally:
        numcodecs.blosc.use_threads = saved


def close_cached() -> None:
    """Close the readers and store handles this process keeps between units."""
    while _READERS:
        _READERS.popitem()[1].close()
    _WRITERS.clear()


def _run_units(units: list[WorkUnit], staging: str, storage_options: dict | None, workers: int,
               ledger: Ledger, results: dict[str, UnitResult], bar: Any, runner: Runner | None) -> None:
    def done(res: UnitResult) -> None:
        ledger.record(res)
        results[res.key] = res
        if res.axis == FRAME_AXIS:
            bar.update(res.rows)

    args = [(u, staging, storage_options) for u in units]
    if runner is not None:
        runner(convert_unit, args, done)
    else:
        run_parallel(convert_unit, args, workers, done)


def convert(sources: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *, workers: int | None = None,
            overwrite: bool = False, resume: bool = False, chunking: store.Chunking | None = None,
            chunk_frames: int | None = None, shard_frames: int | None = None,
            fps: float = DEFAULT_FPS, progress: bool = True,
            storage_options: dict | None = None, runner: Runner | None = None) -> ConvertReport:
    """Convert ``sources`` (V1 MAT files and/or V2 folders, in order) into a new store at ``out``.

    ``workers`` processes run the units (default: the CPU count). ``overwrite`` replaces an
    existing store (only a Zarr store; the old one stays until the new one is complete);
    ``resume`` continues an interrupted conversion into ``out`` without redoing finished units.
    ``chunking`` defaults to :func:`default_chunking`; ``chunk_frames`` / ``shard_frames``
    override its frame-axis lengths. ``fps`` is the V1 frame rate; ``progress``
    shows a tqdm bar (frames/s, ETA). ``runner`` runs the units elsewhere (a dask cluster, see
    :mod:`fmdata.convert_cluster`) instead of a local process pool. Returns a
    :class:`ConvertReport`. Raises FmDataError for bad sources or output paths, removing the
    partial store; an interruption (lost workers, Ctrl-C) keeps finished units for ``resume``.
    """
    t0 = time.perf_counter()
    out = os.fspath(out)
    workers = max(1, int(workers if workers is not None else (os.cpu_count() or 1)))
    recs = open_sources([os.fspath(s) for s in sources], fps)
    chunking = override_chunking(chunking or default_chunking(recs[0].height, recs[0].width), chunk_frames,
                                 shard_frames)
    plan = plan_conversion(recs, chunking, fps)
    exists = remote.exists(out, storage_options)
    resume_in_place = remote.is_url(out) and exists and resume and _is_partial(out, storage_options)
    if exists and not overwrite and not resume_in_place:
        raise FmDataError("expected a new output path, got one that exists; pass --overwrite to replace it", out)
    if exists and not _is_zarr_store(out, storage_options):
        raise FmDataError("refusing to replace something that is not a Zarr store", out)
    remote.check_writable_parent(out, storage_options)
    partials = _partials(out)
    staging, root = None, None
    if remote.is_url(out):
        if resume_in_place:
            staging, root = out, _open_partial(out, plan, storage_options)
        elif exists:
            remote.remove_store(out, storage_options)
    elif partials and resume:
        staging = partials[-1]
        root = _open_partial(staging, plan, storage_options)
        for other in partials[:-1]:
            remote.remove_store(other)
    elif partials and not overwrite:
        raise FmDataError(f"expected no interrupted conversion into this path, got {partials[-1]}; "
                          f"pass --resume to continue it or --overwrite to start again", out)
    else:
        for other in partials:
            remote.remove_store(other)
    if root is None:
        staging = remote.staging_location(out)
        try:
            root = _create(staging, plan, storage_options)
        except OSError as exc:
            _discard(staging, storage_options)
            raise FmDataError(f"expected to create the store, got {exc.strerror or exc}", out) from None
    assert staging is not None
    ledger = Ledger(root)
    results = ledger.load()
    todo = [u for u in plan.units if u.key not in results]
    done_frames = sum(r.rows for r in results.values() if r.axis == FRAME_AXIS)
    from tqdm.auto import tqdm

    bar = tqdm(total=plan.n_frames, initial=done_frames, unit="frame", unit_scale=True, desc="convert",
               disable=not progress, dynamic_ncols=True, smoothing=0.1)
    try:
        if not store.read_meta(root, staging).complete:
            _run_units(todo, staging, storage_options, workers, ledger, results, bar, runner)
            _finalise(root, plan, results)
    except FmDataError:
        _discard(staging, storage_options)
        raise
    except (OSError, BrokenProcessPool) as exc:
        raise FmDataError(f"conversion stopped ({exc.__class__.__name__}: {exc}); finished units are kept in "
                          f"{staging}: run again with --resume", out) from None
    except KeyboardInterrupt:
        raise FmDataError(f"interrupted; finished units are kept in {staging}: run again with --resume", out) from None
    finally:
        bar.close()
        close_cached()
    if exists and not remote.is_url(out):
        remote.remove_store(out, storage_options)
    remote.publish(staging, out)
    local = remote.local_path(out)
    return ConvertReport(
        store=out, n_recordings=len(recs), n_frames=plan.n_frames, n_current=plan.n_current, units=len(plan.units),
        units_resumed=len(plan.units) - len(todo), workers=workers, seconds=time.perf_counter() - t0,
        source_bytes=sum(r.source_bytes for r in recs), store_bytes=_tree_bytes(local) if local else 0,
        chunking=plan.chunking)


def _discard(staging: str, storage_options: dict | None) -> None:
    try:
        remote.remove_store(staging, storage_options)
    except (OSError, FmDataError):
        pass
