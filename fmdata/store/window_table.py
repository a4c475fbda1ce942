"""Window tables: one row per training sample, stored as ``windows/<name>`` in a store.

A table is a (window, field) int64 Zarr array. Its columns are ``schema.WINDOW_COLUMNS``
followed by one ``clip_XX`` column per clip frame (oldest first, the labelled frame last); all
frame and current indices are global (store-wide). The parameters that built it
(:class:`WindowParams`) sit in the array's attributes, so a reader knows, e.g., how many current
rows a window resamples to. A window's current rows ``[current_start, current_stop)`` are read
as ``current_rows`` rows by the reference's index resampling (:func:`current_row_offsets`), the
one rule every reader uses. ``fmdata.derive.windows`` builds tables; this module defines,
stores and loads them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.checksums import read_checked
from fmdata.store.derived import DerivedArray, check_targets, write_derived
from fmdata.store.layout import MAX_AXIS_FRAMES
from fmdata.store.lock import reading, store_folder

# The reference protocol's windows (docs/reference-protocol.md, "Samples"): the cross-modal model
# reads 10 frames step 18 and the last 120 s of current as 240 rows; the video-only model 8
# frames step 19. A current-only model keeps the cross-modal windows, so that the three
# modalities are scored on the same labelled frames.
REFERENCE_CLIPS: dict[str, tuple[int, int]] = {"both": (10, 18), "video": (8, 19), "current": (10, 18)}
REFERENCE_CURRENT_SECONDS = 120.0
REFERENCE_CURRENT_ROWS = 240
TABLE_DIMS = ("window", "field")  # the dimension names of every window table

# The largest windows a table may describe. A clip's frames and a window's current rows are what a
# model reads per sample (one table column per clip frame): 1,024 frames and 65,536 rows are about a
# hundred times the reference's 10 and 240, far beyond any model, and keep one window's inputs and
# the table's column list small. A clip may span (frames - 1) * frame_step up to MAX_AXIS_FRAMES
# frames and a window reach back MAX_CURRENT_SECONDS seconds (68 years): beyond any recording
# (recordings shorter than a clip keep their clamped windows) and inside the int64 arithmetic
# that builds the windows. A window table's bounds in memory are the builder's
# (fmdata.derive.windows.build_window_table).
MAX_CLIP_FRAMES = 1024
MAX_CURRENT_ROWS = 65536
MAX_CURRENT_SECONDS = float(2**31 - 1)
# The two current rules (docs/derivations.md, "Current rows"), chosen per recording by current_rule.
RULE_SECONDS = "distinct-seconds"
RULE_SPAN = "time-span"
CURRENT_RULES = (RULE_SECONDS, RULE_SPAN)


@dataclass(frozen=True)
class WindowParams:
    """How a window table is built: clip frames and step, current history, stride, policy.

    The defaults are the reference cross-modal windows; :meth:`reference` gives them per
    modality. ``to_dict``/``from_dict`` are what tables and run configs store.
    """

    frames: int = REFERENCE_CLIPS["both"][0]
    frame_step: int = REFERENCE_CLIPS["both"][1]
    current_seconds: float = REFERENCE_CURRENT_SECONDS
    current_rows: int = REFERENCE_CURRENT_ROWS
    stride: int = 1
    policy: str = "reference"

    def __post_init__(self) -> None:
        for name in ("frames", "frame_step", "current_rows", "stride"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):
                raise FmDataError(f"expected an integer {name}, got {value!r} (a {type(value).__name__})", field=name)
        if not isinstance(self.current_seconds, numbers.Real) or isinstance(self.current_seconds, bool):
            raise FmDataError(f"expected a number of current seconds, got {self.current_seconds!r} "
                              f"(a {type(self.current_seconds).__name__})", field="current_seconds")
        checks = [(1 <= self.frames <= MAX_CLIP_FRAMES, "frames", f"clip frames in 1..{MAX_CLIP_FRAMES}",
                   repr(self.frames)),
                  (1 <= self.frame_step <= MAX_AXIS_FRAMES, "frame_step", f"a frame step in 1..{MAX_AXIS_FRAMES}",
                   repr(self.frame_step)),
                  ((self.frames - 1) * self.frame_step <= MAX_AXIS_FRAMES, "frame_step",
                   f"a clip spanning at most {MAX_AXIS_FRAMES} frames ((frames - 1) x frame step)",
                   f"{self.frames - 1} x {self.frame_step}"),
                  (0 < self.current_seconds <= MAX_CURRENT_SECONDS, "current_seconds",
                   f"current seconds > 0 and at most {MAX_CURRENT_SECONDS:.0f}", repr(self.current_seconds)),
                  (1 <= self.current_rows <= MAX_CURRENT_ROWS, "current_rows",
                   f"current rows in 1..{MAX_CURRENT_ROWS}", repr(self.current_rows)),
                  (self.stride >= 1, "stride", "a stride >= 1", repr(self.stride)),
                  (self.policy in schema.WINDOW_POLICIES, "policy", f"a policy in {schema.WINDOW_POLICIES}",
                   repr(self.policy))]
        for ok, name, what, got in checks:
            if not ok:
                raise FmDataError(f"expected {what}, got {got}", field=name)

    @classmethod
    def reference(cls, modality: str = "both", **overrides: Any) -> WindowParams:
        """Return the reference windows of a model ``modality`` ("both", "video", "current"), with
        ``overrides`` (None values are ignored) applied."""
        if modality not in REFERENCE_CLIPS:
            raise FmDataError(f"expected a modality in {tuple(REFERENCE_CLIPS)}, got {modality!r}", field="modality")
        frames, step = REFERENCE_CLIPS[modality]
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"frames": frames, "frame_step": step, **given})

    @classmethod
    def for_clip(cls, frames: int, **overrides: Any) -> WindowParams:
        """Return the reference windows of a model reading clips of ``frames`` frames (its step from
        the reference clips of that length, else the cross-modal step), with ``overrides`` applied."""
        step = next((s for f, s in REFERENCE_CLIPS.values() if f == frames), REFERENCE_CLIPS["both"][1])
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls(**{"frames": frames, "frame_step": step, **given})

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowParams:
        """Build from a dict holding (at least) the parameters; other keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("frames", "frame_step", "current_rows", "stride"):
            if k in kw:
                kw[k] = int(kw[k])
        if "current_seconds" in kw:
            kw["current_seconds"] = float(kw["current_seconds"])
        return cls(**kw)


