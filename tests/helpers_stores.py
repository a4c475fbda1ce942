"""Small in-memory recordings shaped like the two source layouts, and stores written from them.

V1-like: one current row per frame (current_time == frame_time = i / fps, frame_current_end =
i + 1). V2-like: 2 Hz current rows with whole-second timestamps (two rows per second, seconds
may be missing), frame_time in whole seconds at a true rate near 25 fps, frame_current_end =
one past the last row whose time is at or before the frame's. Everything is seeded.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from fmdata import schema, store
from fmdata.windows import FrameIndex


def split_from_runs(runs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Return an int8 split array from (split code, length) runs."""
    return np.concatenate([np.full(n, code, np.int8) for code, n in runs]) if runs else np.zeros(0, np.int8)


def train_gap_test(n: int, train: float = 0.6, gap: float = 0.1) -> np.ndarray:
    """Return the benchmark's split shape: a train block, an unused guard gap, a test block."""
    a, b = int(n * train), int(n * gap)
    return split_from_runs([(schema.SPLIT_TRAIN, a), (schema.SPLIT_NONE, b), (schema.SPLIT_TEST, n - a - b)])


def v1_times(n: int, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (frame_time, current_time, frame_current_end) of a V1-like recording of n frames."""
    t = np.arange(n) / fps
    return t, t.copy(), np.arange(1, n + 1, dtype=np.int64)


def v2_times(n: int, rng: np.random.Generator, fps: float = 24.5, lead: int = 130, tail: int = 2,
             gap_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (frame_time, current_time, frame_current_end) of a V2-like recording.

    Current seconds run from ``lead`` seconds before the first frame (negative: current starts
    after the video) to ``tail`` seconds after the last; each second is missing with probability
    ``gap_prob``; each present second has two rows.
    """
    frame_time = np.floor(rng.random() + np.arange(n) / fps) + 1000.0
    seconds = np.arange(frame_time[0] - lead, frame_time[-1] + tail + 1)
    if gap_prob:
        seconds = seconds[rng.random(len(seconds)) >= gap_prob]
    if not len(seconds):
        seconds = np.array([frame_time[-1]])
    current_time = np.repeat(seconds, 2).astype(np.float64)
    fce = np.searchsorted(current_time, frame_time, side="right").astype(np.int64)
    return frame_time, current_time, fce


def masks(n: int, h: int, w: int, rng: np.random.Generator, p_abnormal: float = 0.3) -> np.ndarray:
    """Return (n, h, w) uint8 masks: a random rectangle of ones on about ``p_abnormal`` of frames."""
    m = np.zeros((n, h, w), np.uint8)
    for i in np.flatnonzero(rng.random(n) < p_abnormal):
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[i, y:y + rng.integers(1, h // 2 + 2), x:x + rng.integers(1, w // 2 + 2)] = 1
    return m


def recording(layout: str, n: int, seed: int, h: int = 8, w: int = 6, split: np.ndarray | None = None,
              **v2_kwargs: float) -> store.RecordingArrays:
    """Return a V1-like (``layout="v1"``) or V2-like (``"v2"``) recording of n frames."""
    rng = np.random.default_rng(seed)
    if layout == "v1":
        frame_time, current_time, fce = v1_times(n)
    else:
        frame_time, current_time, fce = v2_times(n, rng, **v2_kwargs)
    m = len(current_time)
    return store.RecordingArrays(
        video=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        mask=masks(n, h, w, rng),
        split=train_gap_test(n) if split is None else split.astype(np.int8),
        frame_time=frame_time,
        current=rng.normal(9000.0, 800.0, (m, 3)),
        current_time=current_time,
        frame_current_end=fce,
        info=schema.RecordingInfo(name=f"{layout}-{seed}", source_path="memory", source_bytes=0, layout=layout,
                                  n_frames=n, n_current=m))


def write_store(path, recordings: Sequence[store.RecordingArrays], chunk: int = 1, shard: int | None = 16) -> str:
    """Write ``recordings`` as a complete store at ``path``; return the path as a string."""
    store.write_store_from_arrays(path, recordings, fps=25.0, chunking=store.Chunking(chunk, shard, 64))
    return str(path)


def frame_index(recordings: Sequence[store.RecordingArrays], frame_label: np.ndarray | None = None) -> FrameIndex:
    """Return the FrameIndex a store of ``recordings`` would give, without writing one."""
    f_off = np.concatenate([[0], np.cumsum([len(r.split) for r in recordings])]).astype(np.int64)
    c_off = np.concatenate([[0], np.cumsum([len(r.current_time) for r in recordings])]).astype(np.int64)
    if frame_label is None:
        frame_label = np.concatenate([(r.mask == 1).any(axis=(1, 2)) for r in recordings]).astype(np.uint8)
    return FrameIndex(
        split=np.concatenate([r.split for r in recordings]).astype(np.int8),
        recording=np.repeat(np.arange(len(recordings)), np.diff(f_off)),
        frame_current_end=np.concatenate([r.frame_current_end + c_off[i] for i, r in enumerate(recordings)]),
        frame_label=frame_label, frame_offsets=f_off, current_offsets=c_off,
        current_time=np.concatenate([r.current_time for r in recordings]))
