"""``fmdata windows``: build window tables (one row per training sample), vectorised.

A window for labelled frame ``f`` of recording ``r`` holds the clip ``f - (frames-1)*step, ...,
f - step, f`` and the current rows ``[current_start, current_stop)`` (global rows of one
recording). Readers resample those rows to ``current_rows`` with
:func:`fmdata.store.window_table.current_row_offsets`.
Everything here is numpy over the frame-level 1-D arrays and the recording offsets: no per-window
search, no randomness. The rule of one window (its clip, its current rows) is
:mod:`fmdata.store.window_table`'s (``clip_frames``, ``current_window``), which ``fmmodel watch``
applies to its ring buffers too. ``docs/derivations.md`` states the rules; the short version:

Current rows. ``current_stop`` is ``frame_current_end[f]``: one past the last row at or before
the frame's time. Where a recording's current timestamps are whole seconds (layout V2, 2 Hz rows
with 1 s timestamps) the window holds the rows of the last ``ceil(current_seconds)`` *distinct*
timestamps up to and including the last one at or before ``f`` (the reference's rule). Otherwise
(layout V1, one row per frame) it holds the rows whose time lies in
``(t_last - current_seconds, t_last]``. If no row of the recording is at or before ``f``'s time
(current starts after the video), ``reference`` uses the recording's first second (first row).

Policies.
``reference``: every frame of a split gets a window; the clip is clamped to the recording's first
frame where it would reach before it (the reference code swaps such frames for random later
ones instead); current windows are cut at the recording's start and index-resampled.
``strict``: a window is kept only when its whole clip and its whole current history (full
``current_seconds``) lie in the contiguous block of frames of one split of one recording that
holds ``f``. A current row belongs to the first frame that sees it (the first frame whose time is
at or after the row's), so train and test windows never share a frame or a current row.

``stride`` keeps every ``stride``-th kept window of each block, starting with the block's first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fmdata.compute.dask_cluster import DaskOptions
from fmdata.compute.memory import require_memory
from fmdata.derive.labels import ensure_labels, expected_provenance, labels_up_to_date, read_labels
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import store_writable
from fmdata.store.derived import store_writer
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.window_table import (
    WindowParams,
    WindowTable,
    check_replaceable_table,
    clip_frames,
    current_rule,
    current_window,
    window_columns,
    write_window_table,
)
from fmdata.version import __version__

# int64 arrays of a table's size that building it holds at once (the clip, its clamped copy, the table)
TABLE_COPIES = 3


@dataclass(frozen=True)
class WindowsReport:
    """What :func:`make_windows` did: ``status`` "written" or "up to date", counts per split, params."""

    store: str
    name: str
    status: str
    windows: int
    splits: dict[str, dict[str, int]]
    params: dict[str, Any]

    def summary(self) -> str:
        """Return the one-line human summary."""
        parts = ", ".join(f"{k} {v['windows']:,} ({v['abnormal']:,} abnormal)" for k, v in self.splits.items())
        return (f"{self.store}: windows/{self.name} {self.status}: {self.windows:,} windows "
                f"({self.params['policy']}): {parts}")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        return asdict(self)


@dataclass(frozen=True)
class FrameIndex:
    """The small 1-D arrays a window table is computed from (all global indices).

    ``split``/``recording``/``frame_current_end``/``frame_label``: (n_frames,);
    ``frame_offsets``/``current_offsets``: (R + 1,); ``current_time``: (n_current,).
    """

    split: np.ndarray
    recording: np.ndarray
    frame_current_end: np.ndarray
    frame_label: np.ndarray
    frame_offsets: np.ndarray
    current_offsets: np.ndarray
    current_time: np.ndarray

    @property
    def n_frames(self) -> int:
        """Return the number of frames."""
        return int(self.frame_offsets[-1])


def load_index(store: StoreHandle, require_labels: bool = True) -> FrameIndex:
    """Return the frame-level arrays of the open ``store`` (read once per handle, read-only).

    Labels must be up to date unless ``require_labels`` is False, in which case missing labels
    read as 0 (used by previews, which take a frame's label from its mask).
    """
    f_off, c_off = store.offsets
    if require_labels or labels_up_to_date(store):
        frame_label, _ = read_labels(store)
    else:
        frame_label = np.zeros(int(f_off[-1]), np.uint8)
    return FrameIndex(
        split=np.asarray(store.split, np.int8), recording=store.frame_recording,
        frame_current_end=np.asarray(store.frame_current_end, np.int64),
        frame_label=frame_label, frame_offsets=f_off, current_offsets=c_off,
        current_time=np.asarray(store.current_time, np.float64))


def _check(ix: FrameIndex) -> None:
    n, m = ix.n_frames, int(ix.current_offsets[-1])
    if len(ix.split) != n or len(ix.current_time) != m:
        raise FmDataError(f"expected frame arrays of length {n} and current arrays of length {m}, "
                          f"got {len(ix.split)} and {len(ix.current_time)}")
    same_rec = np.ones(max(m - 1, 0), bool)
    edges = ix.current_offsets[1:-1] - 1
    same_rec[edges[(edges >= 0) & (edges < m - 1)]] = False
    if np.any(np.diff(ix.current_time)[same_rec] < 0):
        raise FmDataError("expected current_time non-decreasing within each recording, got a step back")
    lo, hi = ix.current_offsets[ix.recording], ix.current_offsets[ix.recording + 1]
    bad = np.flatnonzero((ix.frame_current_end < lo) | (ix.frame_current_end > hi))
    if len(bad):
        raise FmDataError(f"expected frame_current_end inside each frame's recording, got {len(bad)} frames "
                          f"outside (first: frame {bad[0]})")


def current_rules(ix: FrameIndex) -> list[str]:
    """Return each recording's current rule (:func:`fmdata.store.window_table.current_rule`)."""
    return [current_rule(ix.current_time[ix.current_offsets[r]:ix.current_offsets[r + 1]])
            for r in range(len(ix.current_offsets) - 1)]


def _blocks(ix: FrameIndex) -> tuple[np.ndarray, np.ndarray]:
    """Return (block id per frame, first frame per block): runs of one split of one recording."""
    change = np.ones(ix.n_frames, bool)
    change[1:] = (ix.recording[1:] != ix.recording[:-1]) | (ix.split[1:] != ix.split[:-1])
    return np.cumsum(change) - 1, np.flatnonzero(change)


def _current_ranges(ix: FrameIndex, f: np.ndarray, params: WindowParams,
                    rules: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return global (start, stop, fallback, want) per window frame ``f``: the rule of
    :func:`fmdata.store.window_table.current_window` applied per recording (``want`` below the
    recording's first row when a full history would reach before it)."""
    c_off = ix.current_offsets
    rec = ix.recording[f]
    lo, hi = c_off[rec], c_off[rec + 1]
    if np.any(hi <= lo):
        empty = sorted(set(rec[hi <= lo].tolist()))
        raise FmDataError(f"expected current rows in every recording with windows, got none in recording(s) {empty}")
    start, stop = np.empty_like(f), np.empty_like(f)
    want, fallback = np.empty_like(f), np.zeros(len(f), bool)
    for r, rule in enumerate(rules):
        sel = np.flatnonzero(rec == r)
        if not len(sel):
            continue
        r_lo = int(c_off[r])
        s, e, fb, w = current_window(ix.current_time[r_lo:int(c_off[r + 1])], ix.frame_current_end[f[sel]] - r_lo,
                                     params.current_seconds, rule)
        start[sel], stop[sel], fallback[sel], want[sel] = s + r_lo, e + r_lo, fb, w + r_lo
    return start, stop, fallback, want


def _windows_at(ix: FrameIndex, f: np.ndarray, params: WindowParams, rules: list[str]) -> np.ndarray:
    """Return the table rows (before stride) of the windows ending at frames ``f`` under ``params``."""
    block_of, block_first = _blocks(ix)
    rec = ix.recording[f]
    rec_first = ix.frame_offsets[rec]
    start, stop, fallback, want = _current_ranges(ix, f, params, rules)
    if params.policy == "reference":
        clip = clip_frames(f, params.frames, params.frame_step, rec_first)
    else:
        clip = clip_frames(f, params.frames, params.frame_step, None)
        b_first = block_first[block_of[f]]
        # the block's current rows: those that no frame before the block has seen
        c_lo = np.where(b_first > rec_first, ix.frame_current_end[np.maximum(b_first - 1, 0)],
                        ix.current_offsets[rec])
        keep = (clip[:, 0] >= b_first) & ~fallback & (want >= c_lo)
        f, rec, clip, start, stop = f[keep], rec[keep], clip[keep], start[keep], stop[keep]
    cols = [f, rec, ix.split[f], ix.frame_label[f], start, stop]
    return np.concatenate([np.stack(cols, axis=1).astype(np.int64), clip.astype(np.int64)], axis=1)


def _apply_stride(ix: FrameIndex, table: np.ndarray, stride: int) -> np.ndarray:
    """Keep every ``stride``-th row of each split block, starting with the block's first."""
    if stride == 1 or not len(table):
        return table
    block_of, _ = _blocks(ix)
    b = block_of[table[:, 0]]
    first = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    rank = np.arange(len(b)) - np.repeat(first, np.diff(np.r_[first, len(b)]))
    return table[rank % stride == 0]


def build_window_table(ix: FrameIndex, params: WindowParams) -> WindowTable:
    """Return the window table of ``params`` over the frames described by ``ix``.

    Every frame whose split is train or test is a candidate labelled frame; the policy decides
    which candidates keep a window (see the module docstring). FmDataError (field ``frames``) when
    the table would not fit in memory, before anything is allocated.
    """
    columns = window_columns(params.frames)
    require_memory(TABLE_COPIES * 8 * ix.n_frames * len(columns),
                   f"a window table of up to {ix.n_frames:,} windows x {len(columns):,} columns "
                   f"({params.frames:,} clip frames)", field="frames")
    _check(ix)
    rules = current_rules(ix)
    f = np.flatnonzero(ix.split != schema.SPLIT_NONE)
    table = _apply_stride(ix, _windows_at(ix, f, params, rules), params.stride)
    meta = {**params.to_dict(), "current_rules": rules, "toolkit_version": __version__}
    return WindowTable(table=table, columns=columns, params=meta)


def reference_windows(ix: FrameIndex, frames: np.ndarray, params: WindowParams) -> WindowTable:
    """Return the table of the ``reference`` windows ending at global ``frames`` (any split, in the
    order given; stride 1), with the window shape of ``params`` whatever its policy and stride.

    Used by ``fmdata preview`` (one frame) and by the authors' current-only samples
    (:func:`fmmodel.data.windows.per_second_samples`), whose frames are not a table's.
    """
    frames = np.asarray(frames, np.int64)
    bad = frames[(frames < 0) | (frames >= ix.n_frames)]
    if len(bad):
        raise FmDataError(f"expected frames in 0..{ix.n_frames - 1}, got {int(bad[0])}")
    _check(ix)
    ref = WindowParams(**{**params.to_dict(), "policy": "reference", "stride": 1})
    table = _windows_at(ix, frames, ref, current_rules(ix))
    return WindowTable(table=table, columns=window_columns(ref.frames), params=ref.to_dict())


def window_for_frame(ix: FrameIndex, frame: int, params: WindowParams) -> WindowTable:
    """Return the one-row table of the ``reference`` window ending at global ``frame`` (any split).

    Used by ``fmdata preview`` when no stored table is named.
    """
    return reference_windows(ix, np.array([frame], np.int64), params)


def make_windows(store: StoreLike, name: str, params: WindowParams = WindowParams(), *, force: bool = False,
                 options: DaskOptions = DaskOptions()) -> WindowsReport:
    """Build the window table ``name`` for ``store`` (an open store or its location) and store it as
    ``windows/<name>``.

    Computes frame labels first when they are missing (with Dask, per ``options``). A table of
    the same name built with the same parameters from the same labels is left alone (status
    "up to date"); one with other parameters is replaced only with ``force``.
    """
    given = store = open_store(store)
    loc = store.location
    check_replaceable_table(store.root, name)  # before anything is computed or written
    store = ensure_labels(store, options)
    wanted = {**params.to_dict(), "labels": expected_provenance(store.root)["derived_from"]}
    if name in store.window_tables and not force:
        old = store.window_table(name)
        if {k: old.params.get(k) for k in wanted} == wanted:
            return _report(store, old, name, "up to date")
        raise FmDataError(f"window table {name!r} exists with other parameters; pass --force to replace it", str(loc))
    if not store_writable(loc):
        raise FmDataError(f"expected a writable store to store windows/{name}, got a read-only one: run "
                          "`fmdata windows` where the store is writable", str(loc))
    with store_writer(loc, "fmdata windows"):
        wt = build_window_table(load_index(store), params)
        wt = WindowTable(wt.table, wt.columns, {**wt.params, "labels": wanted["labels"]})
        try:
            write_window_table(store.reopen("r+").root, name, wt, overwrite=True)
        finally:
            for handle in {given, store}:  # they read the new table
                handle.forget("window_tables", ("window_table", name))
    return _report(store, wt, name, "written")


def _report(store: StoreHandle, wt: WindowTable, name: str, status: str) -> WindowsReport:
    split, label = wt.column("split"), wt.column("label")
    per_split = {schema.SPLIT_NAMES[s]: {"windows": int(np.count_nonzero(split == s)),
                                         "abnormal": int(np.count_nonzero((split == s) & (label == 1)))}
                 for s in (schema.SPLIT_TRAIN, schema.SPLIT_TEST)}
    return WindowsReport(store=str(store), name=name, status=status, windows=len(wt), splits=per_split,
                         params={k: wt.params.get(k) for k in WindowParams().to_dict()})