def current_row_offsets(n: int, rows: int) -> np.ndarray:
    """Return the offsets (from a window's first current row) of the ``rows`` rows a window of
    ``n`` current rows is read as (int64).

    The reference's index resampling, ``np.linspace(0, n-1, rows).astype(int32)``: rows repeat
    when ``n < rows`` and are thinned when ``n > rows``.
    """
    if n < 1:
        raise FmDataError(f"expected a non-empty current range, got {n} rows")
    return np.linspace(0, n - 1, rows).astype(np.int32).astype(np.int64)


def current_row_indices(start: int, stop: int, rows: int) -> np.ndarray:
    """Return the ``rows`` global current rows a window ``[start, stop)`` is read as (int64).

    :func:`current_row_offsets` shifted by ``start``. For ``rows=240`` this equals
    ``np.linspace(start, stop-1, rows).astype(int)`` (tested); for other row counts use this
    function, which never differs from the reference by rounding.
    """
    if int(stop) - int(start) < 1:
        raise FmDataError(f"expected a non-empty current range, got [{start}, {stop})")
    return int(start) + current_row_offsets(int(stop) - int(start), rows)


def clip_frames(anchor: np.ndarray, frames: int, frame_step: int, first: np.ndarray | int | None) -> np.ndarray:
    """Return the clips (int64, (anchors, ``frames``), oldest first, the anchor last) of windows
    labelled at frame numbers ``anchor``: ``anchor - (frames-1)*step, ..., anchor - step, anchor``.

    ``first`` is the recording's first frame number (one per anchor, or one for all): a clip frame
    before it is clamped to it (the ``reference`` policy). None leaves the clip unclamped (``strict``
    keeps only clips that need no clamping).
    """
    anchor = np.asarray(anchor, np.int64).reshape(-1)
    offsets = (int(frames) - 1 - np.arange(int(frames), dtype=np.int64)) * int(frame_step)
    clip = anchor[:, None] - offsets[None, :]
    if first is None:
        return clip
    return np.maximum(clip, np.asarray(first, np.int64).reshape(-1, 1))


