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


def holdout_split(wt: WindowTable, frame_current_end: np.ndarray, frame_offsets: np.ndarray,
                  fraction: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Split the TRAINING-split windows of ``wt`` into (train rows, validation rows, description).

    Per recording: the last ``ceil(fraction * n)`` training windows (by labelled frame) are
    validation; training keeps the windows whose labelled frame lies before the earliest frame any
    validation window reads (:func:`first_input_frame`), i.e. at least one window span (clip or
    current history, whichever reaches further) away. Test-split windows are never used.
    """
    split, rec, frame = wt.column("split"), wt.column("recording"), wt.column("frame")
    train_rows = np.flatnonzero(split == schema.SPLIT_TRAIN)
    first_in = first_input_frame(wt, frame_current_end, frame_offsets)
    keep_train, keep_val, per = [], [], []
    for r in np.unique(rec[train_rows]).tolist():
        rows = train_rows[rec[train_rows] == r]
        rows = rows[np.argsort(frame[rows], kind="stable")]
        n_val = int(math.ceil(fraction * len(rows))) if fraction > 0 else 0
        if n_val == 0:
            keep_train.append(rows)
            per.append({"recording": r, "train": len(rows), "val": 0, "dropped": 0})
            continue
        val = rows[len(rows) - n_val:]
        boundary = int(first_in[val].min())
        train = rows[: len(rows) - n_val]
        train = train[frame[train] < boundary]
        keep_train.append(train)
        keep_val.append(val)
        per.append({"recording": r, "train": len(train), "val": len(val), "dropped": len(rows) - n_val - len(train),
                    "val_first_frame": int(frame[val].min()), "val_first_input_frame": boundary,
                    "train_last_frame": int(frame[train].max()) if len(train) else None})
    tr = np.sort(np.concatenate(keep_train)) if keep_train else np.zeros(0, np.int64)
    va = np.sort(np.concatenate(keep_val)) if keep_val else np.zeros(0, np.int64)
    info = {
        "method": "tail-holdout per recording",
        "fraction": fraction,
        "note": ("validation = the last labelled frames of each recording's TRAINING block (never the test "
                 "split); training windows within one window span (clip frames or current history) before "
                 "the first frame a validation window reads are dropped, so no input is shared"),
        "train_windows": int(len(tr)), "val_windows": int(len(va)), "recordings": per,
    }
    return tr, va, info
