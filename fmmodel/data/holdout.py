"""Validation without leakage: hold out the tail of each recording's training block, one window span apart.

At 25 fps neighbouring frames are near duplicates and stride-1 windows overlap by almost their
whole span, so validation windows drawn at random from training frames score nearly as high as
training itself (docs/reference-protocol.md, "Leakage"). For every recording, the training
windows whose labelled frames come last (``fraction`` of them) are held out as one contiguous
block; the training windows that end within one window span before that block's earliest input
(clip frame or current row) are dropped, so no frame or current sample feeds both a training and
a validation window. The test split is never used. The run's ``config.json`` records the split.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from fmdata.store import schema
from fmdata.store.window_table import WindowTable


def first_input_frame(wt: WindowTable, frame_current_end: np.ndarray, frame_offsets: np.ndarray) -> np.ndarray:
    """Return, per window, the earliest frame whose data it reads (its oldest clip frame, or the
    first frame of its recording that has seen the window's first current row)."""
    rec = wt.column("recording")
    lo, hi = frame_offsets[rec], frame_offsets[rec + 1]
    cur_start = wt.column("current_start")
    # frame_current_end is non-decreasing over the whole store (recordings are concatenated)
    seen = np.searchsorted(frame_current_end, cur_start, side="right")
    seen = np.clip(seen, lo, hi - 1)
    return np.minimum(wt.clip.min(axis=1), seen)


# when the requested hold-out leaves a recording no training window, the smaller shares tried
# there (the requested one divided by these), each only if training keeps at least MIN_TRAIN_SHARE
SMALLER_HOLDOUTS = (2, 4, 8)
MIN_TRAIN_SHARE = 0.5
_ROUND_SECONDS = (90, 60, 45, 30, 20, 15, 10, 5, 2, 1)  # current histories a hint suggests


def holdout_split(wt: WindowTable, frame_current_end: np.ndarray, frame_offsets: np.ndarray,
                  fraction: float, *, table: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Split the TRAINING-split windows of ``wt`` into (train rows, validation rows, description).

    Per recording: the last ``ceil(fraction * n)`` training windows (by labelled frame) are
    validation; training keeps the windows whose labelled frame lies before the earliest frame any
    validation window reads (:func:`first_input_frame`), i.e. at least one window span (clip or
    current history, whichever reaches further) away. Test-split windows are never used.

    A recording too short for that (the hold-out and its gap would take every training window)
    holds out a smaller share (``fraction`` / 2, 4 or 8, the first that keeps at least half its
    training windows) or, when none does, nothing: its windows all train. What was done is the
    description's ``adjusted`` line (None when nothing was), also in each recording's entry
    (``fraction``: the share held out there); it names the options that would give validation
    (shorter windows; ``table``: the stored table the run trains on, if any).
    """
    split, rec, frame = wt.column("split"), wt.column("recording"), wt.column("frame")
    train_rows = np.flatnonzero(split == schema.SPLIT_TRAIN)
    first_in = first_input_frame(wt, frame_current_end, frame_offsets)
    keep_train, keep_val, per = [], [], []
    short: list[dict[str, Any]] = []
    for r in np.unique(rec[train_rows]).tolist():
        rows = train_rows[rec[train_rows] == r]
        rows = rows[np.argsort(frame[rows], kind="stable")]
        train, val, boundary = _tail(rows, frame, first_in, fraction)
        used = fraction if len(val) else 0.0
        if fraction > 0 and not len(train):
            short.append({"recording": r, "windows": len(rows),
                          "reach": int(np.max(frame[rows] - first_in[rows])),
                          "block_frames": int(frame[rows].max() - frame[rows].min() + 1)})
            train, val, boundary, used = rows, rows[:0], None, 0.0
            for d in SMALLER_HOLDOUTS:
                t, v, b = _tail(rows, frame, first_in, fraction / d)
                if len(v) and len(t) >= MIN_TRAIN_SHARE * len(rows):
                    train, val, boundary, used = t, v, b, fraction / d
                    break
            short[-1]["fraction"] = used
        keep_train.append(train)
        keep_val.append(val)
        entry: dict[str, Any] = {"recording": r, "fraction": used, "train": len(train), "val": len(val),
                                 "dropped": len(rows) - len(val) - len(train)}
        if len(val):
            entry.update({"val_first_frame": int(frame[val].min()), "val_first_input_frame": boundary,
                          "train_last_frame": int(frame[train].max()) if len(train) else None})
        per.append(entry)
    tr = np.sort(np.concatenate(keep_train)) if keep_train else np.zeros(0, np.int64)
    va = np.sort(np.concatenate(keep_val)) if keep_val else np.zeros(0, np.int64)
    info = {
        "method": "tail-holdout per recording",
        "fraction": fraction,
        "note": ("validation = the last labelled frames of each recording's TRAINING block (never the test "
                 "split); training windows within one window span (clip frames or current history) before "
                 "the first frame a validation window reads are dropped, so no input is shared"),
        "adjusted": _adjusted(short, len(per), fraction, len(va), wt.params, table) if short else None,
        "train_windows": int(len(tr)), "val_windows": int(len(va)), "recordings": per,
    }
    return tr, va, info


def _tail(rows: np.ndarray, frame: np.ndarray, first_in: np.ndarray,
          fraction: float) -> tuple[np.ndarray, np.ndarray, int | None]:
    """One recording's (train rows, validation rows, first frame validation reads) at ``fraction``."""
    n_val = int(math.ceil(fraction * len(rows))) if fraction > 0 else 0
    if n_val == 0:
        return rows, rows[:0], None
    val = rows[len(rows) - n_val:]
    boundary = int(first_in[val].min())
    train = rows[: len(rows) - n_val]
    return train[frame[train] < boundary], val, boundary


def _adjusted(short: list[dict[str, Any]], recordings: int, fraction: float, val_windows: int,
              params: dict[str, Any], table: str | None) -> str:
    """The line that says what the hold-out did where the requested one left no training window,
    and which options would give validation there."""
    names = ", ".join(str(s["recording"]) for s in short)
    reach = max(s["reach"] for s in short)
    what = (f"holding out {fraction:g} of the training windows (and the up to {reach:,} frames a "
            f"window reads back, kept as a gap) would leave no training window in {len(short)} of {recordings} "
            f"recording(s) (recordings {names})")
    smaller = [s for s in short if s["fraction"] > 0]
    shares = ", ".join(format(s["fraction"], "g") for s in smaller)
    done = f"held out {shares} there instead" if smaller else "validation is off there"
    if not val_windows:
        done = "validation is off: best.pt is the last epoch"
    off = [s for s in short if s["fraction"] == 0]
    return f"{what}; {done}{_hint(off, fraction, params, table) if off else ''}"


def _hint(short: list[dict[str, Any]], fraction: float, params: dict[str, Any], table: str | None) -> str:
    """Options that give these recordings validation: windows reaching back at most a third of the
    shortest training block, by a shorter current history (the clip's own span must fit too)."""
    seconds = float(params.get("current_seconds", 0) or 0)
    reach = max(s["reach"] for s in short)
    clip = (int(params.get("frames", 1)) - 1) * int(params.get("frame_step", 1))
    target = min(s["block_frames"] for s in short) * (1 - fraction) / 3
    if not seconds or clip >= target:
        return "; shorter clips (frames, frame step) or longer recordings would give them validation"
    fits = seconds * target / reach
    suggest = next((n for n in _ROUND_SECONDS if n <= fits), 0)
    if not suggest or suggest >= seconds:
        return "; shorter windows or longer recordings would give them validation"
    if table:
        return (f"; for validation there, use shorter windows: leave out --windows and pass --current-seconds "
                f"{suggest}, or build a table with them (fmdata windows STORE --name NAME --current-seconds "
                f"{suggest}) and pass --windows NAME")
    return f"; for validation there, use shorter windows: --current-seconds {suggest}"