def current_rule(times: np.ndarray) -> str:
    """Return the current rule of one recording's current times (seconds): ``distinct-seconds`` when
    every time is a whole number (layout V2: 2 Hz rows with 1 s timestamps), else ``time-span``."""
    t = np.asarray(times, np.float64)
    return RULE_SECONDS if len(t) and bool(np.all(t == np.floor(t))) else RULE_SPAN


def current_window(times: np.ndarray, end: np.ndarray, current_seconds: float,
                   rule: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the current rows of windows over one recording's current ``times``: (start, stop,
    fallback, want), int64 / bool arrays with one entry per anchor, positions in ``times``.

    ``times`` are the recording's current times from its first row on (non-decreasing), ``end``
    per anchor the number of rows at or before the anchor frame's time (``frame_current_end``
    minus the recording's first row). The window is ``[start, stop)``, ``stop = end``:
    ``distinct-seconds`` holds the rows of the last ``ceil(current_seconds)`` distinct times up to
    and including row ``end - 1``; ``time-span`` the rows whose time lies in ``(t - current_seconds,
    t]``, ``t`` the time of row ``end - 1``. Cut at the first row. ``fallback`` marks anchors with no
    row at or before them (``end == 0``): they take the first second (``distinct-seconds``) or the
    first row. ``want`` is the first row a full history needs, -1 when it lies before the first
    row (the ``strict`` policy keeps only full histories).
    """
    t = np.asarray(times, np.float64)
    if not len(t):
        raise FmDataError("expected current rows in every recording with windows, got none")
    stop = np.asarray(end, np.int64).reshape(-1).copy()
    fallback = stop <= 0
    new = np.ones(len(t), bool)  # a new distinct time opens here; the first row always opens one
    new[1:] = t[1:] != t[:-1]
    if rule == RULE_SECONDS:
        first_row = np.flatnonzero(new)
        stop[fallback] = first_row[1] if len(first_row) > 1 else len(t)
        ids = np.cumsum(new) - 1
        want_id = ids[stop - 1] - (int(math.ceil(current_seconds)) - 1)
        start = first_row[np.maximum(want_id, 0)]
        want = np.where(want_id >= 0, start, -1)
    elif rule == RULE_SPAN:
        stop[fallback] = 1
        start = np.searchsorted(t, t[stop - 1] - current_seconds, side="right").astype(np.int64)
        want = np.where(start > 0, start, -1)  # full history: some row lies at or before the left edge
    else:
        raise FmDataError(f"expected a current rule in {CURRENT_RULES}, got {rule!r}", field="rule")
    return start.astype(np.int64), stop, fallback, want.astype(np.int64)


@dataclass(frozen=True)
class WindowTable:
    """An in-memory window table.

    ``table`` is int64 (n_windows, n_columns); ``columns`` names its columns; ``params`` holds
    the building parameters (at least ``frames``, ``frame_step``, ``current_rows``,
    ``current_seconds``, ``policy``, ``stride``).
    """

    table: np.ndarray
    columns: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.table.ndim != 2 or self.table.shape[1] != len(self.columns):
            raise FmDataError(f"expected a table with {len(self.columns)} columns, got shape {self.table.shape}")
        if tuple(self.columns[:len(schema.WINDOW_COLUMNS)]) != schema.WINDOW_COLUMNS:
            raise FmDataError(f"expected leading columns {schema.WINDOW_COLUMNS}, got {self.columns}")

    def __len__(self) -> int:
        return int(self.table.shape[0])

    def column(self, name: str) -> np.ndarray:
        """Return one column (a view) by name."""
        return self.table[:, self.columns.index(name)]

    @property
    def clip(self) -> np.ndarray:
        """Return the clip frame indices, (n_windows, frames), oldest first."""
        start = len(schema.WINDOW_COLUMNS)
        return self.table[:, start:]

    @property
    def current_rows(self) -> int:
        """Return the number of current rows each window is resampled to."""
        return int(self.params["current_rows"])

    def subset(self, rows: np.ndarray) -> WindowTable:
        """Return the table restricted to ``rows`` (indices or a boolean mask), same columns and params."""
        return WindowTable(table=self.table[rows], columns=self.columns, params=dict(self.params))


def table_fingerprint(wt: WindowTable) -> str:
    """Return a digest of a window table's samples: its columns, rows and window parameters.

    Equal for the same windows wherever the table lives (a stored table, or one built again
    from the same store and parameters); different when any window, label or parameter differs.
    """
    try:
        params: dict[str, Any] = WindowParams.from_dict(wt.params).to_dict()  # 10 and 10.0 alike
    except (FmDataError, TypeError, ValueError):
        params = {k: wt.params.get(k) for k in WindowParams().to_dict()}
    digest = hashlib.sha256(json.dumps({"columns": list(wt.columns), "params": params}, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(wt.table, dtype="<i8").tobytes())
    return digest.hexdigest()


def window_columns(frames: int) -> tuple[str, ...]:
    """Return the full column tuple of a table whose clips have ``frames`` frames."""
    return schema.WINDOW_COLUMNS + tuple(schema.clip_column(i) for i in range(frames))


# A table's name is a folder name inside the store's windows/ group: letters, digits, "_", "-" and
# "." (not first, so never "." or ".." nor a hidden folder), nothing a file system or URL reads
# specially ("/", "\\", ":"), and never "zarr.json", the group's own metadata file.
_TABLE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def check_table_name(name: str) -> str:
    """Return ``name`` if it can name a window table; FmDataError (field ``name``) otherwise."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name) or name.lower() == "zarr.json":
        raise FmDataError("expected a window table name of letters, digits, '_', '-' and '.' (not first), "
                          f"at most 100 characters and not 'zarr.json', got {name!r}", field="name")
    return name


