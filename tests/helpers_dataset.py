"""Small real stores and window tables for the dataset tests and benchmark.

Recordings hold a textured, flickering shell with a bright spot that comes and goes (its pixels
are the mask), so frames compress like camera images and masks are mostly empty. Window tables
are built with one vectorised pass, the way the window-table contract describes them: clips look
back ``(frames - 1) * step`` frames from the labelled frame and never cross a recording; the
current window is the ``span`` rows up to the labelled frame's current row.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from fmdata import schema
from fmdata.store import Chunking, RecordingArrays, write_store_from_arrays
from fmdata.window_table import WindowTable, window_columns, write_window_table


def synthetic_recording(n_frames: int, height: int, width: int, *, seed: int, name: str = "rec",
                        fps: float = 25.0, current_hz: float | None = None) -> RecordingArrays:
    """Return one recording in store orientation.

    ``current_hz=None`` gives one current row per frame (layout V1); a number gives rows at that
    rate with their own time axis (layout V2 uses 2 Hz).
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    shell = 110 + 50 * np.sin(x / 5.0 + seed) * np.cos(y / 7.0)
    tint = np.array([1.0, 0.7, 0.45], np.float32)
    t = np.arange(n_frames, dtype=np.float32)
    flicker = 12 * np.sin(t / 9.0)[:, None, None]
    base = shell[None] + flicker + rng.normal(0, 2.0, (n_frames, height, width)).astype(np.float32)
    # A hot spot that is present in some stretches of frames and moves slowly.
    present = (np.sin(t / 23.0 + seed) > 0.3)
    cy = (height / 2 + height / 4 * np.sin(t / 31.0))[:, None, None]
    cx = (width / 2 + width / 4 * np.cos(t / 29.0))[:, None, None]
    spot = ((y[None] - cy) ** 2 + (x[None] - cx) ** 2) < (min(height, width) / 6) ** 2
    mask = (spot & present[:, None, None]).astype(np.uint8)
    video = np.clip(base[..., None] * tint + mask[..., None] * np.array([120, 40, 0], np.float32), 0, 255)
    video = video.astype(np.uint8)
    split = np.full(n_frames, schema.SPLIT_TRAIN, np.int8)
    train_end, test_start = int(n_frames * 0.6), int(n_frames * 0.65)
    split[train_end:test_start] = schema.SPLIT_NONE
    split[test_start:] = schema.SPLIT_TEST
    frame_time = t.astype(np.float64) / fps
    if current_hz is None:
        current_time = frame_time.copy()
    else:
        current_time = np.arange(0, frame_time[-1] + 1e-9, 1.0 / current_hz)
    level = 9000 + 1500 * np.sin(current_time[:, None] / 40.0 + np.arange(3))
    current = level + rng.normal(0, 60, (len(current_time), 3))
    frame_current_end = np.searchsorted(current_time, frame_time, side="right").astype(np.int64)
    info = schema.RecordingInfo(name=name, source_path=f"{name}.mat", source_bytes=0,
                                layout="v1" if current_hz is None else "v2",
                                n_frames=n_frames, n_current=len(current_time))
    return RecordingArrays(video=video, mask=mask, split=split, frame_time=frame_time, current=current,
                           current_time=current_time, frame_current_end=frame_current_end, info=info)


def build_window_table(recordings: Sequence[RecordingArrays], *, frames: int = 10, step: int = 18,
                       current_rows: int = 240, current_span: int = 3000, stride: int = 1) -> WindowTable:
    """Return the table of every window whose whole clip lies in its recording (vectorised)."""
    f_off = np.concatenate([[0], np.cumsum([len(r.video) for r in recordings])])
    c_off = np.concatenate([[0], np.cumsum([len(r.current) for r in recordings])])
    parts = []
    for r, rec in enumerate(recordings):
        first = (frames - 1) * step
        local = np.arange(first, len(rec.video), stride)
        clip = local[:, None] - step * np.arange(frames - 1, -1, -1)[None, :]
        stop = rec.frame_current_end[local]
        start = np.maximum(stop - current_span, 0)
        label = rec.mask[local].reshape(len(local), -1).any(axis=1)
        cols = [local + f_off[r], np.full(len(local), r), rec.split[local], label,
                start + c_off[r], stop + c_off[r]]
        parts.append(np.column_stack([np.column_stack(cols), clip + f_off[r]]).astype(np.int64))
    table = np.concatenate(parts) if parts else np.zeros((0, len(schema.WINDOW_COLUMNS) + frames), np.int64)
    params = {"frames": frames, "frame_step": step, "current_rows": current_rows,
              "current_seconds": current_span / 25.0, "policy": "reference", "stride": stride}
    return WindowTable(table=table, columns=window_columns(frames), params=params)


def make_store(path: str | os.PathLike[str], recordings: Sequence[RecordingArrays], *,
               chunking: Chunking = Chunking(), table: WindowTable | None = None,
               table_name: str = "w") -> str:
    """Write ``recordings`` (and ``table`` as windows/<table_name>) into a new store; return its path."""
    root = write_store_from_arrays(path, recordings, fps=25.0, chunking=chunking)
    if table is not None:
        write_window_table(root, table_name, table)
    return os.fspath(path)