def write_window_table(root: zarr.Group, name: str, wt: WindowTable, overwrite: bool = False) -> zarr.Array:
    """Store ``wt`` as ``windows/<name>`` in an open (writable) store; return the array.

    Written aside with its checksums and switched in (:func:`fmdata.store.derived.write_derived`):
    a reader sees the old table or the new one, never a half-written one.
    """
    check_table_name(name)
    if name in list_window_tables(root) and not overwrite:
        raise FmDataError(f"window table {name!r} exists; pass --force to replace it")
    rows = max(len(wt), 1)
    table = np.ascontiguousarray(wt.table, dtype=np.int64)
    # the column names are part of the new version: a table without them is refused by readers
    write_derived(root, [DerivedArray(f"{schema.WINDOWS_GROUP}/{name}", table, min(rows, 65536), TABLE_DIMS,
                                      {"columns": list(wt.columns), "params": wt.params})], "fmdata windows")
    return root[schema.WINDOWS_GROUP][name]


def check_replaceable_table(root: zarr.Group, name: str) -> None:
    """Raise FmDataError when ``windows/<name>`` holds something that is not a window table (a
    user's group or folder): ``fmdata windows`` replaces only its own tables. Nothing is changed."""
    check_table_name(name)
    check_targets(root, [(f"{schema.WINDOWS_GROUP}/{name}", TABLE_DIMS)], "fmdata windows")


def list_window_tables(root: zarr.Group) -> list[str]:
    """Return the names of the window tables in a store (sorted)."""
    with reading(root):
        return _table_names(root)


def _table_names(root: zarr.Group) -> list[str]:
    """The names of the window tables in a store (sorted); the caller holds the switch lock."""
    if schema.WINDOWS_GROUP not in root:
        return []
    with warnings.catch_warnings():  # a stray folder there is no table, and no reason for a warning
        warnings.filterwarnings("ignore", "Object at .* is not recognized as a component of a Zarr hierarchy")
        return sorted(name for name, _ in root[schema.WINDOWS_GROUP].arrays())


def read_window_table(root: zarr.Group, name: str) -> WindowTable:
    """Load ``windows/<name>`` from an open store, checked against its checksums; FmDataError if it is
    absent, unfinished or damaged."""
    with reading(root):
        names = _table_names(root)
        if name not in names:
            raise FmDataError(f"expected a window table named {name!r}, got {names or 'none'} "
                              f"(build one with `fmdata windows STORE --name {name}`)", store_folder(root))
        arr = root[schema.WINDOWS_GROUP][name]
        if "columns" not in arr.attrs:
            raise FmDataError(f"window table {name!r} is incomplete (its writer did not finish); rebuild it with --force",
                              store_folder(root))
        table = np.asarray(read_checked(arr), dtype=np.int64) if arr.shape[0] else np.zeros(arr.shape, np.int64)
        columns, params = tuple(arr.attrs["columns"]), dict(arr.attrs.get("params", {}))
    return WindowTable(table=table, columns=columns, params=params)
